"""Signature gates on the real parts: images pushed to the stack's registry as CI, signed by the real cosign CLI
(logged in as `ci`), registered by intake with the signatures it found, judged by gates against the public keys
in its trusted keys directory. Only exactly the promoted digest, signed by a named trusted key, passes."""

import base64
import json
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from devstack import cosign as cosign_build
from shared.contracts.events import Artifact, BuildCompleted
from shared.oci import OCI_MANIFEST, Registry, parse_reference
from shared.signatures import signature_tag
from tests.cosign_support import Cosign
from tests.e2e.test_images import push_image

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(cosign_build.BUILD_TIMEOUT + 180)]

SIGNED_PROD = """
service: {service}
artifact: {{kind: oci}}
environments:
  - name: dev
    driver: noop
  - name: prod
    driver: noop
    gates: [{{signed_by: [KEY]}}]
"""


@pytest.fixture(scope="module")
def cosign(stack, tmp_path_factory) -> Cosign:
    """The real cosign, logged in to the stack's registry as CI (`ci`), kept off every other network."""
    from devstack.registry import credentials

    binary = cosign_build.ensure()
    home = tmp_path_factory.mktemp("cosign")
    (home / "trusted_root.json").write_text(json.dumps(
        {"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1"}))
    user, password = credentials("ci")
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (home / "docker").mkdir()
    (home / "docker" / "config.json").write_text(json.dumps({"auths": {stack.registry: {"auth": auth}}}))
    proxy = "http://127.0.0.1:9"  # the discard port, closed here: anything but the registry is refused at once
    return Cosign(binary, home, {"PATH": "/usr/bin:/bin", "HOME": str(home), "DOCKER_CONFIG": str(home / "docker"),
                                 "COSIGN_PASSWORD": "e2e-only", "HTTPS_PROXY": proxy, "HTTP_PROXY": proxy,
                                 "NO_PROXY": "127.0.0.1,localhost"})


@pytest.fixture
def trusted(stack, cosign, request):
    """A fresh key pair made by cosign; its public key trusted by gates as `ci-<random>`; removed afterwards."""
    key_id = f"ci-{uuid.uuid4().hex[:8]}"
    private, public = cosign.key_pair(key_id)
    directory: Path = stack.trusted_keys_dir
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)  # gates trusts no key that others than its owner may write
    (directory / f"{key_id}.pub").write_bytes(public.read_bytes())
    (directory / f"{key_id}.pub").chmod(0o644)
    yield key_id, private, public
    (directory / f"{key_id}.pub").unlink(missing_ok=True)


async def publish(scenario, version: str, image: str) -> None:
    ref = parse_reference(image)
    await scenario.send(BuildCompleted(service=scenario.service, version=version, commit="c0ffee", author="alice",
                                       artifact=Artifact(kind="oci", uri=f"{ref.name}:{version}", digest=ref.digest)))


async def pushed(scenario, version: str) -> str:
    """A one-layer image of `version` pushed as CI: registry/service@digest."""
    digest = await push_image(scenario.settings, scenario.service, version)
    return f"{scenario.settings.registry}/{scenario.service}@{digest}"


async def test_an_image_signed_by_a_trusted_key_enters_prod_and_the_verdict_names_the_key(scenario, cosign, trusted):
    key_id, private, public = trusted
    await scenario.apply_pipeline(SIGNED_PROD.replace("KEY", key_id))
    image = await pushed(scenario, "1.0.0")
    cosign.sign(private, image)
    await publish(scenario, "1.0.0", image)
    passed = await scenario.wait("gate.passed", env="prod", version="1.0.0", timeout=60)
    assert len(passed.data.evidence) == 1 and f"signed by {key_id} (signatures sha256:" in passed.data.evidence[0]
    await scenario.wait("verification.passed", env="prod", version="1.0.0", timeout=60)
    registered = scenario.seen("artifact.registered", version="1.0.0")[0]
    assert len(registered.data.supply_chain.signatures) == 1  # what intake found, carried for anyone to check
    assert cosign.verifies(public, image)


async def _copy_signatures(registry: Registry, source: str, target: str) -> None:
    """Put the `.sig` manifest of `source` under the signature tag of `target` (a copied signature)."""
    src, dst = parse_reference(source), parse_reference(target)
    manifest = (await registry.resolve(src, signature_tag(src.digest))).content
    for layer in manifest["layers"]:  # the payload blob, into the target's repository (the same one here)
        await registry.push_blob(dst, await registry.fetch_blob(src, layer["digest"], layer["size"]))
    await registry.push_manifest(dst, json.dumps(manifest).encode(), OCI_MANIFEST, reference=signature_tag(dst.digest))


async def _tamper_payload(registry: Registry, image: str) -> None:
    """Rewrite the signed payload's docker-reference (the signature is kept)."""
    ref = parse_reference(image)
    manifest = (await registry.resolve(ref, signature_tag(ref.digest))).content
    layer = manifest["layers"][0]
    payload = json.loads(await registry.fetch_blob(ref, layer["digest"], layer["size"]))
    payload["critical"]["identity"]["docker-reference"] = "evil.example/payments"
    data = json.dumps(payload).encode()
    layer["digest"], layer["size"] = await registry.push_blob(ref, data), len(data)
    await registry.push_manifest(ref, json.dumps(manifest).encode(), OCI_MANIFEST, reference=signature_tag(ref.digest))


