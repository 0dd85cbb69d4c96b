"""Provenance checks on what cosign never writes, and against independent DSSE implementations.

Limits, malformed manifests, layers and envelopes, hostile JSON, the source rule and the caller's mistakes, on an
in-process fake registry (httpx.MockTransport) and envelopes made here with `cryptography` (ECDSA P-256, SHA-256,
DER) as cosign makes them; `*.intoto.jsonl` files signed by securesystemslib 1.x and in-toto 3.1. The real cosign is
in test_attestations.py.
"""

import base64
import hashlib
import json

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from in_toto.models.link import Link
from in_toto.models.metadata import Envelope as InTotoEnvelope
from securesystemslib.dsse import Envelope
from securesystemslib.signer import CryptoSigner, SSlibKey

from shared.attestations import (DSSE_ENVELOPE, IN_TOTO_PAYLOAD, MAX_ENVELOPE_BYTES, MAX_ENVELOPES,
                                 MAX_SIGNATURE_CHARS, MAX_SIGNATURES, SLSA_PROVENANCE_V1, Provenance,
                                 ProvenanceRefusal, ProvenanceRefused, attestation_tag, fetch_attestations,
                                 judge_provenance, pae, read_attestation_file, verify_provenance)
from shared.oci import OCI_INDEX, OCI_MANIFEST, Registry, RegistryDenied, RegistryUnavailable, parse_reference
from shared.platform.settings import Settings
from shared.signature_keys import TrustedKey

HOST = "registry.test:5000"
DIGEST = "sha256:" + "ab" * 32
IMAGE = f"{HOST}/payments@{DIGEST}"
BUILDER = "https://ci.example/builders/payments@v1"
REPOSITORY = "https://github.com/acme/payments"
COMMIT = "3f2a9c81d4e5b6a7980c1d2e3f4a5b6c7d8e9f01"
PRIVATE = ec.generate_private_key(ec.SECP256R1())
KEY = TrustedKey("ci-release", PRIVATE.public_key())
RSA_PRIVATE = rsa.generate_private_key(65537, 2048)
RSA_KEY = TrustedKey("ci-rsa", RSA_PRIVATE.public_key())


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def statement(digest: str = DIGEST, **predicate_changes) -> dict:
    """An in-toto Statement v1 of an SLSA provenance v1 of `digest`, by BUILDER from REPOSITORY at COMMIT."""
    predicate = {
        "buildDefinition": {"buildType": "https://ci.example/buildtypes/image/v1", "externalParameters": {},
                            "resolvedDependencies": [{"uri": f"git+{REPOSITORY}@refs/heads/main",
                                                      "digest": {"gitCommit": COMMIT}}]},
        "runDetails": {"builder": {"id": BUILDER}},
    }
    return {"_type": "https://in-toto.io/Statement/v1", "subject": [{"name": "payments", "digest": {
        "sha256": digest.removeprefix("sha256:")}}], "predicateType": SLSA_PROVENANCE_V1,
        "predicate": {**predicate, **predicate_changes}}


def envelope(content: dict | bytes, /, private=PRIVATE, **changes) -> bytes:
    """A DSSE envelope of `content`, signed over its PAE as cosign signs it (keyid ""); `changes` to its fields."""
    body = content if isinstance(content, bytes) else json.dumps(content).encode()
    signed = pae(IN_TOTO_PAYLOAD, body)
    if isinstance(private, rsa.RSAPrivateKey):
        signature = private.sign(signed, padding.PKCS1v15(), hashes.SHA256())
    else:
        signature = private.sign(signed, ec.ECDSA(hashes.SHA256()))
    fields = {"payloadType": IN_TOTO_PAYLOAD, "payload": base64.b64encode(body).decode(),
              "signatures": [{"keyid": "", "sig": base64.b64encode(signature).decode()}]}
    return json.dumps({**fields, **changes}).encode()


def judged(envelopes, keys=(KEY,), source: str = REPOSITORY, commit: str = COMMIT,
           **options) -> Provenance | ProvenanceRefused:
    return judge_provenance(envelopes, DIGEST, list(keys), builder=BUILDER, source=source, commit=commit, **options)


