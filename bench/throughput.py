"""Sustained throughput: promotions per second into dev, builds per second through intake, and peak RSS.

Builds are published as fast as the publisher allows (`--concurrency` tasks sharing one idempotent
acks=all producer, or at `--rate`), over a pool of services that each have an auto-passing noop
pipeline; every build is a new version with its own bytes. Publishing pauses while more than
`--max-backlog` builds wait for intake, so intake always has work but the backlog the run leaves
behind stays bounded. One plain consumer counts `artifact.registered` and `deployment.started`
(dev) as they arrive; rates are taken over the steady window (after `--warmup` s until the end).
Meanwhile VmRSS of every service process is sampled (and VmHWM read at the end).

Baseline, same run and broker: a temporary topic pre-filled with records of the same size is copied
to a second one by bench/echo.py (consumer in a group, acks=all + idempotence, each send awaited);
its rate is the records arriving on the second topic per second, over the middle 80 %.
Targets: promotions into dev >= 1/2 baseline; >= 1,000 builds/s through intake.

    .venv/bin/python -m bench.throughput --seconds 60 --json /tmp/throughput.json
"""

import argparse
import asyncio
import shutil
import time
from collections import Counter

from rich.live import Live
from rich.table import Table

import devstack
from bench import common, echo
from bench.common import console
from shared.platform.client import Publisher

REGISTERED, STARTED = b'"type":"artifact.registered"', b'"type":"deployment.started"'
INTAKE_TARGET = 1000.0


def classify(run: bytes, counts: Counter):
    """What the observer keeps of a record of this run ('registered', 'started-dev' or nothing); counts it."""
    def keep(record) -> str | None:
        value, kind = record.value, None
        if run not in value:
            return None
        if REGISTERED in value:
            kind = "registered"
        elif STARTED in value and b'"env":"dev"' in value:
            kind = "started-dev"
        if kind:
            counts[kind] += 1
        return kind
    return keep


def window_rate(seen: list[tuple[float, str]], kind: str, start: float, end: float) -> float:
    """Events of `kind` that arrived in [start, end), per second."""
    return round(sum(1 for at, k in seen if k == kind and start <= at < end) / (end - start), 1)


async def measure_services(seconds: float, warmup: float, rate: float, concurrency: int, pool: int,
                           envs: tuple[str, ...], max_backlog: int) -> dict:
    """Publish builds for `seconds`; rates of registrations and dev deployments over the steady window."""
    rid = common.run_id("tp")
    services = [f"bt-{rid}-{i:04d}" for i in range(pool)]
    folder = common.drop_folder(f"bench-{rid}-")
    sampler = common.RssSampler({name if i == 1 else f"{name}-{i}": devstack.services.service_pid(name, i)
                                 for name in devstack.SERVICES for i in (1, 2)})
    published, sizes, counts = 0, [], Counter()
    async with Publisher(common.SETTINGS) as publisher:
        for event in common.pipeline_events(services, envs):
            await publisher.publish(event)
        console.print(f"services: {pool} pipelines stored in {await common.wait_pipelines(services):.1f} s")
        async with common.Observer([common.topics.ARTIFACTS, common.topics.DEPLOYMENTS],
                                   keep=classify(rid.encode(), counts)) as observer:
            t0 = time.perf_counter()
            end = t0 + seconds

            async def publish_loop(worker: int) -> None:
                nonlocal published
                n = worker
                while time.perf_counter() < end:
                    if rate and t0 + published / rate > time.perf_counter():
                        await asyncio.sleep(0.001)
                        continue
                    if published - counts['registered'] > max_backlog:
                        await asyncio.sleep(0.01)
                        continue
                    event = common.build_event(services[n % pool], f"1.0.{n // pool}", folder)
                    n += concurrency
                    published += 1
                    await publisher.publish(event)
                    if len(sizes) < 1000:
                        sizes.append(len(event.to_bytes()))

            with sampler, Live(console=console, transient=True, refresh_per_second=2) as live:
                workers = [asyncio.create_task(publish_loop(w)) for w in range(concurrency)]
                for tick in range(int(seconds * 2)):
                    await asyncio.sleep(max(0.0, t0 + (tick + 1) / 2 - time.perf_counter()))
                    line = (f"{time.perf_counter() - t0:5.1f}/{seconds:.0f} s  published {published}  "
                            f"registered {counts['registered']}  deployment.started(dev) {counts['started-dev']}")
                    live.update(line)
                    if not console.is_terminal and tick % 20 == 19:  # a log line every 10 s
                        console.print(line)
                await asyncio.gather(*workers)
            seen = list(observer.seen)
    start = t0 + warmup
    result = {"run": rid, "seconds": seconds, "warmup_s": warmup, "services": pool, "envs": envs,
              "concurrency": concurrency, "published": published,
              "published_per_s": round(published / seconds, 1),
              "registered_per_s": window_rate(seen, "registered", start, end),
              "dev_promotions_per_s": window_rate(seen, "started-dev", start, end),
              "message_bytes": round(sum(sizes) / max(1, len(sizes))), "rss": sampler.figures()}
    result["drained_after_s"] = await common.wait_quiet(3600, "after the window")
    shutil.rmtree(folder, ignore_errors=True)
    return result


