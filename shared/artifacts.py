"""Content-addressed artifact store on the local file system (sha256/<hex>), shared by intake and deployer."""

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse



class ArtifactUnreachable(Exception):
    """The artifact's bytes could not be read; the message says why."""


class ArtifactStore:
    """Copies artifacts in by URI and keeps each under the sha256 of its bytes."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, digest: str) -> Path:
        """Where the artifact with `digest` lives (it may not exist)."""
        return self.root / "sha256" / digest.removeprefix("sha256:")

    def fetch(self, uri: str) -> str:
        """Copy the file at a file:// URI into the store; return the digest of what was copied."""
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            raise ArtifactUnreachable(f"unsupported URI scheme {parsed.scheme!r} (only file:// for now)")
        source = Path(unquote(parsed.path))
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)
        sha = hashlib.sha256()
        try:
            with source.open("rb") as src, tempfile.NamedTemporaryFile(dir=self.root, delete=False) as tmp:
                while chunk := src.read(1 << 20):
                    sha.update(chunk)
                    tmp.write(chunk)
                tmp.flush()
                os.fsync(tmp.fileno())
        except OSError as error:
            raise ArtifactUnreachable(f"cannot read {source}: {error.strerror or error}") from None
        digest = f"sha256:{sha.hexdigest()}"
        target = self.path_for(digest)
        if target.exists():
            os.unlink(tmp.name)
        else:
            os.chmod(tmp.name, 0o555)
            shutil.move(tmp.name, target)
        return digest

    def verify(self, digest: str) -> bool:
        """Recompute the sha256 of the stored file and compare it with `digest`."""
        path = self.path_for(digest)
        if not path.is_file():
            return False
        return file_digest(path) == digest


def file_digest(path: Path) -> str:
    """`sha256:<hex>` of a file's bytes."""
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            sha.update(chunk)
    return f"sha256:{sha.hexdigest()}"
