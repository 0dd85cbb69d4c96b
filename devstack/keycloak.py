"""Keycloak on 127.0.0.1:18800: the real OIDC provider the operator API's OIDC path is tested against.

The distribution comes from Maven Central (org.keycloak:keycloak-quarkus-dist, a zip) into
.cache/keycloak/<version>; `kc.sh start-dev` runs it with Java >= 21 (not the default java 17),
bound to loopback only, its database, temp files and transaction logs under var/keycloak. The
realm `promote` (clients, mappers, groups, users) is made through the admin REST API, logged in
as the bootstrap admin. Not part of `./dev-stack up` (it takes ~25 s): `python -m devstack keycloak`
and tests/e2e/test_oidc.py start it; `./dev-stack down` stops it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from devstack import access
from shared.platform.settings import Settings
from devstack import processes as p

VERSION = "26.4.0"
ARTIFACT = f"org.keycloak:keycloak-quarkus-dist:{VERSION}:zip"
PORT = 18800  # outside the ports apps are given (20000-31999: Settings.app_port_base, APP_PORTS)
BASE_URL = f"http://127.0.0.1:{PORT}"
COMPONENT = "keycloak"
READY_TIMEOUT = 120.0
ADMIN = "admin"  # the bootstrap admin of the master realm; its password in var/credentials/keycloak/admin
REALM = "promote"
CLIENT = "promote-cli"
CONSOLE_CLIENT = "promote-console"  # the web console's sign-in (code flow with PKCE from the browser)
AUDIENCE = "promote"
REDIRECT_URIS = ["http://127.0.0.1/*"]  # a loopback redirect matches any port (RFC 8252 7.3; Keycloak does)
MEMBERSHIPS: dict[str, str | None] = {"alice": "developers", "bob": "release-managers", "carol": None}
GROUPS = ("release-managers", "developers")
# Default features this stack never uses: less to start and less to attack.
FEATURES_DISABLED = ("authorization", "admin-fine-grained-authz", "ciba", "client-policies", "device-flow",
                     "impersonation", "kerberos", "organization", "par", "passkeys", "recovery-codes",
                     "step-up-authentication", "token-exchange-standard", "web-authn")


def home(version: str = VERSION) -> Path:
    """.cache/keycloak/<version>: the unpacked distribution (bin/kc.sh, lib/, conf/)."""
    return p.REPO_ROOT / ".cache" / "keycloak" / version


def _zip_path(version: str) -> Path:
    return (p.REPO_ROOT / ".cache" / "m2" / "org" / "keycloak" / "keycloak-quarkus-dist" / version
            / f"keycloak-quarkus-dist-{version}.zip")


def fetch(version: str = VERSION) -> Path:
    """Download the distribution with Maven (checksums enforced) and unpack it, unless already there."""
    root = home(version)
    if (root / "bin" / "kc.sh").exists():
        return root
    t0 = time.monotonic()
    archive = _zip_path(version)
    if not archive.exists():
        if shutil.which("mvn") is None:
            raise p.StackError("keycloak: mvn not found (apt-get install -y maven)")
        p.say(f"keycloak: fetching {ARTIFACT} (~160 MB)…")
        cmd = ["mvn", "-q", "-B", "-C", f"-Dmaven.repo.local={p.REPO_ROOT / '.cache' / 'm2'}",
               "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:get",
               f"-Dartifact=org.keycloak:keycloak-quarkus-dist:{version}:zip", "-Dtransitive=false"]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=p.REPO_ROOT / ".cache")
        if res.returncode != 0 or not archive.exists():
            out = "\n".join((res.stdout + res.stderr).splitlines()[-20:])
            raise p.StackError(f"keycloak: mvn could not fetch {ARTIFACT}\n{out}")
    _unpack(archive, root)
    p.say(f"keycloak: {version} in {root} ({time.monotonic() - t0:.1f} s)")
    return root


def _unpack(archive: Path, root: Path) -> None:
    """Unzip keycloak-<v>/ into root, keeping the files' modes (kc.sh is executable); atomic by rename."""
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            target = Path(zf.extract(info, partial))
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                os.chmod(target, mode)
    (inner,) = partial.iterdir()
    inner.rename(root)
    partial.rmdir()


def java_home() -> Path:
    """A JDK of version 21 or later: $JAVA_HOME if it is one, else the newest under /usr/lib/jvm."""
    def major(jdk: Path) -> int:
        try:
            found = re.search(r'^JAVA_VERSION="(\d+)', (jdk / "release").read_text(), re.M)
        except OSError:
            return 0
        return int(found.group(1)) if found and (jdk / "bin" / "java").exists() else 0

    candidates = [Path(os.environ["JAVA_HOME"])] if os.environ.get("JAVA_HOME") else []
    candidates += sorted(Path("/usr/lib/jvm").glob("*"), key=major, reverse=True)
    for jdk in candidates:
        if major(jdk) >= 21:
            return jdk
    raise p.StackError("keycloak: needs Java 21 or later and found none in $JAVA_HOME or /usr/lib/jvm "
                       "(apt-get install -y openjdk-21-jdk-headless, or a Temurin 21+ JDK)")


