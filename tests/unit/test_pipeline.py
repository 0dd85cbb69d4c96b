"""Unit tests for shared.contracts.pipeline: the pipeline definition, its helpers and its error reporting."""

from pathlib import Path

import pytest

from shared.contracts.pipeline import (_sha256, Resources, ApprovalGate, BlueGreen, Environment, EvidenceGate,
                                       PipelineDefinition, PipelineError, Problem, ProvenanceGate, SecretRef,
                                       SignatureGate, load_pipeline_file, parse_pipeline)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "payments" / "pipeline.yaml"
HEADER = "service: payments\nenvironments:\n"  # environments start on line 3


@pytest.fixture(scope="module")
def example() -> PipelineDefinition:
    return load_pipeline_file(EXAMPLE)


def problems_of(text: str) -> list[Problem]:
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(text, "pipeline.yaml")
    return caught.value.problems


def test_the_payments_example_parses_into_four_environments_with_their_gates_and_config(example):
    assert example.service == "payments" and example.artifact.kind == "oci"
    assert {environment.driver for environment in example.environments} == {"container"}
    assert (example.environment("prod").replicas, example.environment("prod").resources) == \
        (2, Resources(memory="64m", cpus=0.5))
    assert example.environment_names == ("dev", "test", "staging", "prod")
    assert example.environment("dev").gates == ()
    assert example.environment("test").gates == (EvidenceGate(check="unit-tests"),)
    assert example.environment("staging").gates == (EvidenceGate(check="integration-tests"),)
    assert example.environment("prod").gates == (
        ApprovalGate(from_=("release-managers",), min=1, not_author=True), SignatureGate(signed_by=("ci-release",)),
        ProvenanceGate(builder="https://promote.example/demo-ci", source="https://git.example/acme/payments",
                       signed_by=("ci-release",)))
    assert example.environment("prod").strategy == BlueGreen(retire_after=600)
    assert example.environment("staging").strategy.steps == (10, 50, 100)
    assert example.environment("dev").strategy == "rolling"
    assert example.environment("prod").config == {
        "APP_ENV": "prod", "FEATURE_NEW_UI": "false", "DB_DSN": SecretRef(secret="payments/prod/dsn")}
    assert example.environment("dev").config == {"APP_ENV": "dev", "FEATURE_NEW_UI": "true"}


def test_omitted_fields_take_their_defaults():
    defn = parse_pipeline(HEADER + "  - name: dev\n    gates: [{approval: {}}]\n")
    assert defn.artifact.kind == "file"
    assert defn.first_environment.strategy == "rolling" and defn.first_environment.config == {}
    assert defn.first_environment.gates == (ApprovalGate(min=1, not_author=True, role=None),)


def test_an_oci_artifact_and_an_approval_gate_on_the_first_environment_are_accepted():
    defn = parse_pipeline("service: web\nartifact: {kind: oci}\nenvironments:\n"
                          "  - {name: dev, gates: [{approval: {min: 2, not_author: false}}]}\n")
    assert defn.artifact.kind == "oci"
    assert defn.first_environment.gates == (ApprovalGate(min=2, not_author=False),)


def test_the_json_dump_round_trips_and_uses_the_pipeline_file_shape(example):
    dumped = example.model_dump(mode="json")
    assert PipelineDefinition.model_validate(dumped) == example
    assert PipelineDefinition.model_validate_json(example.model_dump_json()) == example
    assert dumped["environments"][1]["gates"] == [{"evidence": "unit-tests"}]
    assert dumped["environments"][3]["gates"] == [
        {"approval": {"min": 1, "not_author": True, "role": None, "from": ["release-managers"]}},
        {"signed_by": ["ci-release"]},
        {"provenance": {"builder": "https://promote.example/demo-ci", "source": "https://git.example/acme/payments",
                        "signed_by": ["ci-release"]}}]
    assert dumped["environments"][3]["config"]["DB_DSN"] == {"secret": "payments/prod/dsn"}


def test_models_built_in_code_dump_and_validate_the_same_way():
    env = Environment(name="dev", gates=[EvidenceGate(check="lint"), ApprovalGate(min=2)],
                      config={"DSN": SecretRef(secret="x/dsn")})
    assert Environment.model_validate(env.model_dump(mode="json")) == env
    assert env.model_dump(mode="json")["gates"] == [
        {"evidence": "lint"}, {"approval": {"min": 2, "not_author": True, "role": None}}]