def refused(verdict, kind: ProvenanceRefusal, says: str) -> bool:
    assert isinstance(verdict, ProvenanceRefused), verdict
    assert verdict.kind is kind and says in verdict.reason and "\n" not in verdict.reason, verdict
    assert len(verdict.reason) < 600, verdict.reason
    return True


def test_a_provenance_signed_over_its_pae_is_accepted():
    signed = envelope(statement())
    assert judged([signed]) == Provenance("ci-release", BUILDER, f"git+{REPOSITORY}@refs/heads/main", COMMIT,
                                          SLSA_PROVENANCE_V1, sha(signed))


@pytest.mark.parametrize(("raw", "says"), [
    (b"not json", "not a DSSE envelope"),
    (b"[1, 2]", "not a DSSE envelope"),
    (b"\xff\xfe{}", "not a DSSE envelope"),
    (b"[" * 100_000 + b"]" * 100_000, "not a DSSE envelope"),
    (b'{"payloadType": 1' + b"0" * 5000 + b"}", "not a DSSE envelope"),  # past Python's 4,300 digits
    (b" " * (MAX_ENVELOPE_BYTES + 1), f"an envelope of {MAX_ENVELOPE_BYTES + 1} bytes, more than {MAX_ENVELOPE_BYTES}"),
    (envelope(statement(), payloadType="application/json"), "its payloadType is 'application/json', not"),
    (envelope(statement(), payloadType=["application/vnd.in-toto+json"]), "its payloadType is a JSON list"),
    (envelope(statement(), payload="!!!"), "its payload is not base64"),
    (envelope(statement(), payload=12), "its payload is not base64"),
    (envelope(statement(), signatures=[]), "an envelope without signatures"),
    (envelope(statement(), signatures={"sig": "AAAA"}), "an envelope without signatures"),
    (envelope(statement(), signatures=["AAAA"]), "a signature whose sig is empty or not base64"),
    (envelope(statement(), signatures=[{"sig": 7}]), "a signature whose sig is empty or not base64"),
    (envelope(statement(), signatures=[{"sig": "A" * (MAX_SIGNATURE_CHARS + 4)}]),
     f"a signature of {MAX_SIGNATURE_CHARS + 4} characters, more than {MAX_SIGNATURE_CHARS}"),
    (envelope(statement(), signatures=[{"sig": "AAAA"}] * (MAX_SIGNATURES + 1)),
     f"an envelope of {MAX_SIGNATURES + 1} signatures, more than {MAX_SIGNATURES}"),
])
def test_what_is_not_a_dsse_envelope_of_an_in_toto_payload_is_malformed(raw, says):
    assert refused(judged([raw]), ProvenanceRefusal.MALFORMED, f"is malformed: {says}")


@pytest.mark.parametrize(("payload", "says"), [
    (b"not json", "_type none"),
    (b"[]", "_type none"),
    ({"_type": "link", "name": "build"}, "_type 'link'"),
    ({**statement(), "_type": "https://in-toto.io/Statement/v2"}, "_type 'https://in-toto.io/Statement/v2'"),
    ({**statement(), "subject": {"name": "payments"}}, "_type 'https://in-toto.io/Statement/v1'"),
    ({**statement(), "predicateType": ["https://slsa.dev/provenance/v1"]}, "_type 'https://in-toto.io/Statement/v1'"),
])
def test_a_signed_payload_that_is_not_an_in_toto_statement_is_malformed(payload, says):
    verdict = judged([envelope(payload)])
    assert refused(verdict, ProvenanceRefusal.MALFORMED, f"by ci-release is over a payload that is not an in-toto "
                                                         f"Statement ({says})")


