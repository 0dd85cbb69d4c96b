"""Time-based gates end to end: a soak and a change window hold a release until a durable timer lets it in.

Every instant compared here is an event's own CloudEvents `time`: the verification's (when
the soak starts) and the verdict's (when gates emitted it, i.e. when its timer fired).
The restart and rebuild tests stop gates, so this module runs among the disruptive tests.
"""

import asyncio
import json
import math
import signal
from shared.platform.credentials import SUPERUSER, database_dsn
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

import devstack
from tests.e2e.support import Scenario

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SOAK_S = 4
FIGURES: dict[str, float] = {}


def pipeline(gates_of_last: str, envs: tuple[str, ...] = ("dev", "prod")) -> str:
    """Noop environments (only the order is recorded), the last one with `gates_of_last`."""
    lines = [f"  - {{{{name: {env}, driver: noop}}}}" for env in envs[:-1]]
    lines.append(f"  - {{{{name: {envs[-1]}, driver: noop, gates: [{gates_of_last}]}}}}")
    return "service: {service}\nenvironments:\n" + "\n".join(lines) + "\n"


def clock(instant: datetime) -> str:
    """HH:MM:SS of a UTC instant."""
    return instant.astimezone(UTC).strftime("%H:%M:%S")


def whole_second_after(seconds: float) -> datetime:
    """The first whole UTC second at least `seconds` from now (window times are to the second)."""
    instant = datetime.now(UTC) + timedelta(seconds=seconds)
    return instant.replace(microsecond=0) + timedelta(seconds=1)


async def release(scenario: Scenario, version: str) -> None:
    """Publish a build of this scenario's service."""
    path, digest = scenario.build(version)
    await scenario.send(scenario.build_completed(version, path, digest))


def record(name: str, seconds: float) -> None:
    """Keep a measured figure for the report (var/reports/time_gates.json) and print it."""
    FIGURES[name] = round(seconds, 3)
    print(f"\ntime gates: {name} = {seconds:.3f} s")


@pytest.fixture(scope="module", autouse=True)
def report(stack):
    yield
    (stack.var_dir / "reports").mkdir(parents=True, exist_ok=True)
    (stack.var_dir / "reports" / "time_gates.json").write_text(json.dumps(FIGURES, indent=2))


@pytest.fixture
def gates_restored():
    """Whatever happens in the test, gates runs again afterwards."""
    yield
    if devstack.service_pid("gates") is None:
        devstack.start_service("gates")
        devstack.wait_services_ready(60, names=["gates"])


async def test_a_soak_holds_the_release_until_it_has_run_verified_in_the_previous_environment(scenario):
    await scenario.apply_pipeline(pipeline(f"{{{{soak: {SOAK_S}s}}}}", ("dev", "test", "staging")))
    await release(scenario, "1.0.0")
    verified = await scenario.wait("verification.passed", env="test", version="1.0.0")
    due = verified.envelope.time + timedelta(seconds=SOAK_S)

    pending = await scenario.wait("gate.pending", env="staging", version="1.0.0")
    shown = (due.replace(microsecond=0) + timedelta(seconds=1 if due.microsecond else 0)).isoformat()
    assert pending.data.reasons == [f"soaking in test for {SOAK_S}s, until {shown}"]
    assert scenario.seen("gate.passed", env="staging") == []

    passed = await scenario.wait("gate.passed", env="staging", version="1.0.0", timeout=SOAK_S + 30)
    assert passed.envelope.time >= due, "the gate passed before the soak was over"
    assert passed.envelope.time - due < timedelta(seconds=2)
    record("soak_timer_lateness", (passed.envelope.time - due).total_seconds())
    built = await scenario.wait("build.completed", version="1.0.0")
    assert built.correlation_id and passed.correlation_id == built.correlation_id, "the timer's verdict left the chain"
    await scenario.wait("verification.passed", env="staging", version="1.0.0")
    assert await scenario.query("gates", "select * from timers where service = $1", scenario.service) == []


async def test_a_change_window_holds_the_release_until_it_opens(scenario):
    opens = whole_second_after(8)
    window = f"{{{{change_window: {{{{start: '{clock(opens)}', end: '{clock(opens + timedelta(minutes=1))}'}}}}}}}}"
    await scenario.apply_pipeline(pipeline(window))
    await release(scenario, "1.0.0")

    pending = await scenario.wait("gate.pending", env="prod", version="1.0.0")
    assert pending.envelope.time < opens, "the release reached prod too late for this test to mean anything"
    assert pending.data.reasons == [
        f"outside the change window (daily {clock(opens)}-{clock(opens + timedelta(minutes=1))} UTC); "
        f"opens {opens.isoformat()}"]
    timers = await scenario.query("gates", "select due_at from timers where service = $1", scenario.service)
    assert [row["due_at"] for row in timers] == [opens]

    passed = await scenario.wait("gate.passed", env="prod", version="1.0.0", timeout=40)
    assert passed.envelope.time >= opens
    record("window_timer_lateness", (passed.envelope.time - opens).total_seconds())


