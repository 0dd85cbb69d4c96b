"""Evidence bundles on the real stack: `promote prove` exports what justifies a signed, approved release in prod,
`promote verify-bundle` checks it offline with the ledger's and CI's public keys only — and an alteration of any
kind of field is caught and named."""

import base64
import copy
import json

import pytest

from tests.e2e.support import api_token, promote_async
from shared.contracts.events import Artifact, BuildCompleted
from shared.oci import parse_reference
from tests.e2e.test_supply_chain import BUILDER, COMMIT, SOURCE, cosign, predicate, pushed, trusted  # noqa: F401

pytestmark = pytest.mark.e2e

PIPELINE = """
service: {service}
artifact: {{kind: oci}}
environments:
  - name: dev
    driver: noop
  - name: prod
    driver: noop
    gates:
      - {{signed_by: [KEY]}}
      - {{provenance: {{builder: "BUILDER", source: "SOURCE"}}}}
      - {{approval: {{min: 1, not_author: true}}}}
"""


@pytest.fixture
async def proven(scenario, cosign, trusted, tmp_path):
    """A release signed by CI, approved by bob and verified in prod; its bundle and the keys that check it."""
    key_id, private, public = trusted
    await scenario.apply_pipeline(PIPELINE.replace("KEY", key_id).replace("BUILDER", BUILDER)
                                  .replace("SOURCE", SOURCE))
    image = await pushed(scenario, "1.0.0")
    cosign.sign(private, image)
    cosign.attest(private, image, predicate())
    ref = parse_reference(image)
    await scenario.send(BuildCompleted(service=scenario.service, version="1.0.0", commit=COMMIT, author="alice",
                                       artifact=Artifact(kind="oci", uri=f"{ref.name}:1.0.0", digest=ref.digest)))
    await scenario.wait("gate.pending", env="prod", version="1.0.0", timeout=60)
    approved = await promote_async("approve", scenario.service, "1.0.0", "--env", "prod",
                                   env={"PROMOTE_TOKEN": api_token("bob", "approver:prod")})
    assert approved.returncode == 0, approved.stderr
    await scenario.wait("verification.passed", env="prod", version="1.0.0", timeout=60)
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / f"{key_id}.pub").write_bytes(public.read_bytes())
    (keys / "ledger.pub").write_bytes((scenario.settings.var_dir / "keys" / "ledger.pub").read_bytes())
    bundle = tmp_path / "bundle.json"
    done = await promote_async("prove", scenario.service, "--env", "prod", "-o", str(bundle))
    assert done.returncode == 0, done.stderr
    return bundle, keys, key_id


async def test_a_bundle_of_a_signed_approved_release_verifies_offline(proven, scenario):
    bundle, keys, key_id = proven
    done = await promote_async("verify-bundle", str(bundle), "--keys", str(keys), "--json", env={"PROMOTE_TOKEN": ""})
    assert done.returncode == 0, done.stdout + done.stderr
    verified = json.loads(done.stdout)
    assert (verified["service"], verified["env"], verified["version"]) == (scenario.service, "prod", "1.0.0")
    assert verified["supply_chain"] == [f"prod: {key_id}", f"prod: provenance by {key_id}"]
    assert verified["approvals"] == ["prod: bob"]
    held = json.loads(bundle.read_text())
    kinds = {entry["event"]["type"] for entry in held["entries"]}
    assert {"build.completed", "artifact.registered", "pipeline.applied", "gate.passed", "approval.granted",
            "deployment.started", "verification.passed"} <= kinds


def _entry(bundle: dict, kind: str) -> dict:
    return next(entry for entry in bundle["entries"] if entry["event"]["type"] == kind)


def _flip(text: str) -> str:
    """The same hex or base64 string with one character in its middle changed (to another of its alphabet). Not
    near its end: in base64 ending in `==` the last character before the padding carries bits a decoder drops,
    so changing it there can leave the bytes as they were (CI saw an altered signature verify)."""
    middle = len(text) // 2
    return text[:middle] + ("a" if text[middle] != "a" else "b") + text[middle + 1:]


