"""What a routed deployment records of its lanes (services/deployer/routed.py `RoutedDeployer.save`), fast: on the
in-memory repository the contract suite holds to the PostgreSQL one (tests/e2e/test_deployer_repository.py)."""

from services.deployer.domain import Target
from services.deployer.repository import MemoryDeployments
from services.deployer.routed import Outcome, RoutedDeployer
from shared.contracts.pipeline import BlueGreen

DIGEST = "sha256:" + "a" * 64
CONFIG = "sha256:" + "c" * 64


def a_target(version: str, deployment_id: str) -> Target:
    return Target(deployment_id, "pay", "prod", version, DIGEST, {}, CONFIG)


async def deployed_twice(second: Outcome) -> tuple[dict, dict]:
    store = MemoryDeployments()
    routed = RoutedDeployer(runtime=None, drivers={}, router=None, port_base=30100, resolve_secret=None,
                            store=lambda conn: store)
    route, _ = await store.route("pay", "prod", 30100)
    await routed.save(None, a_target("1.0.0", "d1"), Outcome("blue", 11), BlueGreen(retire_after=60), route)
    route, _ = await store.route("pay", "prod", 30100)
    await routed.save(None, a_target("2.0.0", "d2"), second, BlueGreen(retire_after=60), route)
    return await store.route("pay", "prod", 30100)


async def test_a_verified_release_takes_the_traffic_and_the_previous_lane_stays_warm_until_it_retires():
    route, lanes = await deployed_twice(Outcome("green", 12))
    assert route["live"] == "green"
    assert (lanes["green"]["version"], lanes["green"]["state"], lanes["blue"]["state"]) == ("2.0.0", "live", "warm")


async def test_a_release_that_never_started_marks_its_lane_failed_and_the_traffic_stays():
    route, lanes = await deployed_twice(Outcome("green", None, failure="process: exited"))
    assert route["live"] == "blue" and lanes["blue"]["state"] == "live"
    assert (lanes["green"]["state"], lanes["green"]["pid"]) == ("failed", None)


async def test_a_release_that_ran_and_failed_leaves_the_lanes_for_the_abort_to_clean():
    route, lanes = await deployed_twice(Outcome("green", 12, failure="health: 500"))
    assert route["live"] == "blue" and lanes["green"]["state"] == "empty"
