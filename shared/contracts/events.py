"""Event contracts: the CloudEvents 1.0 envelope and every event's data model.

Each data model names its CloudEvents `type` and the topic it travels on. Event
names are past tense; the Kafka key of every event is the service name.
"""

import base64
import binascii
import math
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

import pydantic_core
from pydantic import (AfterValidator, BaseModel, ConfigDict, Discriminator, Field, StringConstraints, Tag,
                      ValidationError, field_validator, model_validator)

from shared.contracts import limits, topics
from shared.contracts.limits import (CheckName, ConfigKey, ConfigText, EnvironmentName, SecretReference, ServiceName,
                                     Text, Version, Who, Identity)
from shared.contracts.pipeline import PipelineDefinition, Resources

Digest = Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")]
ConfigValue = Annotated[
    Annotated[ConfigText, Tag("text")] | Annotated[dict[Literal["secret"], SecretReference], Tag("secret-ref")],
    Discriminator(lambda value: "text" if isinstance(value, str) else "secret-ref")]
"""A config value: a string, or {"secret": REF}; the pipeline's rules (shared.contracts.limits)."""
Config = dict[ConfigKey, ConfigValue]
Purpose = Literal["promotion", "rollback", "reconfigure", "restore"]
"""Why a deployment happened: a gate passed, a rollback was ordered, the pipeline's config changed, or the deployer
put back the release it had promoted after finding the environment drifted (`on_drift: restore`)."""
Driver = Literal["local", "noop", "container"]
ImageLocation = Annotated[str, StringConstraints(max_length=1024, pattern=r"^[^\s@:/]+(:[0-9]{1,5})?/[a-z0-9._/-]+@sha256:[0-9a-f]{64}$")]
"""Where an image is pulled from, by digest only: `registry/repository@sha256:…`."""
Replicas = Annotated[int, Field(ge=1, le=limits.MAX_REPLICAS)]
MAX_EVENT_BYTES = 256 * 1024
"""The largest record `parse_event` accepts; a bigger one is refused before it is parsed."""


class EventData(BaseModel):
    """Base of every event's `data`: frozen, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    event_type: ClassVar[str]
    topic: ClassVar[str]
    once_per: ClassVar[tuple[str, ...]] = ()
    """Fields that identify the event when it can happen only once for them (its id derives from them)."""
    service: ServiceName


class Artifact(BaseModel):
    """Where CI put the artifact and the digest it computed."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["file", "oci"]
    uri: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    digest: Digest


class BuildCompleted(EventData):
    """CI built an artifact once; the only way an artifact enters the system."""

    event_type = "build.completed"
    topic = topics.BUILDS
    version: Version
    artifact: Artifact
    commit: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    author: Identity
    """Who triggered the build, as CI's principal knows them (compared with approvers' verified identities)."""
    checks: dict[CheckName, Literal["passed", "failed"]] = Field(default_factory=dict)


class EvidenceRecorded(EventData):
    """A test runner or scanner reports a named check for a digest in an environment."""

    event_type = "evidence.recorded"
    topic = topics.EVIDENCE
    version: Version
    digest: Digest
    env: EnvironmentName
    check: CheckName
    result: Literal["passed", "failed"]
    url: str | None = None


class PipelineApplied(EventData):
    """An operator applied a pipeline definition; `definition` is its JSON form."""

    event_type = "pipeline.applied"
    topic = topics.PIPELINES
    pipeline_version: Digest
    definition: dict
    applied_by: Identity
    prune: list[EnvironmentName] = Field(default_factory=list, max_length=limits.MAX_ENVIRONMENTS)
    """Environments this definition drops whose release the operator asked to stop (`--prune`)."""

    @field_validator("definition")
    @classmethod
    def _a_valid_pipeline(cls, definition: dict) -> dict:
        """The definition obeys the pipeline's rules on the wire too (names, config, secret references)."""
        try:
            PipelineDefinition.model_validate(definition)
        except ValidationError as error:
            raise ValueError(f"not a valid pipeline: {limits.first_reason(error)}") from None
        return definition

    @model_validator(mode="after")
    def _prunes_only_dropped_environments(self) -> "PipelineApplied":
        kept = {environment["name"] for environment in self.definition.get("environments", [])}
        both = kept & set(self.prune)
        if both:
            raise ValueError(f"prune names environments the pipeline keeps: {', '.join(sorted(both))}")
        return self


