"""Evidence bundles: what justifies a release running in an environment, checkable offline with public keys only.

A bundle (JSON) holds the ledger entries about one release — its build, registration (with the signatures and
attestations intake found), every promotion request, gate verdict with its evidence, approval with the
approver's verified identity, deployment and verification, rollback — and the pipelines its verdicts were given
under; each entry with its place in the ledger (seq, index), its hash links (prev_hash, hash) and a Merkle
inclusion proof against a checkpoint of the ledger head signed with the ledger's key (shared/merkle.py,
services/ledger/checkpoints.py).

`verify` checks, and names the first thing that does not hold:
1. the checkpoint's signature, with the ledger's public key;
2. each entry: its event hashes, with its prev_hash, to its hash (the ledger's chain link), and its hash is the
   leaf at its index in the tree whose root the checkpoint signs; entries are in ledger order, and two entries
   next to each other in the ledger link to each other;
3. the release: every entry is about the bundle's service; it was built and registered with the bundle's digest,
   passed the environment's gates and was verified there with that digest;
4. every supply-chain gate, again: for each gate.passed, the environment's signed_by and provenance gates of the
   pipeline it was given under are judged once more on the signatures and attestations the registration
   carries (and the build's commit), with the keys given.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from shared.chain import canonical_bytes, link
from shared.contracts.events import SupplyChain
from shared.merkle import Tree, root_from_inclusion
from shared.signature_keys import TrustedKey
from shared.signatures import Signed, carried, judge

FORMAT = "promote.evidence-bundle/v1"
CHECKPOINT_TYPE = "promote.ledger.checkpoint/v1"
LEDGER_KEY_ID = "ledger"
MAX_BUNDLE_BYTES = 64 * 2**20
MAX_ENTRIES = 100_000
MAX_PROOF = 64
_HEX64 = frozenset("0123456789abcdef")


class BundleError(ValueError):
    """The first thing in a bundle that does not hold, in one line."""


@dataclass(frozen=True)
class Entry:
    """One ledger entry as a bundle carries it."""

    seq: int
    index: int
    prev_hash: str
    hash: str
    event: dict
    proof: list[str]


def assemble(service: str, env: str, version: str, digest: str, entries: Sequence[tuple[int, str, str, bytes]],
             leaves: Sequence[str], checkpoint: Mapping[str, Any]) -> dict:
    """The bundle of `entries` (seq, prev_hash, hash, canonical) against `checkpoint` (its statement bytes and
    signature), `leaves` being every entry hash of the ledger up to the checkpoint, in chain order."""
    tree = Tree([bytes.fromhex(leaf) for leaf in leaves])
    index_of = {leaf: index for index, leaf in enumerate(leaves)}
    carried = []
    for seq, prev_hash, hash_, canonical in entries:
        index = index_of[hash_]
        carried.append({"seq": seq, "index": index, "prev_hash": prev_hash, "hash": hash_,
                        "event": json.loads(canonical), "proof": [p.hex() for p in tree.inclusion_proof(index)]})
    return {"format": FORMAT, "service": service, "env": env, "version": version, "digest": digest,
            "checkpoint": {"key_id": LEDGER_KEY_ID, "statement": base64.b64encode(checkpoint["statement"]).decode(),
                           "signature": checkpoint["signature"]},
            "entries": carried}


@dataclass(frozen=True)
class Verified:
    """What a bundle was found to prove."""

    service: str
    env: str
    version: str
    digest: str
    entries: int
    checkpoint: dict
    supply_chain: list[str] = field(default_factory=list)
    """Supply-chain gates judged again: `env: key id` (signed_by), `env: provenance by key id`."""
    approvals: list[str] = field(default_factory=list)
    """`env: approver (groups)` of every approval granted."""


def load(raw: bytes) -> dict:
    """The bundle's JSON (BundleError if it is too large or not JSON)."""
    if len(raw) > MAX_BUNDLE_BYTES:
        raise BundleError(f"the bundle has {len(raw)} bytes, more than {MAX_BUNDLE_BYTES}")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BundleError("the bundle is not JSON") from None


