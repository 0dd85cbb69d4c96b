"""Unit tests for services.deployer.domain: the app's environment, when to start, what verification says."""

import pytest

from services.deployer.domain import MissingSecret, Running, Target, choose_lane, needs_start, other_lane, \
    process_environment, traffic_steps, verification_failure

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
CONFIG_A = "sha256:" + "c" * 64
CONFIG_B = "sha256:" + "d" * 64


class FakeSecretStore:
    """Hands out secrets by reference and remembers what was asked for."""

    def __init__(self, secrets: dict[str, str]) -> None:
        self.secrets = secrets
        self.asked: list[str] = []

    def resolve(self, ref: str) -> str | None:
        self.asked.append(ref)
        return self.secrets.get(ref)


def a_target(**changes) -> Target:
    fields = dict(deployment_id="dep-1", service="payments", env="prod", version="1.4.0", digest=DIGEST,
                  config={"FEATURE_NEW_UI": "false"}, config_version=CONFIG_A)
    return Target(**(fields | changes))


def test_the_app_gets_its_config_and_what_the_deployer_sets():
    assert process_environment(a_target(), 8123, FakeSecretStore({}).resolve) == {
        "APP_ENV": "prod", "FEATURE_NEW_UI": "false", "BUILD_VERSION": "1.4.0", "PORT": "8123",
        "ARTIFACT_DIGEST": DIGEST, "CONFIG_VERSION": CONFIG_A}


def test_secret_references_are_resolved_through_the_secret_store():
    store = FakeSecretStore({"payments/prod/dsn": "postgres://prod-db/payments"})
    target = a_target(config={"DB_DSN": {"secret": "payments/prod/dsn"}})
    variables = process_environment(target, 8123, store.resolve)
    assert variables["DB_DSN"] == "postgres://prod-db/payments"
    assert store.asked == ["payments/prod/dsn"]


def test_a_secret_missing_from_the_store_stops_the_deployment_naming_the_reference():
    target = a_target(config={"DB_DSN": {"secret": "payments/prod/dsn"}})
    with pytest.raises(MissingSecret, match="payments/prod/dsn"):
        process_environment(target, 8123, FakeSecretStore({"payments/dev/dsn": "x"}).resolve)


@pytest.mark.parametrize("reference", ["billing/prod/dsn", "payments-2/prod/dsn", "payments", "payments/../billing/x"])
def test_another_services_secret_is_refused_without_asking_the_store(reference):
    store = FakeSecretStore({reference: "someone else's"})
    target = a_target(config={"DB_DSN": {"secret": reference}})
    with pytest.raises(MissingSecret, match="references start with payments/"):
        process_environment(target, 8123, store.resolve)
    assert store.asked == []


def test_a_secret_value_with_a_nul_byte_is_refused_before_anything_stops():
    store = FakeSecretStore({"payments/prod/dsn": "postgres://x\0y"})
    target = a_target(config={"DB_DSN": {"secret": "payments/prod/dsn"}})
    with pytest.raises(MissingSecret, match="DB_DSN holds a NUL byte"):
        process_environment(target, 8123, store.resolve)


def test_app_env_defaults_to_the_environment_name():
    variables = process_environment(a_target(env="staging", config={}), 1, FakeSecretStore({}).resolve)
    assert variables["APP_ENV"] == "staging"


def test_config_can_set_app_env():
    target = a_target(env="staging", config={"APP_ENV": "pre-prod"})
    assert process_environment(target, 1, FakeSecretStore({}).resolve)["APP_ENV"] == "pre-prod"


def test_the_deployer_set_keys_win_over_config():
    target = a_target(config={"PORT": "1", "BUILD_VERSION": "0.0.0", "ARTIFACT_DIGEST": OTHER})
    variables = process_environment(target, 8123, FakeSecretStore({}).resolve)
    assert (variables["PORT"], variables["BUILD_VERSION"], variables["ARTIFACT_DIGEST"]) == ("8123", "1.4.0", DIGEST)


