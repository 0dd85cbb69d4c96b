"""The raw-Kafka baseline hop: a bare aiokafka consumer in a group that copies topic A to topic B.

Run by the benchmarks as its own process (like a service): `python -m bench.echo A B GROUP`.
Each record is re-published with its key, acks=all and idempotence, awaiting every send, and
nothing else (no parsing, no database, no per-record commit). Prints `ready` once it is assigned.
"""

import argparse
import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.settings import Settings


async def echo(source: str, dest: str, group: str) -> None:
    """Copy source to dest forever, one awaited send per record."""
    bootstrap = Settings().kafka_bootstrap
    consumer = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, group_id=group,
                                auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await consumer.start()
    await producer.start()
    try:
        ready = False
        while True:
            batches = await consumer.getmany(timeout_ms=100)
            if not ready and consumer.assignment():
                print("ready", flush=True)
                ready = True
            for records in batches.values():
                for record in records:
                    await producer.send_and_wait(dest, record.value, key=record.key)
    finally:
        await producer.stop()
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
