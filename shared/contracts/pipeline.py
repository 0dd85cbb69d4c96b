"""The pipeline definition: one YAML file per service, validated with line-accurate errors.

A pipeline names a service, its artifact kind and the ordered environments one digest is
promoted through, each with gates, a rollout strategy and config. The JSON dump
(``model_dump(mode="json")``, sent over Kafka and re-validated by consumers) has the YAML's
shape with defaults filled in, so a dump is itself a valid pipeline. Gates dump as one-key
mappings: ``{"evidence": "unit-tests"}`` and ``{"approval": {"min": 1, "not_author": true,
"role": null}}``; secret config values as ``{"secret": "payments/prod/dsn"}`` (never a value).

The gates' models are in shared/contracts/time_gates.py and shared/contracts/trust_gates.py, the strategies' in
shared/contracts/strategies.py; this module has the pipeline and its environments, and reads the YAML.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Collection
from typing import Annotated, Any, Literal, Union

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field,
                      Tag, ValidationError, ValidationInfo, field_validator,
                      model_serializer, model_validator)
from pydantic_core import PydanticCustomError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarbool import ScalarBoolean

from shared.contracts import limits
from shared.contracts.limits import Identity
from shared.contracts.time_gates import ChangeWindowGate, Freeze, SoakGate
from shared.contracts.strategies import (Analysis, BlueGreen, Canary, Duration, Metric, Strategy, strategy_kind,
                               success_condition)
from shared.contracts.trust_gates import ProvenanceGate, SignatureGate

__all__ = ["Analysis", "ApprovalGate", "Artifact", "BlueGreen", "Canary", "ChangeWindowGate", "Duration",
           "Environment", "EvidenceGate", "Freeze", "Gate", "Metric", "PipelineDefinition", "PipelineError", "Problem",
           "ProvenanceGate", "Resources", "SecretRef", "SignatureGate", "SoakGate", "Strategy", "load_pipeline_file",
           "parse_pipeline", "success_condition"]

RESERVED_CONFIG_KEYS = frozenset({"PORT", "BUILD_VERSION", "ARTIFACT_DIGEST", "CONFIG_VERSION"})
"""Config keys the deployer sets itself."""
GATE_KINDS = ("approval", "change_window", "evidence", "provenance", "signed_by", "soak")
_SHAPE = "a mapping with service, artifact and environments"


def _sha256(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _not_reserved(key: str) -> str:
    if key in RESERVED_CONFIG_KEYS:
        raise ValueError(f"config key {key!r} is reserved (set by the deployer)")
    return key


def _config_value(value: Any) -> Any:
    if isinstance(value, str):
        return limits.check_config_value(value)
    if isinstance(value, (dict, SecretRef)):
        return value
    if isinstance(value, (bool, int, float)):
        shown, what = (str(value).lower(), "boolean") if isinstance(value, bool) else (value, "number")
        raise ValueError(f'config value {shown} is a {what}; quote it ("{shown}"): '
                         "environment variables are strings")
    raise ValueError("config value must be a string or a secret reference {secret: ref}")




class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SecretRef(_Frozen):
    """A config value resolved from the secret store at deploy time; only the reference is kept."""

    secret: limits.SecretReference


class EvidenceGate(_Frozen):
    """Passes when the named check passed for this digest in the previous environment or in CI."""

    check: limits.CheckName

    @model_validator(mode="before")
    @classmethod
    def _from_pipeline_form(cls, data: Any) -> Any:
        if isinstance(data, dict) and set(data) == {"evidence"}:
            if not isinstance(data["evidence"], str):
                raise ValueError("an evidence gate names a check, e.g. {evidence: unit-tests}")
            return {"check": data["evidence"]}
        return data

    @model_serializer
    def _to_pipeline_form(self) -> dict[str, Any]:
        return {"evidence": self.check}


class ApprovalGate(_Frozen):
    """Passes when `min` people approve: members of a group in `from` (if given), not the author (if
    `not_author`), each counted by verified identity. `role: X` is the older spelling of `from: [X]`."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    min: int = Field(1, ge=1, strict=True)
    not_author: bool = Field(True, strict=True)
    role: Identity | None = None
    from_: tuple[Identity, ...] = Field((), alias="from")

    @property
    def groups(self) -> frozenset[str]:
        """The groups an approver must belong to (one of them); empty: anyone may approve."""
        return frozenset(self.from_) | ({self.role} if self.role else set())

    @model_validator(mode="before")
    @classmethod
    def _from_pipeline_form(cls, data: Any) -> Any:
        if isinstance(data, dict) and set(data) == {"approval"}:
            if not isinstance(body := {} if data["approval"] is None else data["approval"], dict):
                raise ValueError("an approval gate is a mapping, e.g. "
                                 "{approval: {role: release-manager, min: 1, not_author: true}}")
            return body
        return data

    @model_serializer
    def _to_pipeline_form(self) -> dict[str, Any]:
        body = {"min": self.min, "not_author": self.not_author, "role": self.role}
        if self.from_:  # only when given: pipelines without it keep their content hash
            body["from"] = list(self.from_)
        return {"approval": body}


