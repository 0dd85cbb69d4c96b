"""Images from the stack's real registry (distribution 2.8 with htpasswd logins): intake resolves the reference,
accepts it only for the build's digest with every blob present, records repository@digest, and waits out a
registry outage with nothing lost or dead-lettered."""

import asyncio
import json
import time
import uuid

import httpx
import pytest

import devstack
from devstack import registry as stack_registry
from shared.contracts.events import Artifact, BuildCompleted
from shared.oci import OCI_MANIFEST, Registry, image_manifest, parse_reference
from tests.e2e.support import dead_letters, dlq_end, promote_async

pytestmark = pytest.mark.e2e


async def push_image(settings, repository: str, tag: str, content: bytes | None = None) -> str:
    """Push a one-layer image as CI does (login `ci`); its manifest digest."""
    ref = parse_reference(f"{settings.registry}/{repository}:{tag}")
    config = b'{"architecture":"amd64","os":"linux","config":{}}'
    layer = content or uuid.uuid4().bytes
    async with Registry.from_settings(settings, "ci") as ci:
        for blob in (config, layer):
            await ci.push_blob(ref, blob)
        return await ci.push_manifest(ref, image_manifest(config, [(layer, "application/vnd.oci.image.layer.v1.tar")]),
                                      OCI_MANIFEST)


def image_build(scenario, version: str, reference: str, digest: str) -> BuildCompleted:
    return BuildCompleted(service=scenario.service, version=version, commit="c0ffee", author="alice",
                          artifact=Artifact(kind="oci", uri=reference, digest=digest))


async def test_an_image_is_registered_by_its_manifest_digest_with_its_repository(scenario):
    digest = await push_image(scenario.settings, scenario.service, "1.0.0")
    reference = f"{scenario.settings.registry}/{scenario.service}:1.0.0"
    await scenario.send(image_build(scenario, "1.0.0", reference, digest))
    registered = await scenario.wait("artifact.registered", version="1.0.0")
    assert (registered.data.kind, registered.data.digest) == ("oci", digest)
    assert registered.data.location == f"{scenario.settings.registry}/{scenario.service}@{digest}"
    assert registered.data.tag == reference


async def test_an_image_by_digest_reference_is_registered_too(scenario):
    digest = await push_image(scenario.settings, scenario.service, "1.0.0")
    await scenario.send(image_build(scenario, "1.0.0", f"{scenario.settings.registry}/{scenario.service}@{digest}",
                                    digest))
    assert (await scenario.wait("artifact.registered", version="1.0.0")).data.digest == digest


@pytest.mark.parametrize(("case", "reason", "says"), [
    ("other bytes", "digest-mismatch", "resolves to other bytes than the build's digest"),
    ("unknown tag", "artifact-unreachable", "unknown repository or tag: {registry}/{service}:9.9.9 (404: "
                                            "MANIFEST_UNKNOWN)"),
    ("unknown repository", "artifact-unreachable", "unknown repository or tag: {registry}/nosuch-{service}:1.0.0 "
                                                   "(404: MANIFEST_UNKNOWN)"),  # distribution 2.8 says so for both
    ("foreign registry", "artifact-unreachable", "registry ghcr.io is not one images may come from"),
    ("no registry", "artifact-unreachable", "names no registry"),
])
async def test_an_image_that_is_not_the_build_s_is_rejected_with_its_reason(scenario, case, reason, says):
    registry = scenario.settings.registry
    digest = await push_image(scenario.settings, scenario.service, "1.0.0")
    reference, claimed = {
        "other bytes": (f"{registry}/{scenario.service}:1.0.0", "sha256:" + "0" * 64),
        "unknown tag": (f"{registry}/{scenario.service}:9.9.9", digest),
        "unknown repository": (f"{registry}/nosuch-{scenario.service}:1.0.0", digest),
        "foreign registry": (f"ghcr.io/{scenario.service}:1.0.0", digest),
        "no registry": (f"{scenario.service}:1.0.0", digest),
    }[case]
    await scenario.send(image_build(scenario, "1.0.0", reference, claimed))
    rejected = await scenario.wait("artifact.rejected", version="1.0.0")
    assert rejected.data.reason == reason
    assert says.format(registry=registry, service=scenario.service) in rejected.data.detail
    assert digest not in rejected.data.detail or case != "other bytes"  # never the digest of what it found
    assert scenario.seen("artifact.registered") == []


