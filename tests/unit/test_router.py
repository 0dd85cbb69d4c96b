"""The router on a real nginx (started under tmp_path): weights, reloads that drop nothing, refused configs."""

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from devstack import router as nginx_router
from devstack.processes import StackError
from services.deployer.analysis import read_outcomes
from services.deployer.router import (MAX_WEIGHT, NOT_RUNNING, Backend, Router, RouterError, render_server, spread,
                                     upstream_name)


class NamedServer(ThreadingHTTPServer):
    """A backend slot: answers every GET with its own name."""

    daemon_threads = True
    request_queue_size = 128  # the default 5 drops SYNs when nginx opens many upstream connections at once


def start_backend(name: str) -> ThreadingHTTPServer:
    """A NamedServer on a free loopback port, serving in a thread."""
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # nginx keeps upstream connections alive across requests
        disable_nagle_algorithm = True

        def do_GET(self) -> None:  # noqa: N802
            body = name.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            pass

    server = NamedServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def nginx_installed() -> None:
    """nginx is there (installed with apt-get when we run as root), else the test is skipped."""
    try:
        nginx_router.ensure_installed()
    except StackError as error:
        pytest.skip(f"needs /usr/sbin/nginx: {error}")


@pytest.fixture
def router(nginx_installed: None, tmp_path: Path) -> Iterator[Router]:
    """A real nginx with devstack's main config in tmp_path/router, stopped after the test."""
    root = tmp_path / "router"
    nginx_router.up(root)
    yield Router(root)
    nginx_router.stop(root)


@pytest.fixture
def slots() -> Iterator[tuple[int, int]]:
    """(blue port, green port): two backends answering "blue" and "green"."""
    servers = [start_backend("blue"), start_backend("green")]
    yield servers[0].server_port, servers[1].server_port
    for server in servers:
        server.shutdown()
        server.server_close()


