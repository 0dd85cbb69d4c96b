"""Opens the file a `file://` artifact URI names, only if it is a regular file under a configured root.

Whoever can publish `build.completed` chooses the URI, and intake reads it with the service's
privileges, so the URI is untrusted: no host part, percent-decoded exactly once, an absolute
normalised path (no `.`, `..` or `//`) inside one of the artifact roots. The roots' own symlinks
are resolved (an operator may point a root anywhere); below a root nothing is followed: the
path is opened one component at a time, each relative to the directory already opened
(`dir_fd`) and with O_NOFOLLOW, so a symlinked directory or file is refused and no rename
between a check and the open can lead elsewhere (comparing `realpath` first would leave that
window open). The file is opened O_NONBLOCK (a FIFO does not wait for a writer) and `fstat`
must then show a regular file with one link: FIFOs, sockets, devices and directories are
refused, and so is a hard link, which may be another file of the host. Creating a device node
needs root, so opening before `fstat` cannot touch a device an outsider put there.
Messages say why a file is refused, never what it contains.
"""

import os
import posixpath
import stat
from pathlib import Path
from urllib.parse import unquote, urlsplit

LOCAL_HOSTS = ("", "localhost")


class ArtifactUnreachable(Exception):
    """The artifact's bytes could not or may not be read; the message says why (never what they hold)."""


def source_path(uri: str) -> str:
    """The absolute, normalised local path a `file://` URI names; refused with the reason otherwise."""
    parts = urlsplit(uri)
    if parts.scheme != "file":
        raise ArtifactUnreachable(f"unsupported URI scheme {parts.scheme!r} (only file://)")
    if parts.netloc not in LOCAL_HOSTS:
        raise ArtifactUnreachable(f"a file:// URI with a host part ({parts.netloc!r}) is refused: local files only")
    if parts.query or parts.fragment:
        raise ArtifactUnreachable("a file:// URI with a query or a fragment is refused")
    try:
        path = unquote(parts.path, errors="strict")  # once: %252e stays the three characters %2e
    except UnicodeDecodeError:
        raise ArtifactUnreachable("the URI's path is not valid UTF-8 once percent-decoded") from None
    if "\0" in path or not path.startswith("/") or path.startswith("//") or posixpath.normpath(path) != path:
        raise ArtifactUnreachable(f"path {path!r} is not absolute and normalised (no '.', '..', '//' or NUL)")
    return path


def below_root(path: str, roots: list[Path]) -> tuple[str, list[str]]:
    """The resolved root that holds `path`, and the path's components below it."""
    for root in roots:
        for prefix in {posixpath.normpath(str(root)), os.path.realpath(root)}:
            base = prefix.rstrip("/") + "/"
            if path.startswith(base) and len(path) > len(base):
                return os.path.realpath(root), path[len(base):].split("/")
    raise ArtifactUnreachable(f"{path} is outside the artifact roots ({', '.join(str(r) for r in roots)})")


def open_artifact(uri: str, roots: list[Path]) -> tuple[int, os.stat_result]:
    """A read-only fd of the regular file `uri` names under one of `roots`, with its `fstat`."""
    path = source_path(uri)
    root, names = below_root(path, roots)
    try:
        directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ArtifactUnreachable(f"no file at {path} (the artifact root {root} does not exist)") from None
    try:
        for name in names[:-1]:
            below = _open_below(directory, name, os.O_RDONLY | os.O_DIRECTORY, path)
            os.close(directory)
            directory = below
        fd = _open_below(directory, names[-1], os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY, path)
    finally:
        os.close(directory)
    info = os.fstat(fd)
    refusal = _not_plain(info)
    if refusal:
        os.close(fd)
        raise ArtifactUnreachable(f"{path} {refusal}: refused (artifacts are regular files under the roots)")
    return fd, info


def _open_below(directory: int, name: str, flags: int, path: str) -> int:
    """Open `name` in the directory `directory` without following it if it is a symlink."""
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
    except FileNotFoundError:
        raise ArtifactUnreachable(f"no file at {path}") from None
    except OSError as error:
        if _is_symlink(directory, name):
            raise ArtifactUnreachable(f"{path}: {name!r} is a symbolic link: refused (nothing below an "
                                      "artifact root is followed)") from None
        raise ArtifactUnreachable(f"cannot open {path}: {error.strerror or error}") from None


def _is_symlink(directory: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _not_plain(info: os.stat_result) -> str | None:
    """Why a file is not a plain regular file (None when it is)."""
    kinds = ((stat.S_ISDIR, "is a directory"), (stat.S_ISFIFO, "is a FIFO"), (stat.S_ISSOCK, "is a socket"),
             (stat.S_ISCHR, "is a character device"), (stat.S_ISBLK, "is a block device"))
    for test, says in kinds:
        if test(info.st_mode):
            return says
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if info.st_nlink != 1:
        return f"has {info.st_nlink} hard links (it may be another file of the host)"
    return None