MAX_SUPPLY_CHAIN_BYTES = 96 * 1024
"""The signature payloads and attestation envelopes one `artifact.registered` carries, in bytes before base64:
what a registry holds beyond it is not taken (intake says so in the supply chain's problems)."""
MAX_SUPPLY_CHAIN_ITEMS = 32
_Base64 = Annotated[str, StringConstraints(max_length=(MAX_SUPPLY_CHAIN_BYTES + 2) // 3 * 4,
                                           pattern=r"^[A-Za-z0-9+/]*={0,2}$")]


class FoundSignature(BaseModel):
    """One signature of the artifact as intake found it in the registry (cosign's `sha256-<digest>.sig`): the
    simple-signing payload's exact bytes and the signature over them, or why the layer could not be taken.
    Nothing here is trusted: gates checks the signature against its own keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    payload: _Base64 = ""
    signature: Annotated[str, StringConstraints(max_length=2048)] = ""
    problem: Text | None = None


class SupplyChain(BaseModel):
    """The signatures and attestations kept beside the artifact when intake registered it, as found: gates judges
    the signature and provenance gates on them, and an evidence bundle carries them for anyone to check again."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    signatures_manifest: Digest | None = None
    """The digest of the `.sig` manifest the signatures came from; None: the image has none."""
    signatures: tuple[FoundSignature, ...] = Field((), max_length=MAX_SUPPLY_CHAIN_ITEMS)
    attestations: tuple[_Base64, ...] = Field((), max_length=MAX_SUPPLY_CHAIN_ITEMS)
    """DSSE envelopes (JSON, base64): cosign's `sha256-<digest>.att` layers, or the lines of a file artifact's
    `<file>.intoto.jsonl`."""
    signature_problems: tuple[Text, ...] = Field((), max_length=MAX_SUPPLY_CHAIN_ITEMS)
    """What of the signatures could not be taken (a manifest that is not what cosign writes, past the limits)."""
    attestation_problems: tuple[Text, ...] = Field((), max_length=MAX_SUPPLY_CHAIN_ITEMS)
    """What of the attestations could not be taken (a layer or line that is not an envelope, past the limits)."""

    def payloads(self) -> list[tuple[bytes, str] | str]:
        """Each signature as (payload bytes, base64 signature), or the problem that makes it unusable."""
        found: list[tuple[bytes, str] | str] = []
        for item in self.signatures:
            if item.problem is not None:
                found.append(item.problem)
                continue
            try:
                found.append((base64.b64decode(item.payload, validate=True), item.signature))
            except (binascii.Error, ValueError):
                found.append("a payload that is not base64")
        return found

    def envelopes(self) -> list[bytes]:
        """The attestations' DSSE envelope bytes (one that is not base64 as empty bytes: judged malformed)."""
        found = []
        for item in self.attestations:
            try:
                found.append(base64.b64decode(item, validate=True))
            except (binascii.Error, ValueError):
                found.append(b"")
        return found

    @model_validator(mode="before")
    @classmethod
    def _older_spelling(cls, data: Any) -> Any:
        """`problems` was the first name of `signature_problems` (on main for an afternoon): a replay reads both."""
        if isinstance(data, dict) and "problems" in data and "signature_problems" not in data:
            data = {**data, "signature_problems": data["problems"]}
            del data["problems"]
        return data

    @model_validator(mode="after")
    def _within_budget(self) -> "SupplyChain":
        size = sum(len(item.payload) for item in self.signatures) + sum(len(item) for item in self.attestations)
        if size > (MAX_SUPPLY_CHAIN_BYTES + 2) // 3 * 4:
            raise ValueError(f"signatures and attestations of more than {MAX_SUPPLY_CHAIN_BYTES} bytes")
        return self