def test_models_are_frozen(example):
    with pytest.raises(ValueError):
        example.service = "other"  # type: ignore[misc]


def test_config_version_is_stable_and_ignores_key_order():
    one = parse_pipeline(HEADER + "  - {name: dev, config: {A: '1', B: {secret: s/b}}}\n")
    two = parse_pipeline(HEADER + "  - {name: dev, config: {B: {secret: s/b}, A: '1'}}\n")
    version = one.first_environment.config_version
    assert version == two.first_environment.config_version
    assert version.startswith("sha256:") and len(version) == len("sha256:") + 64


@pytest.mark.parametrize("config", ["{A: '2', B: {secret: s/b}}", "{A: '1', B: {secret: s/other}}",
                                    "{A: '1'}", "{A: '1', B: {secret: s/b}, C: ''}"])
def test_config_version_changes_when_the_config_changes(config):
    base = parse_pipeline(HEADER + "  - {name: dev, config: {A: '1', B: {secret: s/b}}}\n")
    changed = parse_pipeline(HEADER + f"  - {{name: dev, config: {config}}}\n")
    assert changed.first_environment.config_version != base.first_environment.config_version


def test_config_version_ignores_gates_and_strategy(example):
    assert example.environment("test").config_version == Environment(
        name="x", config={"APP_ENV": "test", "FEATURE_NEW_UI": "true"}).config_version


def test_the_content_hash_is_stable_and_changes_with_any_field(example):
    assert example.content_hash == load_pipeline_file(EXAMPLE).content_hash
    assert example.content_hash.startswith("sha256:") and len(example.content_hash) == 71
    dumped = example.model_dump(mode="json")
    dumped["environments"][3]["gates"][0]["approval"]["min"] = 2
    assert PipelineDefinition.model_validate(dumped).content_hash != example.content_hash


@pytest.mark.parametrize(("name", "previous", "following"), [
    ("dev", None, "test"), ("test", "dev", "staging"), ("staging", "test", "prod"), ("prod", "staging", None)])
def test_without_after_each_environment_comes_after_the_one_listed_before_it(example, name, previous, following):
    assert example.upstreams(name) == ((previous,) if previous else ())
    assert [environment.name for environment in example.downstreams(name)] == ([following] if following else [])


@pytest.mark.parametrize("lookup", ["environment", "upstreams", "downstreams", "path_to"])
def test_looking_up_an_unknown_environment_raises_key_error(example, lookup):
    with pytest.raises(KeyError):
        getattr(example, lookup)("qa")


def test_the_first_environment_is_where_digests_enter(example):
    assert example.first_environment.name == "dev"


ENV = HEADER + "  - name: dev\n"  # line 3: "  - name: dev", line 4 onwards: the environment's keys
OCI = "service: payments\nartifact: {kind: oci}\nenvironments:\n  - name: dev\n"  # its keys from line 5
KINDS = "approval, change_window, evidence, provenance, signed_by, soak"
NAME_RULE = "must be 1-63 lowercase letters, digits or dashes, starting with a letter or digit"
SECRET_RULE = ("must be 1-255 lowercase letters, digits, '.', '_', '-' in '/'-separated parts that start with a "
               "letter or digit, without '..'")
