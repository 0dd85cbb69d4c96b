"""devstack/cosign.py against a stand-in `go` on PATH: the binary lands in the per-machine cache only whole,
with Go's caches beside it, and an existing one is used without building again."""

import os
import stat
import sys
from pathlib import Path

import pytest

from devstack import cosign
from devstack.processes import StackError

FAKE_GO = """#!/bin/sh
echo "$@ GOMODCACHE=$GOMODCACHE GOCACHE=$GOCACHE GOPATH=$GOPATH CGO_ENABLED=$CGO_ENABLED" >> "{calls}"
[ "{fail}" = yes ] && {{ echo "go: module lookup disabled" >&2; exit 1; }}
printf '#!/bin/sh\\necho cosign\\n' > "$GOBIN/cosign" && chmod +x "$GOBIN/cosign"
"""


@pytest.fixture
def fake_go(tmp_path, monkeypatch):
    def install(fail: bool = False) -> Path:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        go = bin_dir / "go"
        go.write_text(FAKE_GO.format(calls=tmp_path / "calls", fail="yes" if fail else "no"))
        go.chmod(go.stat().st_mode | stat.S_IXUSR)
        monkeypatch.setenv("PATH", f"{bin_dir}:{os.path.dirname(sys.executable)}:/usr/bin:/bin")
        return tmp_path / "calls"

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return install


def test_cosign_is_built_once_into_the_machine_cache_with_gos_caches_beside_it(fake_go, tmp_path):
    calls = fake_go()
    built = cosign.ensure()
    root = tmp_path / "cache" / "promote" / "cosign"
    assert built == root / cosign.version() / "cosign" and built.is_file()
    assert cosign.ensure() == built
    lines = calls.read_text().splitlines()
    assert len(lines) == 1, "the second ensure() builds nothing"
    assert lines[0].startswith(f"install github.com/sigstore/cosign/v2/cmd/cosign@{cosign.version()} ")
    assert f"GOMODCACHE={root}/go/mod GOCACHE={root}/go/build GOPATH={root}/go/path CGO_ENABLED=0" in lines[0]
    assert [path.name for path in root.iterdir() if path.is_dir()] == [cosign.version()], "no staging left behind"


def test_a_failed_build_leaves_no_version_directory_and_says_what_go_said(fake_go, tmp_path):
    fake_go(fail=True)
    with pytest.raises(StackError, match="go: module lookup disabled"):
        cosign.ensure()
    root = tmp_path / "cache" / "promote" / "cosign"
    assert [path.name for path in root.iterdir() if path.is_dir()] == []
