"""A tiny HTTP endpoint per service: GET /health (JSON) and GET /metrics (Prometheus)."""

import asyncio
import json
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


async def serve_health(port: int, report: Callable[[], Awaitable[dict]]) -> asyncio.AbstractServer:
    """Answer GET /health with `report()` as JSON (200 when status is ok, 503 otherwise) and GET /metrics."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)).strip():
                pass
            path = request_line.split(b" ")[1].decode() if request_line.count(b" ") >= 2 else ""
            content_type = "application/json"
            if path == "/health":
                body = await report()
                status = "200 OK" if body.get("status") == "ok" else "503 Service Unavailable"
                payload = json.dumps(body).encode()
            elif path == "/metrics":
                status, payload, content_type = "200 OK", generate_latest(), CONTENT_TYPE_LATEST
            else:
                status, payload = "404 Not Found", json.dumps({"error": "not found"}).encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)