@pytest.mark.parametrize(("changes", "kind", "says"), [
    ({"runDetails": []}, ProvenanceRefusal.WRONG_BUILDER, "names no builder (runDetails.builder.id)"),
    ({"runDetails": {"builder": {"id": 42}}}, ProvenanceRefusal.WRONG_BUILDER, "names no builder"),
    ({"runDetails": {"builder": {"id": BUILDER + "x" * 500}}}, ProvenanceRefusal.WRONG_BUILDER, "…', not"),
    ({"buildDefinition": "git+https://github.com/acme/payments"}, ProvenanceRefusal.WRONG_SOURCE, "dependencies: none"),
    ({"buildDefinition": {"resolvedDependencies": {"uri": REPOSITORY}}}, ProvenanceRefusal.WRONG_SOURCE, "none"),
    ({"buildDefinition": {"resolvedDependencies": [7, {"uri": ["x"]}]}}, ProvenanceRefusal.WRONG_SOURCE,
     "(its dependencies: a JSON list)"),
    ({"buildDefinition": {"resolvedDependencies": [{"uri": REPOSITORY, "digest": [COMMIT]}]}},
     ProvenanceRefusal.WRONG_COMMIT, "names no commit (digest gitCommit or sha1)"),
    ({"buildDefinition": {"resolvedDependencies": [{"uri": REPOSITORY, "digest": {"gitCommit": COMMIT.upper()}}]}},
     ProvenanceRefusal.WRONG_COMMIT, f"names the commit '{COMMIT.upper()}'"),
    ({"buildDefinition": {"resolvedDependencies": [{"uri": REPOSITORY, "digest": {"gitCommit": COMMIT[:12]}}]}},
     ProvenanceRefusal.WRONG_COMMIT, f"names the commit '{COMMIT[:12]}'"),
    ({"buildDefinition": {"resolvedDependencies": [{"uri": REPOSITORY, "digest": {"gitCommit": COMMIT}},
                                                   {"uri": REPOSITORY, "digest": {"sha1": "0" * 40}}]}},
     ProvenanceRefusal.WRONG_COMMIT, f"names the commit '{'0' * 40}', '{COMMIT}'"),
    ({"buildDefinition": {"externalParameters": {"workflow": {"repository": REPOSITORY}}}},
     ProvenanceRefusal.WRONG_COMMIT, "names no commit"),
])
def test_a_provenance_naming_something_else_is_refused_with_its_reason(changes, kind, says):
    assert refused(judged([envelope(statement(**changes))]), kind, f"by ci-release {says}" if says.startswith("names")
                   else says)


def test_a_provenance_predicate_that_is_not_an_object_is_malformed():
    verdict = judged([envelope({**statement(), "predicate": [1]})])
    assert refused(verdict, ProvenanceRefusal.MALFORMED, "has a provenance predicate that is not a JSON object")


@pytest.mark.parametrize(("subjects", "says"), [
    ([{"name": "payments", "digest": {"sha256": "cd" * 32}}], "('cdcdcdcdcdcdcdcdcdcdcdc…')"),
    ([{"name": "payments", "digest": {"sha512": "ab" * 64}}], "(none with a sha256 digest)"),
    ([{"name": "payments", "digest": {"sha256": ["ab" * 32]}}], "(a JSON list)"),
    (["sha256:" + "ab" * 32, 7], "(none with a sha256 digest)"),
    ([], "(none with a sha256 digest)"),
])
def test_a_statement_about_other_subjects_is_refused(subjects, says):
    verdict = judged([envelope({**statement(), "subject": subjects})])
    assert refused(verdict, ProvenanceRefusal.OTHER_SUBJECT, f"by ci-release is about other subjects {says}")


def test_a_statement_naming_this_digest_among_others_is_about_it():
    subjects = [{"name": "other", "digest": {"sha256": "cd" * 32}}, {"name": "payments", "digest": {
        "sha512": "00" * 64, "sha256": DIGEST.removeprefix("sha256:")}}]
    assert isinstance(judged([envelope({**statement(), "subject": subjects})]), Provenance)


@pytest.mark.parametrize(("expected", "attested", "names"), [
    (REPOSITORY, f"git+{REPOSITORY}@refs/heads/main", True),
    (REPOSITORY, REPOSITORY, True),
    (f"git+{REPOSITORY}", f"{REPOSITORY}@v2.4.1", True),
    (REPOSITORY, f"git+{REPOSITORY}-evil@refs/heads/main", False),
    (REPOSITORY, f"git+{REPOSITORY}.git@refs/heads/main", False),
    (REPOSITORY, f"{REPOSITORY}/", False),
    (REPOSITORY, "https://github.com/acme/Payments", False),
    (REPOSITORY, "https://github.com/acme", False),
    (REPOSITORY, f"{REPOSITORY}/sub@refs/heads/main", False),
    (REPOSITORY, "https://evil.example/github.com/acme/payments", False),
    (REPOSITORY, "https://evil.example@github.com/acme/payments", False),
    (REPOSITORY, "git+ssh://github.com/acme/payments", False),
    (REPOSITORY, "github.com/acme/payments", False),
    (REPOSITORY, f"{REPOSITORY} @refs/heads/main", False),
])
def test_the_source_is_the_repository_of_a_dependency_compared_exactly(expected, attested, names):
    dependencies = [{"uri": attested, "digest": {"gitCommit": COMMIT}}]
    verdict = judged([envelope(statement(buildDefinition={"resolvedDependencies": dependencies}))], source=expected)
    if names:
        assert isinstance(verdict, Provenance) and verdict.source == attested, verdict
    else:
        assert refused(verdict, ProvenanceRefusal.WRONG_SOURCE, f"names no dependency or parameter from "
                                                                f"'{expected.removeprefix('git+')}'")


