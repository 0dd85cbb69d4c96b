"""Disaster drills: a service's schema is dropped mid-pipeline; it rebuilds its state from the topics (gates: by
reading them again; the deployer: from its own events and what the drivers run, services/deployer/recovery.py)."""

import asyncio
import json
import signal

import asyncpg
import pytest

import devstack
from shared.platform.credentials import SUPERUSER, database_dsn
from shared.contracts.events import ApprovalGranted
from tests.e2e.batch import ENVS, Batch
from tests.e2e.test_canaries import canary_row, published_canary
from tests.e2e.test_strategies import lanes, load, release, router_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

HELD_AT_PROD = """
service: {service}
environments:
  - {{name: dev, driver: noop}}
  - {{name: test, driver: noop}}
  - {{name: staging, driver: noop}}
  - {{name: prod, driver: noop, gates: [{{approval: {{min: 1}}}}]}}
"""


async def disaster(scenario, service: str) -> None:
    """The service killed and its schema dropped by an admin, then started again: it rebuilds its state."""
    devstack.stop_service(service, sig=signal.SIGKILL)
    conn = await asyncpg.connect(database_dsn(scenario.settings, SUPERUSER))
    try:
        await conn.execute(f"drop schema {service} cascade")
    finally:
        await conn.close()
    devstack.start_service(service)
    devstack.wait_services_ready(120, names=[service])


async def test_gates_rebuilt_from_the_topics_after_its_schema_is_dropped_carries_the_pipeline_to_prod(scenario):
    await scenario.apply_pipeline(HELD_AT_PROD)
    path, digest = scenario.build("1.0.0")
    await scenario.send(scenario.build_completed("1.0.0", path, digest, author="alice"))
    await scenario.wait("gate.pending", env="prod", version="1.0.0")

    await disaster(scenario, "gates")

    # The rebuilt gates knows alice wrote 1.0.0 and that it was verified in staging:
    # her approval does not count, bob's does, and only then does prod get its release.
    await scenario.send(ApprovalGranted(service=scenario.service, version="1.0.0", env="prod", approver="alice"))
    refused = await scenario.watcher.wait_for(
        lambda e: e.envelope.type == "gate.pending" and e.data.service == scenario.service
        and any("alice is the author" in r for r in e.data.reasons), 300, "the rebuilt gates judging alice")
    assert refused.data.env == "prod"
    await scenario.send(ApprovalGranted(service=scenario.service, version="1.0.0", env="prod", approver="bob"))
    await scenario.wait("verification.passed", env="prod", version="1.0.0", timeout=120)

    journals = {env: (scenario.settings.var_dir / "run" / "apps" / f"{scenario.service}--{env}.noop.jsonl")
                for env in ENVS}
    assert {env: len(path.read_text().splitlines()) for env, path in journals.items()} == dict.fromkeys(ENVS, 1)
    rows = await scenario.query("gates", "select env, status from promotions where service = $1 order by env",
                                scenario.service)
    assert {r["env"]: r["status"] for r in rows} == dict.fromkeys(ENVS, "passed")


CANARY_THEN_PROD = """
service: {service}
environments:
  - name: staging
    strategy:
      canary:
        steps: [20, 50, 100]
        analysis: {{interval: 5s, min_requests: 10, max_error_rate: 0.05, max_p99_ms: 500, max_wait: 30s}}
    config: {{APP_ENV: staging}}
  - name: prod
    config: {{APP_ENV: prod}}
"""


def distinct(scenario, event_type: str, **fields) -> set[str]:
    """The ids of the events of a type seen so far (a rebuilt service may publish an event again: same id)."""
    return {event.id for event in scenario.seen(event_type, **fields)}


def run_file(scenario, slot: str) -> dict:
    """What the local driver recorded starting in a slot (its pid, digest, port)."""
    return json.loads((scenario.settings.var_dir / "run" / "apps" / f"{scenario.service}--{slot}.json").read_text())


async def test_the_deployer_rebuilt_from_its_events_after_its_schema_is_dropped_mid_canary_does_nothing_twice(
        scenario, tmp_path):
    await scenario.apply_pipeline(CANARY_THEN_PROD)
    await release(scenario, "1.0.0", "prod")
    port = await router_port(scenario, "staging")
    prod_slot = run_file(scenario, "prod")
    batch = Batch(scenario.settings, tmp_path, 6, "disaster")
    async with load(port) as report:
        path, digest = scenario.build("1.0.1")
        await scenario.send(scenario.build_completed("1.0.1", path, digest))
        await scenario.wait("deployment.progressed", env="staging", version="1.0.1", step=1, timeout=60)
        canary = await published_canary(scenario, "1.0.1")
        lanes_before = {lane: row["port"] for lane, row in (await lanes(scenario, "staging")).items()}
        canary_started = run_file(scenario, f"staging.{canary['lane']}")

        in_flight = asyncio.create_task(batch.run_through(scenario.watcher, timeout=300))
        await batch.wait_until_part_in_dev(scenario.watcher, 0.3)  # promotions on their way when it strikes
        await disaster(scenario, "deployer")

        rebuilt = await canary_row(scenario, "1.0.1")
        assert (rebuilt["lane"], rebuilt["step"], rebuilt["pid"]) == (canary["lane"], 0, canary["pid"])
        assert {lane: row["port"] for lane, row in (await lanes(scenario, "staging")).items()} == lanes_before
        await in_flight
        await scenario.wait("verification.passed", env="staging", version="1.0.1", timeout=120)
        await scenario.wait("verification.passed", env="prod", version="1.0.1", timeout=60)

    # The canary went on in the process it had: nothing started again, its steps each recorded once.
    assert run_file(scenario, f"staging.{canary['lane']}") == canary_started
    assert sorted({(e.data.step, e.data.share) for e in scenario.seen("deployment.progressed", version="1.0.1")}) \
        == [(1, 20), (2, 50)]
    for env in ("staging", "prod"):
        assert len(distinct(scenario, "deployment.started", env=env, version="1.0.1")) == 1
        assert len(distinct(scenario, "verification.passed", env=env, version="1.0.1")) == 1
    # prod kept its slot's port: 1.0.1 replaced 1.0.0 where it served.
    assert run_file(scenario, "prod")["port"] == prod_slot["port"] and run_file(scenario, "prod")["pid"] != \
        prod_slot["pid"]
    assert report.result().failed == 0
    # Every promotion in flight finished, each environment started once.
    result = await batch.result(0, scenario.watcher)
    assert result.verified_in_prod == batch.size and result.duplicates() == {}
    assert all(len(digests) == 1 for digests in result.starts.values()), result.starts
