"""The example `payments` service: a tiny HTTP app whose config comes from the environment.

Code is the same in every environment; configuration is not (seed §11, §12):
APP_ENV, BUILD_VERSION and FEATURE_NEW_UI come from the environment, PORT is where to listen.
The version that answers /version is the one baked in at build time (_build.py), so that a
deployment cannot claim a version the bytes do not carry.
"""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import _build

env = os.getenv("APP_ENV", "dev")
feature_new_ui = os.getenv("FEATURE_NEW_UI", "false") == "true"
BUILD_VERSION = os.getenv("BUILD_VERSION", "unknown")


def version() -> dict:
    """What /version answers."""
    return {"version": _build.VERSION, "build_version": BUILD_VERSION, "env": env, "feature_new_ui": feature_new_ui}


class Handler(BaseHTTPRequestHandler):
    """GET /health, /version and / (a page that shows the feature flag)."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/health":
            healthy = not _build.BROKEN
            self._reply(200 if healthy else 500, {"status": "ok" if healthy else "broken build"})
        elif self.path == "/version":
            self._reply(200, version())
        elif self.path == "/":
            ui = "new" if feature_new_ui else "classic"
            self._reply(200, {"service": "payments", "ui": ui, "env": env})
        else:
            self._reply(404, {"error": "not found"})

    def _reply(self, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass


def main() -> None:
    """Serve on 127.0.0.1:$PORT until terminated."""
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8080"))), Handler)
    print(json.dumps({"msg": "payments listening", **version(), "port": server.server_port}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
