"""A pipeline that drops an environment still running a release: refused, unless pruned, which stops it.

Before, the dropped environment's app kept running, invisible to status and beyond rollback's reach.
"""

import json
import os
from pathlib import Path

import pytest

from services.deployer.router import Router
from tests.e2e.support import promote_async

pytestmark = pytest.mark.e2e

TWO = """
service: {service}
environments:
  - name: dev
  - name: qa
    strategy: {{blue_green: {{retire_after: 600}}}}
"""
ONE = """
service: {service}
environments:
  - name: dev
"""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0


def lane_pids(scenario, env: str) -> dict[str, int]:
    """{slot: pid} of the app processes the deployer started in `env` (its slot and its lanes)."""
    found = {}
    for record in (scenario.settings.var_dir / "run" / "apps").glob(f"{scenario.service}--{env}*.json"):
        slot = record.name.removeprefix(f"{scenario.service}--").removesuffix(".json")
        found[slot] = json.loads(record.read_text())["pid"]
    return found


async def test_dropping_a_running_environment_is_refused_and_pruning_stops_it_and_forgets_it(scenario, tmp_path):
    await scenario.apply_pipeline(TWO)
    for version in ("1.0.0", "1.1.0"):  # two releases in qa: one live, one warm in the other lane
        path, digest = scenario.build(version)
        await scenario.send(scenario.build_completed(version, path, digest))
        await scenario.wait("verification.passed", env="qa", version=version, timeout=60)
    running = lane_pids(scenario, "qa")
    assert sorted(running) == ["qa.blue", "qa.green"] and all(pid_alive(pid) for pid in running.values())
    route_port = Router(scenario.settings.var_dir / "router").fragment(scenario.service, "qa")
    assert route_port.exists()
    dev = lane_pids(scenario, "dev")["dev"]

    file = tmp_path / "pipeline.yaml"
    file.write_text(ONE.format(service=scenario.service))
    refused = await promote_async("pipeline", "apply", str(file))
    assert refused.returncode == 1
    assert refused.stderr.strip().endswith("the pipeline drops environments that still run a release: qa (1.1.0); "
                                           "apply with --prune to stop them"), refused.stderr
    await scenario.wait("operation.refused", action="pipeline-apply", status=409)
    assert all(pid_alive(pid) for pid in running.values())

    applied = await promote_async("pipeline", "apply", str(file), "--prune", "--json")
    assert applied.returncode == 0, applied.stderr
    answer = json.loads(applied.stdout)
    assert answer["environments"] == ["dev"]
    assert answer["pruned"] == [{"env": "qa", "version": "1.1.0", "stopped": ["qa.blue", "qa.green"]}]
    pruned = await scenario.wait("environment.pruned", env="qa")
    assert (pruned.data.version, pruned.data.applied_by) == ("1.1.0", "admin")
    assert pruned.data.pipeline_version == answer["pipeline_version"]

    assert not any(pid_alive(pid) for pid in running.values())
    assert not route_port.exists()  # the router no longer listens for qa
    assert pid_alive(dev)  # the environment the pipeline keeps runs on
    status = json.loads((await promote_async("status", scenario.service, "--json")).stdout)
    assert list(status["environments"]) == ["dev"] and status["environments"]["dev"]["state"] == "verified"
    assert await scenario.query("ledger", "select * from environments where service = $1 and env = 'qa'",
                                scenario.service) == []
    assert await scenario.query("deployer", "select * from lanes where service = $1", scenario.service) == []
    assert await scenario.query("rollback", "select * from verified_releases where service = $1 and env = 'qa'",
                                scenario.service) == []

    rollback = await promote_async("rollback", scenario.service, "--env", "qa")
    assert rollback.returncode == 1 and "qa" in rollback.stderr

    audit = json.loads((await promote_async("audit", scenario.service, "1.1.0", "--json")).stdout)
    assert "environment.pruned" in [entry["type"] for entry in audit["events"]]


async def test_pruning_an_environment_that_runs_nothing_is_just_an_apply(scenario, tmp_path):
    await scenario.apply_pipeline(TWO)
    file = tmp_path / "pipeline.yaml"
    file.write_text(ONE.format(service=scenario.service))
    applied = await promote_async("pipeline", "apply", str(file), "--json")
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["pruned"] == []
    assert scenario.seen("environment.pruned") == []