def verify(bundle: Any, keys: Mapping[str, TrustedKey]) -> Verified:
    """Check the bundle (see the module's docstring); BundleError naming the first thing that does not hold."""
    claim = _claim(bundle)
    checkpoint = _checkpoint(bundle, keys)
    entries = _entries(bundle, checkpoint)
    events = [entry.event for entry in entries]
    _release(claim, entries)
    return Verified(**claim, entries=len(entries), checkpoint=checkpoint,
                    supply_chain=_supply_chain_gates(claim, entries, keys), approvals=_approvals(events))


def _claim(bundle: Any) -> dict:
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise BundleError(f"format: not a bundle of {FORMAT}")
    claim = {}
    for key in ("service", "env", "version", "digest"):
        if not isinstance(bundle.get(key), str) or not bundle[key]:
            raise BundleError(f"{key}: missing or not a string")
        claim[key] = bundle[key]
    return claim


def _checkpoint(bundle: dict, keys: Mapping[str, TrustedKey]) -> dict:
    signed = bundle.get("checkpoint")
    if not isinstance(signed, dict):
        raise BundleError("checkpoint: missing")
    key_id = signed.get("key_id")
    key = keys.get(key_id) if isinstance(key_id, str) else None
    if key is None:
        raise BundleError(f"checkpoint: signed by key {str(key_id)[:64]!r}, which is not among the keys given "
                          f"(the ledger's public key: --keys var/keys/{LEDGER_KEY_ID}.pub)")
    try:
        statement = base64.b64decode(signed.get("statement", ""), validate=True)
        signature = base64.b64decode(signed.get("signature", ""), validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise BundleError("checkpoint: its statement or signature is not base64") from None
    if not key.verifies(signature, statement):
        raise BundleError(f"checkpoint: its signature does not verify with key {key_id} (statement or signature "
                          "altered, or signed by another key)")
    try:
        parsed = json.loads(statement)
    except ValueError:
        raise BundleError("checkpoint: its statement is not JSON") from None
    if not isinstance(parsed, dict) or parsed.get("type") != CHECKPOINT_TYPE \
            or type(parsed.get("size")) is not int or parsed["size"] < 1 or not _is_hash(parsed.get("root")):
        raise BundleError(f"checkpoint: its statement is not a {CHECKPOINT_TYPE} with a size and a root")
    return parsed


def _is_hash(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX64


def _entries(bundle: dict, checkpoint: dict) -> list[Entry]:
    raw = bundle.get("entries")
    if not isinstance(raw, list) or not raw:
        raise BundleError("entries: missing or empty")
    if len(raw) > MAX_ENTRIES:
        raise BundleError(f"entries: {len(raw)}, more than {MAX_ENTRIES}")
    root, size = bytes.fromhex(checkpoint["root"]), checkpoint["size"]
    entries: list[Entry] = []
    for position, item in enumerate(raw):
        where = f"entries[{position}]"
        entry = _entry(item, where)
        where += f" ({str(entry.event.get('type'))[:64]} at seq {entry.seq})"
        if link(entry.prev_hash, canonical_bytes(entry.event)) != entry.hash:
            raise BundleError(f"{where}: altered: its event and prev_hash do not hash to its hash")
        proof = [bytes.fromhex(step) for step in entry.proof]
        if root_from_inclusion(bytes.fromhex(entry.hash), entry.index, size, proof) != root:
            raise BundleError(f"{where}: not in the ledger the checkpoint signs: its inclusion proof at index "
                              f"{entry.index} does not lead to the signed root")
        if entries:
            before = entries[-1]
            if entry.index <= before.index or entry.seq <= before.seq:
                raise BundleError(f"{where}: not after entries[{position - 1}] in the ledger")
            if entry.index == before.index + 1 and entry.prev_hash != before.hash:
                raise BundleError(f"{where}: its prev_hash is not the hash of entries[{position - 1}], the entry "
                                  "before it in the ledger")
        entries.append(entry)
    return entries


def _entry(item: Any, where: str) -> Entry:
    if not isinstance(item, dict):
        raise BundleError(f"{where}: not an object")
    seq, index, proof, event = item.get("seq"), item.get("index"), item.get("proof"), item.get("event")
    if type(seq) is not int or type(index) is not int or index < 0:
        raise BundleError(f"{where}: its seq and index are not whole numbers")
    if not _is_hash(item.get("prev_hash")) or not _is_hash(item.get("hash")):
        raise BundleError(f"{where}: its prev_hash and hash are not sha256 hex")
    if not isinstance(proof, list) or len(proof) > MAX_PROOF or not all(_is_hash(step) for step in proof):
        raise BundleError(f"{where}: its proof is not a list of sha256 hex")
    if not isinstance(event, dict) or not isinstance(event.get("data"), dict) or not isinstance(event.get("type"), str):
        raise BundleError(f"{where}: its event is not a CloudEvent with data")
    return Entry(seq, index, item["prev_hash"], item["hash"], event, proof)


def _release(claim: dict, entries: list[Entry]) -> None:
    """The entries are about the claimed service, and show the digest built, registered, passed and verified."""
    service, env, version, digest = claim["service"], claim["env"], claim["version"], claim["digest"]
    for position, entry in enumerate(entries):
        if entry.event["data"].get("service") != service:
            raise BundleError(f"entries[{position}] ({entry.event['type']} at seq {entry.seq}): about another "
                              f"service than {service}")

    def found(kind: str, **fields: str) -> bool:
        return any(entry.event["type"] == kind and all(_field(entry.event["data"], key) == value
                                                       for key, value in fields.items()) for entry in entries)

    needed = [("build.completed", {"version": version, "artifact.digest": digest}),
              ("artifact.registered", {"version": version, "digest": digest})]
    for each in _path_to(env, version, digest, entries):  # every environment before it, then it
        needed += [("gate.passed", {"version": version, "digest": digest, "env": each}),
                   ("verification.passed", {"version": version, "digest": digest, "env": each})]
    for kind, fields in needed:
        if not found(kind, **fields):
            shown = ", ".join(f"{key} {value}" for key, value in fields.items())
            raise BundleError(f"the release: no {kind} with {shown} among the entries")


def _path_to(env: str, version: str, digest: str, entries: list[Entry]) -> list[str]:
    """The environments the release went through to reach `env`, by the pipeline its gate.passed there was
    given under ([env] alone if the bundle has no such gate.passed: the check then says so): every upstream of
    each, or for a `require: any` join the first upstream the entries show it verified in."""
    from shared.contracts.pipeline import PipelineDefinition

    passed = [entry.event["data"] for entry in entries if entry.event["type"] == "gate.passed"
              and entry.event["data"].get("env") == env and entry.event["data"].get("digest") == digest]
    definitions = {entry.event["data"].get("pipeline_version"): entry.event["data"].get("definition")
                   for entry in entries if entry.event["type"] == "pipeline.applied"}
    if not passed or passed[-1].get("pipeline_version") not in definitions:
        return [env]
    try:
        pipeline = PipelineDefinition.model_validate(definitions[passed[-1]["pipeline_version"]])
    except ValueError:
        raise BundleError(f"the pipeline of gate.passed in {env} is not a valid pipeline") from None
    if env not in pipeline.environment_names:
        return [env]
    verified = {entry.event["data"].get("env") for entry in entries if entry.event["type"] == "verification.passed"
                and entry.event["data"].get("digest") == digest and entry.event["data"].get("version") == version}
    return list(pipeline.path_to(env, verified))


def _field(data: dict, dotted: str) -> Any:
    value: Any = data
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _supply_chain_gates(claim: dict, entries: list[Entry], keys: Mapping[str, TrustedKey]) -> list[str]:
    """Judge every signed_by and provenance gate of every gate.passed again, on the registration's signatures
    and attestations."""
    from shared.contracts.pipeline import PipelineDefinition, ProvenanceGate, SignatureGate

    pipelines = {entry.event["data"].get("pipeline_version"): entry.event["data"].get("definition")
                 for entry in entries if entry.event["type"] == "pipeline.applied"}
    registered = next(entry.event["data"] for entry in entries if entry.event["type"] == "artifact.registered"
                      and entry.event["data"].get("digest") == claim["digest"])
    judged = []
    for entry in entries:
        data = entry.event["data"]
        if entry.event["type"] != "gate.passed" or data.get("digest") != claim["digest"]:
            continue
        where = f"gate.passed in {data.get('env')} at seq {entry.seq}"
        definition = pipelines.get(data.get("pipeline_version"))
        if definition is None:
            raise BundleError(f"{where}: the pipeline it was given under ({str(data.get('pipeline_version'))[:80]}) "
                              "is not among the entries")
        try:
            environment = PipelineDefinition.model_validate(definition).environment(data.get("env"))
        except (ValueError, KeyError):
            raise BundleError(f"{where}: its pipeline does not define the environment") from None
        for gate in environment.gates:
            if isinstance(gate, SignatureGate):
                judged.append(f"{data['env']}: {_signed(where, gate.signed_by, registered, claim['digest'], keys)}")
            elif isinstance(gate, ProvenanceGate):
                judged.append(f"{data['env']}: provenance by {_attested(where, gate, registered, claim, keys, entries)}")
    return judged


def _attested(where: str, gate, registered: dict, claim: dict, keys: Mapping[str, TrustedKey],
              entries: list[Entry]) -> str:
    from shared.attestations import Provenance, judge_provenance

    wanted = gate.signed_by
    given = [key for key_id, key in keys.items() if key_id != LEDGER_KEY_ID and (wanted is None or key_id in wanted)]
    if not given:
        raise BundleError(f"{where}: its provenance gate needs a key ({', '.join(wanted or ['any trusted key'])}); "
                          "give that public key with --keys to check it")
    commit = next((entry.event["data"].get("commit") for entry in entries if entry.event["type"] == "build.completed"
                   and _field(entry.event["data"], "artifact.digest") == claim["digest"]), None)
    try:
        verdict = judge_provenance(_carried(where, registered).envelopes(), claim["digest"], given, builder=gate.builder, source=gate.source,
                                   commit=str(commit))
    except ValueError as error:
        raise BundleError(f"{where}: {error}") from None
    if not isinstance(verdict, Provenance):
        raise BundleError(f"{where}: {verdict.reason}")
    return verdict.key_id


def _signed(where: str, wanted: Sequence[str], registered: dict, digest: str, keys: Mapping[str, TrustedKey]) -> str:
    given = [keys[key_id] for key_id in wanted if key_id in keys]
    if not given:
        raise BundleError(f"{where}: its gate needs a signature by {', '.join(wanted)}; give that public key with "
                          "--keys to check it")
    chain = _carried(where, registered)
    location = str(registered.get("location"))
    if not chain.signatures:
        raise BundleError(f"{where}: its gate needs a signature by {', '.join(wanted)}, and the registration "
                          "carries none")
    verdict = judge(location, digest, chain.signatures_manifest or "", carried(chain), given)
    if not isinstance(verdict, Signed):
        raise BundleError(f"{where}: {verdict.reason}")
    return verdict.key_id


def _carried(where: str, registered: dict) -> SupplyChain:
    """The signatures and attestations the registration carries, read as the event model reads them."""
    try:
        return SupplyChain.model_validate(registered.get("supply_chain") or {})
    except ValidationError:
        raise BundleError(f"{where}: the registration's supply_chain is not what intake writes") from None


def _approvals(events: list[dict]) -> list[str]:
    return [f"{event['data'].get('env')}: {event['data'].get('approver')}"
            + (f" ({', '.join(event['data']['groups'])})" if event["data"].get("groups") else "")
            for event in events if event["type"] == "approval.granted"]
