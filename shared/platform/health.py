"""Each service's own HTTP endpoint on loopback: GET /health (JSON) and GET /metrics (Prometheus).

Served by Starlette under uvicorn (both already the API's stack), in the service's event loop, not by
hand-parsed HTTP: a slow or malformed client is uvicorn's to handle.
"""

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator

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
