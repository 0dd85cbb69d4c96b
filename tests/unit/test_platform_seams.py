"""The seams split out of shared/platform/runtime.py, each tested without a broker or a database: how events are
minted (minting.py), background tasks (background.py) and the /health report (health.py)."""

import asyncio
import time
from dataclasses import dataclass

from shared.contracts.events import Artifact, BuildCompleted, PromotionRequested, new_event
from shared.platform.background import BackgroundTasks
from shared.platform.health import service_report
from shared.platform.minting import EventMint, derived_id

DIGEST = "sha256:" + "ab" * 32
REQUEST = PromotionRequested(service="payments", version="1.4.0", digest=DIGEST, env="dev")


def a_cause(event_id: str = "evt-1", correlation_id: str | None = "build-1"):
    return new_event(REQUEST, source="/promote/intake", event_id=event_id, correlation_id=correlation_id)


def a_build() -> BuildCompleted:
    return BuildCompleted(service="payments", version="1.4.0",
                          artifact=Artifact(kind="file", uri="file:///artifacts/payments-1.4.0", digest=DIGEST),
                          commit="0badc0de", author="alice", checks={})


def test_an_event_minted_again_from_the_same_cause_has_the_same_id_and_the_cause_s_correlation():
    mint = EventMint("gates", b"key-1")
    first, again = mint.event(a_build(), a_cause()), mint.event(a_build(), a_cause())
    assert first.id == again.id and first.correlation_id == "build-1"
    assert first.envelope.source == "/promote/gates"
    assert mint.event(a_build(), a_cause("evt-2")).id != first.id


def test_without_the_key_nobody_predicts_an_id_and_with_none_it_is_a_plain_uuid5():
    assert EventMint("gates", b"key-1").event(a_build(), a_cause()).id != \
        EventMint("gates", b"key-2").event(a_build(), a_cause()).id
    assert derived_id(None, "x") == derived_id(None, "x") != derived_id(b"k", "x")


def test_a_once_per_event_takes_its_id_from_its_fields_not_its_cause():
    mint = EventMint("gates", b"key-1")
    assert PromotionRequested.once_per
    assert mint.event(REQUEST, a_cause("evt-1")).id == mint.event(REQUEST, a_cause("evt-2")).id
    assert mint.timed_event(REQUEST, "soak/1").id == mint.event(REQUEST, a_cause()).id
    assert mint.event(REQUEST.model_copy(update={"env": "test"}), a_cause()).id != mint.event(REQUEST, a_cause()).id


def test_a_timed_event_has_the_correlation_it_is_given_and_its_id_from_the_timer():
    mint = EventMint("deployer", b"key-1")
    timed = mint.timed_event(a_build(), "check/2026-12-03T10:00", correlation_id="build-7")
    assert timed.correlation_id == "build-7" and timed.id == mint.timed_event(a_build(), "check/2026-12-03T10:00").id
    assert mint.timed_event(a_build(), "check/2026-12-03T10:01").id != timed.id


def test_events_of_one_type_from_one_cause_are_numbered_apart():
    ids = [event.id for event in EventMint("gates", b"k").events([a_build(), a_build()], a_cause())]
    assert len(set(ids)) == 2


async def test_a_failing_background_step_shows_its_error_until_it_succeeds_again():
    tasks, calls, recovered = BackgroundTasks(), [], asyncio.Event()

    async def step() -> float:
        calls.append(dict(tasks.errors))
        if len(calls) == 1:
            raise RuntimeError("database away")
        recovered.set()
        return 60.0

    tasks.add("watch", step)
    tasks.start()
    try:
        await asyncio.wait_for(recovered.wait(), 5)
    finally:
        tasks.cancel()
    assert calls == [{}, {"watch": "RuntimeError: database away"}] and tasks.errors == {}


@dataclass
class Runner:
    last_error: str | None = None
    failing_since: float | None = None
    stuck_after_s: float = 60.0
    processed: int = 3
    dead_lettered: int = 1
    started: float | None = None

    def running_for(self, now: float) -> float:
        return 0.0 if self.started is None else now - self.started


@dataclass
class Relay:
    last_error: str | None = None
    published: int = 5


async def report(**changes) -> dict:
    async def ping() -> bool:
        return True

    given = dict(service="gates", instance=1, started_at=time.monotonic(), runners=[Runner()], relay=Relay(),
                 background_errors={}, kafka_ping=ping, pool=None) | changes
    return await service_report(**given)


async def test_the_report_counts_and_says_why_it_is_degraded():
    body = await report()
    assert (body["processed"], body["dead_lettered"], body["published"]) == (3, 1, 5)
    assert body["status"] == "degraded" and body["database"] == "unreachable" and body["kafka"] == "ok"


async def test_a_stuck_handler_a_failing_one_and_an_unanswered_ping_are_named():
    async def ping() -> bool:
        raise OSError("refused")

    now = time.monotonic()
    body = await report(runners=[Runner(started=now - 90), Runner(last_error="boom", failing_since=now - 6)],
                        kafka_ping=ping, relay=None, background_errors={"watch": "x"})
    assert body["stuck"].startswith("a handler has run for 9") and body["consumer_error"] == "boom"
    assert body["kafka"] == "unreachable" and body["relay_error"] == "not started" and body["background_error"] == "x"
