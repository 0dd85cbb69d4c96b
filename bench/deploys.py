"""Deployments at once: N services' builds published together, each deployed by the local driver (a real process
started and verified), against one build at a time in the same run (the baseline).

  one at a time   --baseline builds, each published once the one before is verified: build.completed ->
                  verification.passed in dev, ms (intake's copy into the store, gates, the deployer's start and
                  verification of the example app)
  at once         --services builds published together: each one's build.completed -> verification.passed,
                  and the makespan (the first publish to the last verification) with deployments per second

The deployer runs up to 4 orders at once (services_at_once), one per environment; this shows what that gives.

  .venv/bin/python -m bench.deploys --services 20 --baseline 5 --json /tmp/deploys.json
"""

import argparse
import asyncio
import time

from bench import common, serving
from bench.common import console
from shared.platform.client import Publisher
from shared.contracts.events import BuildCompleted, new_event


async def _publish_builds(publisher: Publisher, services: list[str], built) -> None:
    for service, artifact in zip(services, built, strict=True):
        await publisher.publish(new_event(BuildCompleted(service=service, version="1.0.0", commit="bench",
                                                         author="ci", checks={}, artifact=artifact),
                                          source="/bench"))


async def measure(count: int, baseline: int, timeout: float) -> dict:
    """The baseline (one at a time) then `count` at once, on services and artifacts of their own."""
    rid = common.run_id("dep")
    alone = [f"bd-{rid}-a{i:02d}" for i in range(baseline)]
    together = [f"bd-{rid}-t{i:02d}" for i in range(count)]
    folder = common.drop_folder(f"bench-{rid}-")
    with console.status(f"building {baseline + count} artifacts"):
        built = await serving.artifacts("file", alone + together, folder)
    mine = rid.encode()
    async with Publisher(common.SETTINGS) as publisher, \
            common.Observer(common.LIVE_TOPICS, keep=lambda r: r if mine in r.value else None) as observer:
        for service in alone + together:
            await publisher.publish(new_event(serving._applied(serving.pipeline(service, "file")), source="/bench"))
        await common.wait_pipelines(alone + together)
        await common.wait_quiet(120, "before the baseline")
        one_at_a_time = []
        for service, artifact in zip(alone, built[:baseline], strict=True):
            await _publish_builds(publisher, [service], [artifact])
            one_at_a_time.append((await serving._hop(observer, service, timeout))["verification.passed"])
        await common.wait_quiet(120, "before the builds at once")
        started = time.perf_counter()
        await _publish_builds(publisher, together, built[baseline:])
        hops = await asyncio.gather(*(serving._hop(observer, service, timeout) for service in together))
        makespan = time.perf_counter() - started
    at_once = [hop["verification.passed"] for hop in hops]
    return {"machine": common.machine(), "services": count,
            "one_at_a_time_ms": common.percentiles(one_at_a_time),
            "at_once_ms": common.percentiles(at_once),
            "at_once_deployer_ms": common.percentiles([h["verification.passed"] - h["gate.passed"] for h in hops]),
            "makespan_s": round(makespan, 2), "deployments_per_s": round(count / makespan, 2),
            "serial_estimate_s": round(common.percentiles(one_at_a_time)["p50"] * count / 1000, 2)}


def show(result: dict) -> None:
    from rich.table import Table

    table = Table(title=f"build.completed -> verified serving in dev, ms ({result['services']} services at once "
                        "against one at a time, local driver)")
    for column in ("how", "n", "p50", "p95", "p99", "max"):
        table.add_column(column, justify="left" if column == "how" else "right")
    for key, label in (("one_at_a_time_ms", "one at a time (baseline)"), ("at_once_ms", "at once: each"),
                       ("at_once_deployer_ms", "at once: the deployer's part")):
        figures = result[key]
        table.add_row(label, *(str(figures[k]) for k in ("n", "p50", "p95", "p99", "max")))
    console.print(table)
    console.print(f"at once: all {result['services']} verified {result['makespan_s']} s after the first publish "
                  f"({result['deployments_per_s']} deployments/s); one after another at the baseline's p50 would "
                  f"take {result['serial_estimate_s']} s")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.deploys", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=20, help="builds published at once (default 20)")
    parser.add_argument("--baseline", type=int, default=5, help="builds deployed one at a time first (default 5)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds each build may take (default 300)")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    common.up()
    result = asyncio.run(measure(args.services, args.baseline, args.timeout))
    show(result)
    common.write_json(args.json, result)


if __name__ == "__main__":
    main()
