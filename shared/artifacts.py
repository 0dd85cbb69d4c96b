"""Content-addressed artifact store on the local file system (sha256/<hex>), shared by intake and deployer.

Bytes enter only through `fetch`, which opens the source with `artifact_source.open_artifact`
(a regular file under a configured root, nothing followed below it), refuses a file over the size
limit by its `fstat` size and again while streaming (a file may grow), hashes it while copying
into a private temporary file (0600, in the store) and renames that into place only when the
digest is the claimed one: a mismatch, a timeout or an error leaves nothing behind.

Permissions: the store belongs to the service user (root on the local stack). When the services
run as root, deployed apps run as the unprivileged app user (Settings.app_user), so the store's
directories are mode 0710 and its files 0550, group-owned by the app user's group: the app user
can reach and execute a file whose digest it names, and can list nothing; other users cannot
enter the store at all. Without root (apps run as the service user) the modes are 0700 and 0500.
"""

import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from shared.app_user import AppUserMissing, app_user
from shared.artifact_source import ArtifactUnreachable, open_artifact
from shared.platform.settings import Settings

__all__ = ["ArtifactStore", "ArtifactUnreachable", "DigestMismatch", "file_digest"]
CHUNK = 1 << 20
MISMATCH = "digest mismatch: the file's bytes do not match the claimed digest"


class DigestMismatch(Exception):
    """The file's bytes do not have the claimed digest; nothing was stored (and no hash is told)."""


class ArtifactStore:
    """Copies artifacts in by URI and keeps each under the sha256 of its bytes."""

    def __init__(self, root: Path, sources: list[Path], *, max_bytes: int, timeout_s: float,
                 group: int | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.root, self.sources, self.max_bytes, self.timeout_s = root, sources, max_bytes, timeout_s
        self.group, self.clock = group, clock  # group: the app user's, which may enter and run (None: owner only)
        self.dir_mode, self.file_mode = (0o700, 0o500) if group is None else (0o710, 0o550)
        self._dirs_ready = False

    @classmethod
    def from_settings(cls, settings: Settings) -> "ArtifactStore":
        """The store under settings.store_dir, fetching from the artifact roots within the limits set there."""
        try:
            user = app_user(settings.app_user)
        except AppUserMissing:
            user = None  # the deployer refuses to start apps until the user exists
        return cls(settings.store_dir, settings.artifact_roots, max_bytes=settings.artifact_max_bytes,
                   timeout_s=settings.artifact_fetch_timeout_s, group=user.gid if user else None)

    def path_for(self, digest: str) -> Path:
        """Where the artifact with `digest` lives (it may not exist)."""
        return self.root / "sha256" / digest.removeprefix("sha256:")

    def fetch(self, uri: str, claimed: str) -> Path:
        """Copy the file at a file:// URI into the store if its bytes have the `claimed` digest; where it is kept.

        Raises DigestMismatch or ArtifactUnreachable (with the reason); either way nothing is stored.
        """
        try:
            fd, info = open_artifact(uri, self.sources)
            with open(fd, "rb", buffering=0) as source:
                if info.st_size > self.max_bytes:  # refused unread: a sparse file costs nothing here
                    raise ArtifactUnreachable(f"the file has {info.st_size} bytes, more than the limit of "
                                              f"{self.max_bytes} (artifact_max_bytes)")
                self._ensure_dirs()
                return self._copy(source, claimed)
        except ArtifactUnreachable:
            # A rebuild replays old builds whose files are gone, or lie where intake no longer reads
            # (before the roots existed): bytes the store already holds under the claimed digest
            # (re-hashed now) are the artifact that was registered. The refused path is never read.
            if self.verify(claimed):
                return self.path_for(claimed)
            raise

    def _copy(self, source, claimed: str) -> Path:
        """Stream `source` into a private temporary file, then rename it into place if its digest is `claimed`."""
        handle, temporary = tempfile.mkstemp(dir=self.root, prefix=".fetch-")  # mode 0600: ours alone
        try:
            with open(handle, "wb") as target:
                if self._stream(source, target) != claimed:
                    raise DigestMismatch(MISMATCH)
                target.flush()
                if self.group is not None:
                    os.fchown(target.fileno(), -1, self.group)
                os.fchmod(target.fileno(), self.file_mode)
                os.fsync(target.fileno())
            final = self.path_for(claimed)
            if final.exists():  # stored before (or by a concurrent fetch): keep the file apps may run,
                os.unlink(temporary)  # with the modes described above (a store from before them heals)
                if self.group is not None:
                    os.chown(final, -1, self.group)
                os.chmod(final, self.file_mode)
            else:
                os.rename(temporary, final)
            return final
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    def _stream(self, source, target) -> str:
        """Copy at most max_bytes, hashing as it goes, within the fetch deadline; the `sha256:` digest."""
        sha, copied, deadline = hashlib.sha256(), 0, self.clock() + self.timeout_s
        while chunk := _read(source, min(CHUNK, self.max_bytes + 1 - copied)):
            copied += len(chunk)
            if copied > self.max_bytes:
                raise ArtifactUnreachable(f"the file grew past the limit of {self.max_bytes} bytes while read")
            sha.update(chunk)
            target.write(chunk)
            if self.clock() > deadline:  # between chunks: a slow disk or file system fails the build
                raise ArtifactUnreachable(f"fetching took longer than {self.timeout_s:g} s "
                                          "(artifact_fetch_timeout_s); nothing was stored")
        return f"sha256:{sha.hexdigest()}"

    def _ensure_dirs(self) -> None:
        """Create the store and give it the modes described above, once per process (four system calls per fetch
        otherwise, for nothing)."""
        if self._dirs_ready:
            return
        for directory in (self.root, self.root / "sha256"):
            directory.mkdir(parents=True, exist_ok=True)
            if self.group is not None:
                os.chown(directory, -1, self.group)
            os.chmod(directory, self.dir_mode)
        self._dirs_ready = True

    def verify(self, digest: str) -> bool:
        """Recompute the sha256 of the stored file and compare it with `digest`."""
        path = self.path_for(digest)
        if not path.is_file():
            return False
        return file_digest(path) == digest


def _read(source, size: int) -> bytes:
    """Up to `size` bytes of the source; a read error is the source's (not the store's, which is retried)."""
    try:
        return source.read(size)
    except OSError as error:
        raise ArtifactUnreachable(f"cannot read the file: {error.strerror or error}") from None


def file_digest(path: Path) -> str:
    """`sha256:<hex>` of a file's bytes."""
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            sha.update(chunk)
    return f"sha256:{sha.hexdigest()}"