@pytest.mark.parametrize("case, says", [
    ("unsigned", "is not signed"),
    ("an unknown key", "verifies with no trusted key"),
    ("another image's signature", "is over another digest"),
    ("a tampered payload", "verifies with no trusted key"),
])
async def test_a_release_without_a_trusted_signature_of_its_digest_does_not_enter_prod(scenario, cosign, trusted,
                                                                                       case, says):
    key_id, private, public = trusted
    await scenario.apply_pipeline(SIGNED_PROD.replace("KEY", key_id))
    image = await pushed(scenario, "1.0.0")
    async with Registry.from_settings(scenario.settings, "ci") as ci:
        if case == "an unknown key":
            cosign.sign(cosign.key_pair(f"stranger-{uuid.uuid4().hex[:6]}")[0], image)
        elif case == "another image's signature":
            other = await pushed(scenario, "0.9.0")
            cosign.sign(private, other)
            await _copy_signatures(ci, other, image)
        elif case == "a tampered payload":
            cosign.sign(private, image)
            await _tamper_payload(ci, image)
    if case != "unsigned":
        assert not cosign.verifies(public, image)  # cosign refuses it too
    await publish(scenario, "1.0.0", image)
    failed = await scenario.wait("gate.failed", env="prod", version="1.0.0", timeout=60)
    assert len(failed.data.reasons) == 1 and failed.data.reasons[0].startswith(f"signed_by {key_id}: ")
    assert says in failed.data.reasons[0], failed.data.reasons
    assert scenario.seen("verification.passed", env="dev", version="1.0.0")  # dev asks for no signature
    assert not scenario.seen("gate.passed", env="prod", version="1.0.0")
    assert not scenario.seen("deployment.started", env="prod")


COMMIT = "4f2a9c1e" * 5
BUILDER = "https://ci.example/builders/release"
SOURCE = "https://git.example/acme/payments"
PROVENANCE_PROD = """
service: {service}
artifact: {{kind: KIND}}
environments:
  - name: dev
    driver: DRIVER
  - name: prod
    driver: DRIVER
    gates: [{{provenance: {{builder: "BUILDER", source: "SOURCE", signed_by: [KEY]}}}}]
"""


def provenance_pipeline(key_id: str, kind: str = "oci") -> str:
    driver = "noop" if kind == "oci" else "local"
    return (PROVENANCE_PROD.replace("KIND", kind).replace("DRIVER", driver).replace("BUILDER", BUILDER)
            .replace("SOURCE", SOURCE).replace("KEY", key_id))


def predicate(commit: str = COMMIT, builder: str = BUILDER) -> dict:
    """An SLSA v1 provenance predicate as a CI would attest it."""
    return {"buildDefinition": {"buildType": "https://ci.example/build/v1", "externalParameters": {},
                                "resolvedDependencies": [{"uri": f"git+{SOURCE}@refs/heads/main",
                                                          "digest": {"gitCommit": commit}}]},
            "runDetails": {"builder": {"id": builder}}}


@pytest.mark.parametrize("attested, builder, enters", [
    (COMMIT, BUILDER, True),
    ("0" * 40, BUILDER, False),
    (COMMIT, "https://evil.example/builder", False),
], ids=["the build's commit", "another commit", "another builder"])
async def test_an_image_enters_prod_only_with_a_signed_provenance_of_its_build(scenario, cosign, trusted, attested,
                                                                               builder, enters):
    key_id, private, public = trusted
    await scenario.apply_pipeline(provenance_pipeline(key_id))
    image = await pushed(scenario, "1.0.0")
    cosign.attest(private, image, predicate(attested, builder))
    assert cosign.verifies_attestation(public, image)  # cosign checks no builder nor commit: gates does
    ref = parse_reference(image)
    await scenario.send(BuildCompleted(service=scenario.service, version="1.0.0", commit=COMMIT, author="alice",
                                       artifact=Artifact(kind="oci", uri=f"{ref.name}:1.0.0", digest=ref.digest)))
    if enters:
        passed = await scenario.wait("gate.passed", env="prod", version="1.0.0", timeout=60)
        assert f"attested by {key_id} for commit {COMMIT}" in passed.data.evidence[0]
    else:
        failed = await scenario.wait("gate.failed", env="prod", version="1.0.0", timeout=60)
        assert failed.data.reasons[0].startswith(f"provenance from {BUILDER} of {SOURCE}: ")
        assert (f"names the commit '{attested}'" if attested != COMMIT else "names the builder") \
            in failed.data.reasons[0], failed.data.reasons


async def test_a_file_enters_prod_with_an_in_toto_provenance_beside_it_signed_by_another_tool(scenario, cosign,
                                                                                             trusted):
    """The envelope is made by securesystemslib (an independent DSSE implementation) as a CI would, in
    `<file>.intoto.jsonl` beside the artifact file."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import CryptoSigner

    key_id, _, _ = trusted
    key = ec.generate_private_key(ec.SECP256R1())  # the CI's own key, not cosign's: trusted under the same id
    (scenario.settings.trusted_keys_dir / f"{key_id}.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    await scenario.apply_pipeline(provenance_pipeline(key_id, kind="file"))
    path, digest = scenario.build("1.0.0")
    statement = {"_type": "https://in-toto.io/Statement/v1",
                 "subject": [{"name": path.name, "digest": {"sha256": digest.removeprefix("sha256:")}}],
                 "predicateType": "https://slsa.dev/provenance/v1", "predicate": predicate()}
    envelope = Envelope(json.dumps(statement).encode(), "application/vnd.in-toto+json", {})
    envelope.sign(CryptoSigner(key))
    path.with_name(path.name + ".intoto.jsonl").write_text(json.dumps(envelope.to_dict()) + "\n")
    build = scenario.build_completed("1.0.0", path, digest).model_copy(update={"commit": COMMIT})
    await scenario.send(build)
    passed = await scenario.wait("gate.passed", env="prod", version="1.0.0", timeout=60)
    assert f"attested by {key_id} for commit {COMMIT}" in passed.data.evidence[0]
    await scenario.wait("verification.passed", env="prod", version="1.0.0", timeout=60)
