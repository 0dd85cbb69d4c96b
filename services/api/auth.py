"""Who is calling: an API token (looked up, hashed, revocable) or an OIDC bearer token (verified against the
issuer's JWKS: signature, issuer, audience, expiry, algorithm allow-list), mapped to an Identity.

An identity's subject is what the system records as who acted; it must be an identity in the sense of
shared.contracts.limits (lowercase ASCII), so nobody has two spellings. Roles come from the token's bindings or,
for OIDC, from the person's groups through Settings.api_group_roles.
"""

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import httpx
import jwt

from services.api import tokens
from services.api.roles import Binding, BindingError
from shared.contracts import limits
from shared.platform.settings import Settings


class AuthError(Exception):
    """The caller could not be authenticated; the message says why in one line (the HTTP answer is 401)."""


@dataclass(frozen=True)
class Identity:
    """A verified caller: who, in which groups, with which role bindings, and how it was proven."""

    subject: str
    bindings: frozenset[Binding]
    groups: tuple[str, ...] = ()
    method: str = "api-token"
    token_id: str | None = field(default=None, compare=False)


class OidcVerifier:
    """Verifies OIDC access tokens of one issuer with PyJWT (keys from the issuer's JWKS, cached)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._jwks: jwt.PyJWKClient | None = None
        self._discovery: dict | None = None

    async def discovery(self) -> dict:
        """The issuer's discovery document (fetched once): its JWKS, and the endpoints the console signs in with."""
        if self._discovery is None:
            url = f"{self.settings.oidc_issuer.rstrip('/')}/.well-known/openid-configuration"
            try:
                async with httpx.AsyncClient(timeout=5.0) as http:
                    document = (await http.get(url)).raise_for_status().json()
                if not isinstance(document, dict) or not isinstance(document.get("jwks_uri"), str):
                    raise ValueError("no jwks_uri")
            except (httpx.HTTPError, ValueError) as error:
                raise AuthError(f"the OIDC issuer's discovery document is unavailable ({type(error).__name__})") from None
            self._discovery = document
        return self._discovery

    async def _client(self) -> jwt.PyJWKClient:
        if self._jwks is None:
            document = await self.discovery()
            self._jwks = jwt.PyJWKClient(document["jwks_uri"], cache_keys=True, lifespan=300, timeout=5)
        return self._jwks

    async def claims(self, token: str) -> dict:
        """The token's claims once its signature, issuer, audience and expiry hold; AuthError otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("the bearer token is neither an API token nor a JWT") from None
        if header.get("alg") not in self.settings.oidc_algorithms:
            raise AuthError(f"token algorithm {header.get('alg')!r} is not allowed "
                            f"({', '.join(self.settings.oidc_algorithms)})")
        client = await self._client()
        try:
            key = await asyncio.to_thread(client.get_signing_key_from_jwt, token)
            return jwt.decode(token, key.key, algorithms=self.settings.oidc_algorithms,
                              audience=self.settings.oidc_audience, issuer=self.settings.oidc_issuer,
                              options={"require": ["exp", "iat", "iss", "aud", "sub"]}, leeway=30)
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise AuthError(f"the token is not meant for this API (audience must be {self.settings.oidc_audience!r})") from None
        except jwt.InvalidIssuerError:
            raise AuthError("the token was issued by another issuer") from None
        except jwt.PyJWKClientError as error:
            raise AuthError(f"the token's signing key is not the issuer's ({error})") from None
        except jwt.PyJWTError as error:
            raise AuthError(f"the token is invalid: {error}") from None


class Authenticator:
    """Turns an Authorization header into an Identity, or refuses with the reason."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings, self.pool = settings, pool
        self.oidc = OidcVerifier(settings) if settings.oidc_issuer else None

    async def identify(self, authorization: str | None) -> Identity:
        """The caller behind `Authorization: Bearer …`."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("no bearer token: log in (promote login) or set PROMOTE_TOKEN")
        token = token.strip()
        if token.startswith(tokens.PREFIX):
            return await self._api_token(token)
        if self.oidc is None:
            raise AuthError("not an API token, and this API accepts no OIDC tokens (no issuer configured)")
        return self._from_claims(await self.oidc.claims(token))

    async def _api_token(self, token: str) -> Identity:
        parts = tokens.split(token)
        found = await self._find(parts[0]) if parts else None
        if found is None or not tokens.matches(parts[1], found[1]):
            raise AuthError("unknown API token")
        record = found[0]
        if record.revoked_at is not None:
            raise AuthError(f"API token {record.id} was revoked")
        if record.expires_at is not None and record.expires_at <= datetime.now(UTC):
            raise AuthError(f"API token {record.id} has expired")
        return Identity(record.subject, frozenset(Binding.parse(b) for b in record.bindings), record.groups,
                        "api-token", record.id)

    async def _find(self, token_id: str):
        async with self.pool.acquire() as conn:
            return await tokens.find(conn, token_id)

    def _from_claims(self, claims: dict) -> Identity:
        subject = claims.get(self.settings.oidc_username_claim)
        try:
            limits.check_identity(subject if isinstance(subject, str) else "", self.settings.oidc_username_claim)
        except ValueError as error:
            raise AuthError(f"the token's {error}") from None
        raw = claims.get(self.settings.oidc_groups_claim) or []
        groups = tuple(sorted({g.lstrip("/") for g in raw if isinstance(g, str) and _is_identity(g.lstrip("/"))}))
        bindings = set()
        for group in groups:
            for text in self.settings.api_group_roles.get(group, []):
                try:
                    bindings.add(Binding.parse(text))
                except BindingError:
                    continue  # a misconfigured binding grants nothing
        return Identity(subject, frozenset(bindings), groups, "oidc")


def _is_identity(value: str) -> bool:
    try:
        limits.check_identity(value)
    except ValueError:
        return False
    return True
