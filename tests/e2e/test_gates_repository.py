"""One contract for gates' repository, run on both implementations: the PostgreSQL one (a scratch schema with
gates' own migrations, on the stack's PostgreSQL) and the in-memory one the fast handler tests use."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from services.gates.domain import Release
from services.gates.repository import MemoryRepository, Pending, Pipelines, PostgresRepository
from shared.contracts.pipeline import parse_pipeline
from tests.e2e.support import scratch_schema

pytestmark = pytest.mark.e2e

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
PIPELINE = parse_pipeline("service: pay\nenvironments:\n  - {name: dev}\n"
                          "  - {name: prod, gates: [{approval: {min: 1}}]}\n")
DEFINITION = json.loads(PIPELINE.model_dump_json())
AT = datetime(2026, 12, 3, 9, tzinfo=UTC)


@pytest.fixture(params=["memory", "postgres"])
async def store(request, stack):
    if request.param == "memory":
        yield MemoryRepository()
        return
    async with scratch_schema(stack, "gates") as conn:
        yield PostgresRepository(conn, Pipelines())


async def test_the_latest_pipeline_is_the_one_applied_last(store):
    assert await store.latest_pipeline("pay") is None
    await store.save_pipeline("pay", "sha256:" + "a" * 64, DEFINITION)
    version, definition = await store.latest_pipeline("pay")
    assert (version, definition.environment_names) == ("sha256:" + "a" * 64, PIPELINE.environment_names)


async def test_a_promotion_is_opened_once_and_pending_ones_come_oldest_first_narrowed_as_asked(store):
    assert await store.request_promotion("pay", "1.0.0", "dev", D1, "c1")
    assert not await store.request_promotion("pay", "1.0.0", "dev", D1, "c1")
    assert await store.request_promotion("pay", "2.0.0", "dev", D2)
    assert await store.request_promotion("shop", "1.0.0", "dev", D1)
    assert await store.pending("pay") == [Pending("pay", "1.0.0", "dev", D1, []),
                                          Pending("pay", "2.0.0", "dev", D2, [])]
    assert [p.version for p in await store.pending("pay", digest=D2)] == ["2.0.0"]
    await store.set_outcome("pay", "1.0.0", "dev", "pending", ["waiting for 1 approval(s)"])
    assert await store.pending("pay", version="1.0.0") == \
        [Pending("pay", "1.0.0", "dev", D1, ["waiting for 1 approval(s)"])]
    await store.set_outcome("pay", "2.0.0", "dev", "passed", [])
    assert [p.version for p in await store.pending("pay")] == ["1.0.0"]


async def test_the_facts_of_a_release_are_its_artifact_first_verifications_latest_evidence_and_decisions(store):
    assert (await store.load_facts("pay", "1.0.0", "prod", D1, PIPELINE)).release is None
    await store.save_artifact(Release("pay", "1.0.0", D1, "alice", {"unit-tests": "passed"}, None, "c0ffee"))
    await store.save_artifact(Release("pay", "1.0.0", D2, "mallory"))  # kept once: the first registration
    await store.save_verification("pay", "dev", D1, "1.0.0", AT)
    await store.save_verification("pay", "dev", D1, "1.0.0", AT + timedelta(hours=1))  # the first counts
    await store.save_verification("pay", "dev", D2, "2.0.0", AT)  # another digest: not this release's
    await store.save_evidence("pay", D1, "dev", "smoke", "failed")
    await store.save_evidence("pay", D1, "dev", "smoke", "passed")
    await store.save_approval("pay", "1.0.0", "prod", "bob", "rejected", ("ops",), D1)
    await store.save_approval("pay", "1.0.0", "prod", "bob", "granted", ("ops", "dev"), D1)
    await store.save_approval("pay", "1.0.0", "prod", "eve", "granted", (), D2)  # on another digest: ignored
    await store.save_approval("pay", "1.0.0", "prod", "old", "granted")  # named no digest: counts
    facts = await store.load_facts("pay", "1.0.0", "prod", D1, PIPELINE)
    assert (facts.release.digest, facts.release.author, facts.release.checks, facts.release.commit) == \
        (D1, "alice", {"unit-tests": "passed"}, "c0ffee")
    assert facts.verified_at == {"dev": AT} and facts.evidence == {("dev", "smoke"): "passed"}
    assert facts.approvals == {"bob": "granted", "old": "granted"}
    assert facts.approver_groups == {"bob": frozenset({"ops", "dev"}), "old": frozenset()}
    assert not facts.released_here
    await store.save_verification("pay", "prod", D1, "1.0.0", AT)
    assert (await store.load_facts("pay", "1.0.0", "prod", D1, PIPELINE)).released_here
