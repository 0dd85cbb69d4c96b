"""The example `payments` service: a tiny HTTP app whose config comes from the environment.

Code is the same in every environment; configuration is not (seed §11, §12):
APP_ENV, BUILD_VERSION and FEATURE_NEW_UI come from the environment, PORT is where to listen.
The version that answers /version is the one baked in at build time (_build.py), so that a
deployment cannot claim a version the bytes do not carry.

A build made with --faulty answers 500 to every second request to its business endpoints
(/ and /pay) while /health and /version stay healthy: it passes verification and fails
under real traffic, which only a canary's analysis catches.
"""

import itertools
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

import _build

env = os.getenv("APP_ENV", "dev")
feature_new_ui = os.getenv("FEATURE_NEW_UI", "false") == "true"
BUILD_VERSION = os.getenv("BUILD_VERSION", "unknown")
_served = itertools.count(1)
_served_lock = threading.Lock()
metrics = CollectorRegistry()
REQUESTS = Counter("app_requests", "Business requests answered (/ and /pay), by status code", ["code"],
                   registry=metrics)
LATENCY = Histogram("app_request_duration_seconds", "Time to answer a business request", registry=metrics,
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))


def version() -> dict:
    """What /version answers."""
    return {"version": _build.VERSION, "build_version": BUILD_VERSION, "env": env, "feature_new_ui": feature_new_ui}


def fails_now() -> bool:
    """True for every second business request of a faulty build (deterministic, across threads)."""
    with _served_lock:
        return _build.FAULTY and next(_served) % 2 == 0


class Handler(BaseHTTPRequestHandler):
    """GET /health, /version, / (a page that shows the feature flag), /pay and /metrics (Prometheus: request
    counts by status code and latencies of / and /pay)."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path in ("/", "/pay"):
            with LATENCY.time():
                status = self._business()
            REQUESTS.labels(code=str(status)).inc()
        elif self.path == "/metrics":
            payload = generate_latest(metrics)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        elif self.path == "/health":
            healthy = not _build.BROKEN
            self._reply(200 if healthy else 500, {"status": "ok" if healthy else "broken build"})
        elif self.path == "/version":
            self._reply(200, version())
        else:
            self._reply(404, {"error": "not found"})

    def _business(self) -> int:
        """Answer / or /pay; the status sent."""
        if fails_now():
            return self._reply(500, {"error": "faulty build"})
        if self.path == "/":
            ui = "new" if feature_new_ui else "classic"
            return self._reply(200, {"service": "payments", "version": _build.VERSION, "env": env, "ui": ui})
        return self._reply(200, {"paid": True, "version": _build.VERSION, "env": env})

    def _reply(self, status: int, body: dict) -> int:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        return status

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass


class Server(ThreadingHTTPServer):
    """A threading HTTP server whose listen backlog takes the router's bursts of new connections."""

    request_queue_size = 128  # the default 5 drops connections at 16 concurrent requests: 1 s stalls, 504s


def main() -> None:
    """Serve on 127.0.0.1:$PORT until terminated."""
    server = Server(("127.0.0.1", int(os.environ.get("PORT", "8080"))), Handler)
    print(json.dumps({"msg": "payments listening", **version(), "port": server.server_port}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
