"""The console as the API serves it (its page, modules and npm files; what its policy lets the page do), and its
own logic under Node's test runner (console/test/)."""

import base64
import hashlib
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from devstack import console as console_assets
from services.api import console
from shared.platform.settings import REPO_ROOT, Settings


@pytest.fixture(scope="module", autouse=True)
def npm_packages() -> None:
    """console/node_modules as its lockfile says (what ./dev-stack up does before the API starts)."""
    console_assets.assets()


def client(console_dir: Path = REPO_ROOT / "console", **settings) -> TestClient:
    app = FastAPI()
    app.state.ctx = SimpleNamespace(settings=Settings(console_dir=console_dir, **settings),
                                    authenticator=SimpleNamespace(oidc=None))
    console.routes(app)
    return TestClient(app)


def test_the_page_may_run_only_its_own_scripts_and_its_import_map_and_may_not_be_framed():
    answer = client().get("/console/")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    policy = answer.headers["content-security-policy"]
    inline = re.search(r'<script type="importmap">(.*?)</script>', answer.text, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
    assert f"script-src 'self' 'sha256-{digest}';" in policy
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy and "connect-src 'self';" in policy
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert "http://" not in answer.text and "https://" not in answer.text  # nothing is loaded from elsewhere


def test_with_an_oidc_issuer_the_page_may_connect_to_it_and_no_other():
    policy = client(oidc_issuer="https://id.example.org/realms/promote").get("/console/").headers[
        "content-security-policy"]
    assert "connect-src 'self' https://id.example.org;" in policy


def test_every_module_the_page_imports_is_served_from_here():
    http = client()
    page = http.get("/console/").text
    imports = re.search(r'<script type="importmap">(.*?)</script>', page, re.S).group(1)
    for path in re.findall(r'"(/console/[^"]+)"', imports) + re.findall(r'src="(/console/[^"]+)"', page):
        answer = http.get(path)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/javascript"), path
    for module in (REPO_ROOT / "console" / "src").glob("*.js"):
        for imported in re.findall(r'from "\./([^"]+)"', module.read_text()):
            assert http.get(f"/console/app/{imported}").status_code == 200, (module.name, imported)


@pytest.mark.parametrize("path", ["/console/app/..%2F..%2Fpyproject.toml", "/console/app/.hidden.js",
                                  "/console/app/app.py", "/console/vendor/preact/package.json",
                                  "/console/vendor/..%2Fpackage.json", "/console/app/index.html"])
def test_nothing_but_the_console_files_is_served(path):
    assert client().get(path).status_code == 404


def test_without_its_npm_packages_the_console_says_which_step_installs_them(tmp_path):
    shutil.copytree(REPO_ROOT / "console" / "src", tmp_path / "src")
    answer = client(tmp_path).get("/console/vendor/preact.js")
    assert answer.status_code == 503 and "npm ci" in answer.json()["detail"]


def test_the_config_offers_no_oidc_sign_in_without_an_issuer():
    assert client().get("/console/config.json").json() == {"oidc": None}


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_console_logic_passes_its_own_tests_under_node():
    ran = subprocess.run(["node", "--test", "test/"], cwd=REPO_ROOT / "console", capture_output=True, text=True,
                         timeout=120)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-2000:]
    assert re.search(r"^# pass [1-9]", ran.stdout, re.M) and re.search(r"^# fail 0$", ran.stdout, re.M)


def _luminance(colour: str) -> float:
    channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


@pytest.mark.parametrize(("ink", "paper"), [
    ("ink", "paper"), ("muted", "paper"), ("muted", "band"), ("ok", "paper"), ("ok", "ok-bg"), ("bad", "paper"),
    ("bad", "bad-bg"), ("warn", "paper"), ("warn", "warn-bg"), ("busy", "paper"), ("busy", "band"), ("ink", "band"),
])
def test_the_console_text_colours_have_at_least_aa_contrast_on_their_backgrounds(ink, paper):
    colours = dict(re.findall(r"--([a-z-]+): (#[0-9a-f]{6})", (REPO_ROOT / "console/src/style.css").read_text()))
    lighter, darker = sorted((_luminance(colours[ink]), _luminance(colours[paper])), reverse=True)
    assert (lighter + 0.05) / (darker + 0.05) >= 4.5
