"""The `noop` driver: records each deployment order durably and runs nothing.

For dry runs, benchmarks and crash tests: every start is one appended, fsynced line in
var/run/apps/<service>--<env>.noop.jsonl, so the number of lines is the number of real
driver calls, and the last line is what "runs" (re-attach works as with processes).
"""

import json
import os
from pathlib import Path

from services.deployer.domain import Running
from shared.artifacts import file_digest


class NoopDriver:
    """Same interface as LocalDriver; the effect of a start is its line in the slot's journal."""

    def __init__(self, store_dir: Path, run_dir: Path) -> None:
        self.store_dir, self.run_dir = store_dir, run_dir

    def artifact_path(self, digest: str) -> Path:
        """Where the store keeps the artifact with `digest`."""
        return self.store_dir / "sha256" / digest.removeprefix("sha256:")

    def journal(self, service: str, env: str) -> Path:
        """The slot's journal of starts."""
        return self.run_dir / f"{service}--{env}.noop.jsonl"

    def launched(self, service: str, env: str) -> Running | None:
        """The last release started in the slot (always 'alive': nothing can die)."""
        try:
            lines = self.journal(service, env).read_text().splitlines()
        except OSError:
            return None
        if not lines:
            return None
        last = json.loads(lines[-1])
        return Running(pid=0, digest=last["digest"], config_version=last["config_version"], alive=True)

    def start(self, service: str, env: str, digest: str, config_version: str, variables: dict[str, str]) -> int:
        """Append the start to the journal (one write, fsynced); returns pid 0."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"digest": digest, "config_version": config_version,
                           "version": variables.get("BUILD_VERSION")}) + "\n"
        fd = os.open(self.journal(service, env), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return 0

    def preflight(self, service: str, env: str, digest: str) -> None:
        """Nothing will run, so nothing can fail to start."""

    def stop(self, pid: int, timeout: float = 5.0) -> None:
        """Nothing runs, so nothing stops."""

    async def verify(self, pid: int, port: int, digest: str, version: str, timeout: float = 15.0) -> dict[str, str]:
        """Only the digest can be checked: the stored file must still have it."""
        matches = file_digest(self.artifact_path(digest)) == digest
        return {"process": "passed", "health": "passed", "version": "passed",
                "digest": "passed" if matches else "the stored file no longer has this digest"}