@pytest.mark.parametrize("parameters", [
    {"workflow": {"repository": REPOSITORY, "ref": "refs/heads/main"}},
    {"source": f"git+{REPOSITORY}@refs/heads/main"},
    {"source": {"uri": f"git+{REPOSITORY}@refs/heads/main"}},
])
def test_a_source_named_by_its_parameters_takes_the_commit_of_a_dependency_of_it(parameters):
    definition = {"externalParameters": parameters,
                  "resolvedDependencies": [{"uri": REPOSITORY, "digest": {"gitCommit": COMMIT}}]}
    assert isinstance(judged([envelope(statement(buildDefinition=definition))]), Provenance)
    elsewhere = {**definition, "resolvedDependencies": [{"uri": "https://github.com/acme/tools",
                                                         "digest": {"gitCommit": COMMIT}}]}
    refused(judged([envelope(statement(buildDefinition=elsewhere))]), ProvenanceRefusal.WRONG_COMMIT, "no commit")


def test_an_envelope_of_an_untrusted_key_or_altered_payload_is_untrusted():
    other = ec.generate_private_key(ec.SECP256R1())
    assert refused(judged([envelope(statement(), private=other)], keys=[KEY, RSA_KEY]), ProvenanceRefusal.UNTRUSTED,
                   "verifies with no trusted key (ci-release, ci-rsa)")
    signed = json.loads(envelope(statement(digest="sha256:" + "cd" * 32)))
    signed["payload"] = base64.b64encode(json.dumps(statement()).encode()).decode()
    assert refused(judged([json.dumps(signed).encode()]), ProvenanceRefusal.UNTRUSTED, "verifies with no trusted key")
    signed = json.loads(envelope(statement()))
    signed["signatures"][0]["sig"] = base64.b64encode(b"\x00" * 70).decode()  # not DER: no key's form
    assert refused(judged([json.dumps(signed).encode()]), ProvenanceRefusal.UNTRUSTED, "verifies with no trusted key")


def test_a_signature_over_the_bare_payload_rather_than_its_pae_is_untrusted():
    body = json.dumps(statement()).encode()
    raw = base64.b64encode(PRIVATE.sign(body, ec.ECDSA(hashes.SHA256()))).decode()
    bare = envelope(statement(), signatures=[{"keyid": "", "sig": raw}])
    assert refused(judged([bare]), ProvenanceRefusal.UNTRUSTED, "verifies with no trusted key")


def test_an_rsa_key_verifies_and_any_of_several_signatures_may_be_the_trusted_one():
    ours = json.loads(envelope(statement(), private=RSA_PRIVATE))
    theirs = json.loads(envelope(statement(), private=ec.generate_private_key(ec.SECP256R1())))
    both = envelope(statement(), signatures=theirs["signatures"] + ours["signatures"])
    verdict = judged([both], keys=[KEY, RSA_KEY])
    assert isinstance(verdict, Provenance) and verdict.key_id == "ci-rsa", verdict


def test_the_most_telling_refusal_of_several_envelopes_is_reported():
    untrusted = envelope(statement(), private=ec.generate_private_key(ec.SECP256R1()))
    other_subject = envelope(statement(digest="sha256:" + "cd" * 32))
    other_commit = envelope(statement(buildDefinition={"resolvedDependencies": [
        {"uri": REPOSITORY, "digest": {"gitCommit": "0" * 40}}]}))
    verdict = judged([b"[]", untrusted, other_commit, other_subject])
    assert refused(verdict, ProvenanceRefusal.WRONG_COMMIT, "(none of its 4 attestations is accepted)")
    assert refused(judged([b"[]", untrusted, other_subject]), ProvenanceRefusal.OTHER_SUBJECT, "about other")


