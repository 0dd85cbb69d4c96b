"""Outgoing webhooks from the notifier, to a receiver on loopback (a Starlette app under uvicorn in the test's
loop): a promotion waiting for an approval is delivered once, as a signed CloudEvent; a receiver down then up
gets it when it is back; one that never answers is given up to the dead-letter topic with the reason; a dead
letter about a service reaches its subscriber, told of without its bytes."""

import asyncio
import contextlib
import json
import os
import time

import asyncpg
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.notifier.domain import SIGNATURE_HEADER, verify_signature
from shared.contracts import topics
from shared.contracts.events import new_event, parse_event
from shared.platform.credentials import SUPERUSER, database_dsn
from tests.e2e.support import dead_letters, dlq_end

pytestmark = pytest.mark.e2e

PORT, SILENT_PORT = 19580, 19581
SECRET = b"notify-test-secret-1"


class Receiver:
    """Records every request; answers `status`."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.arrived = asyncio.Event()
        self.status = 204

    async def hook(self, request: Request) -> Response:
        self.requests.append((dict(request.headers), await request.body()))
        self.arrived.set()
        return Response(status_code=self.status)

    @contextlib.asynccontextmanager
    async def listening(self, port: int = PORT):
        config = uvicorn.Config(Starlette(routes=[Route("/hook", self.hook, methods=["POST"])]), host="127.0.0.1",
                                port=port, log_config=None, access_log=False, lifespan="off")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            assert not task.done(), "the receiver did not start"
            await asyncio.sleep(0.01)
        try:
            yield self
        finally:
            server.should_exit = True
            await task

    async def next(self, timeout: float = 30.0) -> tuple[dict[str, str], bytes]:
        seen = len(self.requests)
        async with asyncio.timeout(timeout):
            while len(self.requests) <= seen:
                self.arrived.clear()
                await self.arrived.wait()
        return self.requests[seen]


def subscribe(settings, *subscriptions: dict) -> None:
    """Write the notifier's file (allowing the two test ports) and the subscriptions' secret."""
    settings.webhook_secrets_dir.mkdir(parents=True, exist_ok=True)
    secret = settings.webhook_secrets_dir / "test-receiver"
    secret.write_bytes(SECRET)
    os.chmod(secret, 0o600)
    body = {"allowed_urls": [f"http://127.0.0.1:{PORT}/", f"http://127.0.0.1:{SILENT_PORT}/"],
            "subscriptions": [{"secret": "test-receiver", **s} for s in subscriptions]}
    path = settings.notifications_file
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(body))  # YAML's superset: the JSON is the file
    temporary.replace(path)


async def delivery(settings, subscription: str, until, timeout: float = 30.0) -> asyncpg.Record:
    """The subscription's delivery row once `until(row)` holds (rows are polled: nothing else says so)."""
    conn = await asyncpg.connect(database_dsn(settings, SUPERUSER))
    try:
        deadline = time.monotonic() + timeout
        while True:
            row = await conn.fetchrow("select * from notifier.deliveries where subscription = $1 "
                                      "order by created_at desc limit 1", subscription)
            if row is not None and until(row):
                return row
            assert time.monotonic() < deadline, f"delivery of {subscription}: {dict(row) if row else None}"
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def test_an_approval_needed_reaches_its_subscriber_once_as_a_signed_cloudevent(scenario):
    name = f"approvals-{scenario.service}"[:60]
    subscribe(scenario.settings, {"name": name, "url": f"http://127.0.0.1:{PORT}/hook",
                                  "kinds": ["approval_needed"], "services": [scenario.service], "envs": ["prod"]})
    async with Receiver().listening() as receiver:
        await scenario.apply_pipeline()
        await scenario.promote_to_staging("1.0.0", author="alice")
        pending = await scenario.wait("gate.pending", env="prod", version="1.0.0")
        headers, body = await receiver.next()
        delivered = await delivery(scenario.settings, name, lambda row: row["state"] == "delivered")

    assert headers["content-type"].startswith("application/cloudevents+json")
    assert verify_signature(SECRET, headers[SIGNATURE_HEADER.lower()], body, now=int(time.time()))
    assert not verify_signature(b"another secret", headers[SIGNATURE_HEADER.lower()], body, now=int(time.time()))
    event = parse_event(body)
    assert (event.id, event.envelope.type, event.data.env) == (pending.id, "gate.pending", "prod")
    assert headers["x-promote-delivery"] == delivered["delivery_id"] and delivered["attempts"] == 1
    ids = [parse_event(b).id for _, b in receiver.requests]
    assert len(ids) == len(set(ids)) and ids.count(pending.id) == 1  # each event once, none for dev..staging


