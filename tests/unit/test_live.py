"""The API's live feed without a broker (services/api/live.py): what each event changes in the grid, who gets it,
and a stream that cannot keep up told to reload rather than fed without end."""

import asyncio
import json

import pytest

from services.api import live
from services.api.live import LiveFeed, change_of
from shared.contracts.events import (ApprovalGranted, DeploymentProgressed, DeploymentStarted, DriftDetected,
                                     GatePassed, GatePending, VerificationPassed, new_event)

DIGEST = "sha256:" + "a" * 64
CONFIG = "sha256:" + "c" * 64
DEPLOYED = dict(deployment_id="d1", service="pay", version="1.0.0", digest=DIGEST, env="prod", config={},
                config_version=CONFIG)


def event(data):
    return new_event(data, source="/promote/test")


@pytest.mark.parametrize(("data", "change"), [
    pytest.param(DeploymentStarted(**DEPLOYED), {"kind": "environment", "state": "deploying"}, id="deploying"),
    pytest.param(DeploymentStarted(**(DEPLOYED | {"purpose": "rollback"})), {"state": "rolling-back"},
                 id="rolling back"),
    pytest.param(DeploymentProgressed(**DEPLOYED, state="step", step=2, steps=4, share=25, checks={}),
                 {"state": "canary 2/4 at 25%"}, id="a canary step"),
    pytest.param(VerificationPassed(**DEPLOYED, checks={}), {"state": "verified", "version": "1.0.0"}, id="verified"),
    pytest.param(GatePending(service="pay", version="1.0.0", digest=DIGEST, env="prod", reasons=["waiting"]),
                 {"kind": "waiting", "outcome": "pending", "reasons": ["waiting"]}, id="pending at the gates"),
    pytest.param(GatePassed(service="pay", version="1.0.0", digest=DIGEST, env="prod", strategy="rolling",
                            config={}, config_version=CONFIG, pipeline_version=CONFIG),
                 {"kind": "waiting", "outcome": "passed"}, id="let through"),
    pytest.param(DriftDetected(service="pay", env="prod", version="1.0.0", digest=DIGEST, config_version=CONFIG,
                               slot="prod", driver="local", differences=["process: not running"]),
                 {"state": "drifted", "drift": {"differences": ["process: not running"], "on_drift": "report"}},
                 id="drifted"),
])
def test_each_event_changes_one_cell_as_the_ledger_projects_it(data, change):
    got = change_of(event(data))
    assert got is not None and got["service"] == "pay" and got["env"] == "prod"
    assert {key: got[key] for key in change} == change


def test_an_event_that_changes_no_cell_is_not_sent():
    assert change_of(event(ApprovalGranted(service="pay", version="1.0.0", env="prod", approver="bob"))) is None


async def changes(stream, n: int) -> list[dict]:
    """The next `n` changes of a follow() stream (its first chunk, the greeting, skipped by the caller)."""
    out = []
    while len(out) < n:
        chunk = await asyncio.wait_for(anext(stream), 5)
        if chunk.startswith("id: "):
            out.append(json.loads(chunk.split("data: ", 1)[1]))
    return out


async def test_a_stream_gets_the_changes_of_the_services_it_follows_in_order():
    feed = LiveFeed()
    stream = feed.follow(frozenset({"pay"}))
    assert (await anext(stream)).startswith("retry: 2000")
    assert len(feed.streams) == 1
    feed.hand(event(DeploymentStarted(**(DEPLOYED | {"service": "shop"}))))
    feed.hand(event(DeploymentStarted(**DEPLOYED)))
    feed.hand(event(VerificationPassed(**DEPLOYED, checks={})))
    got = await changes(stream, 2)
    assert [(c["service"], c["state"]) for c in got] == [("pay", "deploying"), ("pay", "verified")]
    await stream.aclose()
    assert feed.streams == set()


async def test_a_quiet_stream_keeps_its_connection_with_a_comment():
    stream = LiveFeed().follow(frozenset(), keepalive_s=0.01)
    await anext(stream)
    assert await asyncio.wait_for(anext(stream), 5) == ": keepalive\n\n"
    await stream.aclose()


async def test_a_stream_that_cannot_keep_up_is_told_to_reload_and_ends(monkeypatch):
    monkeypatch.setattr(live, "QUEUE_LIMIT", 3)
    feed = LiveFeed()
    stream = feed.follow(frozenset())
    await anext(stream)
    for _ in range(5):
        feed.hand(event(DeploymentStarted(**DEPLOYED)))
    assert (await asyncio.wait_for(anext(stream), 5)).startswith("event: overflow")
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert feed.streams == set()
