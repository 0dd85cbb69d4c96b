"""The CLI's side of the operator API: where it is, which token to send, and errors as one line.

Light on purpose (the standard library only: httpx alone costs ~0.25 s to import): a read command's
start-up is most of its time.
The token comes from `--token`, else PROMOTE_TOKEN, else the token file `promote login` wrote
(PROMOTE_TOKEN_FILE, default ~/.config/promote/token).
"""

import json as jsonlib
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlencode

from cli.errors import CliError

DEFAULT_URL = "http://127.0.0.1:18070"


def api_url() -> str:
    """PROMOTE_API_URL, or the local stack's API."""
    return os.environ.get("PROMOTE_API_URL", DEFAULT_URL).rstrip("/")


def token_file() -> Path:
    """Where `promote login` keeps the token."""
    configured = os.environ.get("PROMOTE_TOKEN_FILE")
    return Path(configured) if configured else Path.home() / ".config" / "promote" / "token"


def token() -> str | None:
    """The caller's token, if it has one (the API refuses requests without)."""
    if value := os.environ.get("PROMOTE_TOKEN", "").strip():
        return value
    try:
        return token_file().read_text().strip() or None
    except OSError:
        return None


def save_token(value: str) -> Path:
    """Write the token file (0600, its directory 0700)."""
    path = token_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value.strip() + "\n")
    return path


def call(method: str, path: str, *, json: dict | None = None, params: dict | None = None,
         timeout: float = 30.0, bearer: str | None = None, again_for: float = 0.0) -> dict:
    """One request to the API; its JSON answer, or CliError with the API's reason in one line. A 409 ("not
    yet") is asked again, every 2 s, for up to `again_for` seconds, saying so on stderr."""
    deadline = time.monotonic() + again_for
    while True:
        try:
            return _call(method, path, json=json, params=params, timeout=timeout, bearer=bearer)
        except _NotYet as not_yet:
            if time.monotonic() + 2.0 > deadline:
                raise CliError(str(not_yet)) from None
            print(f"waiting: {not_yet}", file=sys.stderr)
            time.sleep(2.0)


class _NotYet(Exception):
    """The API answered 409: asked again by `call` while it may."""


def _call(method: str, path: str, *, json: dict | None, params: dict | None, timeout: float,
          bearer: str | None) -> dict:
    headers = {"Accept": "application/json"}
    if chosen := bearer or token():
        headers["Authorization"] = f"Bearer {chosen}"
    body = None
    if json is not None:
        body, headers["Content-Type"] = jsonlib.dumps(json).encode(), "application/json"
    query = f"?{urlencode({k: v for k, v in params.items() if v is not None})}" if params else ""
    request = urllib.request.Request(f"{api_url()}{quote(path)}{query}", data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return jsonlib.loads(response.read())
    except urllib.error.HTTPError as error:
        if error.code == 409:
            raise _NotYet(_reason(error.code, error.read())) from None
        raise CliError(_reason(error.code, error.read())) from None
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        raise CliError(f"cannot reach the promote API at {api_url()} (is the stack up? ./dev-stack up)") from None


def _reason(status: int, raw: bytes) -> str:
    """The API's refusal as one line, saying whether it is about who you are or what you may do."""
    try:
        detail = jsonlib.loads(raw).get("detail")
    except (ValueError, AttributeError):
        detail = None
    text = " ".join(str(detail if isinstance(detail, str) else raw[:300].decode(errors="replace")).split())
    if status == 401:
        return f"not authenticated: {text}"
    if status == 403:
        return f"refused: {text}"
    return text or f"HTTP {status}"
