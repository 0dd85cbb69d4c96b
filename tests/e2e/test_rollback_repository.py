"""One contract for rollback's repository, run on both implementations: the PostgreSQL one (in a scratch schema
with rollback's own migrations, on the stack's PostgreSQL) and the in-memory one the fast handler tests use."""

import pytest

from services.rollback.domain import Current, Known, VerifiedRelease
from services.rollback.repository import MemoryRepository, PostgresRepository
from tests.e2e.support import scratch_schema

pytestmark = pytest.mark.e2e

CONFIG = "sha256:" + "c" * 64


def release(version: str, **more) -> VerifiedRelease:
    return VerifiedRelease(version, "sha256:" + version[0] * 64, {"APP_ENV": "prod", "DB": {"secret": "pay/db"}},
                           CONFIG, **more)


@pytest.fixture(params=["memory", "postgres"])
async def store(request, stack):
    if request.param == "memory":
        yield MemoryRepository()
        return
    async with scratch_schema(stack, "rollback") as conn:
        yield PostgresRepository(conn)


async def test_nothing_is_known_of_an_environment_at_first(store):
    assert await store.known("pay", "prod") == Known()


async def test_verified_releases_come_back_newest_first_with_everything_they_were_kept_with(store):
    image = release("2.0.0", driver="container", location="127.0.0.1:18500/pay@sha256:" + "2" * 64, replicas=3,
                    resources={"memory": "64m", "cpus": 0.5})
    for kept in (release("1.0.0"), image):
        await store.add_verified("pay", "prod", kept)
    assert (await store.known("pay", "prod")).history == (image, release("1.0.0"))


async def test_what_runs_is_replaced_not_added(store):
    await store.set_current("pay", "prod", Current("1.0.0", "sha256:" + "1" * 64, CONFIG, "verified"))
    await store.set_current("pay", "prod", Current("2.0.0", "sha256:" + "2" * 64, CONFIG, "failed"))
    assert (await store.known("pay", "prod")).current == Current("2.0.0", "sha256:" + "2" * 64, CONFIG, "failed")


async def test_environments_and_services_are_kept_apart_and_forgetting_one_forgets_only_it(store):
    for service, env in (("pay", "prod"), ("pay", "staging"), ("shop", "prod")):
        await store.add_verified(service, env, release("1.0.0"))
        await store.set_current(service, env, Current("1.0.0", "sha256:" + "1" * 64, CONFIG, "verified"))
    await store.forget("pay", "prod")
    assert await store.known("pay", "prod") == Known()
    for service, env in (("pay", "staging"), ("shop", "prod")):
        known = await store.known(service, env)
        assert known.history == (release("1.0.0"),) and known.current.version == "1.0.0"
