"""The raw-Kafka baseline: temporary topics, and a bare aiokafka consumer in a group copying topic A to B.

The echo runs as its own process, like a service (`python -m bench.echo A B GROUP`): each record
is re-published with its key, acks=all and idempotence, awaiting every send, and nothing else (no
parsing, no database, no per-record offset commit). It prints `ready` once it is assigned.
"""

import argparse
import asyncio
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.contracts import topics
from shared.platform.credentials import kafka_options
from shared.platform.settings import Settings

BOOTSTRAP = Settings().kafka_bootstrap
KAFKA = kafka_options(Settings(), topics.ADMIN)  # the raw baseline creates its own topics: the broker's admin


@asynccontextmanager
async def temp_topics(names: list[str], partitions: int = 3):
    """Create bench topics for the run and delete them afterwards."""
    admin = AIOKafkaAdminClient(**KAFKA, request_timeout_ms=30_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
        try:
            yield names
        finally:
            await admin.delete_topics(names)
    finally:
        await admin.close()


@asynccontextmanager
async def echo_process(source: str, dest: str):
    """The echo in its own process; yields once it is assigned, terminates it afterwards."""
    proc = subprocess.Popen([sys.executable, "-m", "bench.echo", source, dest, f"bench-echo-{source}"],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    try:
        line = await asyncio.to_thread(proc.stdout.readline)
        if line.strip() != "ready":
            raise RuntimeError(f"echo did not start: {line!r}")
        yield proc
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 10)


def producer(**options) -> AIOKafkaProducer:
    """An idempotent producer with acks=all, like the services' and the CLI's."""
    return AIOKafkaProducer(**KAFKA, acks="all", enable_idempotence=True, **options)


def payload(size: int, index: int) -> bytes:
    """A JSON-ish value of `size` bytes, unique by index."""
    head = f'{{"i":{index},"pad":"'.encode()
    return head + b"x" * max(0, size - len(head) - 2) + b'"}'


async def echo(source: str, dest: str, group: str) -> None:
    """Copy source to dest forever, one awaited send per record."""
    consumer = AIOKafkaConsumer(source, **KAFKA, group_id=group, auto_offset_reset="earliest")
    sender = producer()
    await consumer.start()
    await sender.start()
    try:
        ready = False
        while True:
            batches = await consumer.getmany(timeout_ms=100)
            if not ready and consumer.assignment():
                print("ready", flush=True)
                ready = True
            for records in batches.values():
                for record in records:
                    await sender.send_and_wait(dest, record.value, key=record.key)
    finally:
        await sender.stop()
        await consumer.stop()


def main() -> None:
    """Parse the arguments and echo until terminated."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("dest")
    parser.add_argument("group")
    args = parser.parse_args()
    try:
        asyncio.run(echo(args.source, args.dest, args.group))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