async def test_a_freeze_holds_the_release_until_it_ends(scenario):
    ends = whole_second_after(8)
    freeze = (f"{{{{from: '{(ends - timedelta(hours=1)).isoformat()}', until: '{ends.isoformat()}', "
              f"reason: e2e freeze}}}}")
    await scenario.apply_pipeline(pipeline(f"{{{{change_window: {{{{freezes: [{freeze}]}}}}}}}}"))
    await release(scenario, "1.0.0")

    pending = await scenario.wait("gate.pending", env="prod", version="1.0.0")
    assert pending.envelope.time < ends, "the release reached prod too late for this test to mean anything"
    assert pending.data.reasons == [f"frozen until {ends.isoformat()}: e2e freeze"]

    passed = await scenario.wait("gate.passed", env="prod", version="1.0.0", timeout=40)
    assert passed.envelope.time >= ends
    record("freeze_timer_lateness", (passed.envelope.time - ends).total_seconds())


@pytest.mark.timeout(240)
async def test_a_timer_that_came_due_while_gates_was_stopped_fires_when_it_is_back(scenario, gates_restored):
    soak_s = 12
    await scenario.apply_pipeline(pipeline(f"{{{{soak: {soak_s}s}}}}"))
    await release(scenario, "1.0.0")
    verified = await scenario.wait("verification.passed", env="dev", version="1.0.0")
    due = verified.envelope.time + timedelta(seconds=soak_s)
    await scenario.wait("gate.pending", env="prod", version="1.0.0")

    await asyncio.to_thread(devstack.stop_service, "gates")  # SIGTERM
    stopped = datetime.now(UTC)
    assert stopped < due, "gates stopped after the timer was due: the test proves nothing"
    await asyncio.sleep(math.ceil((due - stopped).total_seconds()) + 2)  # let the due time pass while it is down
    assert scenario.seen("gate.passed", env="prod") == []

    started = datetime.now(UTC)
    await asyncio.to_thread(devstack.start_service, "gates")
    await asyncio.to_thread(devstack.wait_services_ready, 60, ["gates"])
    passed = await scenario.wait("gate.passed", env="prod", version="1.0.0", timeout=60)
    assert passed.envelope.time > started
    record("restart_timer_lateness", (passed.envelope.time - due).total_seconds())
    record("restart_fired_after_process_start", (passed.envelope.time - started).total_seconds())
    await scenario.wait("verification.passed", env="prod", version="1.0.0")


KEPT_BY_GATES = ("pipeline.applied", "artifact.registered", "promotion.requested", "verification.passed")


@pytest.mark.timeout(900)
async def test_gates_rebuilt_from_the_topics_has_the_same_timers_and_verdicts(scenario, gates_restored):
    await scenario.apply_pipeline(pipeline("{{soak: 30m}}, {{change_window: {{days: [sat], timezone: Pacific/Apia}}}}"))
    await release(scenario, "1.0.0")
    await scenario.wait("gate.pending", env="prod", version="1.0.0")
    state = ("select p.env, p.status, p.reasons::text, t.due_at from promotions p left join timers t "
             "using (service, version, env) where p.service = $1 order by p.env")
    live = [tuple(row) for row in await scenario.query("gates", state, scenario.service)]
    assert [(env, status, due is not None) for env, status, _, due in live] == [
        ("dev", "passed", False), ("prod", "pending", True)], live

    await asyncio.to_thread(devstack.stop_service, "gates", signal.SIGKILL)
    conn = await asyncpg.connect(database_dsn(scenario.settings, SUPERUSER))  # the disaster: an admin drops it
    try:
        await conn.execute("drop schema gates cascade")
    finally:
        await conn.close()
    started = datetime.now(UTC)
    await asyncio.to_thread(devstack.start_service, "gates")
    await asyncio.to_thread(devstack.wait_services_ready, 120, ["gates"])
    for event in [e for e in scenario.watcher.events if e.data.service == scenario.service
                  and e.envelope.type in KEPT_BY_GATES]:
        await scenario.processed_by("gates", event, timeout=540)  # the replay of all history comes first
    record("rebuild_until_this_service_was_judged", (datetime.now(UTC) - started).total_seconds())

    rebuilt = [tuple(row) for row in await scenario.query("gates", state, scenario.service)]
    assert rebuilt == live