class ArtifactRegistered(EventData):
    """Intake stored the artifact and checked its digest against its bytes."""

    event_type = "artifact.registered"
    topic = topics.ARTIFACTS
    once_per = ("service", "version", "digest")
    version: Version
    digest: Digest
    kind: Literal["file", "oci"]
    commit: str
    author: str
    checks: dict[str, Literal["passed", "failed"]]
    build_event_id: str
    location: Annotated[str, StringConstraints(max_length=1024)] | None = None
    """Where the artifact is fetched from by digest: `registry/repository@sha256:…` for an image (the tag is
    never used again); None for a file (the store keeps it under its digest)."""
    tag: Annotated[str, StringConstraints(max_length=1024)] | None = None
    """The image reference CI gave (`registry/repository:tag`), kept to notice a tag moved to other bytes."""
    supply_chain: SupplyChain | None = None
    """The signatures and attestations found for the digest; None when none were looked for (an event from
    before they were)."""


class ArtifactTagMoved(EventData):
    """An image's tag now names other bytes than the digest registered for the release: the release keeps its
    digest (nothing is redeployed); the audit and status say the tag moved."""

    event_type = "artifact.tag_moved"
    topic = topics.ARTIFACTS
    version: Version
    digest: Digest
    """The registered digest, which every environment keeps running."""
    tag: Annotated[str, StringConstraints(max_length=1024)]
    moved_to: Digest
    """What the tag names now."""


class ArtifactRejected(EventData):
    """Intake refused a build; it is never deployed."""

    event_type = "artifact.rejected"
    topic = topics.ARTIFACTS
    version: Version
    digest: Digest
    reason: Literal[
        "immutability-violation", "digest-mismatch", "artifact-unreachable", "unsupported-artifact-kind",
        "registry-denied"
    ]
    detail: str
    build_event_id: str


class PromotionRequested(EventData):
    """A release should move into an environment once that environment's gates pass."""

    event_type = "promotion.requested"
    topic = topics.REQUESTS
    once_per = ("service", "version", "env", "digest")
    version: Version
    digest: Digest
    env: EnvironmentName


class GatePassed(EventData):
    """Every gate of the environment passed: the deployer may deploy this release."""

    event_type = "gate.passed"
    topic = topics.GATES
    once_per = ("service", "version", "env", "digest")
    version: Version
    digest: Digest
    env: EnvironmentName
    strategy: str | dict[str, Any] = "rolling"
    """The environment's rollout: "rolling", or {"blue_green": {...}} / {"canary": {...}} as in the pipeline."""
    driver: Driver = "local"
    location: ImageLocation | None = None
    """The image to pull (`artifact.registered`'s location) for the container driver; None for a file."""
    replicas: Replicas = 1
    resources: Resources | None = None
    config: Config
    config_version: Digest
    pipeline_version: Digest
    evidence: list[Text] = Field(default_factory=list, max_length=64)
    """What the signature and provenance gates accepted, one line each (e.g. which trusted key signed the digest)."""


class GatePending(EventData):
    """Some gate has not passed yet; `reasons` says which and why."""

    event_type = "gate.pending"
    topic = topics.GATES
    version: Version
    digest: Digest
    env: EnvironmentName
    reasons: list[str]


class GateFailed(EventData):
    """A gate said no (e.g. an approver rejected the release); the promotion stops."""

    event_type = "gate.failed"
    topic = topics.GATES
    once_per = ("service", "version", "env", "digest")
    version: Version
    digest: Digest
    env: EnvironmentName
    reasons: list[str]


class _Deployment(EventData):
    """Fields shared by every deployment and verification event."""

    deployment_id: str
    version: Version
    digest: Digest
    env: EnvironmentName
    config: Config
    config_version: Digest
    driver: Driver = "local"
    location: ImageLocation | None = None
    replicas: Replicas = 1
    resources: Resources | None = None
    purpose: Purpose = "promotion"
    rollback_id: str | None = None


class DeploymentStarted(_Deployment):
    """The deployer began to put a release into an environment."""

    event_type = "deployment.started"
    topic = topics.DEPLOYMENTS


RouterLane = Literal["blue", "green"]
"""One of a routed environment's two lanes."""
LanePort = Annotated[int, Field(ge=1, le=65535)]


