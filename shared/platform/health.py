"""Each service's own HTTP endpoint on loopback: GET /health (JSON) and GET /metrics (Prometheus), and the
report /health gives (`service_report`).

Served by Starlette under uvicorn (both already the API's stack), in the service's event loop, not by
hand-parsed HTTP: a slow or malformed client is uvicorn's to handle.
"""

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Protocol

import asyncpg

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def health_app(report: Callable[[], Awaitable[dict]]) -> Starlette:
    """GET /health: `report()` as JSON, 200 when its status is ok, 503 otherwise; GET /metrics; 404 elsewhere."""

    async def health(request: Request) -> JSONResponse:
        body = await report()
        return JSONResponse(body, status_code=200 if body.get("status") == "ok" else 503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": "not found"}, status_code=404)

    return Starlette(routes=[Route("/health", health), Route("/metrics", metrics)],
                     exception_handlers={404: not_found})


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Leave SIGTERM and SIGINT to the service (FastStream stops it, and this server with it)."""
        yield


class HealthServer:
    """uvicorn serving `health_app` on 127.0.0.1:`port` as a task of the running loop."""

    def __init__(self, port: int, report: Callable[[], Awaitable[dict]]) -> None:
        config = uvicorn.Config(health_app(report), host="127.0.0.1", port=port, log_config=None, access_log=False,
                                lifespan="off", timeout_keep_alive=5)
        self._server = _Server(config)
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Listen, and return once uvicorn serves (OSError if the port is taken: bound here, so that uvicorn's
        own failure to bind, a SystemExit, never reaches the service's loop)."""
        listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listening.bind(("127.0.0.1", self._server.config.port))
            listening.listen(64)
        except OSError:
            listening.close()
            raise
        self._task = asyncio.create_task(self._server.serve(sockets=[listening]))
        while not self._server.started:
            if self._task.done():
                raise OSError(f"the health endpoint did not start on port {self._server.config.port}")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=5)


async def serve_health(port: int, report: Callable[[], Awaitable[dict]]) -> HealthServer:
    """Start answering GET /health and GET /metrics on loopback `port`."""
    server = HealthServer(port, report)
    await server.start()
    return server


class Runner(Protocol):
    """What the report reads of a record runner (shared/platform/consumer.py)."""
    last_error: str | None
    failing_since: float | None
    stuck_after_s: float
    processed: int
    dead_lettered: int

    def running_for(self, now: float) -> float: ...


class Relay(Protocol):
    """What the report reads of the outbox relay (shared/platform/outbox.py)."""
    last_error: str | None
    published: int


async def service_report(*, service: str, instance: int, started_at: float, runners: Sequence[Runner],
                         relay: Relay | None, background_errors: dict[str, str],
                         kafka_ping: Callable[[], Awaitable[bool]], pool: asyncpg.Pool | None) -> dict:
    """Liveness, the reachability of Kafka and PostgreSQL, and the figures an operator looks at first: degraded
    while a handler fails for more than 5 s or runs past its limit, the relay or a background task fails, or
    Kafka or the database does not answer within 1 s."""
    now = time.monotonic()
    failing = [r.last_error for r in runners if r.failing_since and now - r.failing_since > 5]
    stuck = [f"a handler has run for {took:.0f} s (limit {r.stuck_after_s:g} s)"
             for r in runners if (took := r.running_for(now)) > r.stuck_after_s]
    relay_error = relay.last_error if relay else "not started"
    background_error = next(iter(background_errors.values()), None)
    kafka, database = await asyncio.gather(_answers(kafka_ping), _database_answers(pool))
    healthy = not (stuck or failing or relay_error or background_error) and kafka and database
    return {
        "service": service,
        "instance": instance,
        "status": "ok" if healthy else "degraded",
        "kafka": "ok" if kafka else "unreachable",
        "database": "ok" if database else "unreachable",
        "uptime_s": round(now - started_at, 1),
        "processed": sum(r.processed for r in runners),
        "dead_lettered": sum(r.dead_lettered for r in runners),
        "published": relay.published if relay else 0,
        "consumer_error": failing[0] if failing else None,
        "relay_error": relay_error,
        "background_error": background_error,
        "stuck": stuck[0] if stuck else None,
    }


async def _answers(ping: Callable[[], Awaitable[bool]]) -> bool:
    try:
        return await ping()
    except Exception:  # any failure to answer is "unreachable"
        return False


async def _database_answers(pool: asyncpg.Pool | None) -> bool:
    if pool is None:
        return False
    try:
        async with asyncio.timeout(1.0):
            return await pool.fetchval("select true")
    except Exception:  # any failure to answer is "unreachable"
        return False
