"""One contract for the deployer's repository of deployments, run on both implementations: the PostgreSQL one (a
scratch schema with the deployer's own migrations, on the stack's PostgreSQL) and the in-memory one."""

import socket

import pytest

from services.deployer.domain import Target
from services.deployer.repository import MemoryDeployments, PostgresDeployments
from tests.e2e.support import scratch_schema

pytestmark = pytest.mark.e2e

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
CONFIG = "sha256:" + "c" * 64
BASE = 30100


def target(deployment_id: str = "d1", env: str = "prod", version: str = "1.0.0", digest: str = D1,
           location: str | None = None) -> Target:
    return Target(deployment_id, "pay", env, version, digest, {"APP_ENV": env}, CONFIG, location=location)


@pytest.fixture(params=["memory", "postgres"])
async def store(request, stack):
    if request.param == "memory":
        yield MemoryDeployments()
        return
    async with scratch_schema(stack, "deployer") as conn:
        yield PostgresDeployments(conn)


async def test_each_environment_holds_a_port_of_its_own_from_the_base_up_and_keeps_it(store):
    prod = await store.slot("pay", "prod", BASE)
    assert prod["port"] == BASE and prod["state"] == "empty" and prod["version"] is None
    assert (await store.slot("pay", "prod", BASE))["port"] == BASE
    assert (await store.slot("pay", "dev", BASE))["port"] == BASE + 1


async def test_a_port_freed_by_a_forgotten_environment_is_given_again(store):
    await store.slot("pay", "prod", BASE)
    await store.slot("pay", "dev", BASE)
    await store.forget("pay", "prod")
    assert (await store.slot("shop", "prod", BASE))["port"] == BASE


async def test_a_port_something_else_on_the_host_listens_on_is_skipped(stack):
    with socket.socket() as other:  # another program's listener inside the apps' range (Keycloak once was)
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        async with scratch_schema(stack, "deployer") as conn:
            assert (await PostgresDeployments(conn).slot("pay", "prod", taken))["port"] == taken + 1


async def test_a_route_holds_three_ports_none_of_them_a_slot_s_and_is_allocated_once(store):
    await store.slot("pay", "dev", BASE)
    assert not await store.is_routed("pay", "prod")
    route, lanes = await store.route("pay", "prod", BASE)
    ports = {route["port"], lanes["blue"]["port"], lanes["green"]["port"]}
    assert len(ports) == 3 and BASE not in ports and min(ports) > BASE
    assert route["live"] is None and await store.is_routed("pay", "prod")
    again, lanes_again = await store.route("pay", "prod", BASE)
    assert again["port"] == route["port"] and lanes_again["blue"]["port"] == lanes["blue"]["port"]


async def test_a_deployment_is_opened_once_and_in_flight_until_it_finishes(store):
    await store.slot("pay", "prod", BASE)
    assert await store.claim(target()) and not await store.claim(target())
    assert await store.in_flight("pay", "prod") and not await store.in_flight("pay", "dev")
    await store.finish(target(), 4242, "/store/sha256/1", "verified", None)
    assert not await store.in_flight("pay", "prod")
    slot = await store.slot("pay", "prod", BASE)
    assert (slot["pid"], slot["version"], slot["digest"], slot["state"]) == (4242, "1.0.0", D1, "verified")


async def test_a_finish_that_leaves_the_slot_as_it_was_changes_only_the_deployment(store):
    await store.slot("pay", "prod", BASE)
    await store.claim(target())
    await store.finish(target(), None, "/x", "failed", "secret missing", slot_changed=False)
    assert not await store.in_flight("pay", "prod")
    assert (await store.slot("pay", "prod", BASE))["state"] == "empty"