class DeploymentSucceeded(_Deployment):
    """The release runs in the environment (not yet verified)."""

    event_type = "deployment.succeeded"
    topic = topics.DEPLOYMENTS
    port: int
    """Where the environment serves: the release's own port, or (routed) the router's."""
    lane: RouterLane | None = None
    """Routed (blue/green, canary): the lane the release runs in (what a rebuilt deployer learns lanes from)."""
    lane_port: LanePort | None = None
    """Routed: the lane's own port."""


class DeploymentFailed(_Deployment):
    """The release could not be started."""

    event_type = "deployment.failed"
    topic = topics.DEPLOYMENTS
    reason: str


class VerificationPassed(_Deployment):
    """Health and version checks passed and the running file has the promoted digest."""

    event_type = "verification.passed"
    topic = topics.DEPLOYMENTS
    checks: dict[str, str]


class VerificationFailed(_Deployment):
    """A verification check failed; the rollback service takes over (unless `superseded_by` names the newer
    deployment that replaced this one in the middle of its canary: that one is on its way)."""

    event_type = "verification.failed"
    topic = topics.DEPLOYMENTS
    reason: str
    checks: dict[str, str]
    superseded_by: str | None = None


class DeploymentProgressed(_Deployment):
    """A canary moved to its next step (`state` "step": it now takes `share` % of the traffic, judged at the end of
    the step), or an operator paused or resumed it; `checks` holds the figures of the steps passed so far."""

    event_type = "deployment.progressed"
    topic = topics.DEPLOYMENTS
    state: Literal["step", "paused", "resumed"]
    step: Annotated[int, Field(ge=1, le=100)]
    """The step the canary is at, from 1."""
    steps: Annotated[int, Field(ge=1, le=100)]
    share: Annotated[int, Field(ge=1, le=100)]
    checks: dict[str, str] = {}
    by: Identity | None = None
    """Who paused or resumed it (None: the deployer moved it on its own)."""
    lane: RouterLane | None = None
    """The canary's lane (None from a deployer older than these fields)."""
    lane_port: LanePort | None = None
    """The canary lane's own port."""
    serving: RouterLane | None = None
    """The lane that takes the rest of the traffic."""


class EnvironmentPruned(EventData):
    """The deployer stopped what ran in an environment a pipeline dropped with `--prune`; it is gone."""

    event_type = "environment.pruned"
    topic = topics.DEPLOYMENTS
    env: EnvironmentName
    version: Version | None
    digest: Digest | None
    stopped: list[str]
    """What was stopped: the slot and lanes whose processes ended (empty if nothing ran any more)."""
    pipeline_version: Digest
    applied_by: Identity


MAX_DIFFERENCES = 20
"""The most lines a drift event lists (the first ones found; the last line then says how many more there were)."""
DriftLine = Annotated[str, StringConstraints(max_length=300), AfterValidator(lambda value: limits.check_text(value))]
"""One difference between what runs and what was promoted, one printable line."""
DriftHow = Literal["promotion", "rollback", "reconfigure", "restore", "gone"]


class DriftDetected(EventData):
    """What runs in an environment is not what the deployer promoted there: `differences` says what differs.

    Emitted once per change of what differs (not at every check); `on_drift` is what the deployer does next:
    `report` (nothing), or `restore` (it redeploys the promoted release; deployment events with purpose
    `restore` whose deployment_id is this event's id)."""

    event_type = "drift.detected"
    topic = topics.DEPLOYMENTS
    env: EnvironmentName
    version: Version
    digest: Digest
    config_version: Digest
    """The promoted release (digest and config version) that should run there."""
    slot: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}(\.(blue|green))?$")]
    """Where it should run: the environment (`prod`) or its live lane (`prod.blue`)."""
    driver: Driver
    differences: list[DriftLine] = Field(min_length=1, max_length=MAX_DIFFERENCES)
    on_drift: Literal["report", "restore"] = "report"