def _gate_shape(value: Any) -> Any:
    expected = ", ".join(GATE_KINDS)
    if isinstance(value, (EvidenceGate, ApprovalGate, SoakGate, ChangeWindowGate, SignatureGate, ProvenanceGate)):
        return value.model_dump()
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError(f"a gate is a mapping with exactly one key (one of: {expected})")
    if (kind := next(iter(value))) not in GATE_KINDS:
        raise ValueError(f"unknown gate kind {kind!r} (expected one of: {expected})")
    return value


def _gate_kind(gate: Any) -> str:
    return next(iter(gate if isinstance(gate, dict) else gate.model_dump()))


Gate = Annotated[Union[Annotated[EvidenceGate, Tag("evidence")], Annotated[ApprovalGate, Tag("approval")],
                       Annotated[SoakGate, Tag("soak")], Annotated[ChangeWindowGate, Tag("change_window")],
                       Annotated[SignatureGate, Tag("signed_by")], Annotated[ProvenanceGate, Tag("provenance")]],
                 Discriminator(_gate_kind), BeforeValidator(_gate_shape)]
"""One gate: `{evidence: NAME}`, `{approval: {min, not_author, role}}`, `{soak: DURATION}`,
`{change_window: {days, start, end, timezone, freezes}}`, `{signed_by: [KEY]}` or
`{provenance: {builder, source, signed_by}}`."""
_ConfigValue = Annotated[Union[Annotated[str, Tag("text")], Annotated[SecretRef, Tag("secret-ref")]],
                         Discriminator(lambda v: "text" if isinstance(v, str) else "secret-ref"),
                         BeforeValidator(_config_value)]




class Artifact(_Frozen):
    """What the build produces: a plain file or an OCI image, addressed by digest."""

    kind: Literal["file", "oci"] = "file"


def _memory(value: str) -> str:
    if not re.fullmatch(r"[1-9][0-9]{0,5}[kmg]", value):
        raise ValueError(f"memory {value!r} is not a size; write it like 256m or 1g (k, m or g: KiB, MiB, GiB)")
    return value


class Resources(_Frozen):
    """Limits of each container of an environment (the container driver): memory and CPUs."""

    memory: Annotated[str, AfterValidator(_memory)] | None = None
    """"256m", "1g": a container using more is killed by the engine (its verification then fails)."""
    cpus: Annotated[float, Field(gt=0, le=limits.MAX_CPUS)] | None = None
    """CPU time as a number of CPUs ("0.5": half of one)."""

    @property
    def memory_bytes(self) -> int | None:
        """The memory limit in bytes."""
        if self.memory is None:
            return None
        return int(self.memory[:-1]) * 1024 ** ("kmg".index(self.memory[-1]) + 1)


