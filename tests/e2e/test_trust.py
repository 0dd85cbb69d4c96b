"""The broker's side of the trust boundary: each fact is accepted only from the principal that owns its topic."""

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import (GroupAuthorizationFailedError, KafkaConnectionError, KafkaError,
                             TopicAuthorizationFailedError)

from shared.contracts import topics
from shared.platform.client import NotAuthorized, Publisher
from shared.platform.credentials import kafka_options
from shared.contracts.events import GatePassed, VerificationPassed, new_event

pytestmark = pytest.mark.e2e

DIGEST = "sha256:" + "ab" * 32
EVERY_TOPIC = (*topics.EVENT_TOPICS, topics.DLQ)


@pytest.mark.parametrize("principal", [p.name for p in topics.PRINCIPALS])
async def test_a_principal_cannot_write_to_any_topic_it_does_not_own(stack, principal):
    foreign = [name for name in EVERY_TOPIC if name not in topics.principal(principal).produces]
    assert foreign
    refused = []
    async with Publisher(stack, principal) as publisher:
        for topic in foreign:
            try:
                await publisher.publish_raw(topic, b"{}", key=b"forged")
            except NotAuthorized:
                refused.append(topic)
    assert refused == foreign


async def test_a_forged_gate_passed_for_prod_and_a_forged_verification_are_refused_to_ci_and_operators(stack):
    order = GatePassed(service="payments", version="6.6.6", digest=DIGEST, env="prod", config={"X": "1"},
                       config_version=DIGEST, pipeline_version=DIGEST)
    verified = VerificationPassed(deployment_id="d", service="payments", version="6.6.6", digest=DIGEST,
                                  env="staging", config={}, config_version=DIGEST, checks={})
    async with Publisher(stack) as publisher:
        for forger in ("ci", "api", "deployer", "rollback", "ledger"):
            with pytest.raises(NotAuthorized):
                await publisher.publish(new_event(order, source="/promote/gates"), as_principal=forger)
        for forger in ("ci", "api", "gates", "rollback", "ledger", "intake"):
            with pytest.raises(NotAuthorized):
                await publisher.publish(new_event(verified, source="/promote/deployer"), as_principal=forger)


async def test_a_client_without_credentials_or_with_a_wrong_password_cannot_connect(stack):
    anonymous = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, request_timeout_ms=3000)
    with pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(anonymous.start(), 20)
    await anonymous.stop()
    wrong = AIOKafkaProducer(**{**kafka_options(stack, "gates"), "sasl_plain_password": "guessed"},
                             request_timeout_ms=3000)
    with pytest.raises(KafkaError):
        await asyncio.wait_for(wrong.start(), 20)
    await wrong.stop()


async def _first_fetch(consumer: AIOKafkaConsumer) -> None:
    """Start the consumer and fetch once: the broker's refusal surfaces here as an authorization error."""
    try:
        await consumer.start()
        await asyncio.wait_for(consumer.getmany(timeout_ms=5000), 20)
    finally:
        await consumer.stop()


async def test_ci_reads_no_topic_and_a_service_cannot_join_another_services_group(stack):
    for topic in EVERY_TOPIC:
        with pytest.raises(TopicAuthorizationFailedError):
            await _first_fetch(AIOKafkaConsumer(topic, **kafka_options(stack, "ci"), enable_auto_commit=False))
    # rollback may read the deployments, but only in its own group: not as the deployer or gates.
    for group in ("deployer", "gates"):
        with pytest.raises(GroupAuthorizationFailedError):
            await _first_fetch(AIOKafkaConsumer(topics.DEPLOYMENTS, **kafka_options(stack, "rollback"),
                                                group_id=group, enable_auto_commit=False))
