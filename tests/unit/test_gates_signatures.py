"""Unit tests for the signed_by gate (services.gates.supply_chain through services.gates.domain.evaluate).

The signatures are made here the way `cosign sign --key` makes them (a simple-signing payload, ECDSA P-256 over
SHA-256, DER, base64); tests/unit/test_signatures.py proves against the real cosign that this is its format.
The end-to-end test with cosign, the registry and the stack is tests/e2e/test_supply_chain.py.
"""

import base64
import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.gates.domain import Facts, Release, evaluate
from services.gates.trusted_keys import TrustedKeys
from shared.contracts.events import FoundSignature, SupplyChain
from shared.contracts.pipeline import parse_pipeline
from shared.signature_keys import TrustedKey

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
LOCATION = f"127.0.0.1:18500/payments@{DIGEST}"
NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
SIGNATURES = "sha256:" + "c" * 64
PIPELINE = parse_pipeline("""\
service: payments
artifact: {kind: oci}
environments:
  - name: dev
    gates: [{signed_by: [ci-release, ci-backup]}]
""")

RELEASE_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())


def pem(private: ec.EllipticCurvePrivateKey) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


TRUSTED = {"ci-release": TrustedKey.from_pem("ci-release", pem(RELEASE_KEY))}


def payload(digest: str = DIGEST, kind: str = "cosign container image signature") -> bytes:
    return json.dumps({"critical": {"identity": {"docker-reference": "127.0.0.1:18500/payments"},
                                    "image": {"docker-manifest-digest": digest}, "type": kind},
                       "optional": None}, separators=(",", ":")).encode()


def signed(body: bytes, key: ec.EllipticCurvePrivateKey = RELEASE_KEY) -> FoundSignature:
    signature = key.sign(body, ec.ECDSA(hashes.SHA256()))
    return FoundSignature(payload=base64.b64encode(body).decode(), signature=base64.b64encode(signature).decode())


def verdict(*signatures: FoundSignature, trusted=TRUSTED, problems=(), location=LOCATION, found=True):
    chain = SupplyChain(signatures_manifest=SIGNATURES if signatures else None, signatures=signatures,
                        signature_problems=problems) if found else None
    release = Release("payments", "1.0.0", DIGEST, "alice", location=location, supply_chain=chain)
    return evaluate("dev", DIGEST, Facts(pipeline=PIPELINE, release=release, trusted_keys=trusted), NOW)


def tampered(item: FoundSignature) -> FoundSignature:
    body = base64.b64decode(item.payload).replace(b'"optional":null', b'"optional":{"by":"mallory"}')
    return FoundSignature(payload=base64.b64encode(body).decode(), signature=item.signature)


def test_a_signature_of_the_digest_by_a_named_trusted_key_passes_and_says_which_key():
    result = verdict(signed(payload()))
    assert result.outcome == "passed", result.reasons
    assert result.evidence == (f"signed_by ci-release, ci-backup: signed by ci-release (signatures {SIGNATURES})",)


def test_one_good_signature_among_others_is_enough():
    assert verdict(signed(payload(), OTHER_KEY), FoundSignature(problem="a layer without a digest"),
                   signed(payload())).outcome == "passed"


@pytest.mark.parametrize("signatures, says", [
    pytest.param((), f"{LOCATION} is not signed", id="unsigned"),
    pytest.param((signed(payload(), OTHER_KEY),), "verifies with no trusted key (ci-release)", id="an unknown key"),
    pytest.param((signed(payload(OTHER)),), f"by ci-release is over another digest, {OTHER}",
                 id="a signature of another digest copied to this one"),
    pytest.param((tampered(signed(payload())),), "verifies with no trusted key", id="a tampered payload"),
    pytest.param((FoundSignature(payload=signed(payload()).payload, signature=signed(payload(OTHER)).signature),),
                 "verifies with no trusted key", id="a signature swapped from another payload"),
    pytest.param((signed(payload(kind="something else")),), "is of type 'something else'",
                 id="a trusted payload of another type"),
    pytest.param((FoundSignature(problem="a payload blob the registry does not have"),),
                 "is malformed: a payload blob the registry does not have", id="what intake could not take"),
])
def test_the_gate_fails_with_the_reason(signatures, says):
    result = verdict(*signatures)
    assert result.outcome == "failed"
    assert len(result.reasons) == 1 and says in result.reasons[0], result.reasons
    assert result.reasons[0].startswith("signed_by ci-release, ci-backup: ")


def test_the_keys_that_cannot_be_used_are_named_when_the_gate_fails():
    result = verdict(signed(payload(), OTHER_KEY))
    assert "key ci-backup is not among the trusted keys (no ci-backup.pub)" in result.reasons[0]


def test_a_gate_naming_no_key_gates_holds_fails_whatever_the_signature():
    result = verdict(signed(payload()), trusted={"ci-release": "key ci-release: not a PEM public key (x.pub)"})
    assert result.outcome == "failed"
    assert "no key it names can be used (key ci-release: not a PEM public key (x.pub); key ci-backup is not" \
           in result.reasons[0]


def test_an_artifact_registered_before_signatures_were_kept_fails_rather_than_passing_unchecked():
    result = verdict(found=False)
    assert result.outcome == "failed" and "was registered before intake kept signatures" in result.reasons[0]


def test_what_intake_could_not_read_is_the_reason_of_an_unsigned_verdict():
    result = verdict(problems=("the signatures of x: a manifest of 300000 bytes, more than the limit",))
    assert result.outcome == "failed" and "is not signed: the signatures of x: a manifest of 300000" in result.reasons[0]


