"""The layers stay apart: the wire contracts import nothing of the platform, the services or the CLI, and a
service imports no other service (docs/architecture.md, sections 1 and 2)."""

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported(path: Path) -> set[str]:
    """Every module `path` imports, absolute names only (the project uses no relative imports)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: a relative import"
            names.add(node.module or "")
    return names


def offending(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(f"{path.relative_to(ROOT)} imports {name}" for path in (ROOT / folder).rglob("*.py")
                  for name in imported(path) if name.startswith(forbidden))


def test_contracts_import_no_platform_service_or_cli() -> None:
    assert offending("shared/contracts", ("shared.platform", "services", "cli", "devstack")) == []


def test_platform_imports_no_service_or_cli() -> None:
    assert offending("shared/platform", ("services", "cli", "devstack")) == []


@pytest.mark.parametrize("service", sorted(p.name for p in (ROOT / "services").iterdir()
                                           if p.is_dir() and (p / "__init__.py").exists()))
def test_a_service_imports_no_other_service(service: str) -> None:
    others = tuple(f"services.{p.name}" for p in (ROOT / "services").iterdir()
                   if p.is_dir() and p.name != service and (p / "__init__.py").exists())
    assert offending(f"services/{service}", others) == []


def test_the_check_sees_an_import() -> None:
    """The checker itself: a file that imports the platform is found (so an empty result means something)."""
    assert "shared.platform.db" in imported(ROOT / "shared" / "platform" / "runtime.py")


def test_the_repository_root_is_found_from_where_its_modules_live() -> None:
    """Moving a module deeper must not move the stack's var/ (it did once: shared/var after the split)."""
    from devstack.processes import REPO_ROOT as devstack_root
    from shared.platform.settings import REPO_ROOT, Settings

    assert REPO_ROOT == devstack_root == ROOT and (REPO_ROOT / "pyproject.toml").is_file()
    assert Settings().var_dir == ROOT / "var"


def _requirement(text: str) -> tuple[str, set[str]]:
    """(distribution name, its extras) of a requirement such as `pyjwt[crypto]==2.15.1`."""
    match = re.match(r"\s*([A-Za-z0-9._-]+)\s*(?:\[([^\]]*)\])?", text)
    assert match, text
    extras = {extra.strip() for extra in (match.group(2) or "").split(",") if extra.strip()}
    return match.group(1).lower().replace("_", "-"), extras


def _needed_by(distribution: str, extras: set[str], seen: set[str]) -> set[str]:
    """`distribution` and every distribution it requires, with `extras`, as installed."""
    if distribution in seen:
        return seen
    seen.add(distribution)
    try:
        requires = metadata.requires(distribution) or []
    except metadata.PackageNotFoundError:
        return seen
    for requirement in requires:
        marker = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", requirement)
        if marker is None or marker.group(1) in extras:
            _needed_by(*_requirement(requirement.split(";")[0]), seen)
    return seen


def test_what_runs_imports_only_what_the_image_installs():
    """The services, the CLI and the stack import only the project's own dependencies (and what those need), not
    a test extra that happens to be in the venv: the image installs `dependencies` alone (seen: the notifier
    importing PyYAML ran here and crashed in its container)."""
    installed: set[str] = set()
    for requirement in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        _needed_by(*_requirement(requirement), installed)
    providers = metadata.packages_distributions()
    local = {"services", "shared", "cli", "devstack", "tests"} | {p.stem for p in (ROOT / "examples").rglob("*.py")}
    missing = set()
    for folder in ("services", "shared", "cli", "devstack"):
        for path in (ROOT / folder).rglob("*.py"):
            for name in imported(path):
                top = name.split(".")[0]
                if not top or top in local or top in sys.stdlib_module_names:
                    continue
                distributions = {d.lower().replace("_", "-") for d in providers.get(top, [top])}
                if not distributions & installed:
                    missing.add(f"{path.relative_to(ROOT)} imports {top} ({', '.join(sorted(distributions))})")
    assert sorted(missing) == []
