"""CI may publish in either content mode of the CloudEvents Kafka binding: a build.completed the official SDK
writes in binary mode and one it writes in structured mode are both registered, and the ledger stores each
as its structured form."""

import pytest
from aiokafka import AIOKafkaProducer
from cloudevents.core.bindings import kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from shared.contracts import topics
from shared.chain import canonical_bytes
from shared.platform.client import start_client
from shared.platform.credentials import kafka_options
from shared.contracts.events import parse_event
from shared.platform.settings import Settings

pytestmark = pytest.mark.e2e


async def publish_as_ci(settings: Settings, message: kafka.KafkaMessage) -> None:
    """Send the SDK's KafkaMessage to the builds topic as CI does: its own producer, as the `ci` principal."""
    producer = AIOKafkaProducer(**kafka_options(settings, "ci"), acks="all", enable_idempotence=True,
                                request_timeout_ms=10_000)
    await start_client(producer, settings.kafka_bootstrap)
    try:
        await producer.send_and_wait(topics.BUILDS, message.value, key=message.key,
                                     headers=list(message.headers.items()))
    finally:
        await producer.stop()


@pytest.mark.parametrize("to_kafka", [kafka.to_binary, kafka.to_structured], ids=["binary", "structured"])
async def test_a_build_completed_the_official_sdk_publishes_is_registered_in_either_content_mode(scenario, to_kafka):
    path, digest = scenario.build("1.0.0")
    data = scenario.build_completed("1.0.0", path, digest).model_dump(mode="json")
    event = CloudEvent(attributes={"type": "build.completed", "source": "/ci/sdk", "subject": scenario.service},
                       data=data)
    message = to_kafka(event, JSONFormat(), key_mapper=lambda _: scenario.service.encode())
    assert ("ce_specversion" in message.headers) == (to_kafka is kafka.to_binary)
    await publish_as_ci(scenario.settings, message)

    registered = await scenario.wait("artifact.registered", version="1.0.0")
    assert (registered.data.digest, registered.data.build_event_id) == (digest, event.get_id())
    structured = parse_event(kafka.to_structured(event, JSONFormat()).value)
    assert await scenario.wait("build.completed", version="1.0.0") == structured  # the CLI's watcher reads it too
    await scenario.processed_by("ledger", structured)
    [entry] = await scenario.query("ledger", "select canonical from entries where topic = $1 and event_id = $2",
                                   topics.BUILDS, event.get_id())
    assert bytes(entry["canonical"]) == canonical_bytes(structured.envelope.model_dump(mode="json",
                                                                                       exclude_none=True))
