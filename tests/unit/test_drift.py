"""Unit tests for services.deployer.drift: what differs between what was promoted and what a driver finds running,
when that is news, and how a restore decides what to start."""

import pytest

from services.deployer.domain import Running, Target, choose_lane, needs_start
from services.deployer.drift import (MAX_DIFFERENCES, MAX_LINE, DriftState, Expected, Instance, Observed, bounded,
                                     confirmed, differences, expected_variables, next_drift)

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
CONFIG = "sha256:" + "c" * 64
OTHER_CONFIG = "sha256:" + "d" * 64
LOCATION = f"127.0.0.1:18500/payments@{DIGEST}"
VARIABLES = expected_variables("prod", {"FEATURE_NEW_UI": "false", "DB_DSN": {"secret": "payments/prod/dsn"}},
                               "1.0.0", DIGEST, CONFIG)
AS_PROMOTED = {"APP_ENV": "prod", "FEATURE_NEW_UI": "false", "DB_DSN": "postgres://secret-value",
               "BUILD_VERSION": "1.0.0", "ARTIFACT_DIGEST": DIGEST, "CONFIG_VERSION": CONFIG}


def promoted(driver: str = "local", **changes) -> Expected:
    fields = dict(service="payments", env="prod", slot="prod", version="1.0.0", digest=DIGEST, config_version=CONFIG,
                  driver=driver, port=18100, location=LOCATION if driver == "container" else None, variables=VARIABLES)
    return Expected(**(fields | changes))


def process(**changes) -> Instance:
    fields = dict(name="process 4242", state="running", digest=DIGEST, variables=dict(AS_PROMOTED), version="1.0.0")
    return Instance(**(fields | changes))


def container(replica: int = 0, **changes) -> Instance:
    fields = dict(name=f"container promote-payments--prod--{replica}", state="running", image_digests=(LOCATION,),
                  image="sha256:" + "e" * 64, variables=dict(AS_PROMOTED), version="1.0.0")
    return Instance(**(fields | changes))


FOREIGN = (f"container by-hand, not started by the deployer, publishes port 18100 with image "
           f"127.0.0.1:18500/payments@{OTHER}")
CASES = [
    ("a process running the promoted file, config and version", promoted(), Observed((process(),)), []),
    ("containers running the promoted image", promoted("container"), Observed((container(),)), []),
    ("a killed process", promoted(), Observed((Instance("process 4242", "not running"),)),
     ["process 4242 not running"]),
    ("a process whose run file is gone, nothing on the port", promoted(), Observed(),
     ["nothing of 1.0.0 runs in prod: its process is gone"]),
    ("a killed process, and something else answering on its port", promoted(),
     Observed((Instance("process 4242", "not running"),), port_version="0.9.0"),
     ["process 4242 not running",
      "port 18100 answers version '0.9.0' from something the deployer did not start (promoted '1.0.0')"]),
    ("a stopped container", promoted("container"),
     Observed((Instance("container promote-payments--prod--0", "exited with code 137"),)),
     ["container promote-payments--prod--0 exited with code 137"]),
    ("another image run by hand on the slot's port, ours removed", promoted("container"),
     Observed(foreign=(FOREIGN,), port_version="2.0.0"),
     ["nothing of 1.0.0 runs in prod: its containers are gone", FOREIGN,
      "port 18100 answers version '2.0.0' from something the deployer did not start (promoted '1.0.0')"]),
    ("a container of another image under the slot's labels", promoted("container"),
     Observed((container(image_digests=(f"127.0.0.1:18500/payments@{OTHER}",), version="2.0.0"),)),
     [f"container promote-payments--prod--0 runs image 127.0.0.1:18500/payments@{OTHER}, not the promoted {LOCATION}",
      "container promote-payments--prod--0: GET /version answers version '2.0.0', promoted '1.0.0'"]),
    ("a container whose image is known under several names: the first, and how many more", promoted("container"),
     Observed((container(image_digests=(f"127.0.0.1:18500/other@{OTHER}", f"127.0.0.1:18500/payments@{OTHER}")),)),
     [f"container promote-payments--prod--0 runs image 127.0.0.1:18500/other@{OTHER} (and 1 more names), "
      f"not the promoted {LOCATION}"]),
    ("a container whose image has no repository digest", promoted("container"),
     Observed((container(image_digests=(), image="sha256:" + "f" * 64),)),
     [f"container promote-payments--prod--0 runs image sha256:{'f' * 64}, not the promoted {LOCATION}"]),
    ("a process running a file with other bytes", promoted(), Observed((process(digest=OTHER),)),
     [f"process 4242 runs a file with digest {OTHER}, not the promoted {DIGEST}"]),
    ("a process whose file is gone from the store", promoted(), Observed((process(digest=None),)),
     [f"process 4242 runs a file with digest None, not the promoted {DIGEST}"]),
    ("a feature flag changed by hand: the promoted value is shown, the one found never", promoted(),
     Observed((process(variables=AS_PROMOTED | {"FEATURE_NEW_UI": "hunter2"}),)),
     ["process 4242: FEATURE_NEW_UI differs from the promoted 'false'"]),
    ("another config version", promoted(),
     Observed((process(variables=AS_PROMOTED | {"CONFIG_VERSION": OTHER_CONFIG}),)),
     [f"process 4242: CONFIG_VERSION is {OTHER_CONFIG}, promoted {CONFIG}"]),
    ("a secret that is not set (its value is never compared)", promoted(),
     Observed((process(variables={k: v for k, v in AS_PROMOTED.items() if k != "DB_DSN"}),)),
     ["process 4242: DB_DSN is not set"]),
    ("another secret value is no difference", promoted(),
     Observed((process(variables=AS_PROMOTED | {"DB_DSN": "postgres://other"}),)), []),
    ("an environment that cannot be read is not compared", promoted(), Observed((process(variables=None),)), []),
    ("a /version that does not answer", promoted(),
     Observed((process(version=None, version_error="failed: ConnectError"),)),
     ["process 4242: GET /version failed: ConnectError"]),
    ("a second container under the slot's labels that the deployer did not name", promoted("container"),
     Observed((container(), container(1, name="container sneaky", started_by_deployer=False))),
     ["container sneaky is labelled for prod but was not started by the deployer"]),
    ("one of two replicas removed", promoted("container", replicas=2), Observed((container(),)),
     ["1 containers of prod exist, 2 promoted"]),
]


