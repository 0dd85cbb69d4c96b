"""Every input limit (shared.contracts.limits) holds the same in a pipeline file, in the event models, on the
wire and in the CLI: the same value is refused by each, with the same reason."""

import json
import time
import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import TypeAdapter, ValidationError

from cli import ops
from cli.errors import CliError
from services.api.app import Decision
from shared.contracts import limits
from shared.contracts.limits import ServiceName, Version
from shared.contracts.events import (ApprovalGranted, EvidenceRecorded, GatePassed, InvalidEvent, PipelineApplied,
                           PromotionRequested, RollbackRequested, new_event, parse_event)
from shared.contracts.pipeline import PipelineError, Problem, load_pipeline_file, parse_pipeline

DIGEST = "sha256:" + "a" * 64
NOW = datetime(2026, 11, 26, 9, 41, 20, tzinfo=UTC)
PIPELINE = "service: {service}\nenvironments:\n  - name: {env}\n    gates: [{{evidence: {check}}}]\n" \
           "    config: {{{key}: {value}}}\n"
"""A pipeline file with one of each: line 1 the service, 3 the environment, 4 the check, 5 the config entry."""
GOOD = dict(service="payments", env="dev", check="unit-tests", key="APP_ENV", value='"dev"')
BAD_NAMES = [  # (what is wrong, the name)
    ("64 characters, one past the limit", "a" * 64),
    ("300 characters", "a" * 300),
    ("a capital", "Payments"),
    ("a space", "bad name"),
    ("a leading dash", "-pay"),
    ("an underscore", "pay_ments"),
    ("a NUL", "pay\x00"),
    ("a Cyrillic a that looks Latin", "p\u0430yments"),
    ("nothing at all", ""),
]
GOOD_NAMES = ["a", "payments", "a" * 63, "0", "pay-ments-2"]
BAD_CONFIG_VALUES = [
    ("a NUL", "x\x00y"), ("a line break", "a\nb"), ("a tab", "a\tb"), ("an escape sequence", "\x1b[31mred"),
    ("DEL", "a\x7f"), ("a C1 control", "a\x85b"), ("a Unicode line separator", "a\u2028b"),
    ("4097 characters", "x" * 4097),
]
GOOD_CONFIG_VALUES = ["", "postgresql://db/payments?ssl=true", "é 😀 ünïcode", "x" * 4096]
BAD_CONFIG_KEYS = [("lowercase", "app_env"), ("a dash", "APP-ENV"), ("a leading digit", "1A"), ("129 characters",
                   "A" * 129), ("a space", "A B")]
BAD_SECRET_REFS = [("a parent directory", "../etc/passwd"), ("a parent in the middle", "a/../b"),
                   ("two dots in a part", "a..b"), ("an absolute path", "/etc/passwd"), ("a doubled slash", "a//b"),
                   ("a trailing slash", "a/"), ("a capital", "A/b"), ("a hidden part", "a/.b"), ("a NUL", "a\x00"),
                   ("256 characters", "a" * 256), ("nothing at all", "")]
GOOD_SECRET_REFS = ["payments/prod/dsn", "a", "a.b_c-d/e0", "a" * 255]


def quoted(value: str) -> str:
    """`value` as a YAML double-quoted scalar: anything but printable characters escaped."""
    def escaped(char: str) -> str:
        if char.isprintable() and char not in '"\\':
            return char
        return f"\\u{ord(char):04x}" if ord(char) < 0x10000 else f"\\U{ord(char):08x}"
    return '"' + "".join(escaped(char) for char in value) + '"'


def pipeline(**changes: str) -> str:
    """The pipeline file with some of its values changed (each written as a YAML double-quoted string)."""
    return PIPELINE.format(**GOOD | {name: quoted(value) for name, value in changes.items()})


def pipeline_reason(text: str) -> Problem:
    """The one problem `pipeline validate` reports for this file."""
    with pytest.raises(PipelineError) as refused:
        parse_pipeline(text, "pipeline.yaml")
    [problem] = refused.value.problems
    return problem


def model_reason(model, **fields) -> str:
    """Why the event model refuses these fields (the limit's own reason)."""
    with pytest.raises(ValidationError) as refused:
        model(**fields)
    return limits.first_reason(refused.value, located=False)


def wire_reason(raw: bytes, **parse_options) -> str:
    """Why parse_event refuses these bytes."""
    with pytest.raises(InvalidEvent) as refused:
        parse_event(raw, **parse_options)
    assert "\n" not in refused.value.reason
    return refused.value.reason