ERRORS = [  # (sentence, yaml, line, column, path, message)
    ("an unknown gate kind", ENV + "    gates:\n      - {evidance: unit-tests}\n", 5, 9,
     "environments[0].gates[0]", f"unknown gate kind 'evidance' (expected one of: {KINDS})"),
    ("a gate with two kinds", ENV + "    gates: [{evidence: a, approval: {}}]\n", 4, 13,
     "environments[0].gates[0]", f"a gate is a mapping with exactly one key (one of: {KINDS})"),
    ("a gate that is not a mapping", ENV + "    gates: [unit-tests]\n", 4, 13,
     "environments[0].gates[0]", f"a gate is a mapping with exactly one key (one of: {KINDS})"),
    ("an evidence gate without a check name", ENV + "    gates: [{evidence: 3}]\n", 4, 24,
     "environments[0].gates[0].evidence", "an evidence gate names a check, e.g. {evidence: unit-tests}"),
    ("an approval gate that is not a mapping", ENV + "    gates: [{approval: 2}]\n", 4, 24,
     "environments[0].gates[0].approval", "an approval gate is a mapping, e.g. "
     "{approval: {role: release-manager, min: 1, not_author: true}}"),
    ("an approval minimum below one", ENV + "    gates:\n      - approval:\n          min: 0\n", 6, 16,
     "environments[0].gates[0].approval.min", "Input should be greater than or equal to 1"),
    ("an approval minimum that is not an integer", ENV + "    gates: [{approval: {min: '2'}}]\n", 4, 30,
     "environments[0].gates[0].approval.min", "Input should be a valid integer"),
    ("a not_author flag that is not a boolean", ENV + "    gates: [{approval: {not_author: 'yes'}}]\n",
     4, 37, "environments[0].gates[0].approval.not_author", "Input should be a valid boolean"),
    ("an unknown approval option", ENV + "    gates: [{approval: {quorum: 2}}]\n", 4, 25,
     "environments[0].gates[0].approval.quorum", "unknown key 'quorum'"),
    ("an unknown strategy name", ENV + "    strategy: blue-green\n", 4, 15,
     "environments[0].strategy", "strategy 'blue-green' is not known (expected rolling, {blue_green: {...}} "
     "or {canary: {...}})"),
    ("canary steps that do not end at 100", ENV + "    strategy:\n      canary: {steps: [10, 50]}\n", 5, 23,
     "environments[0].strategy.canary.steps",
     "canary steps are rising percentages that end at 100, e.g. [5, 50, 100]"),
    ("a retire_after that is not a duration", ENV + "    strategy: {blue_green: {retire_after: soon}}\n", 4, 43,
     "environments[0].strategy.blue_green.retire_after", "'soon' is not a duration; write it like 30s, 10m, "
     "2h or 1h30m"),
    ("an error rate above 1", ENV + "    strategy: {canary: {analysis: {max_error_rate: 2}}}\n", 4, 52,
     "environments[0].strategy.canary.analysis.max_error_rate", "Input should be less than or equal to 1"),
    ("a container driver for a file artifact", ENV + "    driver: container\n", 4, 13, "environments[0].driver",
     "driver container runs an image, and this pipeline's artifact kind is file"),
    ("a local driver for an image", OCI + "    driver: local\n", 5, 13, "environments[0].driver",
     "driver local runs an artifact file as a process, and this pipeline's artifact kind is oci"),
    ("replicas on a rolling environment", OCI + "    replicas: 3\n", 4, 5, "environments[0]",
     "replicas above 1 need the container driver and a blue_green or canary strategy (the router spreads the "
     "traffic over them)"),
    ("more replicas than the limit", OCI + "    replicas: 17\n    strategy: {blue_green: {}}\n", 5, 15,
     "environments[0].replicas", "Input should be less than or equal to 16"),
    ("resources for a process", ENV + "    resources: {memory: 64m}\n", 3, 5, "environments[0]",
     "resources apply to the container driver only"),
    ("a memory limit that is not a size", OCI + "    resources: {memory: 64 MB}\n", 5, 25,
     "environments[0].resources.memory", "memory '64 MB' is not a size; write it like 256m or 1g (k, m or g: "
     "KiB, MiB, GiB)"),
    ("no CPU at all", OCI + "    resources: {cpus: 0}\n", 5, 23, "environments[0].resources.cpus",
     "Input should be greater than 0"),
    ("a routed strategy on the noop driver", ENV + "    driver: noop\n    strategy: {blue_green: {}}\n", 3, 5,
     "environments[0]", "strategy blue_green needs the local or container driver (it routes real traffic)"),
    ("a config number", ENV + "    config:\n      APP_ENV: dev\n      REPLICAS: 3\n", 6, 17,
     "environments[0].config.REPLICAS",
     'config value 3 is a number; quote it ("3"): environment variables are strings'),
    ("a config boolean", ENV + "    config: {FEATURE_NEW_UI: true}\n", 4, 30, "environments[0].config.FEATURE_NEW_UI",
     'config value true is a boolean; quote it ("true"): environment variables are strings'),
    ("a config float", ENV + "    config: {RATIO: 0.5}\n", 4, 21, "environments[0].config.RATIO",
     'config value 0.5 is a number; quote it ("0.5"): environment variables are strings'),
    ("a config list", ENV + "    config: {HOSTS: [a, b]}\n", 4, 21, "environments[0].config.HOSTS",
     "config value must be a string or a secret reference {secret: ref}"),
    ("a config key that is not an env var name", ENV + "    config:\n      app-env: dev\n", 5, 7,
     "environments[0].config.app-env",
     "config key 'app-env': must be an environment variable name (capitals, digits, underscores; not starting "
     "with a digit; at most 128)"),
    ("the reserved PORT config key", ENV + "    config: {APP_ENV: dev, PORT: '80'}\n", 4, 28,
     "environments[0].config.PORT", "config key 'PORT' is reserved (set by the deployer)"),
    ("the reserved BUILD_VERSION config key", ENV + "    config:\n      BUILD_VERSION: '1'\n", 5, 7,
     "environments[0].config.BUILD_VERSION", "config key 'BUILD_VERSION' is reserved (set by the deployer)"),
    ("an empty secret reference", ENV + "    config: {DSN: {secret: ''}}\n", 4, 28,
     "environments[0].config.DSN.secret", f"secret reference '': {SECRET_RULE}"),
    ("an unknown environment key", ENV + "    colour: blue\n", 4, 5,
     "environments[0].colour", "unknown key 'colour'"),
    ("an environment without a name", HEADER + "  - name: dev\n  - config: {A: b}\n", 4, 5,
     "environments[1].name", "missing required key 'name'"),
    ("an environment name that is not DNS-ish", HEADER + "  - name: Dev\n", 3, 11, "environments[0].name",
     f"environment name 'Dev': {NAME_RULE}"),
    ("a duplicate environment name", HEADER + "  - name: dev\n  - name: test\n  - name: dev\n", 5, 11,
     "environments[2].name", "environment name 'dev' is used more than once"),
    ("an empty environment list", "service: payments\nenvironments: []\n", 2, 15, "environments",
     "a pipeline needs at least one environment"),
    ("a pipeline without environments", "service: payments\n", 1, 1, "environments",
     "missing required key 'environments'"),
    ("a service name with capitals", "service: Payments\nenvironments: [{name: dev}]\n", 1, 10, "service",
     f"service name 'Payments': {NAME_RULE}"),
    ("an empty service name", "service: ''\nenvironments: [{name: dev}]\n", 1, 10, "service",
     f"service name '': {NAME_RULE}"),
    ("a service name starting with a dash", "service: -pay\nenvironments: [{name: dev}]\n", 1, 10, "service",
     f"service name '-pay': {NAME_RULE}"),
    ("a pipeline without a service", "environments: [{name: dev}]\n", 1, 1, "service",
     "missing required key 'service'"),
    ("an unknown artifact kind", "service: payments\nartifact:\n  kind: zip\nenvironments: [{name: dev}]\n",
     3, 9, "artifact.kind", "Input should be 'file' or 'oci'"),
    ("an unknown top-level key", HEADER + "  - name: dev\nowner: team-a\n", 4, 1, "owner",
     "unknown key 'owner'"),
]


