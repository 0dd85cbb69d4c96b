"""The operator API's OIDC path against a real provider: Keycloak on loopback issues the tokens, and a second API
instance configured for that issuer verifies them (the issuer's JWKS, issuer, audience, expiry, algorithm list);
the console served by that API signs a person in through Keycloak's code flow with PKCE, in a real browser."""

import base64
import hashlib
import hmac
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from playwright.async_api import expect

from devstack import access, keycloak, services
from devstack import processes as p
from tests.e2e.browser import chromium

pytestmark = pytest.mark.e2e

API_URL = "http://127.0.0.1:18071"
GROUP_ROLES = {"release-managers": ["approver:*"], "developers": ["viewer:*"]}
OTHER_CLIENT = "promote-other"  # a public client of the same realm whose tokens are meant for another API
READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class RealmKey:
    """An RSA key of ours that the realm publishes in its JWKS as a passive key (Keycloak never signs with it)."""

    private: rsa.RSAPrivateKey
    kid: str


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    """Keycloak with the realm `promote` and a client for another audience; stopped again if started here."""
    t0 = time.monotonic()
    pid = keycloak.start()
    if pid is not None:
        keycloak.wait_ready(pid, t0)
    url = keycloak.ensure_realm()
    with keycloak.admin() as http:
        keycloak.ensure_client(http, OTHER_CLIENT, "another-api")
    yield url
    if pid is not None:
        keycloak.stop()


@pytest.fixture(scope="module")
def realm_key(issuer: str) -> Iterator[RealmKey]:
    """Our key, imported into the realm for the length of this module.

    Why: an expired token the issuer vouches for cannot be had otherwise without waiting. Keycloak mints only
    fresh tokens, and the API allows 30 s of clock leeway, so a real token would take its lifespan plus 30 s
    to be refused. A passive key is in the JWKS the API fetches (so it verifies as the issuer's) but signs
    nothing Keycloak issues.
    """
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    with keycloak.admin() as http:
        realm_id = http.get(f"/{keycloak.REALM}").raise_for_status().json()["id"]
        created = http.post(f"/{keycloak.REALM}/components", json={
            "name": "e2e-passive-key", "providerId": "rsa", "providerType": "org.keycloak.keys.KeyProvider",
            "parentId": realm_id, "config": {"privateKey": [pem], "active": ["false"], "enabled": ["true"],
                                             "priority": ["-100"], "algorithm": ["RS256"]}}).raise_for_status()
    component = created.headers["Location"].rsplit("/", 1)[1]
    kid = next(k["kid"] for k in _jwks(issuer) if k.get("n") == _b64int(private.public_key().public_numbers().n))
    yield RealmKey(private, kid)
    with keycloak.admin() as http:
        http.delete(f"/{keycloak.REALM}/components/{component}").raise_for_status()


