"""The example as an OCI image (examples/payments/build_image.py): the same source and options give the same
bytes, each option gives other bytes, the layer and config say what the image runs and as whom, and the
compiled app answers as the zipapp does. Needs a Go toolchain; the first compile takes ~30 s, later ones are
taken from .cache/payments-image."""

import functools
import hashlib
import io
import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tarfile
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from shared.oci import OCI_MANIFEST, Registry, parse_reference
from shared.platform.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "payments"))
from build import build as build_zipapp  # noqa: E402  (the example's own build scripts)
from build_image import LAYER_TAR, build_image, upload, write_layout  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("go") is None, reason="no Go toolchain to compile the image's app")
ENV = {"APP_ENV": "test", "BUILD_VERSION": "b-7", "FEATURE_NEW_UI": "true"}


@functools.cache
def image(version: str = "2.4.1", **options):
    return build_image(version, **options)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def config_of(built) -> dict:
    return json.loads(built.config)


def test_building_twice_gives_byte_identical_images_even_without_the_binary_cache(tmp_path):
    first, again, uncached = image(), build_image("2.4.1"), build_image("2.4.1", cache=tmp_path)
    assert (first.manifest, first.config, first.layers) == (again.manifest, again.config, again.layers)
    assert (first.manifest, first.config, first.layers) == (uncached.manifest, uncached.config, uncached.layers)
    assert first.digest == sha(first.manifest)


@pytest.mark.parametrize("other", [{"bad": True}, {"faulty": True}, {"label": "x y'"}, {"version": "2.4.2"}])
def test_each_option_and_the_version_give_another_digest(other):
    assert image(**other).digest != image().digest


def test_the_manifest_names_the_config_and_the_one_uncompressed_layer_whose_diff_id_the_config_states():
    built = image()
    manifest = json.loads(built.manifest)
    assert manifest["mediaType"] == OCI_MANIFEST
    layers = [(layer["mediaType"], layer["digest"]) for layer in manifest["layers"]]
    assert layers == [(LAYER_TAR, sha(built.layers[0]))]
    assert manifest["config"]["digest"] == sha(built.config)
    assert config_of(built)["rootfs"] == {"type": "layers", "diff_ids": [sha(built.layers[0])]}


def test_the_layer_holds_only_the_executable_owned_by_root_at_the_epoch():
    with tarfile.open(fileobj=io.BytesIO(image().layers[0])) as layer:
        entries = layer.getmembers()
    assert [(entry.name, entry.type, entry.mode, entry.uid, entry.gid, entry.mtime) for entry in entries] == \
        [("payments", tarfile.REGTYPE, 0o755, 0, 0, 0)]


def test_the_config_runs_the_app_as_nobody_on_linux_amd64_with_its_version_label():
    config = config_of(image())
    assert (config["os"], config["architecture"], config["created"]) == ("linux", "amd64", "1970-01-01T00:00:00Z")
    assert config["config"]["Entrypoint"] == ["/payments"]
    assert config["config"]["User"] == "65534:65534"
    assert config["config"]["ExposedPorts"] == {"8080/tcp": {}}
    assert config["config"]["Labels"]["org.opencontainers.image.version"] == "2.4.1"
    assert config_of(image(label="other"))["config"]["Labels"] == config["config"]["Labels"]  # a label: same version


def test_a_version_the_pipeline_would_refuse_is_refused_before_compiling():
    with pytest.raises(ValueError, match="without spaces, slashes"):
        build_image("2.4 1")


def test_the_layout_written_holds_every_blob_under_its_digest_and_names_the_manifest(tmp_path):
    built = image()
    write_layout(built, tmp_path)
    index = json.loads((tmp_path / "index.json").read_bytes())
    assert json.loads((tmp_path / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    assert [(m["digest"], m["annotations"]["org.opencontainers.image.ref.name"]) for m in index["manifests"]] == \
        [(built.digest, "2.4.1")]
    blobs = {path.name: path.read_bytes() for path in (tmp_path / "blobs" / "sha256").iterdir()}
    assert {f"sha256:{name}" for name in blobs} == {sha(blob) for blob in (built.manifest, built.config, *built.layers)}
    assert all(sha(blob) == f"sha256:{name}" for name, blob in blobs.items())


async def test_a_push_uploads_each_blob_then_the_manifest_under_the_tag():
    pushed: dict[str, bytes] = {}

    def registry(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "HEAD":
            return httpx.Response(200 if path.rsplit("/", 1)[1] in pushed else 404)
        if request.method == "POST":
            return httpx.Response(202, headers={"location": "/v2/payments/blobs/uploads/u1"})
        digest = request.url.params.get("digest") or path.rsplit("/", 1)[1]
        pushed[digest] = request.content
        return httpx.Response(201)

    built = image()
    client = Registry(Settings(), "ci", "pw", transport=httpx.MockTransport(registry))
    async with client:
        assert await upload(client, built, parse_reference("127.0.0.1:18500/payments:2.4.1")) == built.digest
    assert pushed == {sha(built.config): built.config, sha(built.layers[0]): built.layers[0], "2.4.1": built.manifest}


@pytest.mark.parametrize("options", [{}, {"bad": True}, {"faulty": True}])
def test_the_image_s_app_answers_every_endpoint_as_the_zipapp_does(tmp_path, options):
    paths = ["/health", "/version", "/", "/pay", "/", "/health", "/pay", "/nowhere", "/health?verbose"]
    build_zipapp("2.4.1", tmp_path / "app.pyz", **options)
    with serving([sys.executable, str(tmp_path / "app.pyz")]) as port:
        expected = answers(port, paths)
    with serving([str(binary_of(image(**options), tmp_path))]) as port:
        assert answers(port, paths) == expected


def test_the_image_s_app_reports_its_baked_version_and_the_bad_and_faulty_behaviour(tmp_path):
    with serving([str(binary_of(image(bad=True), tmp_path / "bad"))]) as port:
        assert answers(port, ["/health", "/version"]) == [
            (500, {"status": "broken build"}),
            (200, {"version": "2.4.1", "build_version": "b-7", "env": "test", "feature_new_ui": True})]
    with serving([str(binary_of(image(faulty=True), tmp_path / "faulty"))]) as port:
        statuses = [status for status, _ in answers(port, ["/", "/pay", "/health", "/", "/pay"])]
    assert statuses == [200, 500, 200, 200, 500]  # /health does not count


def binary_of(built, where: Path) -> Path:
    """The executable as the layer holds it, extracted (so the test runs what the image runs)."""
    where.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(built.layers[0])) as layer:
        layer.extractall(where, filter="tar")
    return where / "payments"


@contextmanager
def serving(command: list[str]):
    """The app started on a free loopback port, until it has said it listens; terminated afterwards."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"PATH": os.environ["PATH"], "PORT": str(port), "LISTEN_HOST": "127.0.0.1", **ENV}
    app = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        with selectors.DefaultSelector() as ready:
            ready.register(app.stdout, selectors.EVENT_READ)
            assert ready.select(timeout=10), "the app did not say it listens within 10 s"
        assert json.loads(app.stdout.readline())["port"] == port
        yield port
    finally:
        app.terminate()
        app.wait(timeout=10)
        app.stdout.close()


def answers(port: int, paths: list[str]) -> list[tuple[int, dict]]:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=5) as client:
        return [(reply.status_code, reply.json()) for reply in map(client.get, paths)]