def keycloak_dir() -> Path:
    """var/keycloak: the H2 database, temp files and transaction logs."""
    return p.var_dir() / "keycloak"


def issuer() -> str:
    """The realm's issuer, as tokens carry it in `iss`."""
    return f"{BASE_URL}/realms/{REALM}"


def running_pid() -> int | None:
    """Pid of the Keycloak we started (kc.sh, then the JVM it execs), if alive."""
    return p.read_pid(COMPONENT, f"{home()}/bin")


def _argv(root: Path) -> list[str]:
    data = keycloak_dir()
    return [str(root / "bin" / "kc.sh"), "start-dev", "--http-host=127.0.0.1", f"--http-port={PORT}",
            f"--hostname={BASE_URL}",  # pins `iss`, whatever Host header a client sends
            f"--db-url=jdbc:h2:file:{data / 'h2' / 'keycloakdb'};NON_KEYWORDS=VALUE",
            f"--features-disabled={','.join(FEATURES_DISABLED)}"]


def _env(jdk: Path) -> dict[str, str]:
    data = keycloak_dir()
    return {**os.environ, "JAVA_HOME": str(jdk), "PATH": f"{jdk / 'bin'}:{os.environ.get('PATH', '')}",
            # read only when the master realm is created, i.e. on the first start with an empty var/keycloak
            "KC_BOOTSTRAP_ADMIN_USERNAME": ADMIN, "KC_BOOTSTRAP_ADMIN_PASSWORD": access.ensure_secret(COMPONENT, ADMIN),
            "JAVA_OPTS_APPEND": f"-Djava.io.tmpdir={data / 'tmp'} "
                                f"-Dquarkus.transaction-manager.object-store.directory={data / 'transaction-logs'}"}