def a_request(**data_changes) -> bytes:
    """A valid promotion.requested on the wire, its data changed by hand (the subject follows the service)."""
    event = new_event(PromotionRequested(service="payments", version="1.0.0", digest=DIGEST, env="dev"),
                      source="/test", event_id="evt-1", time=NOW)
    doc = json.loads(event.to_bytes())
    doc["data"] |= data_changes
    doc["subject"] = doc["data"]["service"]
    return json.dumps(doc).encode()


def a_gate_passed(config: dict) -> bytes:
    """A gate.passed on the wire whose config is set by hand."""
    event = new_event(GatePassed(service="payments", version="1", digest=DIGEST, env="dev", config={},
                                 config_version=DIGEST, pipeline_version=DIGEST), source="/test", time=NOW)
    doc = json.loads(event.to_bytes())
    doc["data"]["config"] = config
    return json.dumps(doc).encode()


def api_reason(annotated, value: str) -> str:
    """Why the API refuses `value` as a parameter declared `annotated`."""
    with pytest.raises(ValidationError) as refused:
        TypeAdapter(annotated).validate_python(value)
    return limits.first_reason(refused.value, located=False)


def refusal(check, value: str, *args) -> str:
    """The limit's reason for `value`, as shared.contracts.limits words it."""
    with pytest.raises(ValueError) as refused:
        check(value, *args)
    return str(refused.value)


@pytest.mark.parametrize("name", [name for _, name in BAD_NAMES], ids=[what for what, _ in BAD_NAMES])
def test_a_bad_environment_name_is_refused_alike_by_validate_the_event_models_the_wire_and_the_api(name):
    reason = refusal(limits.check_name, name, "environment name")
    assert pipeline_reason(pipeline(env=name)) == Problem(3, 11, "environments[0].name", reason)
    assert model_reason(PromotionRequested, service="payments", version="1", digest=DIGEST, env=name) == reason
    assert reason in wire_reason(a_request(env=name))
    assert model_reason(Decision, env=name, decision="granted") == reason


@pytest.mark.parametrize("name", [name for _, name in BAD_NAMES], ids=[what for what, _ in BAD_NAMES])
def test_a_bad_service_name_is_refused_alike_by_validate_the_event_models_the_wire_and_the_api(name):
    reason = refusal(limits.check_name, name, "service name")
    assert pipeline_reason(pipeline(service=name)) == Problem(1, 10, "service", reason)
    assert model_reason(RollbackRequested, service=name, env="dev", requested_by="carol") == reason
    assert reason in wire_reason(a_request(service=name))
    assert api_reason(ServiceName, name) == reason  # the API's path parameter


@pytest.mark.parametrize("name", [name for _, name in BAD_NAMES], ids=[what for what, _ in BAD_NAMES])
def test_a_bad_check_name_is_refused_alike_by_an_evidence_gate_and_by_evidence_and_build_events(name):
    reason = refusal(limits.check_name, name, "check name")
    assert pipeline_reason(pipeline(check=name)) == Problem(4, 24, "environments[0].gates[0].evidence.check", reason)
    assert model_reason(EvidenceRecorded, service="payments", version="1", digest=DIGEST, env="dev", check=name,
                        result="passed") == reason
    with pytest.raises(CliError) as refused:
        ops.build_completed("payments", "1", None, "file:///x", DIGEST, "c0ffee", "alice", {name: "passed"})
    assert str(refused.value) == reason


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_a_good_name_is_accepted_everywhere(name):
    defn = parse_pipeline(pipeline(service=name, env=name, check=name))
    assert (defn.service, defn.first_environment.name) == (name, name)
    assert parse_event(a_request(service=name, env=name)).data.env == name


def test_a_300_character_environment_name_fails_validate_with_file_line_and_column(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"service: payments\nenvironments:\n  - name: {'e' * 300}\n")
    with pytest.raises(PipelineError) as refused:
        load_pipeline_file(path)
    assert str(refused.value) == (f"{path}:3:11: environments[0].name: environment name '{'e' * 32}'… "
                                  "(300 characters): must be 1-63 lowercase letters, digits or dashes, starting "
                                  "with a letter or digit")


def test_a_pipeline_applied_event_whose_definition_breaks_a_limit_is_refused_on_the_wire():
    definition = {"service": "payments", "environments": [{"name": "e" * 300}]}
    reason = model_reason(PipelineApplied, service="payments", pipeline_version=DIGEST, definition=definition,
                          applied_by="ops")
    assert "not a valid pipeline: environments.0.name: environment name 'eeee" in reason


@pytest.mark.parametrize("value", [value for _, value in BAD_CONFIG_VALUES], ids=[w for w, _ in BAD_CONFIG_VALUES])
def test_a_config_value_with_a_control_character_or_too_long_is_refused_by_validate_and_on_the_wire(value):
    reason = refusal(limits.check_config_value, value)
    assert pipeline_reason(pipeline(value=value)) == Problem(5, 23, "environments[0].config.APP_ENV", reason)
    assert reason in wire_reason(a_gate_passed({"APP_ENV": value}))


