"""The load generator against a tiny local server: counts, pacing, failures, stops, loopback only."""

import asyncio
import itertools
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from shared.loadgen import LoadReport, generate


class CountingServer(ThreadingHTTPServer):
    """Counts GETs per path; /flaky answers 500 to every second request."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), CountingHandler)
        self.seen: dict[str, int] = {}
        self.flaky = itertools.count(1)
        self.lock = threading.Lock()


class CountingHandler(BaseHTTPRequestHandler):
    """Answers 200 "ok" (500 on every second /flaky)."""

    server: CountingServer

    def do_GET(self) -> None:  # noqa: N802
        with self.server.lock:
            self.server.seen[self.path] = self.server.seen.get(self.path, 0) + 1
            fail = self.path == "/flaky" and next(self.server.flaky) % 2 == 0
        self.send_response(500 if fail else 200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass


@pytest.fixture
def server() -> Iterator[CountingServer]:
    """A CountingServer on a free loopback port."""
    server = CountingServer()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def url(server: CountingServer) -> str:
    return f"http://127.0.0.1:{server.server_port}"


async def test_a_count_sends_exactly_that_many_requests_paced_at_the_rate(server: CountingServer):
    report = await generate(url(server), rate=100, count=20, path="/pay")
    assert (report.sent, report.ok, report.failed, server.seen) == (20, 20, 0, {"/pay": 20})
    assert report.elapsed_s >= 0.19 and 0 < report.p50_ms <= report.p99_ms


async def test_a_duration_ends_the_run(server: CountingServer):
    report = await generate(url(server), rate=20, duration=0.5)
    assert (report.sent, report.ok, server.seen) == (10, 10, {"/": 10})


async def test_error_answers_are_counted_by_status(server: CountingServer):
    report = await generate(url(server), rate=200, count=20, concurrency=1, path="/flaky")
    assert (report.ok, report.failed_status, report.failed) == (10, {500: 10}, 10)


async def test_requests_nobody_answers_are_transport_errors(server: CountingServer):
    port = server.server_port
    server.shutdown()
    server.server_close()
    report = await generate(f"http://127.0.0.1:{port}", rate=200, count=5)
    assert (report.sent, report.ok, report.transport_errors, report.failed) == (5, 0, 5, 5)


async def test_a_stop_event_ends_the_run_early_with_a_report(server: CountingServer):
    stop = asyncio.Event()
    progress = []

    def on_progress(done: int, failed: int) -> None:
        progress.append((done, failed))
        if done == 5:
            stop.set()

    # one request at a time: when the fifth is done, at most the sixth has started, however slow the machine
    report = await generate(url(server), rate=200, count=1000, concurrency=1, on_progress=on_progress, stop=stop)
    assert report.sent in (5, 6) and report.ok == report.sent == server.seen["/"]
    assert progress[:5] == [(1, 0), (2, 0), (3, 0), (4, 0), (5, 0)]


@pytest.mark.parametrize("target", ["http://example.com", "http://10.0.0.1:8080", "http://127.0.0.2:80",
                                    "ftp://127.0.0.1", "http://localhost.example.com"])
async def test_only_loopback_urls_are_loaded(target: str):
    with pytest.raises(ValueError, match="loopback URLs only"):
        await generate(target, rate=10, count=1)


async def test_a_run_without_an_end_is_refused():
    with pytest.raises(ValueError, match="must end"):
        await generate("http://127.0.0.1:1", rate=10)


def test_the_summary_is_one_line():
    report = LoadReport(sent=500, ok=498, failed_status={500: 2}, transport_errors=0, elapsed_s=10.02,
                        p50_ms=2.1, p99_ms=9.8)
    assert report.summary() == ("500 requests in 10.0 s: 498 ok, 2 failed (500: 2), 0 transport errors; "
                                "p50 2.1 ms, p99 9.8 ms")
    assert report.as_dict()["failed"] == 2


def promote_load(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", "load", *args], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=60)


def test_the_cli_sends_a_bounded_load_and_reports_it_as_json(server: CountingServer):
    result = promote_load(url(server), "--count", "30", "--rate", "200", "--path", "/flaky", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["sent"], report["ok"], report["failed"]) == (30, 15, 15)
    assert server.seen == {"/flaky": 30}


def test_the_cli_refuses_a_host_that_is_not_loopback_in_one_line():
    result = promote_load("http://example.com", "--count", "1")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "loopback" in result.stderr
