"""Artifact sources on the real stack: a build.completed cannot make intake read or run host files."""

import json
import os
import pwd
from pathlib import Path

import httpx
import pytest

import devstack
from shared.artifacts import file_digest
from shared.contracts.events import Artifact

pytestmark = pytest.mark.e2e
ANY = "sha256:" + "0" * 64


def hostile_sources(dist: Path) -> dict[str, tuple[str, str, str]]:
    """version -> (URI, claimed digest, what the rejection says), each an attack the hostile tester made."""
    passwd = file_digest(Path("/etc/passwd"))
    (dist / "passwd").symlink_to("/etc/passwd")
    (dist / "etc").symlink_to("/etc")
    os.mkfifo(dist / "fifo")
    with (dist / "sparse").open("wb") as handle:
        handle.truncate(600 * 2**20)  # over the 512 MiB default, and all holes
    return {
        "0.0.1": ("file:///etc/passwd", passwd, "outside the artifact roots"),
        "0.0.2": (f"file://{dist}/../../../../../etc/passwd", passwd, "not absolute and normalised"),
        "0.0.3": (f"file://{dist}{'/%2e%2e' * 5}/etc/passwd", passwd, "not absolute and normalised"),
        "0.0.4": ("file://elsewhere/etc/passwd", passwd, "host part"),
        "0.0.5": (f"file://{dist}/passwd", passwd, "symbolic link"),
        "0.0.6": (f"file://{dist}/etc/passwd", passwd, "symbolic link"),
        "0.0.7": (f"file://{dist}/fifo", ANY, "is a FIFO"),
        "0.0.8": (f"file://{dist}/sparse", ANY, "more than the limit"),
    }


async def test_host_files_symlinks_fifos_and_oversize_files_are_rejected_and_intake_goes_on(scenario):
    await scenario.apply_pipeline()
    for version, (uri, digest, says) in hostile_sources(scenario.dist).items():
        build = scenario.build_completed(version, scenario.dist, digest)
        await scenario.send(build.model_copy(update={"artifact": Artifact(kind="file", uri=uri, digest=digest)}))
        rejected = await scenario.wait("artifact.rejected", version=version)
        assert (rejected.data.reason, says in rejected.data.detail) == ("artifact-unreachable", True), \
            rejected.data.detail
        assert "root:x:0:0" not in rejected.data.detail
    passwd = file_digest(Path("/etc/passwd")).removeprefix("sha256:")
    assert not (scenario.settings.store_dir / "sha256" / passwd).exists()

    path, digest = scenario.build("1.0.0")  # the FIFO held nothing up: an honest build goes through
    await scenario.send(scenario.build_completed("1.0.0", path, digest))
    await scenario.wait("verification.passed", env="dev", version="1.0.0")
    async with httpx.AsyncClient() as client:
        health = (await client.get(f"http://127.0.0.1:{devstack.SERVICE_HEALTH_PORTS['intake']}/health")).json()
    assert health["stuck"] is None


async def test_a_deployed_app_runs_as_the_app_user_and_the_store_is_closed_to_others(scenario):
    await scenario.apply_pipeline()
    path, digest = scenario.build("1.0.0")
    path.chmod(0o644)  # a script CI left unexecutable, as in the hostile tester's report
    await scenario.send(scenario.build_completed("1.0.0", path, digest))
    await scenario.wait("verification.passed", env="dev", version="1.0.0")

    record = json.loads((scenario.settings.var_dir / "run" / "apps" / f"{scenario.service}--dev.json").read_text())
    uid = next(line.split()[1] for line in Path(f"/proc/{record['pid']}/status").read_text().splitlines()
               if line.startswith("Uid:"))
    assert uid == str(pwd.getpwnam(scenario.settings.app_user).pw_uid if os.geteuid() == 0 else os.geteuid())
    stored = scenario.settings.store_dir / "sha256" / digest.removeprefix("sha256:")
    modes = [oct(p.stat().st_mode & 0o777) for p in (scenario.settings.store_dir, stored.parent, stored)]
    assert modes in (["0o710", "0o710", "0o550"], ["0o700", "0o700", "0o500"])
