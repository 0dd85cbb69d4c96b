"""Stage latency: how long each service takes from a cause event to its effect, against a bare Kafka hop.

N builds are published at a steady rate (one service each, an auto-passing noop pipeline), and one
plain consumer (no group) reads every live topic. A hop is the time from the cause event's arrival
at that observer to the effect event's arrival there, so both ends are taken on one clock by one
fetch path (Kafka record timestamps would mix the producers' clocks and their batching):

  intake    build.completed     -> artifact.registered
  gates     promotion.requested -> gate.passed            (dev)
  deployer  gate.passed         -> deployment.started     (dev)
  chain     build.completed     -> deployment.started     (dev)

Baseline, same run and broker: bench/echo.py (a consumer in a group copying topic A to topic B,
acks=all + idempotence, awaiting each send) on two temporary topics, fed at the same rate with
records of the same size, observed the same way. Targets: each hop's p99 within 2x the baseline
hop's p99; the chain's p99 under 50 ms.

    .venv/bin/python -m bench.latency --builds 1000 --rate 20 --json /tmp/latency.json

--serving N adds bench/serving.py's figures: N builds as images on the container driver and N as files on
the local driver, each timed from build.completed to verified serving /version; --starts M adds the start
time of a container against a process (--builds 0: only those).
"""

import argparse
import asyncio
import json
import shutil
import time

from rich.progress import Progress
from rich.table import Table

from bench import common, echo, serving
from bench.common import console
from shared.platform.client import Publisher

HOPS = {  # name: (cause type, effect type, env of both, or None for any)
    "intake": ("build.completed", "artifact.registered", None),
    "gates": ("promotion.requested", "gate.passed", "dev"),
    "deployer": ("gate.passed", "deployment.started", "dev"),
    "chain": ("build.completed", "deployment.started", "dev"),
}
BASELINE_FACTOR = 2.0
CHAIN_P99_MS = 50.0


async def paced(count: int, rate: float, send, label: str) -> float:
    """Call `send(i)` for i < count at `rate` per second (open loop); returns the achieved rate."""
    t0 = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(label, total=count)
        for i in range(count):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await send(i)
            progress.advance(task)
    return round(count / (time.perf_counter() - t0), 1)


