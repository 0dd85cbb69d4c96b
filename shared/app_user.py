"""The unprivileged account deployed apps run as when the services run as root (apps never run as root)."""

import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path


class AppUserMissing(Exception):
    """The configured app user does not exist (or is root): apps cannot be started safely."""


@dataclass(frozen=True)
class AppUser:
    """Who an app runs as: its name, uid, primary group and home directory."""

    name: str
    uid: int
    gid: int
    home: str


def app_user(name: str) -> AppUser | None:
    """The account apps run as: `name` when this process is root, None (apps run as this user) otherwise."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise AppUserMissing(f"the app user {name!r} does not exist (./dev-stack up creates it: useradd --system "
                             f"--no-create-home --shell /usr/sbin/nologin {name})") from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise AppUserMissing(f"the app user {name!r} has uid or gid 0: apps never run as root")
    return AppUser(name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def unreachable_at(user: AppUser, path: Path) -> Path | None:
    """The first directory above `path` that `user` may not search (None: it can reach `path`).

    Mode bits only (no ACLs): enough to name the usual cause, a checkout under a private home."""
    for directory in reversed(path.absolute().parents):
        try:
            info = directory.stat()
        except OSError:  # missing: starting the app will say so
            return None
        if info.st_uid == user.uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid == user.gid:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return directory
    return None