class DriftResolved(EventData):
    """What runs in an environment is again what was promoted there: a deployment replaced the drifted release
    (`how`: its purpose, e.g. `promotion` or `restore`) or it was put right by hand (`how: gone`)."""

    event_type = "drift.resolved"
    topic = topics.DEPLOYMENTS
    env: EnvironmentName
    version: Version
    digest: Digest
    """The release that runs, verified, now."""
    how: DriftHow
    drift_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    """The id of the drift.detected this resolves."""
    deployment_id: str | None = None
    """The deployment that resolved it (None for `gone`)."""


class EnvironmentDrift(BaseModel):
    """What a drift check found in one environment."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    state: Literal["in-sync", "drifted", "not-checked"]
    version: Version | None = None
    digest: Digest | None = None
    differences: list[DriftLine] = Field(default_factory=list, max_length=MAX_DIFFERENCES)
    reason: DriftLine | None = None
    """Why it was not checked (a deployment in flight, its last deployment failed, the engine does not answer)."""


class DriftChecked(EventData):
    """The deployer's answer to a drift.check_requested: what each environment of the service runs against what
    was promoted there, as it found it just now."""

    event_type = "drift.checked"
    topic = topics.DEPLOYMENTS
    request_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    """The id of the drift.check_requested answered."""
    requested_by: Identity
    environments: dict[EnvironmentName, EnvironmentDrift] = Field(max_length=limits.MAX_ENVIRONMENTS)


class ApprovalGranted(EventData):
    """A person approved a release for an environment."""

    event_type = "approval.granted"
    topic = topics.OPERATIONS
    version: Version
    env: EnvironmentName
    approver: Identity
    """The verified identity of who decided (the operator API's authenticated subject)."""
    groups: tuple[Identity, ...] = ()
    """The approver's verified groups (an approval gate may require one of them: `from`)."""
    digest: Digest | None = None
    """The registered digest the decision is about (the API names it; gates ignore a decision for another)."""
    comment: Text | None = None


class ApprovalRejected(EventData):
    """A person rejected a release for an environment."""

    event_type = "approval.rejected"
    topic = topics.OPERATIONS
    version: Version
    env: EnvironmentName
    approver: Identity
    """The verified identity of who decided (the operator API's authenticated subject)."""
    groups: tuple[Identity, ...] = ()
    """The approver's verified groups (an approval gate may require one of them: `from`)."""
    digest: Digest | None = None
    """The registered digest the decision is about (the API names it; gates ignore a decision for another)."""
    comment: Text | None = None


class RollbackRequested(EventData):
    """An operator asked to return an environment to its last verified release."""

    event_type = "rollback.requested"
    topic = topics.OPERATIONS
    env: EnvironmentName
    requested_by: Identity
    reason: Text | None = None


class CanaryCommanded(EventData):
    """An operator's command to the canary in progress in an environment: `pause` (it holds its share, its step's
    analysis stops), `resume` (the step is published and judged afresh), `abort` (traffic back, the canary
    stops: verification.failed) or `promote` (all traffic to it now, the analysis left undone:
    verification.passed)."""

    event_type = "canary.commanded"
    topic = topics.OPERATIONS
    env: EnvironmentName
    action: Literal["pause", "resume", "abort", "promote"]
    requested_by: Identity
    reason: Text | None = None


class OperationRefused(EventData):
    """The operator API refused a request (authentication, role or a gate's rule): who tried what, and why.

    `service` is the service the request was about (`unknown` when the request named none validly)."""

    event_type = "operation.refused"
    topic = topics.OPERATIONS
    who: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    """The verified identity, or `anonymous` / what an unverifiable token claimed, marked as such."""
    action: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z-]{0,39}$")]
    env: EnvironmentName | None = None
    version: Version | None = None
    status: int
    reason: Text


class DriftCheckRequested(EventData):
    """An operator asked the deployer to compare what runs with what was promoted now (`promote drift`), in one
    environment or (env None) in all of the service's; the deployer answers with drift.checked."""

    event_type = "drift.check_requested"
    topic = topics.OPERATIONS
    env: EnvironmentName | None = None
    requested_by: Identity


class RollbackOrdered(EventData):
    """The rollback service chose the release to return to; the deployer deploys it."""

    event_type = "rollback.ordered"
    topic = topics.ROLLBACKS
    rollback_id: str
    env: EnvironmentName
    version: Version
    digest: Digest
    config: Config
    config_version: Digest
    driver: Driver = "local"
    location: ImageLocation | None = None
    replicas: Replicas = 1
    resources: Resources | None = None
    from_version: str | None
    reason: str
    requested_by: str


