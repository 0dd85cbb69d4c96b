"""The web console's npm packages and the browser its tests drive.

`assets()` runs `npm ci` in console/ when its lockfile changed since the last install (the API serves
console/node_modules' files; npm's cache is .cache/npm, so a later run on this machine downloads nothing);
`chromium()` is Debian's Chromium, installed with apt-get when missing (tests/browser/ drives it with
Playwright). Neither is needed by anything else, so a machine without npm still runs the stack: the console
answers 503 naming this step.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from pathlib import Path

from devstack import processes as p

CONSOLE = p.REPO_ROOT / "console"
STAMP = CONSOLE / "node_modules" / ".package-lock.sha256"
CHROMIUM = Path("/usr/bin/chromium")


def assets() -> Path:
    """console/node_modules as console/package-lock.json says (npm ci, only when the lockfile changed)."""
    lock = CONSOLE / "package-lock.json"
    want = hashlib.sha256(lock.read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == want:
        return CONSOLE / "node_modules"
    npm = shutil.which("npm")
    if npm is None:
        p.say("console: npm not found; the console is not served until its packages are installed (apt-get install npm)")
        return CONSOLE / "node_modules"
    t0 = time.monotonic()
    res = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--cache",
                          str(p.REPO_ROOT / ".cache" / "npm")], cwd=CONSOLE, capture_output=True, text=True)
    if res.returncode != 0:
        raise p.StackError(f"console: npm ci failed\n{(res.stdout + res.stderr)[-2000:]}")
    STAMP.write_text(want + "\n")
    p.say(f"console: npm packages installed ({time.monotonic() - t0:.1f} s)")
    return CONSOLE / "node_modules"


def chromium() -> Path:
    """Debian's Chromium (apt-get install chromium when missing, as root)."""
    return p.apt_install("chromium", ("chromium",), CHROMIUM)
