"""Replay speed: the fold behind `promote replay --rebuild`, over a million events, against a bare consume.

Publishing a million events to the live topics would keep the five services busy for hours, so
the replay machinery runs on temporary topics instead: one per topic the projections are fed from
(pipelines, artifacts, gates, deployments), filled with valid events built with `new_event` for
many services (pipeline.applied, artifact.registered, gate.pending/passed, deployment.started/
succeeded, verification.passed/failed), keyed by service like the live ones. The fill (a batching
idempotent producer) is timed on its own.

Then, in one transaction on a scratch schema (`bench_replay_<run>`, tables copied from the ledger's
like `promote replay` does, dropped at the end), the records are read with the replay's consumer
settings and handed to `cli.replay._fold_all`: the same parse (`parse_event` with the record's
original topic), de-duplication and `services/ledger/rebuild.fold` in batches of 500 that
`promote replay --rebuild` runs. Baseline: a bare aiokafka consume of the same topics (no parsing).
Target: fold >= 1/2 baseline events/s. Peak RSS of this process is sampled during the replay.

    .venv/bin/python -m bench.replay --events 1000000 --json /tmp/replay.json
"""

import argparse
import asyncio
import hashlib
import os
import time
from collections import namedtuple

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.progress import Progress
from rich.table import Table

from bench import common, echo
from bench.common import console
from cli.replay import Counts, _fold_all
from services.ledger.state import PROJECTION_TABLES
from shared.platform.credentials import SUPERUSER, database_dsn, kafka_options
from shared.contracts import topics
from shared.contracts.events import (ArtifactRegistered, DeploymentStarted, DeploymentSucceeded, GatePassed,
                                     GatePending, VerificationFailed, VerificationPassed, new_event)

Record = namedtuple("Record", "topic value")
FED = (topics.PIPELINES, topics.ARTIFACTS, topics.GATES, topics.DEPLOYMENTS)


def releases(services: list[str]):
    """Events in a realistic order: each service's pipeline, then round after round of releases."""
    yield from common.pipeline_events(services, common.ENVS)
    for round_ in range(10**9):
        for index, service in enumerate(services):
            version = f"1.{round_}.0"
            digest = "sha256:" + hashlib.sha256(f"{service}/{version}".encode()).hexdigest()
            ids = dict(service=service, version=version, digest=digest)
            yield new_event(ArtifactRegistered(**ids, kind="file", commit="bench", author="ci", checks={},
                                               build_event_id=f"build-{service}-{version}"), source="/bench")
            for env in common.ENVS:
                config = {"APP_ENV": env}
                config_version = "sha256:" + hashlib.sha256(env.encode()).hexdigest()
                if env == "prod":
                    yield new_event(GatePending(**ids, env=env, reasons=["needs 1 approval"]), source="/bench")
                yield new_event(GatePassed(**ids, env=env, strategy="rolling", driver="noop", config=config,
                                           config_version=config_version, pipeline_version=digest), source="/bench")
                deployment = dict(ids, env=env, deployment_id=f"{service}-{version}-{env}", config=config,
                                  config_version=config_version, driver="noop")
                yield new_event(DeploymentStarted(**deployment), source="/bench")
                yield new_event(DeploymentSucceeded(**deployment, port=18100), source="/bench")
                if (index + round_) % 50 == 7 and env == "dev":  # 2 % fail their verification and stop there
                    yield new_event(VerificationFailed(**deployment, reason="health", checks={}), source="/bench")
                    break
                yield new_event(VerificationPassed(**deployment, checks={"health": "passed"}), source="/bench")


