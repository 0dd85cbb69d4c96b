"""Unit tests for services.rollback.domain: which verified release an environment returns to."""

import pytest

from services.rollback.domain import VerifiedRelease, choose_target

D1, D2, D3 = ("sha256:" + c * 64 for c in "123")
CA, CB = ("sha256:" + c * 64 for c in "ab")


def verified(version: str, digest: str, config_version: str) -> VerifiedRelease:
    return VerifiedRelease(version=version, digest=digest, config={"APP_ENV": "prod"}, config_version=config_version)


V1, V2, V3 = verified("1.0", D1, CA), verified("2.0", D2, CA), verified("3.0", D3, CA)
V3_NEW_CONFIG = verified("3.0", D3, CB)


@pytest.mark.parametrize(("history", "current", "target"), [
    pytest.param([V3, V2, V1], (D3, CA), V2, id="the newest verified release other than the running one"),
    pytest.param([V3, V2, V1], (D2, CA), V3, id="a newer verified release than the running one is chosen"),
    pytest.param([V3, V2, V1], None, V3, id="with nothing running the newest verified release"),
    pytest.param([V3_NEW_CONFIG, V3, V2], (D3, CB), V3,
                 id="the same digest with another config version is a different release"),
    pytest.param([V3, V3_NEW_CONFIG], (D3, CA), V3_NEW_CONFIG,
                 id="the running digest under another config is a valid target"),
    pytest.param([V3], (D3, CA), None, id="only the running release was verified so there is no target"),
    pytest.param([], (D3, CA), None, id="nothing verified means no target"),
    pytest.param([], None, None, id="nothing verified and nothing running means no target"),
])
def test_choose_target_picks_the_newest_verified_release_that_differs_from_the_running_one(history, current, target):
    assert choose_target(history, current) == target