@pytest.mark.parametrize(("text", "line", "column", "path", "message"),
                         [case[1:] for case in ERRORS], ids=[case[0] for case in ERRORS])
def test_each_invalid_pipeline_is_reported_with_its_line_column_path_and_message(text, line, column, path,
                                                                               message):
    assert problems_of(text) == [Problem(line, column, path, message)]


def test_an_unknown_gate_kind_is_reported_with_its_line_and_column():
    text = HEADER + "  - name: dev\n  - name: test\n    gates:\n      - {evidance: integration-tests}\n"
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(text, "pipeline.yaml")
    assert str(caught.value) == ("pipeline.yaml:6:9: environments[1].gates[0]: unknown gate kind "
                                 f"'evidance' (expected one of: {KINDS})")


def test_a_misspelt_secret_reference_reports_the_unknown_key_and_the_missing_one():
    assert problems_of(ENV + "    config: {DSN: {secrte: a/b}}\n") == [
        Problem(4, 19, "environments[0].config.DSN.secret", "missing required key 'secret'"),
        Problem(4, 20, "environments[0].config.DSN.secrte", "unknown key 'secrte'")]


def test_every_problem_in_a_file_is_reported_in_file_order():
    text = ("service: payments\nenvironments:\n  - name: dev\n    config: {PORT: '1'}\n"
            "  - name: prod\n    strategy: blue-green\n    gates: [{evidance: x}]\n")
    assert [(p.line, p.column) for p in problems_of(text)] == [(4, 14), (6, 15), (7, 13)]