def start() -> int | None:
    """Fetch and launch Keycloak without waiting; None if it already runs."""
    pid = running_pid()
    if pid is not None or p.port_open(PORT):
        p.say(f"keycloak: already running (pid {pid or 'external'})")
        return None
    p.pid_path(COMPONENT).unlink(missing_ok=True)
    root, jdk = fetch(), java_home()
    for sub in ("h2", "tmp", "transaction-logs"):
        (keycloak_dir() / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(keycloak_dir(), 0o700)  # its database holds password hashes and signing keys
    return p.spawn(COMPONENT, _argv(root), env=_env(jdk))


def wait_ready(pid: int, t0: float, timeout: float = READY_TIMEOUT) -> None:
    """Block until the master realm's discovery document answers; raise with the log tail otherwise."""
    url = f"{BASE_URL}/realms/master/.well-known/openid-configuration"

    def ready() -> bool:
        try:
            return httpx.get(url, timeout=2.0).status_code == 200
        except httpx.TransportError:
            return False

    p.wait_until_ready(COMPONENT, pid, ready, t0, timeout, BASE_URL, interval=0.5)
    p.say(f"keycloak: started pid {pid} ({time.monotonic() - t0:.1f} s)")


def stop(timeout: float = 30.0) -> None:
    """Stop the Keycloak we started (its whole process group: kc.sh may still be waiting on a build JVM)."""
    pid = running_pid()
    if pid is not None:
        t0 = time.monotonic()
        p.stop_pid(pid, signal.SIGTERM, timeout, group=True)
        p.say(f"keycloak: stopped pid {pid} ({time.monotonic() - t0:.1f} s)")
    p.pid_path(COMPONENT).unlink(missing_ok=True)


def up() -> str:
    """Fetch, start, wait for and configure Keycloak; returns the realm's issuer."""
    t0 = time.monotonic()
    pid = start()
    if pid is not None:
        wait_ready(pid, t0)
    return ensure_realm()


def _token(realm: str, client_id: str, username: str, password: str) -> str:
    """An access token by password grant (Resource Owner Password Credentials)."""
    res = httpx.post(f"{BASE_URL}/realms/{realm}/protocol/openid-connect/token", timeout=10.0,
                     data={"grant_type": "password", "client_id": client_id, "username": username,
                           "password": password, "scope": "openid"})
    if res.status_code != 200:
        raise p.StackError(f"keycloak: password grant for {username!r} at realm {realm!r} refused: "
                           f"{res.json().get('error_description', res.text)}")
    return res.json()["access_token"]


def password_token(user: str, client_id: str = CLIENT) -> str:
    """A fresh access token of a realm user (password from var/credentials/keycloak/<user>), for tests."""
    return _token(REALM, client_id, user, access.ensure_secret(COMPONENT, user))


@contextmanager
def admin() -> Iterator[httpx.Client]:
    """An httpx client on the admin REST API (base /admin/realms), logged in as the bootstrap admin."""
    try:
        token = _token("master", "admin-cli", ADMIN, access.ensure_secret(COMPONENT, ADMIN))
    except p.StackError as error:
        raise p.StackError(f"{error} (if var/credentials/keycloak/admin was made after var/keycloak: stop "
                           f"keycloak, remove {keycloak_dir()} and start it again)") from None
    with httpx.Client(base_url=f"{BASE_URL}/admin/realms", timeout=10.0,
                      headers={"Authorization": f"Bearer {token}"}) as http:
        yield http


def _ok(res: httpx.Response) -> httpx.Response:
    if res.is_error:
        raise p.StackError(f"keycloak: {res.request.method} {res.request.url.path} answered "
                           f"{res.status_code}: {res.text[:300]}")
    return res


def _created_id(res: httpx.Response) -> str:
    return _ok(res).headers["Location"].rstrip("/").rsplit("/", 1)[1]


def ensure_realm() -> str:
    """Make (idempotently) the realm `promote`: clients promote-cli and promote-console (the console served by the
    stack's API), groups, users alice, bob, carol."""
    with admin() as http:
        if http.get(f"/{REALM}").status_code == 404:
            _ok(http.post("", json={"realm": REALM, "enabled": True}))
        ensure_client(http, CLIENT, AUDIENCE)
        ensure_client(http, CONSOLE_CLIENT, AUDIENCE, web_origins=[_origin(Settings().api_url)])
        groups = {name: _ensure_group(http, name) for name in GROUPS}
        for user, group in MEMBERSHIPS.items():
            _ensure_user(http, user, groups[group] if group else None)
    return issuer()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _mappers(audience: str) -> list[dict]:
    """`aud` gets `audience`; `groups` lists group names (not paths) in the access token."""
    return [
        {"name": f"audience-{audience}", "protocol": "openid-connect", "protocolMapper": "oidc-audience-mapper",
         "config": {"included.custom.audience": audience, "access.token.claim": "true",
                    "introspection.token.claim": "true", "id.token.claim": "false"}},
        {"name": "groups", "protocol": "openid-connect", "protocolMapper": "oidc-group-membership-mapper",
         "config": {"claim.name": "groups", "full.path": "false", "access.token.claim": "true",
                    "id.token.claim": "true", "userinfo.token.claim": "true", "introspection.token.claim": "true"}},
    ]


def ensure_client(http: httpx.Client, client_id: str, audience: str, web_origins: list[str] | None = None) -> str:
    """A public client with password grant and code flow (PKCE S256 required) whose tokens carry `aud: audience`;
    `web_origins`: the origins whose pages may call the token endpoint (CORS), for a sign-in from a browser."""
    rep = {"clientId": client_id, "protocol": "openid-connect", "publicClient": True, "enabled": True,
           "directAccessGrantsEnabled": web_origins is None, "standardFlowEnabled": True, "implicitFlowEnabled": False,
           "serviceAccountsEnabled": False, "redirectUris": REDIRECT_URIS, "webOrigins": web_origins or [],
           "attributes": {"pkce.code.challenge.method": "S256"}}
    found = _ok(http.get(f"/{REALM}/clients", params={"clientId": client_id})).json()
    if found:
        uuid = found[0]["id"]
        _ok(http.put(f"/{REALM}/clients/{uuid}", json={**found[0], **rep,
                                                        "attributes": {**found[0]["attributes"], **rep["attributes"]}}))
    else:
        uuid = _created_id(http.post(f"/{REALM}/clients", json=rep))
    have = {m["name"] for m in _ok(http.get(f"/{REALM}/clients/{uuid}/protocol-mappers/models")).json()}
    for mapper in _mappers(audience):
        if mapper["name"] not in have:
            _ok(http.post(f"/{REALM}/clients/{uuid}/protocol-mappers/models", json=mapper))
    return uuid


def _ensure_group(http: httpx.Client, name: str) -> str:
    found = _ok(http.get(f"/{REALM}/groups", params={"search": name, "exact": "true"})).json()
    match = [g["id"] for g in found if g["name"] == name]
    return match[0] if match else _created_id(http.post(f"/{REALM}/groups", json={"name": name}))


def _ensure_user(http: httpx.Client, user: str, group_id: str | None) -> None:
    """The user, with the password of var/credentials/keycloak/<user> and exactly the one group (or none)."""
    found = _ok(http.get(f"/{REALM}/users", params={"username": user, "exact": "true"})).json()
    profile = {"username": user, "enabled": True, "email": f"{user}@example.org", "emailVerified": True,
               "firstName": user.title(), "lastName": "Promote", "requiredActions": []}
    uid = found[0]["id"] if found else _created_id(http.post(f"/{REALM}/users", json=profile))
    _ok(http.put(f"/{REALM}/users/{uid}/reset-password",
                 json={"type": "password", "value": access.ensure_secret(COMPONENT, user), "temporary": False}))
    member_of = {g["id"] for g in _ok(http.get(f"/{REALM}/users/{uid}/groups")).json()}
    for extra in member_of - {group_id}:
        _ok(http.delete(f"/{REALM}/users/{uid}/groups/{extra}"))
    if group_id and group_id not in member_of:
        _ok(http.put(f"/{REALM}/users/{uid}/groups/{group_id}"))