async def wait_for(done, timeout: float, what: str) -> None:
    """Poll `done()` every 100 ms until true; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not seen within {timeout:.0f} s")
        await asyncio.sleep(0.1)


class Arrivals:
    """First arrival time per (service, event type, env), parsed incrementally from an Observer."""

    def __init__(self, observer: common.Observer) -> None:
        self.observer, self.parsed, self.first = observer, 0, {}

    def update(self) -> "Arrivals":
        for at, record in self.observer.seen[self.parsed:]:
            body = json.loads(record.value)
            key = (body["data"]["service"], body["type"], body["data"].get("env"))
            self.first.setdefault(key, at)
        self.parsed = len(self.observer.seen)
        return self

    def count(self, event_type: str, env: str | None) -> int:
        return sum(1 for (_, kind, e) in self.first if kind == event_type and e == env)

    def hop_ms(self, services: list[str], cause: str, effect: str, env: str | None) -> list[float]:
        """Per service: effect arrival - cause arrival, in ms (the cause's env is None for a build)."""
        cause_env = None if cause == "build.completed" else env
        out = []
        for s in services:
            start, end = self.first.get((s, cause, cause_env)), self.first.get((s, effect, env))
            if start is not None and end is not None:
                out.append((end - start) * 1000)
        return out


async def measure_services(builds: int, rate: float, envs: tuple[str, ...], timeout: float) -> dict:
    """Publish pipelines, wait until they are stored, then publish builds at `rate` and time each hop."""
    rid = common.run_id("lat")
    services = [f"bl-{rid}-{i:05d}" for i in range(builds)]
    folder = common.drop_folder(f"bench-{rid}-")
    async with Publisher(common.SETTINGS) as publisher:
        for event in common.pipeline_events(services, envs):
            await publisher.publish(event)
        waited = await common.wait_pipelines(services)
        console.print(f"services: {builds} pipelines stored in {waited:.1f} s")
        events = [common.build_event(s, "1.0.0", folder) for s in services]
        size = round(sum(len(e.to_bytes()) for e in events) / len(events))
        mine = rid.encode()
        async with common.Observer(common.LIVE_TOPICS, keep=lambda r: r if mine in r.value else None) as observer:
            achieved = await paced(builds, rate, lambda i: publisher.publish(events[i]), "builds")
            arrivals = Arrivals(observer)
            await wait_for(lambda: arrivals.update().count("deployment.started", "dev") >= builds, timeout,
                           f"deployment.started in dev for all {builds} builds")
    shutil.rmtree(folder, ignore_errors=True)  # intake has copied every artifact into its store
    hops = {name: common.percentiles(arrivals.hop_ms(services, *spec)) for name, spec in HOPS.items()}
    return {"run": rid, "builds": builds, "rate_achieved": achieved, "message_bytes": size, "hops": hops}


async def measure_baseline(count: int, rate: float, size: int, timeout: float) -> dict:
    """The same pacing and observation through bench/echo.py on two temporary topics."""
    rid = common.run_id("lat")
    a, b = f"bench.{rid}.a", f"bench.{rid}.b"
    async with echo.temp_topics([a, b]), echo.echo_process(a, b), common.Observer([a, b]) as observer:
        sender = echo.producer()
        await sender.start()
        try:
            achieved = await paced(count, rate, lambda i: sender.send_and_wait(
                a, echo.payload(size, i), key=f"k{i}".encode()), "baseline")
            await wait_for(lambda: sum(1 for _, r in observer.seen if r.topic == b) >= count, timeout,
                           f"all {count} echoes")
        finally:
            await sender.stop()
    first: dict[tuple[str, bytes], float] = {}
    for at, record in observer.seen:
        first.setdefault((record.topic, record.key), at)
    hop = [(first[(b, k)] - first[(a, k)]) * 1000 for (t, k) in first if t == a and (b, k) in first]
    return {"rate_achieved": achieved, "hop": common.percentiles(hop)}


def verdicts(services: dict, baseline: dict) -> dict:
    """Which targets are met: each stage hop p99 <= 2x baseline p99; chain p99 < 50 ms."""
    base = baseline["hop"]["p99"]
    out = {name: {"p99_ratio": common.ratio(services["hops"][name]["p99"], base),
                  "met": services["hops"][name]["p99"] is not None
                  and services["hops"][name]["p99"] <= BASELINE_FACTOR * base}
           for name in ("intake", "gates", "deployer")}
    chain = services["hops"]["chain"]["p99"]
    out["chain"] = {"p99_ms": chain, "met": chain is not None and chain < CHAIN_P99_MS}
    return out


def show(result: dict) -> None:
    """Print the hop table with the baseline and the ratios."""
    table = Table(title=f"latency, ms ({result['services']['builds']} builds at {result['rate']}/s, "
                        f"envs {','.join(result['envs'])})")
    for column in ("hop", "n", "p50", "p95", "p99", "max", "p99 / baseline p99", "target", "met"):
        table.add_column(column, justify="left" if column == "hop" else "right")
    base = result["baseline"]["hop"]
    for name, figures in result["services"]["hops"].items():
        verdict = result["targets"][name]
        target = f"< {CHAIN_P99_MS:.0f} ms" if name == "chain" else f"<= {BASELINE_FACTOR:.0f}x"
        table.add_row(name, *(str(figures[k]) for k in ("n", "p50", "p95", "p99", "max")),
                      str(common.ratio(figures["p99"], base["p99"])), target, "yes" if verdict["met"] else "NO")
    table.add_row("raw Kafka echo", *(str(base[k]) for k in ("n", "p50", "p95", "p99", "max")), "1.0", "", "")
    console.print(table)


async def run(args: argparse.Namespace) -> dict:
    """Quiet stack -> services -> quiet stack -> baseline (then serving and starts, if asked)."""
    envs = tuple(args.envs.split(","))
    console.print(f"stack quiet after {await common.wait_quiet(args.timeout, 'before')} s")
    result = {"benchmark": "latency", "machine": common.machine(), "rate": args.rate, "envs": envs}
    if args.builds:
        services = await measure_services(args.builds, args.rate, envs, args.timeout)
        drained = await common.wait_quiet(args.timeout, "after the builds")
        baseline = await measure_baseline(args.builds, args.rate, services["message_bytes"], args.timeout)
        result.update(services=services, drained_after_s=drained, baseline=baseline,
                      targets=verdicts(services, baseline))
    if args.serving:
        await common.wait_quiet(args.timeout, "before serving")
        result["serving"] = await serving.run(args.serving, args.starts, args.timeout)
    return result


def main() -> None:
    """Parse arguments, start the stack, measure, print, and write JSON if asked."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--builds", type=int, default=1000, help="promotions to time (default 1000)")
    parser.add_argument("--rate", type=float, default=20.0, help="builds per second (default 20)")
    parser.add_argument("--envs", default="dev",
                        help="the noop pipeline's environments, comma-separated (default dev: the hops are in dev)")
    parser.add_argument("--serving", type=int, default=0, metavar="N",
                        help="also time N image builds (container driver) and N file builds (local driver) from "
                             "build.completed to verified serving /version (default 0: not)")
    parser.add_argument("--starts", type=int, default=20, metavar="M",
                        help="with --serving: start M containers and M processes, each to /version (default 20)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for any phase")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    common.up()
    result = asyncio.run(run(args))
    if "services" in result:
        show(result)
    if "serving" in result:
        serving.show(result["serving"])
    common.write_json(args.json, result)


if __name__ == "__main__":
    main()
