"""What the tests against the real cosign share: a private docker-registry, the cosign CLI kept offline, its keys,
and the example image pushed to the registry.

A test module imports the fixtures it uses (`from tests.cosign_support import binary, cosign, host, keys, registry`)
and sets `pytestmark = COSIGN_MARKS`. Module-scoped fixtures are per importing module: each gets its own registry
and cosign home. cosign (devstack.cosign.ensure(): built once per machine, ~6 minutes the first time) is kept off
every network but the registry: its one outside call (TUF, for a trusted root it does not need with --key) is
answered by an empty --trusted-root, and a proxy on a closed loopback port catches anything else.
"""

import json
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devstack import cosign as cosign_build
from shared.oci import Registry, image_manifest, parse_reference
from shared.platform.settings import Settings
from shared.signature_keys import TrustedKey

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "payments"))
from build_image import LAYER_TAR, Image, compile_app, config_of, layer_of, upload  # noqa: E402

REGISTRY_BINARY = Path("/usr/bin/docker-registry")
PASSWORD = "test-only"


def _missing() -> str | None:
    if not REGISTRY_BINARY.exists():
        return "Debian's docker-registry is not installed (apt-get install docker-registry)"
    if shutil.which("go") is None:
        return "no Go toolchain: cosign and the example image are built from source"
    return None


COSIGN_MARKS = [
    pytest.mark.skipif(_missing() is not None, reason=_missing() or ""),
    # The first test on a new machine builds cosign (~6 min on 2 cores) in its setup; later ones take seconds.
    pytest.mark.timeout(cosign_build.BUILD_TIMEOUT + 120),
]


@pytest.fixture(scope="module")
def host(tmp_path_factory) -> str:
    """host:port of a private registry (no logins, storage in a temporary directory), stopped afterwards."""
    root = tmp_path_factory.mktemp("registry")
    port = _free_port()
    (root / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'storage'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n")
    log = open(root / "registry.log", "wb")
    process = subprocess.Popen([str(REGISTRY_BINARY), "serve", str(root / "config.yml")], stdout=log,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"})
    try:
        _wait_for(f"http://127.0.0.1:{port}/v2/", process, root / "registry.log")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)
        log.close()


@dataclass(frozen=True)
class Cosign:
    """The real cosign CLI, with its home, Docker config and proxy in a temporary directory."""

    binary: Path
    home: Path
    env: dict

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.binary), *args], env=self.env, cwd=self.home, capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)

    def key_pair(self, name: str) -> tuple[Path, Path]:
        """cosign generate-key-pair: (NAME.key, NAME.pub)."""
        done = self.run("generate-key-pair", "--output-key-prefix", name)
        assert done.returncode == 0, done.stderr
        return self.home / f"{name}.key", self.home / f"{name}.pub"

    def imported(self, name: str, private_key) -> tuple[Path, Path]:
        """cosign import-key-pair of a key made with cryptography (RSA, Ed25519, P-384)."""
        pem = self.home / f"{name}.pem"
        pem.write_bytes(private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
        done = self.run("import-key-pair", "--key", str(pem), "--output-key-prefix", name)
        assert done.returncode == 0, done.stderr
        return self.home / f"{name}.key", self.home / f"{name}.pub"

    def sign(self, key: Path, image: str, *extra: str) -> None:
        done = self.run("sign", "--key", str(key), "--tlog-upload=false", "--yes", "--allow-insecure-registry",
                        *extra, image)
        assert done.returncode == 0, done.stderr

    def verifies(self, public: Path, image: str) -> bool:
        """What `cosign verify --key` says (no transparency log, no TUF: an empty trusted root)."""
        return self._verified("verify", public, image)

    def attest(self, key: Path, image: str, predicate: dict, kind: str = "slsaprovenance1") -> None:
        """cosign attest of `predicate` (cosign wraps it in an in-toto Statement of the image's digest)."""
        path = self.home / "predicate.json"
        path.write_text(json.dumps(predicate))
        done = self.run("attest", "--key", str(key), "--type", kind, "--predicate", str(path), "--tlog-upload=false",
                        "--yes", "--allow-insecure-registry", image)
        assert done.returncode == 0, done.stderr

    def verifies_attestation(self, public: Path, image: str, kind: str = "slsaprovenance1") -> bool:
        """What `cosign verify-attestation --key --type` says (offline, as `verifies`)."""
        return self._verified("verify-attestation", public, image, "--type", kind)

    def _verified(self, command: str, public: Path, image: str, *extra: str) -> bool:
        done = self.run(command, "--key", str(public), "--insecure-ignore-tlog=true", "--trusted-root",
                        str(self.home / "trusted_root.json"), "--allow-insecure-registry", *extra, image)
        assert "tuf" not in done.stderr.lower(), done.stderr  # it went looking for TUF: not offline
        return done.returncode == 0


@pytest.fixture(scope="module")
def cosign(tmp_path_factory) -> Cosign:
    binary = cosign_build.ensure()
    home = tmp_path_factory.mktemp("cosign")
    trusted_root = {"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1"}
    (home / "trusted_root.json").write_text(json.dumps(trusted_root))
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: a connection to it is refused at once
    proxy = f"http://127.0.0.1:{closed.getsockname()[1]}"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "DOCKER_CONFIG": str(home / "docker"),
           "COSIGN_PASSWORD": PASSWORD, "HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "NO_PROXY": "127.0.0.1,localhost"}
    yield Cosign(binary, home, env)
    closed.close()


@dataclass(frozen=True)
class Keys:
    release: tuple[Path, Path]
    other: tuple[Path, Path]
    rsa: tuple[Path, Path]

    def trusted(self, *names: str) -> list[TrustedKey]:
        return [TrustedKey.from_pem(name, getattr(self, name.removeprefix("ci-"))[1].read_bytes()) for name in names]


@pytest.fixture(scope="module")
def keys(cosign: Cosign) -> Keys:
    return Keys(cosign.key_pair("release"), cosign.key_pair("other"),
                cosign.imported("rsa", rsa.generate_private_key(65537, 3072)))


@pytest.fixture(scope="module")
def binary() -> bytes:
    """The example app, compiled once (the images below differ by their config)."""
    return compile_app("2.4.1", bad=False, faulty=False, label="")


@pytest.fixture
async def registry(host: str):
    async with Registry(Settings(registry=host)) as client:
        yield client


async def pushed(registry: Registry, host: str, binary: bytes, version: str) -> str:
    """The example image of `version` pushed to host/payments:version; registry/payments@digest."""
    layer = layer_of(binary)
    config = config_of(version, layer)
    image = Image(version, config, (layer,), image_manifest(config, [(layer, LAYER_TAR)]))
    await upload(registry, image, parse_reference(f"{host}/payments:{version}"))
    return f"{host}/payments@{image.digest}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(url: str, process: subprocess.Popen, log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"docker-registry exited ({process.returncode}): {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    pytest.fail(f"docker-registry did not answer on {url} within {timeout:.0f} s")