async def test_a_registry_outage_holds_the_build_until_the_registry_is_back_with_nothing_lost(scenario):
    digest = await push_image(scenario.settings, scenario.service, "1.0.0")
    start = await dlq_end(scenario.settings)
    stack_registry.stop()
    stopped_at = time.monotonic()
    try:
        await scenario.send(image_build(scenario, "1.0.0", f"{scenario.settings.registry}/{scenario.service}:1.0.0",
                                        digest))
        await intake_reports("unreachable", timeout=30)  # intake met the outage and backs off
        assert scenario.seen("artifact.registered") == [] and scenario.seen("artifact.rejected") == []
        await asyncio.sleep(max(0.0, 20 - (time.monotonic() - stopped_at)))  # the outage lasts 20 s: the scenario
    finally:
        stack_registry.up()
    registered = await scenario.wait("artifact.registered", version="1.0.0", timeout=30)
    assert registered.data.digest == digest
    assert scenario.seen("artifact.rejected") == []
    letters = await dead_letters(scenario.settings, start, lambda found: False, timeout=2)
    assert [record for record, _headers in letters if scenario.service.encode() in (record.value or b"")] == []


async def intake_reports(words: str, timeout: float) -> str:
    """Wait until intake's /health names its consumer error containing `words`; that error."""
    port = devstack.SERVICE_HEALTH_PORTS["intake"]
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            error = (await client.get(f"http://127.0.0.1:{port}/health")).json().get("consumer_error") or ""
            if words in error:
                return error
            await asyncio.sleep(0.2)
    raise TimeoutError(f"intake did not report {words!r} within {timeout:.0f} s")


async def test_ci_publishes_an_image_build_with_the_digest_the_registry_gives(scenario):
    digest = await push_image(scenario.settings, scenario.service, "2.0.0")
    reference = f"{scenario.settings.registry}/{scenario.service}:2.0.0"
    done = await promote_async("build-completed", "--service", scenario.service, "--version", "2.0.0", "--commit",
                               "c0ffee", "--author", "alice", "--image", reference, env={"PROMOTE_TOKEN": ""})
    assert done.returncode == 0, done.stderr
    assert digest in done.stdout
    assert (await scenario.wait("artifact.registered", version="2.0.0")).data.location.endswith(f"@{digest}")

    unknown = await promote_async("build-completed", "--service", scenario.service, "--version", "2.0.1",
                                  "--commit", "c0ffee", "--author", "alice", "--image", reference + "-nosuch")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == f"promote: error: unknown repository or tag: {reference}-nosuch (404)"


async def test_a_tag_moved_to_other_bytes_is_reported_once_per_digest_and_the_release_keeps_its_own(scenario):
    first = await push_image(scenario.settings, scenario.service, "3.0.0")
    reference = f"{scenario.settings.registry}/{scenario.service}:3.0.0"
    await scenario.send(image_build(scenario, "3.0.0", reference, first))
    await scenario.wait("artifact.registered", version="3.0.0")

    second = await push_image(scenario.settings, scenario.service, "3.0.0")  # re-pushed: other bytes, same tag
    moved = await scenario.wait("artifact.tag_moved", version="3.0.0", timeout=60)
    assert (moved.data.digest, moved.data.moved_to, moved.data.tag) == (first, second, reference)
    third = await push_image(scenario.settings, scenario.service, "3.0.0")
    again = await scenario.wait("artifact.tag_moved", version="3.0.0", moved_to=third, timeout=60)
    assert again.data.digest == first
    assert len(scenario.seen("artifact.tag_moved", moved_to=second)) == 1  # once per new digest

    audit = json.loads((await promote_async("audit", scenario.service, "3.0.0", "--json")).stdout)
    assert [entry["type"] for entry in audit["events"]].count("artifact.tag_moved") == 2
    rows = await scenario.query("ledger", "select digest, tag_moved_to from artifacts where service = $1",
                                scenario.service)
    assert [(row["digest"], row["tag_moved_to"]) for row in rows] == [(first, third)]
