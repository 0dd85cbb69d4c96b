"""The web console (docs/console.md), served by the API itself: its page, its modules from console/src and the
two npm packages it is built on from console/node_modules, so that a browser loads nothing from anywhere else.

The page's Content-Security-Policy lets it run only scripts from here (and its one inline import map, by hash),
connect only here and to the OIDC issuer, and be framed by nobody. Sign-in needs no server session: the page
holds the bearer token (an API token pasted in, or an OIDC access token from the code flow with PKCE) in the
tab's sessionStorage and sends it with each call, as the CLI does.
"""

import base64
import hashlib
import re
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse

from services.api.auth import AuthError
from shared.platform.settings import Settings

VENDOR = {
    "preact.js": "preact/dist/preact.mjs",
    "hooks.js": "preact/hooks/dist/hooks.mjs",
    "htm.js": "htm/dist/htm.mjs",
}
"""The npm files the page imports (its import map names them), by the name it asks for."""
SOURCE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,40}\.(js|css|svg|png)$")
MEDIA = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml", "png": "image/png"}
IMPORT_MAP = re.compile(r'<script type="importmap">(.*?)</script>', re.S)
MISSING = "the console's npm packages are not installed (./dev-stack up runs npm ci in console/)"


def _headers(settings: Settings, inline_script: str | None = None) -> dict[str, str]:
    issuer = ""
    if settings.oidc_issuer:
        parts = urlsplit(settings.oidc_issuer)
        issuer = f" {parts.scheme}://{parts.netloc}"
    scripts = "'self'"
    if inline_script is not None:
        digest = base64.b64encode(hashlib.sha256(inline_script.encode()).digest()).decode()
        scripts += f" 'sha256-{digest}'"
    policy = (f"default-src 'none'; script-src {scripts}; style-src 'self'; img-src 'self' data:; "
              f"connect-src 'self'{issuer}; form-action 'self'{issuer}; frame-ancestors 'none'; base-uri 'none'")
    return {"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}


def routes(app: FastAPI) -> None:
    """/console/ (the page), /console/config.json, /console/app/<module>, /console/vendor/<package file>."""

    def settings_of(request: Request) -> Settings:
        return request.app.state.ctx.settings

    @app.get("/console", include_in_schema=False)
    async def console_root() -> RedirectResponse:
        return RedirectResponse("/console/", 308)

    @app.get("/console/", include_in_schema=False)
    async def console_page(request: Request) -> HTMLResponse:
        settings = settings_of(request)
        page = (settings.console_dir / "src" / "index.html").read_text()
        found = IMPORT_MAP.search(page)
        return HTMLResponse(page, headers=_headers(settings, found.group(1) if found else None))

    @app.get("/console/config.json", include_in_schema=False)
    async def console_config(request: Request) -> JSONResponse:
        """What the page needs before anyone signs in: whether (and where) OIDC sign-in is offered."""
        settings = settings_of(request)
        verifier = request.app.state.ctx.authenticator.oidc
        oidc = None
        if verifier is not None:
            try:
                document = await verifier.discovery()
            except AuthError as error:
                return JSONResponse({"oidc": None, "oidc_unavailable": str(error)}, headers=_headers(settings))
            oidc = {"issuer": settings.oidc_issuer, "client_id": settings.console_oidc_client,
                    "authorization_endpoint": document.get("authorization_endpoint"),
                    "token_endpoint": document.get("token_endpoint")}
        return JSONResponse({"oidc": oidc}, headers=_headers(settings))

    @app.get("/console/app/{name}", include_in_schema=False)
    async def console_module(request: Request, name: str) -> FileResponse:
        settings = settings_of(request)
        path = settings.console_dir / "src" / name
        if not SOURCE_NAME.match(name) or not path.is_file():
            raise HTTPException(404, f"no console file {name[:60]!r}")
        return FileResponse(path, media_type=MEDIA[name.rsplit(".", 1)[1]], headers=_headers(settings))

    @app.get("/console/vendor/{name}", include_in_schema=False)
    async def console_vendor(request: Request, name: str) -> FileResponse:
        settings = settings_of(request)
        if name not in VENDOR:
            raise HTTPException(404, f"no console package file {name[:60]!r}")
        path: Path = settings.console_dir / "node_modules" / VENDOR[name]
        if not path.is_file():
            raise HTTPException(503, MISSING)
        return FileResponse(path, media_type="text/javascript", headers=_headers(settings))
