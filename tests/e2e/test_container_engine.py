"""The chain the container driver will stand on, on the real parts: the example built as an image from source,
pushed to the stack's registry as CI, registered by intake, pulled by digest through podman's Docker Engine
API with the deployer's login, and served as the unprivileged user its config names."""

import asyncio
import sys
import time
from pathlib import Path

import docker
import httpx
import pytest

from devstack import containers, registry
from shared.contracts.events import Artifact, BuildCompleted

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "payments"))
from build_image import build_image, push  # noqa: E402  (the example's own image build)

pytestmark = pytest.mark.e2e


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_an_image_built_from_source_is_registered_then_pulled_by_digest_and_served(scenario):
    image = build_image("5.0.0")
    reference = f"{scenario.settings.registry}/{scenario.service}:5.0.0"
    digest = await push(image, reference, scenario.settings)
    assert digest == image.digest
    await scenario.send(BuildCompleted(service=scenario.service, version="5.0.0", commit="c0ffee", author="alice",
                                       artifact=Artifact(kind="oci", uri=reference, digest=digest)))
    location = (await scenario.wait("artifact.registered", version="5.0.0")).data.location
    assert location == f"{scenario.settings.registry}/{scenario.service}@{digest}"

    engine = docker.DockerClient(base_url=f"unix://{containers.socket_path()}")
    user, password = registry.credentials("deployer")
    pulled = await asyncio.to_thread(engine.images.pull, location, auth_config={"username": user,
                                                                                "password": password})
    assert location in pulled.attrs["RepoDigests"]  # what the driver will verify a container runs
    port = free_port()
    container = await asyncio.to_thread(
        engine.containers.run, location, detach=True, environment={"PORT": "8080", "BUILD_VERSION": "5.0.0"},
        ports={"8080/tcp": ("127.0.0.1", port)}, labels={"promote.service": scenario.service})
    try:
        answer = await version_of(port)
        assert answer["version"] == "5.0.0"
        container.reload()
        assert container.attrs["Config"]["User"] == "65534:65534"  # never root
        assert container.attrs["Image"] == pulled.id
    finally:
        await asyncio.to_thread(container.remove, force=True)
        engine.close()


async def version_of(port: int, timeout: float = 15.0) -> dict:
    """GET /version once the container answers (it starts in well under a second here)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while True:
            try:
                return (await client.get(f"http://127.0.0.1:{port}/version")).json()
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