ALTERATIONS = [
    # (what is altered, how, what the refusal must say)
    ("the claimed digest", lambda b: b.update(digest="sha256:" + "0" * 64), "the release: no build.completed"),
    ("the claimed environment", lambda b: b.update(env="staging"), "no gate.passed with version 1.0.0"),
    ("an event's data", lambda b: _entry(b, "gate.passed")["event"]["data"].update(env="staging"),
     "altered: its event and prev_hash do not hash to its hash"),
    ("an approver's identity", lambda b: _entry(b, "approval.granted")["event"]["data"].update(approver="mallory"),
     "(approval.granted at seq"),
    ("a signature the registration carries",
     lambda b: _entry(b, "artifact.registered")["event"]["data"]["supply_chain"]["signatures"][0].update(
         signature=_flip(_entry(b, "artifact.registered")["event"]["data"]["supply_chain"]["signatures"][0]["signature"])),
     "(artifact.registered at seq"),
    ("an entry's hash", lambda b: _entry(b, "verification.passed").update(
        hash=_flip(_entry(b, "verification.passed")["hash"])), "(verification.passed at seq"),
    ("an entry's prev_hash", lambda b: _entry(b, "build.completed").update(
        prev_hash=_flip(_entry(b, "build.completed")["prev_hash"])), "do not hash to its hash"),
    ("an inclusion proof", lambda b: _entry(b, "gate.passed")["proof"].__setitem__(
        0, _flip(_entry(b, "gate.passed")["proof"][0])), "its inclusion proof at index"),
    ("an entry's index", lambda b: _entry(b, "gate.passed").update(index=_entry(b, "gate.passed")["index"] + 1),
     "its inclusion proof at index"),
    ("an entry left out", lambda b: b["entries"].remove(_entry(b, "verification.passed")),
     "the release: no verification.passed with version 1.0.0, digest sha256:"),
    ("the order of entries", lambda b: b["entries"].reverse(), "not after entries[0] in the ledger"),
    ("the checkpoint's statement", lambda b: b["checkpoint"].update(statement=base64.b64encode(
        base64.b64decode(b["checkpoint"]["statement"]).replace(b'"size":', b'"size":1')).decode()),
     "checkpoint: its signature does not verify"),
    ("the checkpoint's signature", lambda b: b["checkpoint"].update(signature=_flip(b["checkpoint"]["signature"])),
     "checkpoint: its signature does not verify"),
    ("the key the checkpoint names", lambda b: b["checkpoint"].update(key_id="someone-else"),
     "checkpoint: signed by key 'someone-else', which is not among the keys given"),
    ("the format", lambda b: b.update(format="other/v9"), "format: not a bundle of"),
    ("an attestation the registration carries",
     lambda b: _entry(b, "artifact.registered")["event"]["data"]["supply_chain"].update(attestations=[]),
     "(artifact.registered at seq"),
]


async def test_each_altered_field_is_caught_and_named(proven, tmp_path):
    bundle, keys, _ = proven
    original = json.loads(bundle.read_text())
    missed = []
    for what, alter, says in ALTERATIONS:
        altered = copy.deepcopy(original)
        alter(altered)
        path = tmp_path / "altered.json"
        path.write_text(json.dumps(altered))
        done = await promote_async("verify-bundle", str(path), "--keys", str(keys), env={"PROMOTE_TOKEN": ""})
        if done.returncode != 1 or says not in done.stderr or done.stderr.count("\n") > 1:
            missed.append(f"{what}: exit {done.returncode}, {done.stderr.strip() or done.stdout.strip()}")
    assert not missed, "\n".join(missed)


async def test_a_bundle_is_refused_without_the_signers_key(proven, tmp_path):
    bundle, keys, key_id = proven
    (keys / f"{key_id}.pub").unlink()
    done = await promote_async("verify-bundle", str(bundle), "--keys", str(keys), env={"PROMOTE_TOKEN": ""})
    assert done.returncode == 1 and f"needs a signature by {key_id}; give that public key" in done.stderr
