"""The one definition of input limits: what a name, a config entry, a secret reference, a version,
free text, an event time, a record's headers and a pipeline file may be.

The event models (shared/contracts/events.py), the pipeline model (shared/contracts/pipeline.py) and the CLI take their
rules from here, so a value refused by one is refused by all, with the same one-line reason. Each
value check raises PydanticCustomError (a ValueError): pydantic reports it as it is, plain code
catches it; `check_yaml` raises YamlLimitExceeded with the position of the offending node.
"""

import re
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, StringConstraints, ValidationError, WithJsonSchema
from pydantic_core import PydanticCustomError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, ScalarEvent

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
"""Services, environments, check names: 1-63 characters (a DNS label), lowercase letters, digits, dashes."""
CONFIG_KEY_PATTERN = r"^[A-Z_][A-Z0-9_]{0,127}$"
"""Config keys are environment variable names of at most 128 characters."""
MAX_CONFIG_VALUE_CHARS = 4096
SECRET_REF_PATTERN = r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$"
"""Segments of lowercase letters, digits, `.`, `_`, `-` joined by `/`; never `..`, a leading or a doubled `/`."""
MAX_SECRET_REF_CHARS = 255
VERSION_PATTERN = r"^[^\s/\x00-\x1f\x7f-\x9f]{1,128}$"
"""1-128 characters, no whitespace, slash or control character."""
MAX_WHO_CHARS = 128
"""Who did something (author, approver, applied_by, requested_by): not empty once trimmed."""
IDENTITY_PATTERN = r"^[a-z0-9][a-z0-9._@+-]{0,127}$"
"""A person or robot as the system knows them (a token's subject, an approver, a build's author): lowercase
ASCII only, so that case or look-alike letters (Cyrillic а) cannot spell one person a second way."""
MAX_TEXT_CHARS = 1024
"""Free text a person writes: comments, reasons."""
MAX_CLOCK_SKEW_S = 300.0
"""How far in the future an event's `time` may be (consumers' clocks); the default of the setting."""
MAX_HEADER_BYTES = 16 * 1024
"""A Kafka record's headers, names and values together: in binary mode they carry the envelope's attributes."""
MAX_PIPELINE_BYTES = 256 * 1024
MAX_YAML_NODES = 10_000
"""Scalars, mappings and sequences in a pipeline file, every alias counted as the nodes it expands to."""
MAX_YAML_DEPTH = 32
MAX_ENVIRONMENTS = 64
"""Environments in one pipeline (and so in a pipeline.applied's `prune` list)."""
MAX_REPLICAS = 16
"""Containers per lane of an environment."""
MAX_CPUS = 64.0
"""The largest CPU limit of a container."""
_NAME, _CONFIG_KEY = re.compile(NAME_PATTERN), re.compile(CONFIG_KEY_PATTERN)
_SECRET_REF, _VERSION = re.compile(SECRET_REF_PATTERN), re.compile(VERSION_PATTERN)
_IDENTITY = re.compile(IDENTITY_PATTERN)
_CONTROL = frozenset({"Cc", "Cs", "Zl", "Zp"})  # C0/C1 controls (NUL, tab, line breaks), lone surrogates


def shown(value: str) -> str:
    """A value as it appears in a reason: quoted, escaped, long ones cut with their length."""
    return repr(value) if len(value) <= 40 else f"{value[:32]!r}… ({len(value)} characters)"