@pytest.mark.parametrize("expected, observed, found", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_what_runs_is_compared_with_what_was_promoted(expected, observed, found):
    assert differences(expected, observed) == found


def test_the_variables_a_release_runs_with_are_its_config_and_what_the_deployer_sets_with_secrets_unread():
    assert VARIABLES == {"APP_ENV": "prod", "FEATURE_NEW_UI": "false", "DB_DSN": None, "BUILD_VERSION": "1.0.0",
                         "ARTIFACT_DIGEST": DIGEST, "CONFIG_VERSION": CONFIG}
    assert expected_variables("dev", {"APP_ENV": "qa"}, "1", DIGEST, CONFIG)["APP_ENV"] == "qa"


def test_differences_are_bounded_in_number_and_length_and_printable():
    many = bounded([f"line {n}" for n in range(25)])
    assert len(many) == MAX_DIFFERENCES and many[-1] == "… and 6 more"
    [long] = bounded(["x" * 1000 + "\n\x1b[31m"])
    assert len(long) == MAX_LINE and long.isprintable()


def test_a_difference_seen_by_one_look_only_is_not_drift():
    first = ["process 4242: GET /version failed: ReadTimeout", "process 4242 runs a file with digest X"]
    second = ["process 4242 runs a file with digest X"]
    assert confirmed(first, second) == second
    assert confirmed(first, []) == []


IN_SYNC = DriftState(3, None)
DRIFTED = DriftState(3, ("process 4242 not running",))
TRANSITIONS = [
    ("in sync and still in sync: nothing", IN_SYNC, [], IN_SYNC, None),
    ("in sync, then a difference: detected, a new generation", IN_SYNC, ["process 4242 not running"],
     DriftState(4, ("process 4242 not running",)), "detected"),
    ("drifted, the same differences again: nothing (not every interval)", DRIFTED, ["process 4242 not running"],
     DRIFTED, None),
    ("drifted, then other differences: detected again", DRIFTED, ["process 4242 not running", "port 18100 answers"],
     DriftState(4, ("process 4242 not running", "port 18100 answers")), "detected"),
    ("drifted, then nothing differs: resolved", DRIFTED, [], DriftState(3, None), "resolved"),
    ("never checked, a difference: the first generation", DriftState(), ["x"], DriftState(1, ("x",)), "detected"),
]


@pytest.mark.parametrize("state, found, after, said", [case[1:] for case in TRANSITIONS],
                         ids=[case[0] for case in TRANSITIONS])
def test_a_drift_is_news_once_per_change_of_what_differs(state, found, after, said):
    assert next_drift(state, found) == (after, said)


def a_target(**changes) -> Target:
    fields = dict(deployment_id="drift-1", service="payments", env="prod", version="1.0.0", digest=DIGEST,
                  config={}, config_version=CONFIG, purpose="restore")
    return Target(**(fields | changes))


def test_a_restore_starts_afresh_even_where_the_release_seems_to_run_and_re_attaches_only_to_its_own_start():
    hand_made = Running(pid=7, digest=DIGEST, config_version=CONFIG, alive=True, deployment_id="dep-0")
    its_own = Running(pid=8, digest=DIGEST, config_version=CONFIG, alive=True, deployment_id="drift-1")
    assert needs_start(a_target(), hand_made)
    assert not needs_start(a_target(), its_own)
    assert not needs_start(a_target(purpose="promotion", deployment_id="dep-2"), hand_made)  # a promotion re-attaches
    assert choose_lane("blue", {"blue": hand_made, "green": None}, a_target()) == ("green", True)
    assert choose_lane("blue", {"blue": None, "green": its_own}, a_target()) == ("green", False)


def test_a_process_environment_is_read_only_for_the_keys_compared(monkeypatch):
    import os

    from services.deployer.driver import LocalDriver

    monkeypatch.setenv("PROMOTE_DRIFT_SECRETISH", "never-read")
    found = LocalDriver.environment_of(os.getpid(), {"PATH", "NOT_SET_ANYWHERE"})
    assert set(found) <= {"PATH"} and "never-read" not in found.values()
    assert LocalDriver.environment_of(2 ** 22 + 1, {"PATH"}) is None  # no such process: cannot be read


async def test_what_answers_on_a_port_is_read_within_a_bound():
    import asyncio
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    import httpx

    from services.deployer.driver import VERSION_ANSWER_BYTES, answered_version

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = json.dumps({"version": "1.0.0", "pad": "x" * (VERSION_ANSWER_BYTES if self.path == "/version"
                                                                    and self.server.big else 0)}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    answers = []
    async with httpx.AsyncClient() as http:
        for big in (False, True):
            server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
            server.big = big
            Thread(target=server.serve_forever, daemon=True).start()
            answers.append(await answered_version(http, server.server_port))
            server.shutdown()
        assert answers == [("1.0.0", None), (None, f"answered more than {VERSION_ANSWER_BYTES} bytes")]
        assert (await asyncio.wait_for(answered_version(http, 1), 5))[0] is None


async def test_a_round_listing_is_read_as_the_slots_containers_and_what_else_takes_the_port():
    """The container driver judges a slot from one listing of the engine (no call per environment): the state of
    each of its containers, their image by repository digest, and running containers of others on the port."""
    import httpx

    from services.deployer.container import LABEL, ContainerDriver, Listing

    image, theirs = "sha256:" + "e" * 64, "sha256:" + "f" * 64
    ours = {f"{LABEL}service": "payments", f"{LABEL}slot": "prod", f"{LABEL}replica": "0"}
    listing = Listing(containers=(
        {"Id": "1" * 64, "Names": ["/promote-payments--prod--0"], "Labels": ours, "State": "exited",
         "Status": "Exited (137) 3 seconds ago", "ImageID": image, "Ports": []},
        {"Id": "2" * 64, "Names": ["/by-hand"], "Labels": {}, "State": "running", "Status": "Up 2 seconds",
         "ImageID": theirs, "Ports": [{"PrivatePort": 8080, "PublicPort": 18100}]},
        {"Id": "3" * 64, "Names": ["/elsewhere"], "Labels": {}, "State": "running", "Status": "Up",
         "ImageID": theirs, "Ports": [{"PrivatePort": 8080, "PublicPort": 18101}]},
        {"Id": "4" * 64, "Names": ["/stopped-by-hand"], "Labels": {}, "State": "exited", "Status": "Exited (0)",
         "ImageID": theirs, "Ports": [{"PrivatePort": 8080, "PublicPort": 18100}]},
    ), images={image: (LOCATION,), theirs: (f"127.0.0.1:18500/payments@{OTHER}",)})
    driver = ContainerDriver("unix:///nonexistent.sock", registries=[], login=(None, None))
    async with httpx.AsyncClient() as http:
        observed = await driver.observe(promoted("container"), http, listing)
    assert observed.instances == (Instance("container promote-payments--prod--0", "exited with code 137",
                                           image_digests=(LOCATION,), image=image),)
    assert observed.foreign == (FOREIGN,)