def test_no_envelope_is_missing_but_envelopes_that_could_not_be_taken_are_malformed():
    assert refused(judged([]), ProvenanceRefusal.MISSING, f"{DIGEST} has no attestation")
    assert refused(judged([], problems=["a layer of type 'x'"]), ProvenanceRefusal.MALFORMED,
                   "is malformed: a layer of type 'x'")


@pytest.mark.parametrize(("arguments", "says"), [
    ({"digest": "sha256:abc"}, "is not a sha256 digest"),
    ({"keys": []}, "no trusted key"),
    ({"builder": ""}, "no builder"),
    ({"source": f"{REPOSITORY}@refs/heads/main"}, "no @ref"),
    ({"source": "github.com/acme/payments"}, "is not a repository URI"),
    ({"commit": COMMIT[:12]}, "is not a full git commit"),
    ({"commit": COMMIT.upper()}, "is not a full git commit"),
])
def test_a_check_asked_wrongly_is_a_mistake_of_the_caller(arguments, says):
    asked = {"digest": DIGEST, "keys": [KEY], "builder": BUILDER, "source": REPOSITORY, "commit": COMMIT, **arguments}
    with pytest.raises(ValueError, match=says):
        judge_provenance([envelope(statement())], asked.pop("digest"), asked.pop("keys"), **asked)


class FakeRegistry:
    """Manifests by tag and blobs by digest, in repository `payments`; `asked` records the blobs requested."""

    def __init__(self) -> None:
        self.manifests: dict[str, bytes] = {}
        self.blobs: dict[str, bytes] = {}
        self.served: dict[str, bytes] = {}
        self.asked: list[str] = []
        self.status: int | None = None

    def attestations(self, *layers: dict, media_type: str = OCI_MANIFEST) -> None:
        self.manifests[attestation_tag(DIGEST)] = json.dumps({
            "schemaVersion": 2, "mediaType": media_type,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(b"{}"), "size": 2},
            "layers": list(layers)}).encode()

    def layer(self, data: bytes, **changes) -> dict:
        self.blobs[sha(data)] = data
        return {"mediaType": DSSE_ENVELOPE, "digest": sha(data), "size": len(data),
                "annotations": {"predicateType": SLSA_PROVENANCE_V1}, **changes}

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.status is not None:
            return httpx.Response(self.status)
        kind, name = request.url.path.split("/")[-2:]
        if kind == "manifests" and name in self.manifests:
            return httpx.Response(200, content=self.manifests[name], headers={"content-type": OCI_MANIFEST})
        if kind == "blobs":
            self.asked.append(name)
            if name in self.blobs:
                return httpx.Response(200, content=self.served.get(name, self.blobs[name]))
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN" if kind == "manifests"
                                                     else "BLOB_UNKNOWN"}]})


async def fetched(fake: FakeRegistry):
    async with Registry(Settings(registry=HOST), transport=httpx.MockTransport(fake.handle)) as registry:
        return await fetch_attestations(registry, parse_reference(IMAGE))


async def test_the_envelopes_of_an_att_tag_are_fetched_and_verified():
    fake, signed = FakeRegistry(), envelope(statement())
    fake.attestations(fake.layer(signed), fake.layer(b"[]"))
    found = await fetched(fake)
    assert found.envelopes == (signed, b"[]") and found.problems == ()
    async with Registry(Settings(registry=HOST), transport=httpx.MockTransport(fake.handle)) as registry:
        verdict = await verify_provenance(registry, IMAGE, [KEY], builder=BUILDER, source=REPOSITORY, commit=COMMIT)
    assert isinstance(verdict, Provenance) and verdict.envelope_digest == sha(signed)


async def test_no_att_tag_is_no_envelope_and_no_problem():
    found = await fetched(FakeRegistry())
    assert found.envelopes == () and found.problems == ()


def _wrong_type(fake: FakeRegistry) -> None:
    fake.attestations(fake.layer(envelope(statement()), mediaType="application/vnd.in-toto+json"))


