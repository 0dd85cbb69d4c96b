"""A service's /health and /metrics endpoint (shared/platform/health.py: Starlette under uvicorn)."""

import socket

import httpx
import pytest

from shared.platform.health import health_app, serve_health


async def answers(body: dict, path: str) -> httpx.Response:
    async def report() -> dict:
        return body

    transport = httpx.ASGITransport(app=health_app(report))
    async with httpx.AsyncClient(transport=transport, base_url="http://health") as client:
        return await client.get(path)


@pytest.mark.parametrize(("status", "code"), [("ok", 200), ("degraded", 503)])
async def test_health_answers_the_report_with_200_only_when_it_is_ok(status, code):
    answer = await answers({"status": status, "processed": 3}, "/health")
    assert (answer.status_code, answer.json()) == (code, {"status": status, "processed": 3})


async def test_metrics_are_in_prometheus_text_format_and_other_paths_are_not_found():
    metrics = await answers({"status": "ok"}, "/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert "# TYPE" in metrics.text
    missing = await answers({"status": "ok"}, "/health/../secrets")
    assert (missing.status_code, missing.json()) == (404, {"error": "not found"})


async def test_it_serves_on_loopback_and_a_port_taken_is_an_error_not_an_exit():
    async def report() -> dict:
        return {"status": "ok"}

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = await serve_health(port, report)
    try:
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{port}/health")).json() == {"status": "ok"}
        with pytest.raises(OSError):
            await serve_health(port, report)
    finally:
        await server.close()