@pytest.mark.parametrize("value", GOOD_CONFIG_VALUES)
def test_a_printable_config_value_up_to_the_limit_is_accepted_by_validate_and_on_the_wire(value):
    assert parse_pipeline(pipeline(value=value)).first_environment.config == {"APP_ENV": value}
    assert parse_event(a_gate_passed({"APP_ENV": value})).data.config == {"APP_ENV": value}


@pytest.mark.parametrize("key", [key for _, key in BAD_CONFIG_KEYS], ids=[what for what, _ in BAD_CONFIG_KEYS])
def test_a_config_key_that_is_not_an_environment_variable_name_is_refused_by_validate_and_on_the_wire(key):
    reason = refusal(limits.check_config_key, key)
    assert pipeline_reason(pipeline(key=key)) == Problem(5, 14, "environments[0].config." + key, reason)
    assert reason in wire_reason(a_gate_passed({key: "x"}))


@pytest.mark.parametrize("ref", [ref for _, ref in BAD_SECRET_REFS], ids=[what for what, _ in BAD_SECRET_REFS])
def test_a_secret_reference_that_could_leave_the_secret_store_is_refused_by_validate_and_on_the_wire(ref):
    reason = refusal(limits.check_secret_ref, ref)
    problem = pipeline_reason(PIPELINE.format(**GOOD | {"value": "{secret: " + quoted(ref) + "}"}))
    assert (problem.path, problem.message) == ("environments[0].config.APP_ENV.secret", reason)
    assert reason in wire_reason(a_gate_passed({"DSN": {"secret": ref}}))


@pytest.mark.parametrize("ref", GOOD_SECRET_REFS)
def test_a_secret_reference_inside_the_store_is_accepted_by_validate_and_on_the_wire(ref):
    defn = parse_pipeline(PIPELINE.format(**GOOD | {"value": "{secret: " + ref + "}"}))
    assert defn.first_environment.config["APP_ENV"].secret == ref
    assert parse_event(a_gate_passed({"DSN": {"secret": ref}})).data.config == {"DSN": {"secret": ref}}


@pytest.mark.parametrize("who", ["", "   ", "Alice", "\u0430lice", "bob\x00", "bob alice", "b" * 129],
                         ids=["empty", "only spaces", "a capital", "a Cyrillic a", "a NUL", "a space", "129 characters"])
def test_an_identity_has_one_spelling_in_every_event_that_names_a_person(who):
    reason = refusal(limits.check_identity, who)
    assert model_reason(ApprovalGranted, service="payments", version="1", env="prod", approver=who) == reason
    assert model_reason(RollbackRequested, service="payments", env="prod", requested_by=who) == reason


@pytest.mark.parametrize(("comment", "says"), [
    ("ok\x00", "text 'ok\\x00': must not contain control characters"),
    ("x" * 1025, "text of 1025 characters: at most 1024"),
], ids=["a NUL", "1025 characters"])
def test_a_comment_with_a_control_character_or_too_long_is_refused(comment, says):
    assert model_reason(ApprovalGranted, service="payments", version="1", env="prod", approver="bob",
                        comment=comment).startswith(says)


@pytest.mark.parametrize("version", ["", "1.0 beta", "1/2", "1.0\x00", "v" * 129],
                         ids=["empty", "a space", "a slash", "a NUL", "129 characters"])
def test_a_bad_version_is_refused_alike_by_the_event_models_the_wire_and_the_api(version):
    reason = refusal(limits.check_version, version)
    assert model_reason(PromotionRequested, service="payments", version=version, digest=DIGEST, env="dev") == reason
    assert reason in wire_reason(a_request(version=version))
    assert api_reason(Version, version) == reason


@pytest.mark.parametrize(("key", "says"), [
    (b"billing", "kafka key 'billing' does not match data.service 'payments'"),
    (b"Payments", "kafka key 'Payments' does not match data.service 'payments'"),
    (b"", "kafka key is empty; it must be data.service 'payments'"),
    (None, "kafka key is null; it must be data.service 'payments'"),
    (b"\xff", "kafka key '\ufffd' does not match data.service 'payments'"),
], ids=["another service", "another spelling", "an empty key", "a null key", "not UTF-8"])
def test_a_record_whose_kafka_key_is_not_its_service_is_refused_by_parse_event(key, says):
    assert wire_reason(a_request(), key=key).startswith(says)


