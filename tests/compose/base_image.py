"""One local base image for the compose test: Debian bookworm from Debian's mirror, with what the public images
of compose.yaml bring (python 3.11 for promote:dev, a JRE for Kafka, PostgreSQL 15, distribution's registry).

No public image can be pulled on these machines, so the test's override file (tests/compose/local.yaml) runs
every service on this one image instead. It is built with debootstrap, kept as a tarball under
~/.cache/promote/compose/ (per machine) named by a hash of the recipe below, and imported into podman's storage as
localhost/promote-base:<hash>; a later run finds the image (or at least the tarball) and builds nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from devstack import containers
from devstack import processes as p

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-pip", "python3-venv", "python-is-python3", "ca-certificates",
            "openjdk-17-jre-headless", "postgresql-15", "docker-registry", "passwd")
CLEANUP = """\
set -e
rm -rf /var/lib/postgresql/15/main /etc/postgresql/15/main   # the package's own cluster: the stack makes its own
useradd --uid 1000 --create-home appuser                     # apache/kafka's user: the broker runs unprivileged
install -d -o appuser -g root -m 0775 /var/lib/kafka/data
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb /usr/share/doc/* /usr/share/man/*
"""
CHANGES = ("ENV LANG=C.UTF-8",
           "ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "ENV PIP_BREAK_SYSTEM_PACKAGES=1",  # the image is one program's: pip may install beside Debian's python
           "CMD [\"/bin/bash\"]")
DEBOOTSTRAP = Path("/usr/sbin/debootstrap")


def recipe() -> str:
    """Everything that decides the image's content (its hash names the image and the tarball)."""
    return "\n".join([SUITE, MIRROR, *PACKAGES, CLEANUP, *CHANGES])


def tag() -> str:
    """localhost/promote-base:<first 12 hex of the recipe's sha256>."""
    return f"localhost/promote-base:{hashlib.sha256(recipe().encode()).hexdigest()[:12]}"


MACHINE_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "promote" / "compose"
"""Per machine rather than per checkout: a fresh clone (CI) imports the base (~15 s) instead of running
debootstrap again (~100 s)."""


def tarball() -> Path:
    """~/.cache/promote/compose/promote-base-<hash>.tar: the root filesystem, kept for a later run on this
    machine (by any checkout)."""
    return MACHINE_CACHE / f"promote-base-{tag().rpartition(':')[2]}.tar"


def ensure() -> str:
    """The base image's tag, importing the cached tarball or building it first when podman lacks the image."""
    image = tag()
    if containers.podman("image", "exists", image).returncode == 0:
        return image
    if not tarball().exists():
        build_rootfs_tarball()
    t0 = time.monotonic()
    imported = containers.podman("import", *(arg for change in CHANGES for arg in ("--change", change)),
                                 str(tarball()), image)
    if imported.returncode != 0:
        raise p.StackError(f"compose base: podman import failed\n{imported.stderr[-2000:]}")
    p.say(f"compose base: imported {image} ({time.monotonic() - t0:.1f} s)")
    return image


def build_rootfs_tarball() -> Path:
    """debootstrap the recipe into a temporary directory and tar it into the cache (written under a temporary
    name, renamed when complete)."""
    p.apt_install("debootstrap", ("debootstrap",), DEBOOTSTRAP)
    out = tarball()
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="promote-base-", dir=out.parent))
    root = work / "rootfs"
    try:
        _run([str(DEBOOTSTRAP), "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root), MIRROR],
             "debootstrap")
        _run(["chroot", str(root), "/bin/sh", "-c", CLEANUP], "cleanup")
        partial = out.with_suffix(".partial")
        _run(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "--exclude=./dev/*", "--exclude=./proc/*",
              "--exclude=./sys/*", "-cf", str(partial), "."], "tar")
        partial.rename(out)
    finally:
        _remove(work)
    p.say(f"compose base: built {out.name} ({out.stat().st_size / 2**20:.0f} MiB, {time.monotonic() - t0:.0f} s)")
    return out


def _remove(work: Path) -> None:
    """Unmount what debootstrap may have left mounted inside (proc, sys), then delete the directory; never delete
    through a mount (that would remove the machine's own files)."""
    def mounted() -> list[str]:
        points = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        return sorted((m for m in points if m == str(work) or m.startswith(f"{work}/")), reverse=True)

    for point in mounted():
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
    if left := mounted():
        raise p.StackError(f"compose base: {', '.join(left)} still mounted; not removing {work}")
    shutil.rmtree(work)


def _run(argv: list[str], what: str) -> None:
    """Run a build step; StackError with its output's tail when it fails."""
    res = subprocess.run(argv, capture_output=True, text=True)
    if res.returncode != 0:
        raise p.StackError(f"compose base: {what} failed ({res.returncode})\n{(res.stdout + res.stderr)[-3000:]}")


def cached() -> bool:
    """True when the image or its tarball is already there (the test reports which run it is)."""
    return tarball().exists() or containers.podman("image", "exists", tag()).returncode == 0


if __name__ == "__main__":
    print(ensure())
