"""The `noop` driver: records each deployment order durably and runs nothing.

For dry runs, benchmarks and crash tests: every start is one appended, fsynced line in
var/run/apps/<service>--<slot>.noop.jsonl, so the number of lines is the number of real
driver calls, and the last line is what "runs" (re-attach works as with processes).
"""

import json
import os
from pathlib import Path

from services.deployer.domain import Running, Target
from services.deployer.driver import check_stored
from shared.artifacts import file_digest


class NoopDriver:
    """Same interface as LocalDriver; the effect of a start is its line in the slot's journal."""

    def __init__(self, store_dir: Path, run_dir: Path) -> None:
        self.store_dir, self.run_dir = store_dir, run_dir

    def artifact_path(self, digest: str) -> Path:
        """Where the store keeps the artifact with `digest`."""
        return self.store_dir / "sha256" / digest.removeprefix("sha256:")

    def describe(self, target: Target) -> str:
        """The image's location, or the store path of the file."""
        return target.location or str(self.artifact_path(target.digest))

    def ports(self, service: str, slot: str, port: int) -> list[int]:
        """Nothing listens; the slot's port is what it would be."""
        return [port]

    def journal(self, service: str, slot: str) -> Path:
        """The slot's journal of starts."""
        return self.run_dir / f"{service}--{slot}.noop.jsonl"

    def launched(self, service: str, slot: str) -> Running | None:
        """The last release started in the slot (always 'alive': nothing can die)."""
        try:
            lines = self.journal(service, slot).read_text().splitlines()
        except OSError:
            return None
        if not lines:
            return None
        last = json.loads(lines[-1])
        return Running(pid=0, digest=last["digest"], config_version=last["config_version"], alive=True)

    def start(self, target: Target, slot: str, variables: dict[str, str]) -> int:
        """Append the start to the journal (one write, fsynced); returns pid 0."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"digest": target.digest, "config_version": target.config_version,
                           "version": variables.get("BUILD_VERSION")}) + "\n"
        fd = os.open(self.journal(target.service, slot), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return 0

    def preflight(self, target: Target, slot: str) -> None:
        """A file must be in the store intact; an image was resolved by intake, and nothing will pull it."""
        if target.location is None:
            check_stored(self.artifact_path(target.digest), target.digest)

    def stop(self, service: str, slot: str, pid: int, timeout: float = 5.0) -> None:
        """Nothing runs, so nothing stops."""

    def evict(self, service: str, slot: str, port: int) -> list[str]:
        """Nothing runs, so nothing is in the way."""
        return []

    async def survey(self) -> None:
        """Nothing runs, so nothing is listed."""
        return None

    async def observe(self, expected, http, listing=None) -> None:
        """Nothing runs, so nothing can drift."""
        return None

    async def verify(self, target: Target, slot: str, pid: int, port: int,
                     timeout: float = 15.0) -> dict[str, str]:
        """Only a file's digest can be checked: the stored file must still have it (an image is not pulled)."""
        checks = {"process": "passed", "health": "passed", "version": "passed"}
        if target.location is not None:
            return {**checks, "digest": "passed"}
        matches = file_digest(self.artifact_path(target.digest)) == target.digest
        return {**checks, "digest": "passed" if matches else "the stored file no longer has this digest"}