@pytest.mark.parametrize(("text", "line", "column", "message"), [
    ("service: [payments\n", 2, 1, "invalid YAML: expected ',' or ']', but got '<stream end>'"),
    ("service: payments\n  environments: x\n", 2, 15,
     "invalid YAML: mapping values are not allowed here"),
    ("service: a\nservice: b\n", 2, 1, 'invalid YAML: found duplicate key "service" with value "b" '
     '(original value: "a")'),
    ("- service: payments\n", 1, 1,
     "the pipeline must be a mapping with service, artifact and environments, not a list"),
    ("payments\n", 1, 1, "the pipeline must be a mapping with service, artifact and environments, not a str"),
    ("", None, None, "the pipeline file is empty; expected a mapping with service, artifact and environments"),
    ("# only a comment\n", None, None,
     "the pipeline file is empty; expected a mapping with service, artifact and environments"),
], ids=["unclosed flow sequence", "bad indentation", "duplicate key", "a list", "a scalar", "empty file",
        "only a comment"])
def test_a_file_that_is_not_a_yaml_mapping_is_reported_with_its_line(text, line, column, message):
    assert problems_of(text) == [Problem(line, column, "", message)]


def test_problems_without_a_position_render_with_the_filename_only(tmp_path):
    missing = tmp_path / "pipeline.yaml"
    with pytest.raises(PipelineError) as caught:
        load_pipeline_file(missing)
    assert caught.value.problems == [Problem(None, None, "", "pipeline file not found")]
    assert str(caught.value) == f"{missing}: pipeline file not found"