def names(port: int, n: int) -> Counter:
    """Which backend answered each of n sequential requests to the router on `port`."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
        return Counter(client.get("/").text for _ in range(n))


def wait_for_lines(path: Path, n: int, timeout: float = 5.0) -> None:
    """Poll until nginx has written n lines to `path` (it logs a request after answering it)."""
    deadline = time.monotonic() + timeout
    while (path.read_bytes().count(b"\n") if path.exists() else 0) < n:
        assert time.monotonic() < deadline, f"{path} has fewer than {n} lines"
        time.sleep(0.01)


def test_the_upstream_name_is_nginx_safe_and_distinct_for_distinct_environments():
    assert upstream_name("Pay-ments", "prod.eu").startswith("pay_ments__prod_eu_")
    assert upstream_name("a-b", "c") != upstream_name("a_b", "c")


def test_a_slot_with_weight_0_is_listed_down_and_the_fragment_carries_its_generation(tmp_path: Path):
    text = render_server("payments", "prod", 8080, [Backend(9001, 0), Backend(9002, 100)], 7, tmp_path / "a.log")
    assert "server 127.0.0.1:9001 down" in text and "server 127.0.0.1:9002 weight=100" in text
    assert "listen 127.0.0.1:8080;" in text and 'return 200 "7\\n";' in text
    assert f'access_log "{tmp_path / "a.log"}" promote_json;' in text


def test_weights_that_give_no_slot_any_traffic_are_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="at least one backend"):
        render_server("payments", "prod", 8080, [Backend(9001, 0), Backend(9002, 0)], 1, tmp_path / "a.log")
    with pytest.raises(ValueError, match=f"0..{MAX_WEIGHT}"):
        render_server("payments", "prod", 8080, [Backend(9001, MAX_WEIGHT + 1)], 1, tmp_path / "a.log")


@pytest.mark.parametrize(("live", "canary", "weights"), [
    (([1], 95), ([2], 5), [95, 5]),
    (([1, 2, 3], 90), ([4, 5], 10), [180, 180, 180, 30, 30]),  # 540:60 = 90:10
    (([1, 2], 100), None, [100, 100]),
    (None, ([4, 5, 6], 100), [100, 100, 100]),
    (([1, 2, 3], 0), ([4, 5, 6], 100), [0, 0, 0, 300, 300, 300]),
])
def test_each_lane_gets_its_share_of_the_traffic_whatever_its_replicas(live, canary, weights):
    backends = spread(live, canary)
    assert [backend.weight for backend in backends] == weights
    if live and canary and live[1]:
        live_total = sum(b.weight for b in backends[:len(live[0])])
        assert live_total / sum(b.weight for b in backends) == live[1] / 100


def test_publish_without_nginx_says_how_to_start_it(tmp_path: Path):
    with pytest.raises(RouterError) as error:
        Router(tmp_path).publish("payments", "prod", free_port(), [Backend(free_port(), 100)])
    assert str(error.value) == NOT_RUNNING


def test_starting_the_router_twice_starts_one_nginx_and_stop_ends_it(nginx_installed: None, tmp_path: Path):
    root = tmp_path / "router"
    pid = nginx_router.up(root)
    assert nginx_router.up(root) == pid == nginx_router.running_pid(root)
    assert Router(root).running()
    nginx_router.stop(root)
    assert nginx_router.running_pid(root) is None and not Router(root).running()


def test_weights_5_and_95_send_exactly_5_of_100_requests_to_the_canary(router: Router, slots: tuple[int, int]):
    blue, green = slots
    port = free_port()
    assert router.publish("payments", "prod", port, [Backend(blue, 95), Backend(green, 5)]) == 1
    assert names(port, 100) == Counter(blue=95, green=5)
    log = router.access_log("payments", "prod")
    wait_for_lines(log, 100)
    canary, offset = read_outcomes(log, 0, green)
    assert [outcome.status for outcome in canary] == [200] * 5 and offset == log.stat().st_size
    assert len(read_outcomes(log, 0, [blue, green])[0]) == 100  # a lane of replicas: each of its ports counts
    assert read_outcomes(log, 0, [free_port()])[0] == []


def test_a_dead_slot_costs_no_request_nginx_answers_from_the_other(router: Router, slots: tuple[int, int]):
    blue, _ = slots
    dead, port = free_port(), free_port()
    router.publish("payments", "prod", port, [Backend(blue, 50), Backend(dead, 50)])
    assert names(port, 20) == Counter(blue=20)
    log = router.access_log("payments", "prod")
    wait_for_lines(log, 20)
    assert (len(read_outcomes(log, 0, blue)[0]), len(read_outcomes(log, 0, dead)[0])) == (20, 0)
    assert log.read_text().count(f"127.0.0.1:{dead}, 127.0.0.1:{blue}") == 10


def test_switching_blue_to_green_under_continuous_load_drops_no_request(router: Router, slots: tuple[int, int]):
    blue, green = slots
    port = free_port()
    router.publish("payments", "prod", port, [Backend(blue, 100), Backend(green, 0)])
    answers: list[tuple[float, str]] = []  # (monotonic start, backend name or the error)
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0, trust_env=False) as client:
            while not stop.is_set():
                start = time.monotonic()
                try:
                    response = client.get("/")
                    answers.append((start, response.text if response.status_code == 200 else
                                    f"HTTP {response.status_code}"))
                except httpx.HTTPError as error:
                    answers.append((start, repr(error)))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for weights in [(50, 50), (0, 100), (100, 0), (5, 95), (0, 100)] * 2:
            router.publish("payments", "prod", port, [Backend(blue, weights[0]), Backend(green, weights[1])])
        switched = time.monotonic()
        while sum(1 for start, _ in answers if start >= switched) < 200:
            time.sleep(0.01)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    failed = [answer for _, answer in answers if answer not in ("blue", "green")]
    assert (failed, len(answers) > 400) == ([], True)
    assert Counter(answer for start, answer in answers if start >= switched) == Counter(
        green=sum(1 for start, _ in answers if start >= switched))


def test_a_config_nginx_refuses_leaves_the_previous_one_in_effect(router: Router, slots: tuple[int, int]):
    blue, green = slots
    port = free_port()
    router.publish("payments", "prod", port, [Backend(blue, 100), Backend(green, 0)])
    broken = router.root / "conf.d" / "other--dev.conf"
    broken.write_text("this is not nginx;\n")
    with pytest.raises(RouterError, match=r'\[emerg\] unknown directive "this"'):
        router.publish("payments", "prod", port, [Backend(blue, 0), Backend(green, 100)])
    assert router.generation("payments", "prod") == 1
    assert httpx.get(f"http://127.0.0.1:{port}/_router/generation", trust_env=False).text == "1\n"
    assert names(port, 10) == Counter(blue=10)
    broken.unlink()
    assert router.publish("payments", "prod", port, [Backend(blue, 0), Backend(green, 100)]) == 2
    assert names(port, 10) == Counter(green=10)


def test_a_port_in_use_is_refused_and_no_fragment_is_left(router: Router, slots: tuple[int, int]):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(RouterError, match="already in use"):
            router.publish("payments", "prod", taken.getsockname()[1], [Backend(slots[0], 100)])
    assert not router.fragment("payments", "prod").exists()


def test_removing_an_environment_closes_its_port(router: Router, slots: tuple[int, int]):
    port = free_port()
    router.publish("payments", "prod", port, [Backend(slots[0], 100)])
    router.remove("payments", "prod")
    assert not router.fragment("payments", "prod").exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", trust_env=False)


def test_publishing_the_same_routing_again_reloads_nothing(router: Router, slots: tuple[int, int]):
    blue, green = slots
    port = free_port()
    assert router.publish("payments", "prod", port, [Backend(blue, 80), Backend(green, 20)]) == 1
    fragment = router.fragment("payments", "prod")
    written = fragment.stat().st_mtime_ns
    assert router.publish("payments", "prod", port, [Backend(blue, 80), Backend(green, 20)]) == 1
    assert fragment.stat().st_mtime_ns == written
    assert router.publish("payments", "prod", port, [Backend(blue, 50), Backend(green, 50)]) == 2
    assert names(port, 100) == Counter(blue=50, green=50)