class RollbackCompleted(EventData):
    """The environment runs, verified, the release it was rolled back to."""

    event_type = "rollback.completed"
    topic = topics.ROLLBACKS
    rollback_id: str
    env: EnvironmentName
    version: Version
    digest: Digest


class RollbackFailed(EventData):
    """A rollback could not be done (no verified release, or it failed to verify)."""

    event_type = "rollback.failed"
    topic = topics.ROLLBACKS
    rollback_id: str
    env: EnvironmentName
    reason: str


EVENT_TYPES: dict[str, type[EventData]] = {
    model.event_type: model
    for model in (
        BuildCompleted, EvidenceRecorded, PipelineApplied, ArtifactRegistered, ArtifactRejected, ArtifactTagMoved,
        PromotionRequested, GatePassed, GatePending, GateFailed, DeploymentStarted,
        DeploymentSucceeded, DeploymentFailed, DeploymentProgressed, VerificationPassed, VerificationFailed,
        EnvironmentPruned, ApprovalGranted, ApprovalRejected, RollbackRequested, CanaryCommanded, OperationRefused,
        RollbackOrdered, RollbackCompleted, RollbackFailed, DriftDetected, DriftResolved, DriftChecked,
        DriftCheckRequested,
    )
}


class Envelope(BaseModel):
    """A CloudEvents 1.0 event as its structured JSON form, with its data still untyped (a binary-mode record
    is read into this same form: shared/contracts/kafka_binding.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    specversion: Literal["1.0"]
    id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    source: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    type: str
    time: datetime
    subject: str | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    correlationid: str | None = None
    data: dict

    @model_validator(mode="after")
    def _finite_numbers_only(self) -> "Envelope":
        """1e400, NaN or Infinity would not survive re-serialisation (JSON has no such numbers)."""
        stack: list = [self.data]
        while stack:
            value = stack.pop()
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError("data holds a number JSON cannot represent (1e400, NaN or Infinity)")
            if isinstance(value, dict):
                stack.extend(value.values())
            elif isinstance(value, list):
                stack.extend(value)
        return self


class Event(BaseModel):
    """A validated envelope together with its typed data."""

    model_config = ConfigDict(frozen=True)
    envelope: Envelope
    data: EventData

    @property
    def id(self) -> str:
        """The idempotency key."""
        return self.envelope.id

    @property
    def correlation_id(self) -> str:
        """Groups every event caused by one build (defaults to the event's own id)."""
        return self.envelope.correlationid or self.envelope.id

    def to_bytes(self) -> bytes:
        """The structured-mode JSON as it goes on the wire."""
        return self.envelope.model_dump_json(exclude_none=True).encode()


class InvalidEvent(ValueError):
    """The bytes are not a valid event; `reason` says why in one line."""

    def __init__(self, reason: str) -> None:
        # Input is echoed into reasons (field names, values): keep them one printable line.
        reason = "".join(c if c.isprintable() else repr(c)[1:-1] for c in reason)
        super().__init__(reason)
        self.reason = reason


def new_event(
    data: EventData,
    *,
    source: str,
    correlation_id: str | None = None,
    event_id: str | None = None,
    time: datetime | None = None,
) -> Event:
    """Wrap event data in a fresh envelope (the subject is the service)."""
    envelope = Envelope(
        specversion="1.0",
        id=event_id or str(uuid.uuid4()),
        source=source,
        type=data.event_type,
        time=time or datetime.now(UTC),
        subject=data.service,
        correlationid=correlation_id,
        data=data.model_dump(mode="json"),
    )
    return Event(envelope=envelope, data=data)


class _Unchecked:
    """The type of UNCHECKED."""

    def __repr__(self) -> str:
        return "UNCHECKED"


UNCHECKED = _Unchecked()
"""`parse_event`'s default key: not compared with the service (readers of history, tests)."""
RecordKey = bytes | None | _Unchecked
"""A record's Kafka key, which a consumer checks against `data.service`, or UNCHECKED."""


def parse_event(raw: bytes, expected_topic: str | None = None, *, key: RecordKey = UNCHECKED,
                now: datetime | None = None, max_skew_s: float = limits.MAX_CLOCK_SKEW_S) -> Event:
    """Validate wire bytes into an Event, or raise InvalidEvent with a readable one-line reason.

    Consumers pass the record's `key` (it must be `data.service` in UTF-8; an empty or null key is
    refused) and `now` (an envelope `time` more than `max_skew_s` after it is refused). Readers of
    history (the CLI's event watcher, the ledger rebuild) pass neither: what a consumer accepted
    once stays readable later, whatever the clock then says.
    """
    _check_size(raw)
    try:
        envelope = Envelope.model_validate_json(raw)
    except ValidationError as error:
        raise InvalidEvent(f"invalid envelope: {limits.first_reason(error)}") from None
    return _typed(envelope, expected_topic, key, now, max_skew_s)


def parse_binary_event(attributes: dict[str, str], data: bytes, expected_topic: str | None = None, *,
                       key: RecordKey = UNCHECKED, now: datetime | None = None,
                       max_skew_s: float = limits.MAX_CLOCK_SKEW_S) -> Event:
    """`parse_event` of the structured envelope that `attributes` (every attribute but `data`) and the JSON
    `data` make: the same limits and reasons, the same Event (shared.contracts.kafka_binding reads them off a
    record)."""
    _check_size(data)
    structured: dict[str, Any] = dict(attributes)
    if data:  # no value: no data, refused below as a structured envelope without one would be
        try:
            structured["data"] = pydantic_core.from_json(data)
        except ValueError as error:  # the parser of model_validate_json, so the same JSON is refused
            raise InvalidEvent(f"invalid envelope: data: Invalid JSON: {error}") from None
    try:
        envelope = Envelope.model_validate(structured)
    except ValidationError as error:
        raise InvalidEvent(f"invalid envelope: {limits.first_reason(error)}") from None
    return _typed(envelope, expected_topic, key, now, max_skew_s)


def _check_size(raw: bytes) -> None:
    """Refuse before parsing: a huge record would otherwise cost the consumer its memory and time."""
    if isinstance(raw, bytes | bytearray) and len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"event of {len(raw)} bytes exceeds the limit of {MAX_EVENT_BYTES} bytes")