def _too_large(fake: FakeRegistry) -> None:
    fake.attestations(fake.layer(b" " * (MAX_ENVELOPE_BYTES + 1)))


def _negative(fake: FakeRegistry) -> None:
    fake.attestations(fake.layer(envelope(statement()), size=-1))


def _size_a_string(fake: FakeRegistry) -> None:
    fake.attestations(fake.layer(envelope(statement()), size="12"))


def _other_bytes(fake: FakeRegistry) -> None:
    layer = fake.layer(envelope(statement()))
    fake.served[layer["digest"]] = envelope(statement(digest="sha256:" + "cd" * 32))
    fake.attestations(layer)


def _missing_blob(fake: FakeRegistry) -> None:
    layer = fake.layer(envelope(statement()))
    del fake.blobs[layer["digest"]]
    fake.attestations(layer)


def _not_a_digest(fake: FakeRegistry) -> None:
    fake.attestations(fake.layer(envelope(statement()), digest="sha256:../../v2/_catalog"))


def _layer_a_string(fake: FakeRegistry) -> None:
    fake.attestations("sha256:" + "ab" * 32)


@pytest.mark.parametrize(("arrange", "says"), [
    (_wrong_type, f"a layer of type 'application/vnd.in-toto+json', not {DSSE_ENVELOPE}"),
    (_too_large, f"a layer of {MAX_ENVELOPE_BYTES + 1} bytes, not 0 to {MAX_ENVELOPE_BYTES}"),
    (_negative, "a layer of -1 bytes"),
    (_size_a_string, "a layer without a digest and a size"),
    (_other_bytes, "whose digest is another"),
    (_missing_blob, "the registry does not have"),
    (_not_a_digest, "is not a sha256 digest"),
    (_layer_a_string, "a layer without a digest and a size"),
])
async def test_a_layer_that_cannot_be_taken_is_a_problem_and_its_blob_is_not_read_past_its_limit(arrange, says):
    fake = FakeRegistry()
    arrange(fake)
    found = await fetched(fake)
    assert found.envelopes == () and len(found.problems) == 1 and says in found.problems[0], found
    if arrange in (_wrong_type, _too_large, _negative, _size_a_string, _layer_a_string):
        assert fake.asked == []
    assert refused(judged(found.envelopes, problems=found.problems), ProvenanceRefusal.MALFORMED, says)


def _too_many(fake: FakeRegistry) -> None:
    fake.attestations(*[fake.layer(envelope(statement()))] * (MAX_ENVELOPES + 1))


def _an_index(fake: FakeRegistry) -> None:
    fake.attestations(media_type=OCI_INDEX)


def _not_json(fake: FakeRegistry) -> None:
    fake.manifests[attestation_tag(DIGEST)] = b"{not json"


def _past_limit(fake: FakeRegistry) -> None:
    fake.manifests[attestation_tag(DIGEST)] = b"{" + b" " * 300_000 + b"}"


def _layers_a_dict(fake: FakeRegistry) -> None:
    fake.manifests[attestation_tag(DIGEST)] = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                                          "layers": {"digest": sha(b"x")}}).encode()


@pytest.mark.parametrize(("arrange", "says"), [
    (_too_many, f"are {MAX_ENVELOPES + 1} layers, more than {MAX_ENVELOPES}"),
    (_an_index, "are not an image manifest with layers"),
    (_layers_a_dict, "are not an image manifest with layers"),
    (_not_json, "is not JSON"),
    (_past_limit, "more than the limit of 262144 (the limit for this manifest)"),
])
async def test_an_att_manifest_that_cannot_be_taken_is_one_problem_and_no_blob_is_fetched(arrange, says):
    fake = FakeRegistry()
    arrange(fake)
    found = await fetched(fake)
    assert found.envelopes == () and len(found.problems) == 1 and says in found.problems[0], found
    assert fake.asked == []


@pytest.mark.parametrize(("status", "error"), [(503, RegistryUnavailable), (429, RegistryUnavailable),
                                               (401, RegistryDenied)])
async def test_a_registry_outage_or_denial_is_left_to_the_caller(status, error):
    fake = FakeRegistry()
    fake.status = status
    with pytest.raises(error):
        await fetched(fake)


