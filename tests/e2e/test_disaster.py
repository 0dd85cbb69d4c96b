"""Disaster drill: a service's schema is dropped mid-pipeline; it rebuilds its state from the topics."""

import signal

import asyncpg
import pytest

import devstack
from shared.credentials import SUPERUSER, database_dsn
from shared.events import ApprovalGranted
from tests.e2e.batch import ENVS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

HELD_AT_PROD = """
service: {service}
environments:
  - {{name: dev, driver: noop}}
  - {{name: test, driver: noop}}
  - {{name: staging, driver: noop}}
  - {{name: prod, driver: noop, gates: [{{approval: {{min: 1}}}}]}}
"""


async def test_gates_rebuilt_from_the_topics_after_its_schema_is_dropped_carries_the_pipeline_to_prod(scenario):
    await scenario.apply_pipeline(HELD_AT_PROD)
    path, digest = scenario.build("1.0.0")
    await scenario.send(scenario.build_completed("1.0.0", path, digest, author="alice"))
    await scenario.wait("gate.pending", env="prod", version="1.0.0")

    devstack.stop_service("gates", sig=signal.SIGKILL)
    conn = await asyncpg.connect(database_dsn(scenario.settings, SUPERUSER))  # the disaster: an admin drops it
    try:
        await conn.execute("drop schema gates cascade")
    finally:
        await conn.close()
    devstack.start_service("gates")
    devstack.wait_services_ready(120, names=["gates"])

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