ROUTED_DRIVERS = ("local", "container")
"""Drivers whose releases serve real traffic, so that the router can move it (blue/green, canary)."""


class Environment(_Frozen):
    """One step of the promotion path: its gates, rollout strategy, how it runs and its config."""

    name: limits.EnvironmentName
    gates: tuple[Gate, ...] = ()
    strategy: Strategy = "rolling"
    driver: Literal["local", "noop", "container"] = "local"
    """How the deployer makes it real: `local` runs the artifact file as a process, `container` runs the image
    on a container engine, `noop` only records the order."""
    replicas: Annotated[int, Field(ge=1, le=limits.MAX_REPLICAS)] = 1
    """Containers per lane (the container driver), behind the router: more than one needs blue_green or canary."""
    resources: Resources | None = None
    config: dict[Annotated[limits.ConfigKey, AfterValidator(_not_reserved)], _ConfigValue] = {}
    on_drift: Literal["report", "restore"] = "report"
    """What the deployer does when what runs is not what it promoted: `report` (drift.detected, status says
    drifted) or `restore` (also redeploy the promoted release). Not part of the config version."""
    after: tuple[limits.EnvironmentName, ...] | None = Field(None, max_length=limits.MAX_ENVIRONMENTS)
    """The environments a release must be verified in before it may enter this one (fan-out: several name the
    same one; fan-in: one names several). Unset: the environment listed before it (none for the first)."""
    require: Literal["all", "any"] = "all"
    """With several `after`: verified in all of them, or in any one."""

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict[str, Any]:
        dumped = handler(self)
        # Only when set: pipelines without them keep their content hash.
        for key, default in (("on_drift", "report"), ("after", None), ("require", "all")):
            if getattr(self, key) == default:
                dumped.pop(key, None)
        return dumped

    @model_validator(mode="after")
    def _router_needs_real_traffic(self) -> "Environment":
        if self.strategy != "rolling" and self.driver not in ROUTED_DRIVERS:
            raise ValueError(f"strategy {strategy_kind(self.strategy)} needs the local or container driver "
                             "(it routes real traffic)")
        if self.replicas > 1 and (self.driver != "container" or self.strategy == "rolling"):
            raise ValueError("replicas above 1 need the container driver and a blue_green or canary strategy "
                             "(the router spreads the traffic over them)")
        if self.resources is not None and self.driver != "container":
            raise ValueError("resources apply to the container driver only")
        return self

    @property
    def strategy_kind(self) -> str:
        """`rolling`, `blue_green` or `canary`."""
        return strategy_kind(self.strategy)

    @property
    def config_version(self) -> str:
        """`sha256:<hex>` of the canonical JSON of this config (secret references, never values), with the
        replicas and resources when they are set: a change of any of them redeploys (reconfigure)."""
        dumped = self.model_dump(mode="json")
        if self.replicas == 1 and self.resources is None:
            return _sha256(dumped["config"])  # as before replicas existed: no redeployment on upgrade
        return _sha256({key: dumped[key] for key in ("config", "replicas", "resources")})