async def test_an_image_named_by_tag_is_a_mistake_of_the_caller():
    async with Registry(Settings(registry=HOST), transport=httpx.MockTransport(FakeRegistry().handle)) as registry:
        with pytest.raises(ValueError, match="names no digest"):
            await fetch_attestations(registry, parse_reference(f"{HOST}/payments:2.4.1"))
        with pytest.raises(ValueError, match="names no digest"):
            await verify_provenance(registry, f"{HOST}/payments:2.4.1", [KEY], builder=BUILDER, source=REPOSITORY,
                                    commit=COMMIT)


def test_an_attestation_file_is_read_as_lines_of_json_within_its_limit(tmp_path):
    path, signed = tmp_path / "payments.intoto.jsonl", envelope(statement())
    path.write_bytes(b"\n" + signed + b"\r\n\n" + b"[]\n")
    assert read_attestation_file(path, 10_000) == [signed, b"[]"]
    with pytest.raises(ValueError, match="have more than 100 bytes"):
        read_attestation_file(path, 100)
    path.write_bytes(envelope(statement()) + b"\n{not json\n")
    with pytest.raises(ValueError, match="line 2 of the attestations '.*payments.intoto.jsonl' is not JSON"):
        read_attestation_file(path, 10_000)
    path.write_bytes(b"{}\n" * (MAX_ENVELOPES + 1))
    with pytest.raises(ValueError, match=f"are {MAX_ENVELOPES + 1} lines, more than {MAX_ENVELOPES}"):
        read_attestation_file(path, 10_000)


def _sslib_signer(private) -> CryptoSigner:
    """A securesystemslib signer of `private`: ECDSA P-256, or RSA with PKCS#1 v1.5 (its default for RSA is PSS)."""
    scheme = "rsa-pkcs1v15-sha256" if isinstance(private, rsa.RSAPrivateKey) else "ecdsa-sha2-nistp256"
    return CryptoSigner(private, SSlibKey.from_crypto(private.public_key(), scheme=scheme))


@pytest.mark.parametrize("private", [PRIVATE, RSA_PRIVATE], ids=["ecdsa", "rsa"])
def test_a_statement_signed_by_securesystemslib_into_an_intoto_jsonl_file_verifies_with_ours(tmp_path, private):
    signed = Envelope(json.dumps(statement()).encode(), IN_TOTO_PAYLOAD, {})
    signed.sign(_sslib_signer(private))
    path = tmp_path / "payments-2.4.1.tar.gz.intoto.jsonl"
    path.write_text(json.dumps(signed.to_dict()) + "\n")
    verdict = judged(read_attestation_file(path, 64 * 1024), keys=[KEY, RSA_KEY])
    assert isinstance(verdict, Provenance) and verdict.key_id == ("ci-rsa" if private is RSA_PRIVATE
                                                                  else "ci-release"), verdict
    assert signed.to_dict()["signatures"][0]["keyid"] != ""  # its own key id, which ours does not read


def test_an_envelope_we_accept_verifies_with_securesystemslib_named_as_the_signature_names_it():
    ours = envelope(statement())
    assert isinstance(judged([ours]), Provenance)
    parsed = Envelope.from_dict(json.loads(ours))
    public = SSlibKey.from_crypto(PRIVATE.public_key(), scheme="ecdsa-sha2-nistp256")
    assert parsed.verify([SSlibKey("", public.keytype, public.scheme, public.keyval)], 1)
    with pytest.raises(Exception, match="Accepted signatures do not match threshold"):
        parsed.verify([public], 1)  # the same key under its computed keyid: securesystemslib does not try it


def test_in_toto_signs_link_metadata_not_statements_so_its_envelope_is_not_a_provenance():
    """in-toto 3.1 (Python) puts its links in DSSE under the in-toto payload type; they are not Statements."""
    link = Link(name="build", materials={}, products={}, byproducts={}, command=["make"], environment={})
    signed = InTotoEnvelope.from_signable(link)
    signed.create_signature(_sslib_signer(PRIVATE))
    raw = json.dumps(signed.to_dict()).encode()
    assert json.loads(base64.b64decode(signed.to_dict()["payload"]))["_type"] == "link"
    assert refused(judged([raw]), ProvenanceRefusal.MALFORMED, "by ci-release is over a payload that is not an "
                                                               "in-toto Statement (_type 'link')")