def test_loading_a_file_reports_problems_under_its_path(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text("service: payments\nenvironments: []\n")
    with pytest.raises(PipelineError) as caught:
        load_pipeline_file(path)
    assert str(caught.value) == f"{path}:2:15: environments: a pipeline needs at least one environment"


def test_a_pipeline_error_is_a_value_error():
    assert issubclass(PipelineError, ValueError)


def test_strategies_parse_with_defaults_and_dump_to_a_valid_pipeline():
    text = ("service: payments\nenvironments:\n  - name: staging\n"
            "    strategy: {canary: {steps: [5, 50, 100], analysis: {interval: 3s, max_p99_ms: 500}}}\n"
            "  - name: prod\n    strategy: {blue_green: {retire_after: 1h30m}}\n  - name: qa\n"
            "    strategy: {blue_green: }\n")
    defn = parse_pipeline(text)
    canary, blue_green = defn.environment("staging").strategy, defn.environment("prod").strategy
    assert (canary.steps, canary.analysis.interval, canary.analysis.min_requests) == ((5, 50, 100), 3.0, 20)
    assert (canary.analysis.max_error_rate, canary.analysis.max_p99_ms) == (0.05, 500.0)
    assert blue_green.retire_after == 5400.0 and defn.environment("qa").strategy.retire_after == 600.0
    assert [e.strategy_kind for e in defn.environments] == ["canary", "blue_green", "blue_green"]
    dump = defn.model_dump(mode="json")
    assert dump["environments"][1]["strategy"] == {"blue_green": {"retire_after": "1h30m"}}
    assert PipelineDefinition.model_validate(dump) == defn


def test_an_image_pipeline_runs_its_environments_on_the_container_driver_unless_they_name_another():
    defn = parse_pipeline(OCI + "  - {name: prod, driver: noop}\n")
    assert [environment.driver for environment in defn.environments] == ["container", "noop"]
    assert PipelineDefinition.model_validate(defn.model_dump(mode="json")) == defn


def test_replicas_and_resources_are_part_of_the_config_version_only_when_set():
    plain = parse_pipeline(OCI).first_environment
    assert plain.config_version == _sha256({})  # as before replicas existed: nothing redeploys on upgrade
    scaled = parse_pipeline(OCI + "    replicas: 3\n    strategy: {blue_green: {}}\n").first_environment
    limited = parse_pipeline(OCI + "    resources: {memory: 1g, cpus: 1.5}\n").first_environment
    assert len({plain.config_version, scaled.config_version, limited.config_version}) == 3
    assert limited.resources.memory_bytes == 2**30 and scaled.replicas == 3


def test_the_demo_s_file_variant_of_the_example_runs_local_processes_one_per_lane(example):
    from cli.demo import as_files

    files = as_files(example)
    assert files.artifact.kind == "file" and {environment.driver for environment in files.environments} == {"local"}
    assert files.environment("prod").replicas == 1 and files.environment("prod").resources is None
    assert files.environment("prod").config == example.environment("prod").config


FANNED = """\
service: payments
environments:
  - {name: dev, driver: noop}
  - {name: staging, driver: noop}
  - {name: prod-eu, driver: noop, after: [staging]}
  - {name: prod-us, driver: noop, after: [staging]}
  - {name: audit, driver: noop, after: [prod-eu, prod-us], require: any}
  - {name: global, driver: noop, after: [prod-eu, prod-us]}
"""


def test_after_fans_out_and_joins_again():
    pipeline = parse_pipeline(FANNED)
    assert [environment.name for environment in pipeline.downstreams("staging")] == ["prod-eu", "prod-us"]
    assert [environment.name for environment in pipeline.downstreams("prod-eu")] == ["audit", "global"]
    assert pipeline.upstreams("prod-eu") == ("staging",) and pipeline.upstreams("global") == ("prod-eu", "prod-us")
    assert pipeline.path_to("global") == ("dev", "staging", "prod-eu", "prod-us", "global")
    assert pipeline.path_to("audit", {"prod-us"}) == ("dev", "staging", "prod-us", "audit")
    assert (pipeline.environment("global").require, pipeline.environment("audit").require) == ("all", "any")


def test_a_line_keeps_its_content_hash_when_after_and_require_are_unset(example):
    dumped = example.model_dump(mode="json")
    assert all("after" not in environment and "require" not in environment for environment in dumped["environments"])
    written = parse_pipeline(FANNED).model_dump(mode="json")["environments"]
    assert [environment.get("after") for environment in written] == [
        None, None, ["staging"], ["staging"], ["prod-eu", "prod-us"], ["prod-eu", "prod-us"]]


@pytest.mark.parametrize(("environments", "line", "column", "says"), [
    ("  - {name: dev}\n  - {name: a, after: [b]}\n  - {name: b, after: [a]}\n", 5, 22,
     "environments[2].after: b → a → b form a cycle: none of them can ever be entered"),
    ("  - {name: dev}\n  - {name: a, after: [a]}\n", 4, 23, "environments[1].after[0]: 'a' cannot come after itself"),
    ("  - {name: dev}\n  - {name: a, after: [qa]}\n", 4, 23,
     "environments[1].after[0]: 'qa' is not an environment of this pipeline"),
    ("  - {name: dev}\n  - {name: a, after: [dev, dev]}\n", 4, 28, "environments[1].after[1]: 'dev' is named twice"),
    ("  - {name: dev, after: [a]}\n  - {name: a}\n", 3, 24,
     "environments[0].after: 'dev' is the first environment, where every release enters: it comes after none"),
    ("  - {name: dev}\n  - {name: a, after: []}\n", 4, 22,
     "environments[1].after: only the first environment comes after none; name the environments 'a' comes after"),
    ("  - {name: dev}\n  - {name: a, require: any}\n", 4, 24,
     "environments[1].require: require: any joins two or more environments; 'a' comes after one"),
])
def test_a_graph_that_cannot_be_walked_from_the_first_environment_is_refused_at_its_place(
        environments, line, column, says):
    with pytest.raises(PipelineError) as refused:
        parse_pipeline("service: s\nenvironments:\n" + environments, "p.yaml")
    assert str(refused.value) == f"p.yaml:{line}:{column}: {says}"
