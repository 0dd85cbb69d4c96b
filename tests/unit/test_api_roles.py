"""Unit tests for the operator API's pure parts: role bindings, what each role allows, API token shapes."""

import pytest

from services.api import tokens
from services.api.roles import Binding, BindingError, has_role, refusal


def bindings(*texts: str) -> frozenset[Binding]:
    return frozenset(Binding.parse(text) for text in texts)


@pytest.mark.parametrize(("held", "role", "env", "allowed"), [
    (("viewer",), "viewer", "prod", True),
    (("viewer",), "promoter", "prod", False),
    (("approver:prod",), "approver", "prod", True),
    (("approver:prod",), "promoter", "prod", True),           # a role includes the ones below it
    (("approver:prod",), "approver", "staging", False),       # only in its environment
    (("approver:prod",), "approver", "*", False),             # not "everywhere"
    (("admin:*",), "approver", "prod", True),
    (("admin:prod",), "admin", "*", False),                   # admin in one environment is not admin:*
    ((), "viewer", "prod", False),
], ids=lambda value: str(value))
def test_a_binding_grants_its_role_and_the_lower_ones_in_its_environment_only(held, role, env, allowed):
    assert has_role(bindings(*held), role, env) is allowed


def test_a_refusal_names_the_role_needed_and_the_roles_held():
    assert refusal(bindings("viewer", "approver:test"), "approver", "prod") == (
        "this needs the approver role in prod (your roles: approver:test, viewer:*)")
    assert refusal(bindings("admin:*"), "admin") is None


@pytest.mark.parametrize("text", ["root", "approver:", "approver:prod eu", "approver:../x", ""])
def test_a_binding_with_an_unknown_role_or_a_strange_environment_is_refused(text):
    if text == "approver:":  # no environment: every environment
        assert Binding.parse(text) == Binding("approver", "*")
        return
    with pytest.raises(BindingError):
        Binding.parse(text)


def test_an_api_token_is_shown_once_and_checked_against_the_hash_of_its_secret():
    token, token_id, digest = tokens.new_token()
    assert token.startswith(f"pmt_{token_id}_") and digest not in token
    found_id, secret = tokens.split(token)
    assert found_id == token_id and tokens.matches(secret, digest)
    assert not tokens.matches(secret + "x", digest)


@pytest.mark.parametrize("token", ["pmt_", "pmt_short_x", "pmt_0123456789ab_", "bearer", "pmt_0123456789ab_" + "x" * 101])
def test_a_malformed_api_token_is_not_split(token):
    assert tokens.split(token) is None