@pytest.fixture(scope="module")
def api(stack, issuer: str, realm_key: RealmKey) -> Iterator[httpx.Client]:
    """A second operator API (python -m services.api) on :18071 that accepts tokens of the Keycloak realm."""
    assert not p.port_open(18071), "something already listens on 127.0.0.1:18071"
    env = services.service_env(services.API)
    env.pop("PROMOTE_API_BOOTSTRAP_TOKEN_FILE", None)  # this instance mints no admin token
    env.update({"PROMOTE_API_URL": API_URL, "PROMOTE_OIDC_ISSUER": issuer, "PROMOTE_OIDC_AUDIENCE": keycloak.AUDIENCE,
                "PROMOTE_API_GROUP_ROLES": json.dumps(GROUP_ROLES)})
    with open(p.log_path("api-oidc"), "ab") as log:
        proc = subprocess.Popen([services.python(), "-m", "services.api"], cwd=p.REPO_ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=API_URL, timeout=10.0) as client:
            _wait_healthy(client, proc)
            yield client
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_healthy(client: httpx.Client, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the OIDC API exited ({proc.returncode}); log:\n{p.log_tail('api-oidc')}"
        try:
            if client.get("/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the OIDC API did not answer /health in {READY_TIMEOUT:.0f} s; log:\n{p.log_tail('api-oidc')}")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64int(n: int) -> str:
    return _b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def _jwks(issuer: str) -> list[dict]:
    document = httpx.get(f"{issuer}/.well-known/openid-configuration").raise_for_status().json()
    return httpx.get(document["jwks_uri"]).raise_for_status().json()["keys"]


def _claims(issuer: str, exp_in: int = 300) -> dict:
    """What Keycloak puts in bob's access token, expiring `exp_in` seconds from now."""
    now = int(time.time())
    return {"iss": issuer, "aud": keycloak.AUDIENCE, "sub": "e2e-bob", "preferred_username": "bob",
            "groups": ["release-managers"], "iat": min(now, now + exp_in - 300), "exp": now + exp_in}


def whoami(api: httpx.Client, token: str | None) -> httpx.Response:
    """GET /v1/whoami with `Authorization: Bearer <token>` (no header when token is None)."""
    return api.get("/v1/whoami", headers={} if token is None else {"Authorization": f"Bearer {token}"})


def assert_refused(res: httpx.Response, reason: str) -> None:
    """A 401 whose one-line reason starts with `reason`."""
    assert res.status_code == 401, res.text
    assert res.json()["detail"].startswith(reason), res.json()


@pytest.mark.parametrize(("user", "groups", "roles"), [
    ("bob", ["release-managers"], ["approver:*"]),
    ("alice", ["developers"], ["viewer:*"]),
    ("carol", [], []),
])
def test_a_keycloak_token_names_the_person_and_the_roles_their_groups_map_to(api, user, groups, roles):
    res = whoami(api, keycloak.password_token(user))
    assert res.status_code == 200, res.text
    assert res.json() == {"subject": user, "roles": roles, "groups": groups, "method": "oidc"}


def test_a_token_the_issuer_made_for_another_audience_is_refused(api):
    token = keycloak.password_token("bob", OTHER_CLIENT)
    assert keycloak.AUDIENCE not in jwt.decode(token, options={"verify_signature": False})["aud"]
    assert_refused(whoami(api, token), "the token is not meant for this API (audience must be 'promote')")


def test_an_expired_token_signed_by_a_key_of_the_issuer_is_refused(api, issuer, realm_key):
    def signed(exp_in: int) -> str:
        return jwt.encode(_claims(issuer, exp_in), realm_key.private, algorithm="RS256", headers={"kid": realm_key.kid})

    assert whoami(api, signed(300)).json()["subject"] == "bob"  # the key is trusted: only the expiry differs
    assert_refused(whoami(api, signed(-120)), "the token has expired")  # past the API's 30 s leeway


@pytest.mark.parametrize(("kid", "reason"), [
    ("not-a-key-of-the-issuer", "the token's signing key is not the issuer's"),
    (None, "the token's signing key is not the issuer's"),
    ("the issuer's own kid", "the token is invalid: Signature verification failed"),
])
def test_a_token_signed_by_a_key_the_issuer_does_not_hold_is_refused(api, issuer, kid, reason):
    if kid == "the issuer's own kid":
        kid = jwt.get_unverified_header(keycloak.password_token("bob"))["kid"]
    ours = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(_claims(issuer), ours, algorithm="RS256", headers={"kid": kid} if kid else None)
    assert_refused(whoami(api, token), reason)


@pytest.mark.parametrize("alg", ["none", "HS256"])
def test_unsigned_and_hmac_tokens_are_refused_naming_their_algorithm(api, issuer, alg):
    real = keycloak.password_token("bob")
    header = {"alg": alg, "typ": "JWT", "kid": jwt.get_unverified_header(real)["kid"]}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims(issuer)).encode())}"
    signature = ""
    if alg == "HS256":  # the classic confusion: an HMAC keyed with the issuer's public key (by hand: PyJWT refuses)
        public = jwt.PyJWK(next(k for k in _jwks(issuer) if k["kid"] == header["kid"])).key
        secret = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        signature = _b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())
    assert_refused(whoami(api, f"{signing_input}.{signature}"), f"token algorithm {alg!r} is not allowed")


@pytest.mark.parametrize(("token", "reason"), [
    (None, "no bearer token: log in (promote login) or set PROMOTE_TOKEN"),
    ("not-a-jwt", "the bearer token is neither an API token nor a JWT"),
])
def test_a_request_without_a_token_or_with_garbage_is_refused(api, token, reason):
    assert_refused(whoami(api, token), reason)


async def test_the_console_signs_a_person_in_through_keycloak_with_the_code_flow_and_pkce(api, issuer, tmp_path):
    with keycloak.admin() as http:  # the console's client, whose pages on this API's origin may call Keycloak
        keycloak.ensure_client(http, keycloak.CONSOLE_CLIENT, keycloak.AUDIENCE, web_origins=[API_URL])
    async with chromium(tmp_path / "profile") as browser:
        page = await browser.new_page()
        await page.goto(f"{API_URL}/console/")
        await page.get_by_role("button", name=f"Sign in with {urlsplit(keycloak.BASE_URL).netloc}").click()
        await page.wait_for_url(f"{keycloak.BASE_URL}/**")
        asked = parse_qs(urlsplit(page.url).query)
        assert (asked["client_id"], asked["code_challenge_method"], asked["response_type"]) == \
            ([keycloak.CONSOLE_CLIENT], ["S256"], ["code"])
        assert len(asked["code_challenge"][0]) == 43  # base64url of a SHA-256, no padding
        await page.locator("#username").fill("bob")
        await page.locator("#password").fill(access.ensure_secret(keycloak.COMPONENT, "bob"))
        await page.locator("#kc-login").click()
        await page.wait_for_url(f"{API_URL}/console/**")
        await expect(page.locator(".me")).to_contain_text("bob (approver:*, oidc)")
        await expect(page.locator("[data-live]")).to_have_attribute("data-live", "live")
        assert "code=" not in page.url  # the code is used once and taken out of the address
        await page.get_by_role("button", name="Sign out").click()
        await expect(page.get_by_label("API token")).to_be_visible()