async def fill(names: dict[str, str], count: int, services: int) -> dict:
    """Publish `count` events to the temporary topics with a batching producer; time it."""
    producer = echo.producer(linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    sizes, pending = 0, []
    t0 = time.perf_counter()
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("fill", total=count)
            source = releases([f"br-{i:05d}" for i in range(services)])
            for n in range(count):
                event = next(source)
                value = event.to_bytes()
                sizes += len(value)
                pending.append(await producer.send(names[event.data.topic], value, key=event.data.service.encode()))
                if len(pending) >= 5000:
                    await asyncio.gather(*pending)
                    pending.clear()
                    progress.update(task, completed=n + 1)
            await asyncio.gather(*pending)
    finally:
        await producer.stop()
    seconds = time.perf_counter() - t0
    return {"events": count, "seconds": round(seconds, 1), "events_per_s": round(count / seconds, 1),
            "mean_bytes": round(sizes / count)}


async def read_all(names: dict[str, str]):
    """Every record of the temporary topics from the beginning, as the replay's KafkaLog reads them."""
    consumer = AIOKafkaConsumer(**kafka_options(common.SETTINGS, topics.ADMIN), enable_auto_commit=False,
                                max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()  # no public call for partitions of many topics
        tps = [TopicPartition(t, p) for t in names.values() for p in cluster.partitions_for_topic(t)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if end[tp] > 0}
        real = {temp: live for live, temp in names.items()}
        while remaining:
            for tp, batch in (await consumer.getmany(*remaining, timeout_ms=1000)).items():
                for record in batch:
                    yield Record(real[tp.topic], record.value)
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()


async def bare_consume(names: dict[str, str]) -> dict:
    """Baseline: read every record, nothing else."""
    t0, count = time.perf_counter(), 0
    with console.status("baseline: bare consume"):
        async for _ in read_all(names):
            count += 1
    seconds = time.perf_counter() - t0
    return {"records": count, "seconds": round(seconds, 2), "events_per_s": round(count / seconds, 1)}


async def fold(names: dict[str, str], schema: str, total: int) -> dict:
    """The replay's parse + de-duplicate + fold into scratch copies of the projections, in one transaction."""
    conn = await asyncpg.connect(database_dsn(common.SETTINGS, SUPERUSER))  # it creates a scratch schema
    counts = Counts()
    try:
        async with conn.transaction():
            await conn.execute(f"create schema {schema}")
            for table in PROJECTION_TABLES:
                await conn.execute(f"create table {schema}.{table} (like ledger.{table} including all)")
            await conn.execute(f"set local search_path to {schema}")
            with Progress(console=console, transient=True) as progress, \
                    common.RssSampler({"replay": os.getpid()}) as sampler:
                task = progress.add_task("replay", total=total)
                t0 = time.perf_counter()
                await _fold_all(conn, read_all(names), counts,
                                lambda: counts.records % 10_000 or progress.update(task, completed=counts.records))
                seconds = time.perf_counter() - t0
            rows = {t: await conn.fetchval(f"select count(*) from {t}") for t in PROJECTION_TABLES}
            await conn.execute(f"drop schema {schema} cascade")
    finally:
        await conn.close()
    return {"records": counts.records, "events": counts.events, "invalid": counts.invalid,
            "duplicates": counts.duplicates, "failed": counts.failed, "seconds": round(seconds, 2),
            "events_per_s": round(counts.events / seconds, 1), "rows": rows, "rss": sampler.figures()["replay"]}


async def run(args: argparse.Namespace) -> dict:
    """Temporary topics -> fill -> bare consume -> fold; the topics are deleted at the end."""
    rid = common.run_id("replay")
    names = {live: f"bench.{rid}.{live.removeprefix('promotion.')}" for live in FED}
    async with echo.temp_topics(list(names.values()), args.partitions):
        filled = await fill(names, args.events, args.services)
        console.print(f"fill: {filled['events']} events in {filled['seconds']} s ({filled['events_per_s']}/s)")
        baseline = await bare_consume(names)
        replayed = await fold(names, f"bench_replay_{rid.split('-')[1]}", args.events)
    ok = replayed["events_per_s"] >= baseline["events_per_s"] / 2
    return {"benchmark": "replay", "machine": common.machine(), "run": rid, "services": args.services,
            "fill": filled, "baseline": baseline, "replay": replayed,
            "targets": {"replay_vs_baseline": {"ratio": common.ratio(replayed["events_per_s"],
                                                                     baseline["events_per_s"]), "met": ok}}}


def show(result: dict) -> None:
    """Print the rates, the ratio and the memory figure."""
    r, b, f = result["replay"], result["baseline"], result["fill"]
    table = Table(title=f"replay of {r['records']} records ({r['events']} events folded, {r['invalid']} invalid, "
                        f"{r['duplicates']} duplicates, {r['failed']} failed)")
    for column in ("phase", "seconds", "events/s", "ratio to bare consume", "target", "met"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    target = result["targets"]["replay_vs_baseline"]
    table.add_row("fold (promote replay)", str(r["seconds"]), str(r["events_per_s"]), str(target["ratio"]),
                  ">= 0.5", "yes" if target["met"] else "NO")
    table.add_row("bare aiokafka consume", str(b["seconds"]), str(b["events_per_s"]), "1.0", "", "")
    table.add_row("fill (batching producer)", str(f["seconds"]), str(f["events_per_s"]), "", "", "")
    console.print(table)
    console.print(f"replaying process: max VmRSS {r['rss']['max_rss_mib']} MiB, VmHWM {r['rss']['vmhwm_mib']} MiB; "
                  f"rows {r['rows']}; mean event {f['mean_bytes']} bytes")


def main() -> None:
    """Parse arguments, start the stack, measure, print, and write JSON if asked."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000, help="events to fill and replay (default 1000000)")
    parser.add_argument("--services", type=int, default=5000, help="services the events are about (default 5000)")
    parser.add_argument("--partitions", type=int, default=3, help="partitions per temporary topic (default 3)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    common.up()
    result = asyncio.run(run(args))
    show(result)
    common.write_json(args.json, result)


if __name__ == "__main__":
    main()