def _typed(envelope: Envelope, expected_topic: str | None, key: RecordKey, now: datetime | None,
           max_skew_s: float) -> Event:
    """The envelope's event once its time, type, topic, data, subject and key pass, else InvalidEvent."""
    if now is not None:
        _check_time(envelope.time, now, max_skew_s)
    model = EVENT_TYPES.get(envelope.type)
    if model is None:
        raise InvalidEvent(f"unknown event type {envelope.type!r}")
    if expected_topic is not None and model.topic != expected_topic:
        raise InvalidEvent(f"event type {envelope.type!r} does not belong on topic {expected_topic!r}")
    try:
        data = model.model_validate(envelope.data)
    except ValidationError as error:
        raise InvalidEvent(f"invalid {envelope.type} data: {limits.first_reason(error)}") from None
    if envelope.subject is not None and envelope.subject != data.service:
        raise InvalidEvent(f"subject {envelope.subject!r} does not match data.service {data.service!r}")
    if not isinstance(key, _Unchecked):
        _check_key(key, data.service)
    return Event(envelope=envelope, data=data)


def _check_time(time: datetime, now: datetime, max_skew_s: float) -> None:
    try:
        limits.check_event_time(time, now, max_skew_s)
    except ValueError as error:
        raise InvalidEvent(str(error)) from None


def _check_key(key: bytes | None, service: str) -> None:
    """Every event of a service travels under its name, so that they stay in order on one partition."""
    if not key:
        missing = "null" if key is None else "empty"
        raise InvalidEvent(f"kafka key is {missing}; it must be data.service {service!r} (ordering is per service)")
    if key != service.encode():
        shown = limits.shown(key.decode("utf-8", errors="replace"))
        raise InvalidEvent(f"kafka key {shown} does not match data.service {service!r}")