def test_a_record_under_its_service_key_or_read_without_a_key_check_is_accepted():
    assert parse_event(a_request(), key=b"payments").data.service == "payments"
    assert parse_event(a_request()).data.service == "payments"  # readers of history: the key is not compared


@pytest.mark.parametrize(("time", "accepted"), [
    (NOW, True),
    (NOW - timedelta(days=3650), True),
    (NOW + timedelta(seconds=299), True),
    (NOW + timedelta(seconds=300), True),
    (NOW + timedelta(seconds=301), False),
    (datetime(2099, 1, 1, tzinfo=UTC), False),
    (datetime(2099, 1, 1), False),  # no offset: read as UTC
], ids=["now", "ten years ago", "299 s ahead", "exactly the skew", "301 s ahead", "2099", "2099 without offset"])
def test_an_event_time_more_than_the_skew_ahead_of_the_consumer_is_refused(time, accepted):
    doc = json.loads(a_request()) | {"time": time.isoformat()}
    raw = json.dumps(doc).encode()
    if accepted:
        assert parse_event(raw, now=NOW, max_skew_s=300).envelope.time == time
    else:
        assert "is more than 300 s in the future" in wire_reason(raw, now=NOW, max_skew_s=300)
    assert parse_event(raw).envelope.time == time  # without `now` (history readers) no time is refused


def test_the_skew_is_the_settings_and_defaults_to_five_minutes():
    from shared.platform.settings import Settings

    assert Settings().max_clock_skew_s == limits.MAX_CLOCK_SKEW_S == 300
    raw = json.dumps(json.loads(a_request()) | {"time": (NOW + timedelta(seconds=90)).isoformat()}).encode()
    assert "more than 60 s in the future" in wire_reason(raw, now=NOW, max_skew_s=60)


def billion_laughs(levels: int = 9) -> str:
    """The classic alias bomb: each level refers nine times to the one before (9**9 nodes expanded)."""
    text = 'service: payments\nlol0: &lol0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for level in range(1, levels + 1):
        text += f"lol{level}: &lol{level} [" + ", ".join([f"*lol{level - 1}"] * 9) + "]\n"
    return text + "environments: [{name: dev}]\n"


def refused_quickly(text: str) -> tuple[Problem, float, int]:
    """The one problem for `text`, the seconds it took and (measured apart: it slows) the most memory it used."""
    started = time.perf_counter()
    problem = pipeline_reason(text)
    seconds = time.perf_counter() - started
    tracemalloc.start()
    try:
        pipeline_reason(text)
        return problem, seconds, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(("text", "line", "says"), [
    (billion_laughs(), 6, "YAML of more than 10000 nodes, aliases expanded (the limit)"),
    ("service: p\nx: &a [*a, *a]\nenvironments: [{name: dev}]\n", 2, "YAML of more than 10000 nodes"),
    ("service: p\nx: [" + ", ".join(["1"] * 20_000) + "]\n", 2, "YAML of more than 10000 nodes"),
    ("service: p\nx: " + "[" * 5000 + "]" * 5000 + "\n", 2, "YAML nested deeper than 32 levels (the limit)"),
], ids=["billion laughs", "a recursive alias", "a list of 20,000 items", "5,000 nested lists"])
def test_yaml_that_expands_or_nests_too_far_is_refused_within_a_second_with_its_position(text, line, says):
    problem, seconds, peak_bytes = refused_quickly(text)
    assert (problem.line, problem.message[:len(says)]) == (line, says)
    assert seconds < 1.0 and peak_bytes < 32 * 2**20


def test_a_few_aliases_are_still_allowed():
    text = ("service: payments\nenvironments:\n  - name: dev\n    config: &common {APP_ENV: dev, REGION: eu}\n"
            "  - name: prod\n    config: {<<: *common, APP_ENV: prod}\n")
    assert parse_pipeline(text).environment("prod").config == {"APP_ENV": "prod", "REGION": "eu"}


def test_yaml_over_the_size_limit_is_refused_before_it_is_parsed(tmp_path):
    valid = "service: payments\nenvironments: [{name: dev}]\n"
    at_the_limit = "#" * (limits.MAX_PIPELINE_BYTES - len(valid) - 1) + "\n" + valid
    assert parse_pipeline(at_the_limit).service == "payments"
    over = "#" + at_the_limit
    assert pipeline_reason(over) == Problem(None, None, "", "YAML of 262145 bytes exceeds the limit of 262144 bytes")
    path = tmp_path / "pipeline.yaml"
    path.write_text(over + "x" * 10 * 2**20)
    with pytest.raises(PipelineError) as refused:
        load_pipeline_file(path)
    assert str(refused.value) == f"{path}: pipeline file exceeds the limit of 262144 bytes"