@pytest.mark.parametrize(("running", "start"), [
    pytest.param(None, True, id="nothing running means start"),
    pytest.param(Running(pid=42, digest=DIGEST, config_version=CONFIG_A, alive=False), True,
                 id="a dead process with the same release means start"),
    pytest.param(Running(pid=42, digest=DIGEST, config_version=CONFIG_A, alive=True), False,
                 id="the same release alive means re-attach"),
    pytest.param(Running(pid=42, digest=DIGEST, config_version=CONFIG_B, alive=True), True,
                 id="the same digest with another config means start"),
    pytest.param(Running(pid=42, digest=OTHER, config_version=CONFIG_A, alive=True), True,
                 id="another digest means start"),
])
def test_needs_start_only_when_the_exact_release_is_not_already_running(running, start):
    assert needs_start(a_target(), running) is start


PASSED = {"process": "passed", "digest": "passed", "health": "passed", "version": "passed"}


@pytest.mark.parametrize(("checks", "failure"), [
    pytest.param(PASSED, None, id="every check passed means no failure"),
    pytest.param(PASSED | {"extra": "failed"}, None, id="checks outside the four are not judged"),
    pytest.param({"process": "exited 1", "digest": "mismatch", "health": "503", "version": "0.9"}, "process: exited 1",
                 id="the process is reported first"),
    pytest.param(PASSED | {"digest": "mismatch", "health": "503", "version": "0.9"}, "digest: mismatch",
                 id="the digest comes before health"),
    pytest.param(PASSED | {"health": "503", "version": "0.9"}, "health: 503", id="health comes before version"),
    pytest.param(PASSED | {"version": "0.9"}, "version: 0.9", id="a wrong version is a failure"),
    pytest.param({"process": "passed", "digest": "passed"}, "health: not run", id="a check not run is a failure"),
    pytest.param({}, "process: not run", id="no checks at all fails at the process"),
])
def test_verification_failure_names_the_first_failed_check_in_order(checks, failure):
    assert verification_failure(a_target(), checks) == failure


def test_a_first_routed_deployment_goes_to_blue_and_starts():
    assert choose_lane(None, {"blue": None, "green": None}, a_target()) == ("blue", True)


def test_a_new_release_goes_to_the_idle_lane():
    live = Running(pid=1, digest=OTHER, config_version=CONFIG_A, alive=True)
    assert choose_lane("blue", {"blue": live, "green": None}, a_target()) == ("green", True)
    assert choose_lane("green", {"blue": None, "green": live}, a_target()) == ("blue", True)


def test_a_lane_that_already_runs_the_release_is_used_without_a_start():
    warm = Running(pid=2, digest=DIGEST, config_version=CONFIG_A, alive=True)
    live = Running(pid=3, digest=OTHER, config_version=CONFIG_A, alive=True)
    assert choose_lane("green", {"blue": warm, "green": live}, a_target()) == ("blue", False)  # switch back
    assert choose_lane("blue", {"blue": warm, "green": None}, a_target()) == ("blue", False)  # already live


def test_a_dead_or_differently_configured_lane_does_not_count_as_running_the_release():
    dead = Running(pid=2, digest=DIGEST, config_version=CONFIG_A, alive=False)
    other_config = Running(pid=2, digest=DIGEST, config_version=CONFIG_B, alive=True)
    assert choose_lane("green", {"blue": dead, "green": None}, a_target()) == ("blue", True)
    assert choose_lane("green", {"blue": other_config, "green": None}, a_target()) == ("blue", True)


@pytest.mark.parametrize(("kind", "lane", "live", "live_alive", "expected"), [
    ("canary", "green", "blue", True, (10, 50, 100)),
    ("canary", "blue", None, False, (100,)),        # nothing to compare with: all at once
    ("canary", "green", "blue", False, (100,)),     # the live release is gone
    ("canary", "blue", "blue", True, (100,)),       # it already takes the traffic
    ("blue_green", "green", "blue", True, (100,)),
])
def test_traffic_steps(kind, lane, live, live_alive, expected):
    assert traffic_steps(kind, (10, 50, 100), lane, live, live_alive) == expected


def test_other_lane():
    assert (other_lane("blue"), other_lane("green")) == ("green", "blue")
