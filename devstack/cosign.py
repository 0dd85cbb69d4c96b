"""The cosign CLI, built from source with Go into a per-machine cache: what tests and CI sign images with.

    python -m devstack.cosign      # build it if needed, print the binary's path

cosign is a Go module: `go install github.com/sigstore/cosign/v2/cmd/cosign@VERSION` through the Go module
proxy builds it (about 6 minutes on 2 cores the first time), so it is built once per machine, not per
checkout: `~/.cache/promote/cosign/<version>/cosign` ($XDG_CACHE_HOME respected), with Go's own module and
build caches beside it (`…/cosign/go/`), as examples/payments/build_image.py keeps its Go cache. The build
goes into a temporary directory renamed into place when it succeeded, under a lock, so a concurrent caller
(another checkout, CI) waits for it and never runs half a binary; an existing binary is used as it is.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from devstack import processes as p

VERSION = "v2.6.5"
"""The newest 2.6 patch the Go module proxy serves (2.6.5 requires Go 1.25; the machine's is newer)."""
MODULE = "github.com/sigstore/cosign/v2/cmd/cosign"
BUILD_TIMEOUT = 30 * 60.0


def version() -> str:
    """The cosign release this project builds and signs with (e.g. v2.6.5)."""
    return VERSION


def cache_root() -> Path:
    """~/.cache/promote/cosign (or under $XDG_CACHE_HOME): one directory per version, and Go's caches."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "promote" / "cosign"


def binary() -> Path:
    """Where this version's cosign binary is (built or not)."""
    return cache_root() / VERSION / "cosign"


def ensure() -> Path:
    """The cosign binary, built first if this machine has none (p.StackError if Go is missing or the build fails)."""
    target = binary()
    if target.is_file():
        return target
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process building the same version: wait for its binary
        if not target.is_file():
            _build(target.parent)
    return target


def _build(directory: Path) -> None:
    """go install into a temporary directory beside `directory`, then rename it into place."""
    go = shutil.which("go")
    if go is None:
        raise p.StackError("cosign: no Go toolchain on PATH (`go`): cosign is built from source with go install")
    p.say(f"cosign: building {VERSION} with go install (about 6 minutes on 2 cores, once per machine)…")
    t0 = time.monotonic()
    staging = Path(tempfile.mkdtemp(prefix=f".{VERSION}.", dir=directory.parent))
    try:
        done = subprocess.run([go, "install", f"{MODULE}@{VERSION}"], env=_go_environment(staging),
                              capture_output=True, text=True, timeout=BUILD_TIMEOUT, stdin=subprocess.DEVNULL)
        if done.returncode != 0 or not (staging / "cosign").is_file():
            raise p.StackError(f"cosign: go install {MODULE}@{VERSION} failed ({done.returncode}):\n"
                               f"{done.stderr.strip()[-3000:]}")
        staging.chmod(0o755)
        if directory.exists():  # left without a binary (removed by hand): we hold the lock, so it is no one's
            shutil.rmtree(directory)
        staging.rename(directory)  # atomic: the version directory appears only with a whole binary in it
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    p.say(f"cosign: built {directory / 'cosign'} in {time.monotonic() - t0:.0f} s")


def _go_environment(bin_dir: Path) -> dict[str, str]:
    """go install's environment: the binary into `bin_dir`, every Go cache under cache_root(), no user config.

    Static (CGO off, as cosign's releases are), the machine's Go only, and the module cache writable so that
    removing ~/.cache/promote/cosign is an ordinary rm -r."""
    go_cache = cache_root() / "go"
    return {**os.environ, "GOBIN": str(bin_dir), "CGO_ENABLED": "0", "GOTOOLCHAIN": "local",
            "GOFLAGS": "-modcacherw -trimpath", "GOENV": "off", "GOWORK": "off",
            "GOPATH": str(go_cache / "path"), "GOCACHE": str(go_cache / "build"),
            "GOMODCACHE": str(go_cache / "mod")}


def main() -> None:
    """Build cosign if needed and print its path."""
    try:
        print(ensure())
    except p.StackError as error:
        raise SystemExit(str(error)) from None


if __name__ == "__main__":
    main()


class CI:
    """cosign as the stack's CI uses it: logged in to the stack's registry as `ci`, signing and attesting with the
    key pair `key_id` (made on first use: private key in var/credentials/cosign/, encrypted with a generated
    password beside it; the public key trusted by gates as var/keys/trusted/<key_id>.pub). Offline: no
    transparency log, no TUF, a proxy on a closed port for anything but the registry."""

    def __init__(self, settings, key_id: str = "ci-release") -> None:
        from devstack import access
        from devstack.registry import credentials

        self.binary = ensure()
        self.key_id = key_id
        self.home = settings.credentials_dir / "cosign"
        self.home.mkdir(parents=True, exist_ok=True)
        self.home.chmod(0o700)
        user, password = credentials("ci")
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        docker = self.home / "docker"
        docker.mkdir(exist_ok=True)
        (docker / "config.json").write_text(json.dumps({"auths": {settings.registry: {"auth": auth}}}))
        (docker / "config.json").chmod(0o600)
        self.env = {"PATH": "/usr/bin:/bin", "HOME": str(self.home), "DOCKER_CONFIG": str(docker),
                    "COSIGN_PASSWORD": access.ensure_secret("cosign", f"{key_id}.password"),
                    "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
                    "NO_PROXY": "127.0.0.1,localhost"}
        self.private = self.home / f"{key_id}.key"
        if not self.private.exists():
            self._run("generate-key-pair", "--output-key-prefix", key_id)
        self.public = self.home / f"{key_id}.pub"
        trusted = settings.trusted_keys_dir / f"{key_id}.pub"
        if not trusted.exists() or trusted.read_bytes() != self.public.read_bytes():
            trusted.parent.mkdir(parents=True, exist_ok=True)
            trusted.write_bytes(self.public.read_bytes())
        trusted.parent.chmod(0o755)  # gates trusts no key that others than its owner may write
        trusted.chmod(0o644)

    def sign(self, image: str) -> None:
        """cosign sign --key of `image` (registry/repository@digest)."""
        self._run("sign", "--key", str(self.private), "--tlog-upload=false", "--yes", "--allow-insecure-registry",
                  image)

    def attest(self, image: str, predicate: dict, kind: str = "slsaprovenance1") -> None:
        """cosign attest --type `kind` of `predicate` for `image`."""
        path = self.home / "predicate.json"
        path.write_text(json.dumps(predicate))
        self._run("attest", "--key", str(self.private), "--type", kind, "--predicate", str(path),
                  "--tlog-upload=false", "--yes", "--allow-insecure-registry", image)

    def _run(self, *args: str) -> None:
        done = subprocess.run([str(self.binary), *args], env=self.env, cwd=self.home, capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise p.StackError(f"cosign {args[0]} failed ({done.returncode}): {done.stderr.strip()[-500:]}")


def slsa_provenance(builder: str, source: str, commit: str, ref: str = "refs/heads/main") -> dict:
    """An SLSA v1 provenance predicate naming the builder and the source repository at `commit`."""
    return {"buildDefinition": {"buildType": "https://promote.example/ci/build/v1",
                                "externalParameters": {"source": f"git+{source}@{ref}"},
                                "resolvedDependencies": [{"uri": f"git+{source}@{ref}", "digest": {"gitCommit": commit}}]},
            "runDetails": {"builder": {"id": builder}}}
