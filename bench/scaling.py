"""Scaling: the throughput of bench/throughput.py with one and two instances of every service,
and with 3, 6 and 12 partitions per topic.

For each partition count (ascending) the event topics are raised to that count
(PROMOTE_TOPIC_PARTITIONS; Kafka cannot lower it, so run this on a throwaway stack:
`./dev-stack down && rm -rf var`) and the services restarted; then for each instance count
the same measurement runs (default 30 s window) and the stack drains; the second instances
(`devstack.start_service(name, instance=2)`: same consumer groups, static membership) are
stopped afterwards. Each instance's share of the work is read from its /health `processed`
counter. One raw-Kafka pass-through baseline is measured in the same run.

    .venv/bin/python -m bench.scaling --seconds 30 --partitions 3 6 12 --json /tmp/scaling.json
"""

import argparse
import asyncio
import json
import os
import urllib.request

from rich.table import Table

import devstack
from bench import common, throughput
from bench.common import console
import devstack.topics
from devstack.services import health_port
from shared.platform.settings import Settings


def processed(instances: int) -> dict[str, int]:
    """{service-instance: events handled so far} from each instance's /health."""
    out = {}
    for name in devstack.SERVICES:
        for instance in range(1, instances + 1):
            url = f"http://127.0.0.1:{health_port(name, instance)}/health"
            with urllib.request.urlopen(url, timeout=5) as response:
                out[f"{name}-{instance}"] = json.loads(response.read())["processed"]
    return out


async def one(args: argparse.Namespace, instances: int) -> dict:
    """Start the extra instances, measure, record each instance's share, stop the extras."""
    try:
        for extra in range(2, instances + 1):
            for name in devstack.SERVICES:
                devstack.start_service(name, instance=extra)
            await asyncio.to_thread(devstack.wait_services_ready, 90, devstack.SERVICES, extra)
        if instances > 1:
            await asyncio.sleep(args.settle)  # the groups rebalance onto the new members
        before = processed(instances)
        figures = await throughput.measure_services(args.seconds, args.warmup, args.rate, args.concurrency,
                                                    args.services, tuple(args.envs.split(",")), args.max_backlog)
        after = processed(instances)
        figures["processed_by_instance"] = {k: after[k] - before[k] for k in after}
        figures["instances"] = instances
        return figures
    finally:
        for extra in range(2, instances + 1):
            for name in devstack.SERVICES:
                await asyncio.to_thread(devstack.stop_service, name, instance=extra)


async def run(args: argparse.Namespace) -> dict:
    """Each partition count, and within it each instance count, on a quiet stack; then the baseline."""
    console.print(f"stack quiet after {await common.wait_quiet(3600, 'before')} s")
    runs = []
    for partitions in sorted(args.partitions):
        await asyncio.to_thread(use_partitions, partitions)
        for instances in args.instances:
            console.rule(f"{partitions} partitions per topic, {instances} instance(s) per service")
            figures = await one(args, instances)
            figures["partitions"] = partitions
            runs.append(figures)
    baseline = await throughput.measure_baseline(args.baseline_records, runs[0]["message_bytes"])
    for figures in runs:
        figures["dev_vs_baseline"] = common.ratio(figures["dev_promotions_per_s"], baseline["pass_through_per_s"])
    return {"benchmark": "scaling", "machine": common.machine(), "runs": runs, "baseline": baseline}


def use_partitions(partitions: int) -> None:
    """Raise the event topics to `partitions` and restart the services so that their groups use them all."""
    os.environ["PROMOTE_TOPIC_PARTITIONS"] = str(partitions)
    devstack.topics.ensure_topics()
    for name in devstack.SERVICES:
        devstack.stop_service(name)
        devstack.start_service(name)
    devstack.wait_services_ready(90)


def show(result: dict) -> None:
    """One row per instance count; the work each instance did."""
    base = result["baseline"]["pass_through_per_s"]
    table = Table(title=f"scaling ({result['runs'][0]['seconds']:.0f} s windows; raw Kafka echo {base}/s)")
    for column in ("partitions", "instances", "published/s", "artifact.registered/s", "deployment.started (dev)/s",
                   "ratio to echo", "drained after s"):
        table.add_column(column, justify="right")
    first = result["runs"][0]["dev_promotions_per_s"]
    for r in result["runs"]:
        table.add_row(str(r["partitions"]), str(r["instances"]), str(r["published_per_s"]), str(r["registered_per_s"]),
                      f"{r['dev_promotions_per_s']} ({common.ratio(r['dev_promotions_per_s'], first)}x)",
                      str(r["dev_vs_baseline"]), str(r["drained_after_s"]))
    console.print(table)
    for r in result["runs"]:
        console.print(f"{r['partitions']} partitions, {r['instances']} instance(s), events handled per instance: "
                      f"{r['processed_by_instance']}")


def main() -> None:
    """Parse arguments, start the stack, measure, print, and write JSON if asked."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    throughput.options(parser, 30.0)
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2], choices=[1, 2],
                        help="instance counts (default 1 2; a 3rd instance's health port would be the app port base)")
    parser.add_argument("--partitions", type=int, nargs="+", default=[Settings().topic_partitions],
                        help="partition counts per event topic, raised in ascending order (e.g. 3 6 12; "
                             "default: the stack's PROMOTE_TOPIC_PARTITIONS)")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds for the groups to rebalance")
    args = parser.parse_args()
    common.up()
    result = asyncio.run(run(args))
    show(result)
    common.write_json(args.json, result)


if __name__ == "__main__":
    main()