def test_trusted_keys_are_read_again_when_a_file_changes(tmp_path):
    keys = TrustedKeys(tmp_path / "trusted")
    assert keys.current() == {}
    (tmp_path / "trusted").mkdir()
    (tmp_path / "trusted" / "ci-release.pub").write_bytes(pem(RELEASE_KEY))
    (tmp_path / "trusted" / "notes.txt").write_text("not a key file: ignored")
    assert isinstance(keys.current()["ci-release"], TrustedKey) and set(keys.current()) == {"ci-release"}
    (tmp_path / "trusted" / "ci-release.pub").write_text("-----BEGIN PUBLIC KEY-----\nbroken\n")
    assert "ci-release: not a PEM public key" in keys.current()["ci-release"]
    (tmp_path / "trusted" / "ci-release.pub").unlink()
    assert keys.current() == {}


# --- provenance gates -------------------------------------------------------------------------------------

COMMIT = "4f2a9c1" + "0" * 33
BUILDER = "https://ci.example/builders/release"
SOURCE = "https://git.example/acme/payments"
PROVENANCE = parse_pipeline(f"""\
service: payments
artifact: {{kind: oci}}
environments:
  - name: dev
    gates: [{{provenance: {{builder: "{BUILDER}", source: "{SOURCE}", signed_by: [ci-release]}}}}]
""")


def envelope(digest: str = DIGEST, builder: str = BUILDER, source: str = f"git+{SOURCE}@refs/heads/main",
             commit: str = COMMIT, key: ec.EllipticCurvePrivateKey = RELEASE_KEY) -> str:
    """A DSSE envelope of an SLSA v1 provenance Statement, signed as cosign attest signs one."""
    from shared.attestations import IN_TOTO_PAYLOAD, SLSA_PROVENANCE_V1, pae

    statement = {"_type": "https://in-toto.io/Statement/v1",
                 "subject": [{"name": "payments", "digest": {"sha256": digest.removeprefix("sha256:")}}],
                 "predicateType": SLSA_PROVENANCE_V1,
                 "predicate": {"buildDefinition": {"buildType": "https://ci.example/build/v1", "externalParameters": {},
                                                   "resolvedDependencies": [{"uri": source,
                                                                             "digest": {"gitCommit": commit}}]},
                               "runDetails": {"builder": {"id": builder}}}}
    payload = json.dumps(statement).encode()
    signature = key.sign(pae(IN_TOTO_PAYLOAD, payload), ec.ECDSA(hashes.SHA256()))
    body = {"payloadType": IN_TOTO_PAYLOAD, "payload": base64.b64encode(payload).decode(),
            "signatures": [{"keyid": "", "sig": base64.b64encode(signature).decode()}]}
    return base64.b64encode(json.dumps(body).encode()).decode()


def provenance_verdict(*attestations: str, commit: str | None = COMMIT, trusted=TRUSTED):
    chain = SupplyChain(attestations=attestations)
    release = Release("payments", "1.0.0", DIGEST, "alice", location=LOCATION, commit=commit, supply_chain=chain)
    return evaluate("dev", DIGEST, Facts(pipeline=PROVENANCE, release=release, trusted_keys=trusted), NOW)


def test_a_signed_provenance_of_the_digest_from_the_builder_source_and_commit_passes():
    result = provenance_verdict(envelope())
    assert result.outcome == "passed", result.reasons
    assert f"attested by ci-release for commit {COMMIT}" in result.evidence[0]


@pytest.mark.parametrize("attestations, commit, says", [
    pytest.param((), COMMIT, "no attestation", id="none"),
    pytest.param((envelope(builder="https://evil.example/builder"),), COMMIT,
                 "names the builder 'https://evil.example/builder'", id="another builder"),
    pytest.param((envelope(source="git+https://git.example/acme/payments-evil@refs/heads/main"),), COMMIT,
                 "names no dependency or parameter from 'https://git.example/acme/payments'",
                 id="a source that only starts like it"),
    pytest.param((envelope(commit="1" * 40),), COMMIT, f"names the commit '{'1' * 40}'", id="another commit"),
    pytest.param((envelope(digest=OTHER),), COMMIT, "is about other subjects", id="another image's provenance"),
    pytest.param((envelope(key=OTHER_KEY),), COMMIT, "no trusted key", id="an unknown key"),
    pytest.param((envelope(),), "c0ffee", "is not a full git commit", id="a build naming a short commit"),
])
def test_the_provenance_gate_fails_with_the_reason(attestations, commit, says):
    result = provenance_verdict(*attestations, commit=commit)
    assert result.outcome == "failed", result.reasons
    assert result.reasons[0].startswith(f"provenance from {BUILDER} of {SOURCE}: ")
    assert says in result.reasons[0], result.reasons


def test_a_key_file_or_directory_others_may_write_is_not_trusted(tmp_path):
    directory = tmp_path / "trusted"
    directory.mkdir(mode=0o755)
    key_file = directory / "ci-release.pub"
    key_file.write_bytes(pem(RELEASE_KEY))
    key_file.chmod(0o644)
    keys = TrustedKeys(directory)
    assert isinstance(keys.current()["ci-release"], TrustedKey)
    key_file.chmod(0o666)
    assert "may be written by others than its owner (mode 666): not trusted" in keys.current()["ci-release"]
    key_file.chmod(0o644)
    directory.chmod(0o777)
    assert f"{directory} may be written by others" in keys.current()["ci-release"]
    directory.chmod(0o755)
    (directory / "linked.pub").symlink_to(key_file)
    assert isinstance(keys.current()["ci-release"], TrustedKey)
    assert "cannot be read" in keys.current()["linked"]
