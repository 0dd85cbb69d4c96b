"""Create the topics idempotently, with their configs (retention.ms=-1, size caps) and partition count.

The event topics get Settings().topic_partitions partitions (PROMOTE_TOPIC_PARTITIONS, default 3);
an existing topic with fewer is raised to that count (Kafka cannot lower it).
"""

from __future__ import annotations

import asyncio
import time

from devstack import processes as p
from shared.contracts import topics
from shared.platform.credentials import kafka_options
from shared.platform.settings import Settings
from shared.contracts.topics import TopicSpec, all_topics

TOPIC_ALREADY_EXISTS = 36


async def ensure_topics_async(bootstrap: str | None = None) -> dict[str, str]:
    """Create missing topics and reset drifted retention; returns {topic: created|altered|ok}."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    settings = Settings()
    ALL_TOPICS = all_topics(settings.topic_partitions)
    options = kafka_options(settings, topics.ADMIN)
    if bootstrap:
        options["bootstrap_servers"] = bootstrap
    admin = AIOKafkaAdminClient(**options, request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        raised = await _raise_partitions(admin, [t for t in ALL_TOPICS if t.name in existing])
        result = {t.name: "ok" for t in ALL_TOPICS}
        missing = [t for t in ALL_TOPICS if t.name not in existing]
        if missing:
            new = [NewTopic(t.name, t.partitions, 1, topic_configs=t.configs) for t in missing]
            resp = (await admin.create_topics(new)).to_object()
            for err in resp["topic_errors"]:
                if err["error_code"] not in (0, TOPIC_ALREADY_EXISTS):
                    raise p.StackError(f"topics: creating {err['topic']} failed: "
                                       f"error {err['error_code']} {err.get('error_message') or ''}")
                result[err["topic"]] = "created" if err["error_code"] == 0 else "ok"
        present = [t for t in ALL_TOPICS if t.name in existing]
        if present:
            wanted = {t.name: t.configs for t in present}
            described = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, n, dict.fromkeys(c)) for n, c in wanted.items()])
            drifted = []
            for resp in described:
                for res in resp.to_object()["resources"]:
                    value = {c["config_names"]: c["config_value"] for c in res["config_entries"]}
                    name = res["resource_name"]
                    if any(value.get(key) != want for key, want in wanted[name].items()):
                        drifted.append(name)
            if drifted:
                await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, n, wanted[n]) for n in drifted])
                result.update({n: "altered" for n in drifted})
        result.update({n: "partitions raised" for n in raised})
        return result
    finally:
        await admin.close()


async def _raise_partitions(admin, present: list[TopicSpec]) -> list[str]:
    """Give each existing topic at least its spec's partition count; returns the names raised."""
    from aiokafka.admin import NewPartitions

    described = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics([t.name for t in present])}
    low = {t.name: NewPartitions(t.partitions) for t in present if described.get(t.name, t.partitions) < t.partitions}
    if low:
        await admin.create_partitions(low)
    return sorted(low)


def ensure_topics(bootstrap: str | None = None) -> dict[str, str]:
    """Synchronous ensure_topics_async with a progress line."""
    t0 = time.monotonic()
    result = asyncio.run(ensure_topics_async(bootstrap))
    created = sorted(n for n, s in result.items() if s == "created")
    altered = sorted(n for n, s in result.items() if s == "altered")
    raised = sorted(n for n, s in result.items() if s == "partitions raised")
    parts = [f"{len(created)} created", f"{len(altered)} configs reset", f"{len(result)} total"]
    if raised:
        parts.insert(2, f"{len(raised)} raised to {Settings().topic_partitions} partitions")
    p.say(f"topics: {', '.join(parts)} ({time.monotonic() - t0:.1f} s)")
    return result
