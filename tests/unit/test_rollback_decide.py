"""Rollback's rules as a table (services/rollback/domain.decide), and its handler on the in-memory repository:
no database, no Kafka."""

import pytest

from services.rollback.domain import Current, Decision, Known, VerifiedRelease, decide
from services.rollback.handlers import apply
from services.rollback.repository import MemoryRepository
from shared.contracts.events import (DeploymentFailed, EnvironmentPruned, RollbackCompleted, RollbackFailed,
                                     RollbackOrdered, RollbackRequested, VerificationFailed, VerificationPassed,
                                     new_event)

CONFIG = "sha256:" + "c" * 64


def digest(version: str) -> str:
    return "sha256:" + version[0] * 64


def fields(version: str, purpose: str = "promotion", **more) -> dict:
    return dict(deployment_id=f"d-{version}", service="pay", env="prod", version=version, digest=digest(version),
                config={"APP_ENV": "prod"}, config_version=CONFIG, purpose=purpose, **more)


def kept(version: str) -> VerifiedRelease:
    return VerifiedRelease(version, digest(version), {"APP_ENV": "prod"}, CONFIG)


def running(version: str, state: str = "verified") -> Current:
    return Current(version, digest(version), CONFIG, state)


V1, V2 = kept("1.0.0"), kept("2.0.0")
PASSED = VerificationPassed(**fields("2.0.0"), checks={})
FAILED = VerificationFailed(**fields("3.0.0"), reason="health: 500", checks={})


def ordered(version: str, from_version: str | None, reason: str, by: str = "rollback-service") -> dict:
    return {"type": "rollback.ordered", "version": version, "from_version": from_version, "reason": reason,
            "requested_by": by}


def shown(decision: Decision) -> list[dict]:
    """The events a decision calls for, by what a reader checks."""
    out = []
    for data in decision.emit:
        if isinstance(data, RollbackOrdered):
            out.append(ordered(data.version, data.from_version, data.reason, data.requested_by))
        elif isinstance(data, RollbackFailed):
            out.append({"type": "rollback.failed", "reason": data.reason})
        elif isinstance(data, RollbackCompleted):
            out.append({"type": "rollback.completed", "version": data.version})
    return out


@pytest.mark.parametrize(("known", "data", "verified", "current", "emitted"), [
    pytest.param(Known((V1,), running("1.0.0")), PASSED, V2, running("2.0.0"), [],
                 id="a promotion verified is kept and runs; nothing to say"),
    pytest.param(Known((V1,), running("1.0.0")), VerificationPassed(**fields("1.0.0", "rollback", rollback_id="r1"),
                                                                    checks={}),
                 V1, running("1.0.0"), [{"type": "rollback.completed", "version": "1.0.0"}],
                 id="a rollback verified completes it"),
    pytest.param(Known((V2, V1), running("2.0.0")), FAILED, None, running("3.0.0", "failed"),
                 [ordered("2.0.0", "3.0.0", "3.0.0 failed in prod: health: 500")],
                 id="a failed promotion returns to the newest verified release"),
    pytest.param(Known((), None), FAILED, None, running("3.0.0", "failed"),
                 [{"type": "rollback.failed", "reason": "no earlier verified release in prod to return to"}],
                 id="with nothing verified there is nothing to return to"),
    pytest.param(Known((V2, V1), running("2.0.0")),
                 DeploymentFailed(**fields("3.0.0", "reconfigure"), reason="missing secret"), None,
                 running("3.0.0", "failed"), [ordered("2.0.0", "3.0.0", "3.0.0 failed in prod: missing secret")],
                 id="a failed reconfiguration is rolled back too"),
    pytest.param(Known((V2, V1), running("2.0.0")),
                 VerificationFailed(**fields("1.0.0", "rollback", rollback_id="r1"), reason="health: 500", checks={}),
                 None, running("1.0.0", "failed"),
                 [{"type": "rollback.failed", "reason": "the rollback release failed: health: 500"}],
                 id="a failed rollback fails, never another rollback"),
    pytest.param(Known((V2, V1), running("2.0.0")),
                 VerificationFailed(**fields("2.0.0", "restore"), reason="health: 500", checks={}), None,
                 running("2.0.0", "failed"), [], id="a failed restore is left to an operator"),
    pytest.param(Known((V2, V1), running("2.0.0")),
                 VerificationFailed(**fields("3.0.0"), reason="superseded", checks={}, superseded_by="d-4"), None,
                 running("3.0.0", "failed"), [], id="a canary superseded by a newer deployment is not rolled back"),
    pytest.param(Known((V2, V1), running("2.0.0")),
                 RollbackRequested(service="pay", env="prod", requested_by="ops", reason="slow"), None, None,
                 [ordered("1.0.0", "2.0.0", "slow", "ops")], id="an operator's request returns to the one before"),
    pytest.param(Known((V2,), running("2.0.0")),
                 RollbackRequested(service="pay", env="prod", requested_by="ops"), None, None,
                 [{"type": "rollback.failed", "reason": "no earlier verified release in prod to return to"}],
                 id="a request with only the running release verified fails with the reason"),
])
def test_rollback_decides(known, data, verified, current, emitted):
    decision = decide(known, new_event(data, source="/promote/test"))
    assert (decision.verified, decision.current, decision.forget, shown(decision)) == \
        (verified, current, False, emitted)


def test_a_pruned_environment_is_forgotten():
    pruned = EnvironmentPruned(service="pay", env="prod", version="2.0.0", digest=digest("2.0.0"), stopped=["prod"],
                               pipeline_version=CONFIG, applied_by="ops")
    assert decide(Known((V2,), running("2.0.0")), new_event(pruned, source="/promote/test")) == Decision(forget=True)


async def test_the_handler_returns_to_the_release_before_a_failed_one_and_forgets_a_pruned_environment():
    store = MemoryRepository()
    for data in (VerificationPassed(**fields("1.0.0"), checks={}), PASSED):
        assert await apply(store, new_event(data, source="/promote/deployer")) == []
    [order] = await apply(store, new_event(FAILED, source="/promote/deployer"))
    assert (order.version, order.from_version) == ("2.0.0", "3.0.0")
    [order] = await apply(store, new_event(RollbackRequested(service="pay", env="prod", requested_by="ops"),
                                           source="/promote/cli"))
    assert (order.version, order.from_version) == ("2.0.0", "3.0.0"), "3.0.0 runs (failed); 2.0.0 is the newest"
    pruned = EnvironmentPruned(service="pay", env="prod", version="3.0.0", digest=digest("3.0.0"), stopped=["prod"],
                               pipeline_version=CONFIG, applied_by="ops")
    await apply(store, new_event(pruned, source="/promote/deployer"))
    assert await store.known("pay", "prod") == Known()