async def measure_baseline(records: int, size: int) -> dict:
    """Pass-through rate of bench/echo.py over a pre-filled temporary topic."""
    rid = common.run_id("tp")
    a, b = f"bench.{rid}.a", f"bench.{rid}.b"
    async with echo.temp_topics([a, b]):
        sender = echo.producer(linger_ms=5, max_batch_size=1 << 20)
        await sender.start()
        try:
            t0 = time.perf_counter()
            for chunk in range(0, records, 5000):
                futures = [await sender.send(a, echo.payload(size, i), key=f"k{i}".encode())
                           for i in range(chunk, min(records, chunk + 5000))]
                await asyncio.gather(*futures)
            fill_s = time.perf_counter() - t0
        finally:
            await sender.stop()
        async with common.Observer([b], keep=lambda r: 1) as observer, echo.echo_process(a, b):
            with console.status("baseline: echoing"):
                while len(observer.seen) < records:
                    await asyncio.sleep(0.2)
            times = sorted(at for at, _ in observer.seen)
    lo, hi = int(records * 0.1), int(records * 0.9)
    return {"records": records, "message_bytes": size, "fill_s": round(fill_s, 2),
            "pass_through_per_s": round((hi - lo) / (times[hi] - times[lo]), 1)}


def verdicts(services: dict, baseline: dict) -> dict:
    """Targets: dev promotions >= 1/2 baseline; intake >= 1,000 builds/s."""
    base = baseline["pass_through_per_s"]
    return {"dev_promotions_vs_baseline": {"ratio": common.ratio(services["dev_promotions_per_s"], base),
                                           "met": services["dev_promotions_per_s"] >= base / 2},
            "intake_builds_per_s": {"value": services["registered_per_s"],
                                    "met": services["registered_per_s"] >= INTAKE_TARGET}}


def show(result: dict) -> None:
    """Print the rates, the baseline, the ratios and the memory figures."""
    s, b, t = result["services"], result["baseline"], result["targets"]
    table = Table(title=f"throughput over the steady window ({s['seconds']:.0f} s, first {s['warmup_s']:.0f} s "
                        f"excluded; envs {','.join(s['envs'])}; {s['published_per_s']} builds/s published)")
    for column in ("figure", "per s", "raw Kafka echo per s", "ratio", "target", "met"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    base = b["pass_through_per_s"]
    table.add_row("deployment.started (dev)", str(s["dev_promotions_per_s"]), str(base),
                  str(t["dev_promotions_vs_baseline"]["ratio"]), ">= 0.5x",
                  "yes" if t["dev_promotions_vs_baseline"]["met"] else "NO")
    table.add_row("artifact.registered (intake)", str(s["registered_per_s"]), str(base),
                  str(common.ratio(s["registered_per_s"], base)), f">= {INTAKE_TARGET:.0f}/s",
                  "yes" if t["intake_builds_per_s"]["met"] else "NO")
    console.print(table)
    memory = Table(title="service memory (MiB)")
    for column in ("process", "max VmRSS during run", "VmHWM (since start)"):
        memory.add_column(column)
    for name, figures in s["rss"].items():
        memory.add_row(name, str(figures["max_rss_mib"]), str(figures["vmhwm_mib"]))
    console.print(memory)


def options(parser: argparse.ArgumentParser, seconds: float) -> None:
    """The options throughput and scaling share."""
    parser.add_argument("--seconds", type=float, default=seconds, help=f"length of the window (default {seconds:.0f})")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds excluded at the start (default 10)")
    parser.add_argument("--rate", type=float, default=0.0, help="builds/s to publish (default 0: as fast as possible)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent publishing tasks (default 8)")
    parser.add_argument("--services", type=int, default=200, help="services the builds cycle over (default 200)")
    parser.add_argument("--envs", default="dev", help="the noop pipeline's environments (default dev)")
    parser.add_argument("--max-backlog", type=int, default=3000,
                        help="pause publishing while more builds than this wait for intake (default 3000)")
    parser.add_argument("--baseline-records", type=int, default=50_000, help="records for the baseline")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")


async def run(args: argparse.Namespace) -> dict:
    """Quiet stack -> services (then drain) -> baseline."""
    console.print(f"stack quiet after {await common.wait_quiet(3600, 'before')} s")
    services = await measure_services(args.seconds, args.warmup, args.rate, args.concurrency, args.services,
                                      tuple(args.envs.split(",")), args.max_backlog)
    baseline = await measure_baseline(args.baseline_records, services["message_bytes"])
    result = {"benchmark": "throughput", "machine": common.machine(), "services": services, "baseline": baseline}
    result["targets"] = verdicts(services, baseline)
    return result


def main() -> None:
    """Parse arguments, start the stack, measure, print, and write JSON if asked."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    options(parser, 60.0)
    args = parser.parse_args()
    common.up()
    result = asyncio.run(run(args))
    show(result)
    common.write_json(args.json, result)


if __name__ == "__main__":
    main()
