"""The unprivileged account the local driver runs apps as (Settings.app_user), created when missing."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess

from devstack import processes as p
from shared.platform.settings import Settings


def ensure_app_user() -> None:
    """As root, create the app user (a system account: no home, no login shell) unless it exists."""
    name = Settings().app_user
    if os.geteuid() != 0:
        return  # apps run as the user who runs the stack
    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    argv = [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
            "--shell", "/usr/sbin/nologin", name]
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise p.StackError(f"cannot create the app user {name}: {result.stderr.strip() or result.returncode}")
    p.say(f"app user: created {name} (deployed apps run as it, never as root)")
