"""The pipeline definition: one YAML file per service, validated with line-accurate errors.

A pipeline names a service, its artifact kind and the ordered environments one digest is
promoted through, each with gates, a rollout strategy and config. The JSON dump
(``model_dump(mode="json")``, sent over Kafka and re-validated by consumers) has the YAML's
shape with defaults filled in, so a dump is itself a valid pipeline. Gates dump as one-key
mappings: ``{"evidence": "unit-tests"}`` and ``{"approval": {"min": 1, "not_author": true,
"role": null}}``; secret config values as ``{"secret": "payments/prod/dsn"}`` (never a value).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field,
                      Tag, ValidationError, field_validator, model_serializer, model_validator)
from pydantic_core import PydanticCustomError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarbool import ScalarBoolean

__all__ = ["ApprovalGate", "Artifact", "Environment", "EvidenceGate", "Gate", "PipelineDefinition",
           "PipelineError", "Problem", "SecretRef", "load_pipeline_file", "parse_pipeline"]

_NAME, _ENV_VAR = re.compile(r"[a-z0-9][a-z0-9-]*"), re.compile(r"[A-Z_][A-Z0-9_]*")
RESERVED_CONFIG_KEYS = frozenset({"PORT", "BUILD_VERSION", "ARTIFACT_DIGEST", "CONFIG_VERSION"})
"""Config keys the deployer sets itself."""
GATE_KINDS, STRATEGIES = ("approval", "evidence"), ("rolling",)
_SHAPE = "a mapping with service, artifact and environments"


def _sha256(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _matching(pattern: re.Pattern[str], what: str, kind: str) -> AfterValidator:
    def check(value: str) -> str:
        if value in RESERVED_CONFIG_KEYS and pattern is _ENV_VAR:
            raise ValueError(f"{what} {value!r} is reserved (set by the deployer)")
        if not pattern.fullmatch(value):
            raise ValueError(f"{what} {value!r} is not a valid {kind} ({pattern.pattern})")
        return value
    return AfterValidator(check)


def _config_value(value: Any) -> Any:
    if isinstance(value, (str, dict, SecretRef)):
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

    secret: str = Field(min_length=1)


class EvidenceGate(_Frozen):
    """Passes when the named check passed for this digest in the previous environment or in CI."""

    check: str = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _from_pipeline_form(cls, data: Any) -> Any:
        if isinstance(data, dict) and set(data) == {"evidence"}:
            if not isinstance(data["evidence"], str) or not data["evidence"]:
                raise ValueError("an evidence gate names a check, e.g. {evidence: unit-tests}")
            return {"check": data["evidence"]}
        return data

    @model_serializer
    def _to_pipeline_form(self) -> dict[str, Any]:
        return {"evidence": self.check}


class ApprovalGate(_Frozen):
    """Passes when `min` people (with `role`, if set; not the author, if `not_author`) approve."""

    min: int = Field(1, ge=1, strict=True)
    not_author: bool = Field(True, strict=True)
    role: str | None = Field(None, min_length=1)

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
        return {"approval": {"min": self.min, "not_author": self.not_author, "role": self.role}}


def _gate_shape(value: Any) -> Any:
    expected = ", ".join(GATE_KINDS)
    if isinstance(value, (EvidenceGate, ApprovalGate)):
        return value.model_dump()
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError(f"a gate is a mapping with exactly one key (one of: {expected})")
    if (kind := next(iter(value))) not in GATE_KINDS:
        raise ValueError(f"unknown gate kind {kind!r} (expected one of: {expected})")
    return value


def _gate_kind(gate: Any) -> str:
    return next(iter(gate if isinstance(gate, dict) else gate.model_dump()))


Gate = Annotated[Union[Annotated[EvidenceGate, Tag("evidence")], Annotated[ApprovalGate, Tag("approval")]],
                 Discriminator(_gate_kind), BeforeValidator(_gate_shape)]
"""One gate: `{evidence: NAME}` or `{approval: {min, not_author, role}}`."""
_ConfigValue = Annotated[Union[Annotated[str, Tag("text")], Annotated[SecretRef, Tag("secret-ref")]],
                         Discriminator(lambda v: "text" if isinstance(v, str) else "secret-ref"),
                         BeforeValidator(_config_value)]


class Artifact(_Frozen):
    """What the build produces: a plain file or an OCI image, addressed by digest."""

    kind: Literal["file", "oci"] = "file"


class Environment(_Frozen):
    """One step of the promotion path: its gates, rollout strategy and config."""

    name: Annotated[str, _matching(_NAME, "environment name", "name")]
    gates: tuple[Gate, ...] = ()
    strategy: Literal["rolling"] = "rolling"
    driver: Literal["local", "noop"] = "local"
    """How the deployer makes it real: `local` runs the artifact as a process; `noop` only records the order."""
    config: dict[Annotated[str, _matching(_ENV_VAR, "config key", "environment variable name")],
                  _ConfigValue] = {}

    @field_validator("strategy", mode="before")
    @classmethod
    def _supported_strategy(cls, value: Any) -> Any:
        if value in STRATEGIES:
            return value
        shown = next(iter(value)) if isinstance(value, dict) and len(value) == 1 else value
        raise ValueError(f"strategy {'null' if shown is None else repr(shown)} is not supported "
                         f"yet (supported: {', '.join(STRATEGIES)})")

    @property
    def config_version(self) -> str:
        """`sha256:<hex>` of the canonical JSON of this config (secret references, never values)."""
        return _sha256(self.model_dump(mode="json")["config"])


class PipelineDefinition(_Frozen):
    """A service's pipeline: its artifact kind and the ordered environments it is promoted through."""

    service: Annotated[str, _matching(_NAME, "service name", "name")]
    artifact: Artifact = Artifact()
    environments: tuple[Environment, ...]

    @field_validator("environments")
    @classmethod
    def _unique_names(cls, environments: tuple[Environment, ...]) -> tuple[Environment, ...]:
        if not environments:
            raise ValueError("a pipeline needs at least one environment")
        names = [environment.name for environment in environments]
        for index, name in enumerate(names):
            if name in names[:index]:  # "at" extends the error's loc to the duplicate's name
                raise PydanticCustomError("duplicate_environment", "environment name '{name}' is "
                                          "used more than once", {"name": name, "at": [index, "name"]})
        return environments

    def environment(self, name: str) -> Environment:
        """The environment called `name`; KeyError if the pipeline has none."""
        for environment in self.environments:
            if environment.name == name:
                return environment
        raise KeyError(name)

    def _neighbour(self, name: str, step: int) -> Environment | None:
        index = self.environments.index(self.environment(name)) + step
        return self.environments[index] if 0 <= index < len(self.environments) else None

    def next_environment(self, name: str) -> Environment | None:
        """The environment after `name`, or None for the last one (KeyError if unknown)."""
        return self._neighbour(name, 1)

    def previous_environment(self, name: str) -> Environment | None:
        """The environment before `name`, or None for the first one (KeyError if unknown)."""
        return self._neighbour(name, -1)

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
        root = YAML(typ="rt").load(text)
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
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _fail(str(path), "pipeline file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise _fail(str(path), f"cannot read pipeline file: {err}") from None
    return parse_pipeline(text, str(path))