def _refuse(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(f"limit_{kind}", message)


def _matching(pattern: re.Pattern[str], value: str, kind: str, what: str, rule: str) -> str:
    """`value` if `pattern` matches all of it; else the refusal "<what> '<value>': <rule>"."""
    if not pattern.fullmatch(value):
        raise _refuse(kind, f"{what} {shown(value)}: {rule}")
    return value


def check_name(value: str, what: str = "name") -> str:
    """`value` if it is a valid service, environment or check name; else a one-line refusal."""
    return _matching(_NAME, value, "name", what,
                     "must be 1-63 lowercase letters, digits or dashes, starting with a letter or digit")


def check_config_key(value: str) -> str:
    """`value` if it is an environment variable name of at most 128 characters."""
    return _matching(_CONFIG_KEY, value, "config_key", "config key", "must be an environment variable name "
                     "(capitals, digits, underscores; not starting with a digit; at most 128)")


def check_text(value: str, what: str = "text", max_chars: int = MAX_TEXT_CHARS) -> str:
    """`value` if it has at most `max_chars` characters and no control character (NUL, line break, tab…)."""
    if len(value) > max_chars:
        raise _refuse("too_long", f"{what} of {len(value)} characters: at most {max_chars}")
    if bad := next((c for c in value if unicodedata.category(c) in _CONTROL), None):
        raise _refuse("control_character", f"{what} {shown(value)}: must not contain control characters "
                                           f"(found {bad!r})")
    return value


def check_config_value(value: str) -> str:
    """`value` if it can be an environment variable's value: no control character, at most 4096 characters."""
    return check_text(value, "config value", MAX_CONFIG_VALUE_CHARS)


def check_secret_ref(value: str) -> str:
    """`value` if it names a secret inside the secret store (no `..`, no absolute path)."""
    if len(value) > MAX_SECRET_REF_CHARS or ".." in value or not _SECRET_REF.fullmatch(value):
        raise _refuse("secret_ref", f"secret reference {shown(value)}: must be 1-{MAX_SECRET_REF_CHARS} "
                                    "lowercase letters, digits, '.', '_', '-' in '/'-separated parts "
                                    "that start with a letter or digit, without '..'")
    return value


def check_version(value: str) -> str:
    """`value` if it is a version: 1-128 characters without whitespace, slash or control character."""
    return _matching(_VERSION, value, "version", "version",
                     "must be 1-128 characters without spaces, slashes or control characters")


def check_who(value: str) -> str:
    """`value` (trimmed) if it names who did something: not empty, at most 128 characters, printable."""
    if not value.strip():
        raise _refuse("who", "who must not be empty")
    return check_text(value.strip(), "who", MAX_WHO_CHARS)


def check_identity(value: str, what: str = "identity") -> str:
    """`value` if it is an identity: 1-128 of lowercase ASCII letters, digits and `._@+-`."""
    return _matching(_IDENTITY, value, "identity", what, "must be 1-128 lowercase ASCII letters, digits or "
                     "'._@+-', starting with a letter or digit (one spelling per person)")


def check_event_time(time: datetime, now: datetime, max_skew_s: float = MAX_CLOCK_SKEW_S) -> datetime:
    """`time` unless it is more than `max_skew_s` after `now` (a time without offset is taken as UTC)."""
    aware = time if time.tzinfo is not None else time.replace(tzinfo=UTC)
    if aware - now > timedelta(seconds=max_skew_s):
        raise _refuse("future_time", f"event time {time.isoformat()} is more than {max_skew_s:g} s "
                                     "in the future (clock skew limit)")
    return time


class YamlLimitExceeded(ValueError):
    """A YAML text beyond the limits; `line` and `column` are 1-based (None: the whole text)."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.message, self.line, self.column = message, line, column


def check_yaml(text: str) -> None:
    """Refuse YAML that is too big, too deep or expands (aliases) to too many nodes, before it is loaded.

    Only the event stream is read, and it stops at the first node past a limit, so an alias bomb
    or a huge list costs milliseconds; an alias counts as every node of what it refers to. Syntax
    errors are left to the loader, which reports them with their position.
    """
    if (size := len(text.encode("utf-8", errors="surrogatepass"))) > MAX_PIPELINE_BYTES:
        raise YamlLimitExceeded(f"YAML of {size} bytes exceeds the limit of {MAX_PIPELINE_BYTES} bytes")
    nodes, opened, sizes = 0, [], {}
    try:
        for event in YAML(typ="rt").parse(text):
            if isinstance(event, CollectionStartEvent):
                opened.append((event.anchor, nodes))
                nodes += 1
            elif isinstance(event, CollectionEndEvent):
                anchor, start = opened.pop()
                sizes[anchor] = nodes - start
            elif isinstance(event, ScalarEvent):
                sizes[event.anchor], nodes = 1, nodes + 1
            elif isinstance(event, AliasEvent):  # an alias inside its own anchor never ends
                endless = any(anchor == event.anchor for anchor, _ in opened)
                nodes += MAX_YAML_NODES + 1 if endless else sizes.get(event.anchor, 1)
            mark = getattr(event, "start_mark", None)
            where = (mark.line + 1, mark.column + 1) if mark else ()
            if len(opened) > MAX_YAML_DEPTH:
                raise YamlLimitExceeded(f"YAML nested deeper than {MAX_YAML_DEPTH} levels (the limit)", *where)
            if nodes > MAX_YAML_NODES:
                raise YamlLimitExceeded(f"YAML of more than {MAX_YAML_NODES} nodes, aliases expanded (the limit)",
                                        *where)
    except YAMLError:
        return


def first_reason(error: ValidationError, *, located: bool = True) -> str:
    """One line out of a ValidationError: where (a limit's reason names it already) and what."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(root)"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    if not located and first["type"].startswith("limit_"):
        return f"{first['msg']}{more}"
    return f"{where}: {first['msg']}{more}"


def _schema(**schema: Any) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", **schema})


def _named(what: str) -> AfterValidator:
    return AfterValidator(lambda value: check_name(value, what))


ServiceName = Annotated[str, _named("service name"), _schema(pattern=NAME_PATTERN)]
EnvironmentName = Annotated[str, _named("environment name"), _schema(pattern=NAME_PATTERN)]
CheckName = Annotated[str, _named("check name"), _schema(pattern=NAME_PATTERN)]
ConfigKey = Annotated[str, AfterValidator(check_config_key), _schema(pattern=CONFIG_KEY_PATTERN)]
ConfigText = Annotated[str, AfterValidator(check_config_value), _schema(maxLength=MAX_CONFIG_VALUE_CHARS)]
SecretReference = Annotated[str, AfterValidator(check_secret_ref),
                            _schema(pattern=SECRET_REF_PATTERN, maxLength=MAX_SECRET_REF_CHARS)]
Version = Annotated[str, AfterValidator(check_version),
                    _schema(minLength=1, maxLength=128, pattern=VERSION_PATTERN)]
Who = Annotated[str, StringConstraints(strip_whitespace=True), AfterValidator(check_who),
                _schema(minLength=1, maxLength=MAX_WHO_CHARS)]
Text = Annotated[str, AfterValidator(lambda value: check_text(value)), _schema(maxLength=MAX_TEXT_CHARS)]
Identity = Annotated[str, AfterValidator(check_identity), _schema(pattern=IDENTITY_PATTERN)]