class PipelineDefinition(_Frozen):
    """A service's pipeline: its artifact kind and the ordered environments it is promoted through."""

    service: limits.ServiceName
    artifact: Artifact = Artifact()
    environments: tuple[Environment, ...]

    @field_validator("environments")
    @classmethod
    def _unique_names(cls, environments: tuple[Environment, ...]) -> tuple[Environment, ...]:
        if not environments:
            raise ValueError("a pipeline needs at least one environment")
        if len(environments) > limits.MAX_ENVIRONMENTS:
            raise ValueError(f"a pipeline has at most {limits.MAX_ENVIRONMENTS} environments, "
                             f"not {len(environments)}")
        names = [environment.name for environment in environments]
        for index, name in enumerate(names):
            if name in names[:index]:  # "at" extends the error's loc to the duplicate's name
                raise PydanticCustomError("duplicate_environment", "environment name '{name}' is "
                                          "used more than once", {"name": name, "at": [index, "name"]})
        return environments

    @model_validator(mode="before")
    @classmethod
    def _images_run_as_containers(cls, data: Any) -> Any:
        """An image pipeline's environments run on the container driver unless they name another."""
        if isinstance(data, dict) and isinstance(data.get("artifact"), dict) and data["artifact"].get("kind") == "oci" \
                and isinstance(data.get("environments"), (list, tuple)):
            environments = [{**env, "driver": "container"} if isinstance(env, dict) and "driver" not in env else env
                            for env in data["environments"]]
            data = {**data, "environments": environments}
        return data

    @field_validator("environments")
    @classmethod
    def _drivers_run_the_artifact_kind(cls, environments: tuple[Environment, ...],
                                       info: ValidationInfo) -> tuple[Environment, ...]:
        kind = info.data["artifact"].kind if "artifact" in info.data else "file"
        for index, environment in enumerate(environments):
            if (environment.driver, kind) in (("local", "oci"), ("container", "file")):
                runs = "an artifact file as a process" if environment.driver == "local" else "an image"
                raise PydanticCustomError(
                    "driver_kind", "driver {driver} runs {runs}, and this pipeline's artifact kind is {kind}",
                    {"driver": environment.driver, "runs": runs, "kind": kind, "at": [index, "driver"]})
        return environments

    @field_validator("environments")
    @classmethod
    def _signatures_are_of_images(cls, environments: tuple[Environment, ...],
                                  info: ValidationInfo) -> tuple[Environment, ...]:
        if "artifact" in info.data and info.data["artifact"].kind == "oci":
            return environments
        for index, environment in enumerate(environments):
            for position, gate in enumerate(environment.gates):
                if isinstance(gate, SignatureGate):
                    raise PydanticCustomError(
                        "signature_of_a_file", "a signed_by gate checks cosign's signature of an image; this "
                        "pipeline's artifact kind is file (a provenance gate checks a file's attestation)",
                        {"at": [index, "gates", position]})
        return environments

    @field_validator("environments")
    @classmethod
    def _soak_follows_an_environment(cls, environments: tuple[Environment, ...]) -> tuple[Environment, ...]:
        for index, gate in enumerate(environments[0].gates):
            if isinstance(gate, SoakGate):  # "at" points the error at the gate
                raise PydanticCustomError("soak_in_first_environment", "a soak gate needs a previous environment "
                                          "to soak in; '{name}' is the first", {"name": environments[0].name,
                                                                                  "at": [0, "gates", index]})
        return environments

    def environment(self, name: str) -> Environment:
        """The environment called `name`; KeyError if the pipeline has none."""
        for environment in self.environments:
            if environment.name == name:
                return environment
        raise KeyError(name)

    @model_validator(mode="after")
    def _a_graph_from_the_first(self) -> "PipelineDefinition":
        """Every `after` names other environments of the pipeline, each once; only the first environment has no
        upstream; `require: any` joins several; no environment waits on a cycle."""
        names = self.environment_names
        for index, environment in enumerate(self.environments):
            after = environment.after
            if after is None:
                pass
            elif index == 0 and after:
                raise PydanticCustomError("after_on_first", "'{name}' is the first environment, where every release "
                                          "enters: it comes after none", {"name": environment.name,
                                                                          "at": ["environments", 0, "after"]})
            elif index > 0 and not after:
                raise PydanticCustomError("after_empty", "only the first environment comes after none; name the "
                                          "environments '{name}' comes after", {"name": environment.name,
                                                                                "at": ["environments", index,
                                                                                       "after"]})
            for position, upstream in enumerate(after or ()):
                at = ["environments", index, "after", position]
                if upstream not in names:
                    raise PydanticCustomError("unknown_upstream", "'{upstream}' is not an environment of this "
                                              "pipeline", {"upstream": upstream, "at": at})
                if upstream == environment.name:
                    raise PydanticCustomError("after_itself", "'{name}' cannot come after itself",
                                              {"name": upstream, "at": at})
                if upstream in after[:position]:
                    raise PydanticCustomError("after_twice", "'{name}' is named twice", {"name": upstream, "at": at})
            if environment.require == "any" and len(self.upstreams(environment.name)) < 2:
                raise PydanticCustomError("require_any_of_one", "require: any joins two or more environments; "
                                          "'{name}' comes after one", {"name": environment.name,
                                                                       "at": ["environments", index, "require"]})
        cycle = self._cycle()
        if cycle:
            index = names.index(cycle[0])
            raise PydanticCustomError("cycle", "{path} form a cycle: none of them can ever be entered",
                                      {"path": " → ".join(cycle + [cycle[0]]), "at": ["environments", index,
                                                                                      "after"]})
        return self

    def _cycle(self) -> list[str]:
        """Environments that wait on each other in a circle (in order), or [] if none do."""
        state: dict[str, str] = {}  # "open" while on the path, "done" once every upstream is known to end
        path: list[str] = []

        def visit(name: str) -> list[str]:
            state[name] = "open"
            path.append(name)
            for upstream in self.upstreams(name):
                if state.get(upstream) == "open":
                    return list(reversed(path[path.index(upstream):]))
                if upstream not in state and (found := visit(upstream)):
                    return found
            state[name] = "done"
            path.pop()
            return []

        for name in self.environment_names:
            if name not in state and (found := visit(name)):
                return found
        return []

    def upstreams(self, name: str) -> tuple[str, ...]:
        """The environments a release must be verified in before it may enter `name` (KeyError if unknown)."""
        environment = self.environment(name)
        if environment.after is not None:
            return environment.after
        index = self.environments.index(environment)
        return (self.environments[index - 1].name,) if index > 0 else ()

    def graph(self) -> list[dict]:
        """The environments in order, each with those it comes after and whether it needs all or any of them:
        `[{"name": "prod", "after": ["staging"], "require": "all"}, ...]` (what status and audit show)."""
        return [{"name": environment.name, "after": list(self.upstreams(environment.name)),
                 "require": environment.require} for environment in self.environments]

    def downstreams(self, name: str) -> tuple[Environment, ...]:
        """The environments that come after `name` (one in a line; several where it fans out)."""
        self.environment(name)
        return tuple(environment for environment in self.environments
                     if name in self.upstreams(environment.name))

    def path_to(self, name: str, verified: Collection[str] = ()) -> tuple[str, ...]:
        """The environments a release passes through to reach `name`, and `name`, in pipeline order: every
        upstream of each, but for a `require: any` join only its first upstream in `verified` (else its first)."""
        through: set[str] = set()
        waiting = [name]
        while waiting:
            current = waiting.pop()
            if current in through:
                continue
            through.add(current)
            upstreams = self.upstreams(current)
            if self.environment(current).require == "any":
                upstreams = tuple(upstream for upstream in upstreams if upstream in verified)[:1] or upstreams[:1]
            waiting += upstreams
        return tuple(environment for environment in self.environment_names if environment in through)

    @property
    def first_environment(self) -> Environment:
        """Where every digest enters the pipeline."""
        return self.environments[0]

    @property
    def environment_names(self) -> tuple[str, ...]:
        """Environment names in promotion order."""
        return tuple(environment.name for environment in self.environments)

    @property
    def content_hash(self) -> str:
        """`sha256:<hex>` of the canonical JSON of the whole definition."""
        return _sha256(self.model_dump(mode="json"))


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a pipeline file; line and column are 1-based (None: whole file)."""

    line: int | None
    column: int | None
    path: str
    message: str


class PipelineError(ValueError):
    """A pipeline file that cannot be used, with every problem found in it."""

    def __init__(self, problems: list[Problem], filename: str = "<pipeline>") -> None:
        super().__init__(problems)
        self.problems, self.filename = problems, filename

    def __str__(self) -> str:
        return "\n".join(f"{self.filename}{f':{p.line}:{p.column}' if p.line is not None else ''}: "
                         f"{p.path + ': ' if p.path else ''}{p.message}" for p in self.problems)


def _plain(node: Any) -> Any:
    """ruamel's round-trip objects as plain dict/list/str/int/float/bool."""
    if isinstance(node, dict):
        return {_plain(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, (bool, ScalarBoolean)):
        return bool(node)
    return next((kind(node) for kind in (str, int, float) if isinstance(node, kind)), node)


def _locate(root: Any, loc: tuple, error_type: str) -> tuple[int, int, str]:
    """Walk the ruamel tree along a pydantic loc: 1-based line, column and a readable path."""
    node, (line, col), key_pos, path = root, (root.lc.line, root.lc.col), None, ""
    for i, seg in enumerate(loc):
        last = i == len(loc) - 1
        if seg == "[key]":  # a dict key failed validation: point at the key
            line, col = key_pos or (line, col)
        elif isinstance(node, dict) and seg in node:
            key_pos = node.lc.key(seg)
            at_key = node[seg] is None or (last and error_type == "extra_forbidden")
            (line, col), node, path = key_pos if at_key else node.lc.value(seg), node[seg], f"{path}.{seg}"
        elif isinstance(node, list) and isinstance(seg, int) and 0 <= seg < len(node):
            (line, col), node, path = node.lc.item(seg), node[seg], f"{path}[{seg}]"
        elif last:  # a missing key: report it at its parent
            path += f"[{seg}]" if isinstance(seg, int) else f".{seg}"
        # otherwise a union/discriminator tag that is not in the data: stay at the deepest node
    return line + 1, col + 1, path.lstrip(".")


def _message(error: Any) -> str:
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    what = {"extra_forbidden": "unknown key", "missing": "missing required key"}.get(error["type"])
    return f"{what} {error['loc'][-1]!r}" if what else error["msg"]


def _fail(filename: str, message: str, line: int | None = None, col: int | None = None) -> PipelineError:
    return PipelineError([Problem(line, col, "", message)], filename)


def parse_pipeline(text: str, filename: str = "<pipeline>") -> PipelineDefinition:
    """Parse and validate pipeline YAML; raise PipelineError with line:column for every problem."""
    try:
        limits.check_yaml(text)
        root = YAML(typ="rt").load(text)
    except limits.YamlLimitExceeded as err:
        raise _fail(filename, err.message, err.line, err.column) from None
    except YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise _fail(filename, f"invalid YAML: {problem}",
                    *((mark.line + 1, mark.column + 1) if mark else ())) from None
    if root is None:
        raise _fail(filename, f"the pipeline file is empty; expected {_SHAPE}")
    if not isinstance(root, dict):
        raise _fail(filename, f"the pipeline must be {_SHAPE}, not a {type(_plain(root)).__name__}", 1, 1)
    try:
        return PipelineDefinition.model_validate(_plain(root))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"]) + tuple((error.get("ctx") or {}).get("at", ()))
            problems.append(Problem(*_locate(root, loc, error["type"]), _message(error)))
        raise PipelineError(sorted(problems, key=lambda p: (p.line, p.column)), filename) from None


def load_pipeline_file(path: str | Path) -> PipelineDefinition:
    """Read and parse a pipeline file; a missing or unreadable file is a PipelineError too."""
    try:
        with Path(path).open("rb") as file:  # never more than the limit: the file may be endless
            raw = file.read(limits.MAX_PIPELINE_BYTES + 1)
        if len(raw) > limits.MAX_PIPELINE_BYTES:
            raise _fail(str(path), f"pipeline file exceeds the limit of {limits.MAX_PIPELINE_BYTES} bytes")
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise _fail(str(path), "pipeline file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise _fail(str(path), f"cannot read pipeline file: {err}") from None
    return parse_pipeline(text, str(path))
