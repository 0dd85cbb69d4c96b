"""The layers stay apart: the wire contracts import nothing of the platform, the services or the CLI, and a
service imports no other service (docs/architecture.md, sections 1 and 2)."""

import ast
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
