"""Build the payments artifact: one executable file (a Python zipapp), reproducible byte for byte.

    python examples/payments/build.py --version 2.4.1 --out var/drop/payments-2.4.1.pyz
    python examples/payments/build.py --version 2.4.2 --bad ...   # /health answers 500
    python examples/payments/build.py --version 2.4.3 --faulty ...  # every 2nd GET / and /pay answers 500

Prints the artifact's `sha256:` digest. Intake reads artifacts only under its roots (the drop
directory var/drop by default); `promote build-completed --file` copies one from elsewhere there. The same inputs give the same bytes; `--label`
changes the bytes without changing the version (to show an immutability violation).
"""

import argparse
import hashlib
import importlib
import io
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXED_TIME = (2020, 1, 1, 0, 0, 0)


def _vendored(package: str) -> dict[str, bytes]:
    """The pure-Python files of an installed package (the version pyproject.toml pins), to ship inside the app."""
    root = Path(importlib.import_module(package).__file__).parent
    return {f"{package}/{path.relative_to(root).as_posix()}": path.read_bytes()
            for path in sorted(root.rglob("*.py")) if "__pycache__" not in path.parts}


def build(version: str, out: Path, *, bad: bool = False, label: str = "", faulty: bool = False) -> str:
    """Write the zipapp to `out` and return its digest."""
    baked = f"VERSION = {version!r}\nBROKEN = {bad!r}\nLABEL = {label!r}\nFAULTY = {faulty!r}\n"
    members = {
        "__main__.py": (HERE / "__main__.py").read_bytes(),
        "app.py": (HERE / "app.py").read_bytes(),
        "_build.py": baked.encode(),
        **_vendored("prometheus_client"),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, members[name])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"#!/usr/bin/env python3\n" + buffer.getvalue())
    out.chmod(0o755)
    return "sha256:" + hashlib.sha256(out.read_bytes()).hexdigest()


def main() -> None:
    """Command line: build one artifact and print its digest."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--bad", action="store_true", help="build a version whose health check fails")
    parser.add_argument("--faulty", action="store_true",
                        help="build a version that is healthy but answers 500 to every second GET / and /pay")
    parser.add_argument("--label", default="", help="extra bytes baked in (same version, other digest)")
    args = parser.parse_args()
    print(build(args.version, args.out, bad=args.bad, label=args.label, faulty=args.faulty))


if __name__ == "__main__":
    main()
