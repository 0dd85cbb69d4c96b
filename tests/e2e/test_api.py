"""The operator API: every request authenticated, every command role-checked, who acts is the verified subject,
and every refusal is answered in one line and recorded in the ledger."""

import asyncpg
import httpx
import pytest

from cli import api
from shared.platform.credentials import SUPERUSER, database_dsn
from tests.e2e.support import admin_token, api_token, promote_async

pytestmark = pytest.mark.e2e

FROM_MANAGERS = """
service: {service}
environments:
  - name: dev
  - name: prod
    gates: [{{approval: {{min: 1, from: [release-managers], not_author: true}}}}]
"""


def call(method: str, path: str, token: str | None, **kwargs) -> httpx.Response:
    """A raw request to the stack's API (the CLI's client turns answers into lines; here we look at them)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, f"{api.api_url()}{path}", headers=headers, timeout=30, **kwargs)


def decide(service: str, version: str, token: str | None, env: str = "prod", wait: float = 10) -> httpx.Response:
    return call("POST", f"/v1/services/{service}/releases/{version}/decisions", token,
                json={"env": env, "decision": "granted", "wait": wait})


async def test_requests_without_a_valid_token_are_refused_and_each_refusal_is_in_the_ledger(scenario):
    await scenario.apply_pipeline()
    for token, reason in ((None, "no bearer token: log in (promote login) or set PROMOTE_TOKEN"),
                          ("pmt_0123456789ab_guessed", "unknown API token"),
                          ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJib2IifQ.", "not an API token, and this API accepts no "
                                                                      "OIDC tokens (no issuer configured)")):
        answer = decide(scenario.service, "1.0.0", token)
        assert (answer.status_code, answer.json()) == (401, {"detail": reason})
        refused = await scenario.wait("operation.refused", reason=reason)
        assert (refused.data.who, refused.data.action, refused.data.status) == ("anonymous", "authenticate", 401)
    assert scenario.seen("approval.granted") == []


async def test_a_revoked_or_expired_token_is_refused_at_once(scenario):
    made = api.call("POST", "/v1/tokens", json={"subject": "dora", "roles": ["viewer"]}, bearer=admin_token())
    assert call("GET", "/v1/whoami", made["token"]).json()["subject"] == "dora"
    api.call("DELETE", f"/v1/tokens/{made['id']}", bearer=admin_token())
    answer = call("GET", "/v1/whoami", made["token"])
    assert (answer.status_code, answer.json()["detail"]) == (401, f"API token {made['id']} was revoked")

    later = api.call("POST", "/v1/tokens", json={"subject": "dora", "roles": ["viewer"], "expires_in_s": 3600},
                     bearer=admin_token())
    conn = await asyncpg.connect(database_dsn(scenario.settings, SUPERUSER))
    try:  # an hour later, without waiting an hour
        await conn.execute("update api.tokens set expires_at = now() - interval '1 second' where id = $1", later["id"])
    finally:
        await conn.close()
    answer = call("GET", "/v1/whoami", later["token"])
    assert (answer.status_code, answer.json()["detail"]) == (401, f"API token {later['id']} has expired")


async def test_a_role_that_does_not_allow_the_action_is_refused_naming_the_role_needed(scenario):
    await scenario.apply_pipeline()
    await scenario.promote_to_staging("1.0.0", author="alice")
    viewer, test_approver = api_token("vic", "viewer"), api_token("tess", "approver:test")
    for token, held in ((viewer, "viewer:*"), (test_approver, "approver:test")):
        answer = decide(scenario.service, "1.0.0", token)
        assert answer.status_code == 403
        assert answer.json()["detail"] == f"this needs the approver role in prod (your roles: {held})"
    promoter = api_token("pat", "promoter:prod")
    answer = call("POST", "/v1/pipelines", promoter, json={"yaml": "service: x\nenvironments: [{name: dev}]\n"})
    assert (answer.status_code, answer.json()["detail"]) == (
        403, "this needs the admin role in every environment (your roles: promoter:prod)")
    refused = await scenario.wait("operation.refused", who="tess")
    assert (refused.data.action, refused.data.env, refused.data.version) == ("approve", "prod", "1.0.0")
    assert scenario.seen("approval.granted") == []


async def test_the_author_cannot_approve_under_any_spelling_and_the_approver_recorded_is_the_token_subject(scenario):
    await scenario.apply_pipeline()
    await scenario.promote_to_staging("2.0.0", author="alice")
    await scenario.wait("gate.pending", env="prod", version="2.0.0")
    for spelling in ("Alice", "\u0430lice", " alice", "alice\u200b"):  # a capital, a Cyrillic а, a space, a ZWSP
        answer = call("POST", "/v1/tokens", admin_token(), json={"subject": spelling, "roles": ["approver:prod"]})
        assert answer.status_code == 422 and "one spelling per person" in answer.json()["detail"]
    alice = api_token("alice", "approver:prod")
    answer = decide(scenario.service, "2.0.0", alice)
    assert (answer.status_code, answer.json()["detail"]) == (
        403, "you are the author of this release (alice): this environment's approvals must come from someone else")

    bob = api_token("bob", "approver:prod")
    answer = decide(scenario.service, "2.0.0", bob)
    assert answer.status_code == 200, answer.text
    assert answer.json()["verdict"] == {"outcome": "passed", "reasons": []}
    granted = await scenario.wait("approval.granted", approver="bob")
    assert (granted.data.approver, granted.envelope.source) == ("bob", "/promote/api")
    assert granted.data.digest == answer.json()["digest"]


async def test_approving_an_unknown_service_environment_or_version_is_refused_in_one_line(scenario):
    await scenario.apply_pipeline()
    await scenario.promote_to_staging("3.0.0", author="alice")
    bob = api_token("bob", "approver:*")
    for service, version, env, status, reason in (
            ("no-such", "3.0.0", "prod", 404, "unknown service 'no-such': no pipeline applied (promote pipeline "
                                              "apply FILE)"),
            (scenario.service, "3.0.0", "qa", 404, f"environment 'qa' is not in {scenario.service}'s pipeline "
                                                   "(dev, test, staging, prod)"),
            (scenario.service, "9.9.9", "prod", 404, f"{scenario.service} 9.9.9 is not registered: an approval "
                                                     "names a release that exists"),
            ("Bad Name", "3.0.0", "prod", 422, "service name 'Bad Name': must be 1-63 lowercase letters, "
                                               "digits or dashes, starting with a letter or digit")):
        answer = decide(service, version, bob, env=env)
        assert (answer.status_code, answer.json()["detail"]) == (status, reason)
    result = await promote_async("approve", scenario.service, "9.9.9", "--env", "prod",
                                 env={"PROMOTE_TOKEN": bob})
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1


async def test_a_gate_that_names_groups_counts_only_their_members(scenario):
    await scenario.apply_pipeline(FROM_MANAGERS)
    path, digest = scenario.build("4.0.0")
    await scenario.send(scenario.build_completed("4.0.0", path, digest, author="alice"))
    await scenario.wait("gate.pending", env="prod", version="4.0.0")
    outsider = api_token("olga", "approver:prod", groups=("developers",))
    answer = decide(scenario.service, "4.0.0", outsider)
    assert (answer.status_code, answer.json()["detail"]) == (
        403, "this environment's approvals must come from a member of release-managers (your groups: developers)")
    manager = api_token("mia", "approver:prod", groups=("release-managers",))
    assert decide(scenario.service, "4.0.0", manager).json()["verdict"]["outcome"] == "passed"
    verified = await scenario.wait("verification.passed", env="prod", version="4.0.0")
    assert verified.data.digest == digest


async def test_the_api_publishes_its_openapi_document(stack):
    document = call("GET", "/openapi.json", None).json()
    assert document["info"]["title"] == "promote operator API"
    assert {"/v1/status", "/v1/services/{service}/releases/{version}/decisions", "/v1/services/{service}/rollbacks",
            "/v1/pipelines", "/v1/dead-letters", "/v1/tokens"} <= set(document["paths"])