async def test_the_slot_serves_an_environment_not_behind_the_router_and_verified_releases_run(store):
    assert await store.serving("pay", "prod") is None
    await store.slot("pay", "prod", BASE)
    await store.slot("pay", "dev", BASE)
    await store.claim(target())
    await store.finish(target(), 1, "/x", "verified", None)
    await store.claim(target("d2", env="dev", version="2.0.0", digest=D2))
    await store.finish(target("d2", env="dev", version="2.0.0", digest=D2), 2, "/y", "failed", "health: 500")
    served = await store.serving("pay", "prod")
    assert (served["version"], served["digest"]) == ("1.0.0", D1)
    assert (await store.serving("pay", "dev"))["version"] == "2.0.0"  # it serves, though it failed
    running = await store.running_releases("pay")
    assert list(running) == ["prod"] and running["prod"]["config_version"] == CONFIG  # only the verified


async def test_a_routed_environment_is_served_by_its_live_lane_and_the_previous_one_goes_warm(store):
    await store.route("pay", "prod", BASE)
    assert await store.serving("pay", "prod") is None and await store.running_releases("pay") == {}
    await store.switch(target(), "blue", 11, None, 60)
    await store.switch(target("d2", version="2.0.0", digest=D2), "green", 12, "blue", 60)
    served = await store.serving("pay", "prod")
    assert (served["version"], served["digest"]) == ("2.0.0", D2)
    route, lanes = await store.route("pay", "prod", BASE)
    assert route["live"] == "green" and (lanes["blue"]["state"], lanes["green"]["state"]) == ("warm", "live")
    assert lanes["blue"]["pid"] == 11 and (await store.running_releases("pay"))["prod"]["version"] == "2.0.0"
    await store.set_lane(target("d3", version="3.0.0"), "blue", None, "empty")
    assert (await store.route("pay", "prod", BASE))[1]["blue"]["version"] == "3.0.0"


async def test_what_was_promoted_is_kept_once_per_environment_the_last_winning_until_replaced(store):
    assert await store.promoted_release("pay", "prod") is None
    await store.save_promoted(target(), "prod", BASE, False)
    await store.save_promoted(target("d2", version="2.0.0", digest=D2), "prod-blue", BASE + 2, True)
    promoted = await store.promoted_release("pay", "prod")
    assert (promoted["deployment_id"], promoted["slot"], promoted["routed"], promoted["state"]) == \
        ("d2", "prod-blue", True, "verified")
    await store.promoted_replaced("pay", "prod")
    assert (await store.promoted_release("pay", "prod"))["state"] == "failed"


async def test_driver_starts_are_counted_per_environment(store):
    await store.record_start(target())
    await store.record_start(target())
    await store.record_start(target(env="dev"))
    assert (await store.starts("pay", "prod"), await store.starts("pay", "dev"), await store.starts("pay", "qa")) \
        == (2, 1, 0)


async def test_an_image_ran_where_a_slot_or_a_lane_names_a_location(store):
    image = "127.0.0.1:18500/pay@" + D1
    await store.slot("pay", "prod", BASE)
    await store.route("pay", "stage", BASE)
    assert not await store.ran_images("pay", "prod") and not await store.ran_images("pay", "stage")
    await store.finish(target(location=image), 1, "/x", "verified", None)
    await store.set_lane(target(env="stage", location=image), "green", 2, "live")
    assert await store.ran_images("pay", "prod") and await store.ran_images("pay", "stage")


async def test_a_forgotten_environment_frees_its_ports_and_what_was_promoted_there(store):
    await store.slot("pay", "dev", BASE)
    await store.route("pay", "prod", BASE)
    await store.save_promoted(target(), "prod-blue", BASE + 2, True)
    await store.forget("pay", "prod")
    assert not await store.is_routed("pay", "prod") and await store.promoted_release("pay", "prod") is None
    assert (await store.slot("pay", "prod", BASE))["port"] == BASE + 1  # the highest held is dev's again
    await store.forget("pay", "dev")
    await store.forget("pay", "prod")
    assert (await store.slot("pay", "qa", BASE))["port"] == BASE