async def test_a_receiver_down_then_up_gets_the_message_when_it_is_back_in_slack_s_format(scenario):
    name = f"slack-{scenario.service}"[:60]
    subscribe(scenario.settings, {"name": name, "url": f"http://127.0.0.1:{PORT}/hook", "format": "slack",
                                  "kinds": ["approval_needed"], "services": [scenario.service]})
    await scenario.apply_pipeline()
    await scenario.promote_to_staging("1.0.0", author="alice")
    await scenario.wait("gate.pending", env="prod", version="1.0.0")
    failed = await delivery(scenario.settings, name, lambda row: row["attempts"] >= 1)
    assert failed["state"] == "pending" and "ConnectError" in failed["last_error"]
    async with Receiver().listening() as receiver:
        headers, body = await receiver.next(timeout=30)
        delivered = await delivery(scenario.settings, name, lambda row: row["state"] == "delivered")
    assert headers["content-type"] == "application/json"
    text = json.loads(body)["text"]
    assert text.startswith(f"[approval needed] {scenario.service} 1.0.0 in prod is waiting for approval")
    assert verify_signature(SECRET, headers[SIGNATURE_HEADER.lower()], body, now=int(time.time()))
    assert delivered["attempts"] >= 2


async def test_a_receiver_that_keeps_failing_is_given_up_to_the_dead_letter_topic_with_the_reason(scenario):
    name = f"silent-{scenario.service}"[:60]
    subscribe(scenario.settings, {"name": name, "url": f"http://127.0.0.1:{PORT}/hook", "max_attempts": 2,
                                  "kinds": ["approval_needed"], "services": [scenario.service]})
    start = await dlq_end(scenario.settings)
    receiver = Receiver()
    receiver.status = 503
    async with receiver.listening():
        await scenario.apply_pipeline()
        await scenario.promote_to_staging("1.0.0", author="alice")
        pending = await scenario.wait("gate.pending", env="prod", version="1.0.0")
        given_up = await delivery(scenario.settings, name, lambda row: row["state"] == "given_up")
    assert (given_up["attempts"], given_up["last_error"]) == (2, "HTTP 503") and len(receiver.requests) == 2
    letters = await dead_letters(scenario.settings, start,
                                 lambda got: any(h.get("dlq.subscription") == name for _, h in got))
    (record, headers), = [(r, h) for r, h in letters if h.get("dlq.subscription") == name]
    assert headers["dlq.consumer"] == "notifier" and headers["dlq.event-id"] == pending.id
    assert headers["dlq.reason"] == f"webhook {name} gave up after 2 attempt(s): HTTP 503"
    assert parse_event(record.value).id == pending.id


async def test_a_dead_letter_about_a_service_reaches_its_subscriber_as_a_cloudevent_without_its_bytes(scenario):
    name = f"dlq-{scenario.service}"[:60]
    subscribe(scenario.settings, {"name": name, "url": f"http://127.0.0.1:{PORT}/hook", "kinds": ["dead_letter"],
                                  "services": [scenario.service]})
    await scenario.apply_pipeline()
    path, digest = scenario.build("1.0.0")
    envelope = new_event(scenario.build_completed("1.0.0", path, digest), source="/tests").to_bytes().decode()
    poison = envelope.replace('"author":"alice"', '"author":""').encode()  # invalid data, naming the service
    receiver = Receiver()
    async with receiver.listening():
        await scenario.publisher.publish_raw(topics.BUILDS, poison, key=scenario.service.encode())
        async with asyncio.timeout(30):
            while len(receiver.requests) < 2:  # from intake and from the ledger (both read builds)
                receiver.arrived.clear()
                await receiver.arrived.wait()
        told = [json.loads(body) for _, body in receiver.requests]
    assert {sent["data"]["consumer"] for sent in told} == {"intake", "ledger"}
    for headers, body in receiver.requests:
        assert verify_signature(SECRET, headers[SIGNATURE_HEADER.lower()], body, int(time.time()))
        assert headers["content-type"].startswith("application/cloudevents+json") and poison not in body
    for sent in told:
        assert sent["type"] == "dead_letter.recorded" and sent["data"]["service"] == scenario.service
        assert sent["data"]["topic"] == topics.BUILDS and "invalid build.completed data: author" in \
            sent["data"]["reason"]
        assert sent["data"]["size"] == len(poison)
