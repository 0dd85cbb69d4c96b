"""The console's read side on the real stack: the grid of services × environments from the ledger's projections,
and the live feed of server-sent events fed from Kafka, followed with httpx while a release moves."""

import asyncio
import json

import httpx
import pytest

from cli import api
from tests.e2e.support import admin_token, api_token

pytestmark = pytest.mark.e2e


def headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def follow(service: str, token: str, seen: list[dict], ready: asyncio.Event) -> None:
    """Read /v1/live for `service` into `seen` until cancelled."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as client:
        async with client.stream("GET", f"{api.api_url()}/v1/live", params={"service": service},
                                 headers=headers(token)) as response:
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
            event = None
            async for line in response.aiter_lines():
                if line.startswith(": following"):
                    ready.set()
                elif line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: ") and event == "change":
                    seen.append(json.loads(line.removeprefix("data: ")))


async def until(seen: list[dict], predicate, timeout: float = 60) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            for change in seen:
                if predicate(change):
                    return change
            await asyncio.sleep(0.05)


async def test_the_live_feed_shows_a_release_moving_through_its_environments_as_it_happens(scenario):
    await scenario.apply_pipeline()
    seen: list[dict] = []
    ready = asyncio.Event()
    viewer = api_token(f"viewer-{scenario.service}", "viewer")
    task = asyncio.create_task(follow(scenario.service, viewer, seen, ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        await scenario.promote_to_staging("1.0.0")
        verified = await scenario.wait("verification.passed", env="staging", version="1.0.0")
        change = await until(seen, lambda c: c["env"] == "staging" and c.get("state") == "verified")
        pending = await until(seen, lambda c: c["env"] == "prod" and c["kind"] == "waiting")
    finally:
        task.cancel()
    assert change["event_id"] == verified.id and change["digest"] == verified.data.digest
    assert pending["outcome"] == "pending" and any("approval" in reason for reason in pending["reasons"])
    states = [c["state"] for c in seen if c["kind"] == "environment" and c["env"] == "dev"]
    assert states[:1] == ["deploying"] and states[-1] == "verified"
    assert {c["service"] for c in seen} == {scenario.service}  # only the service followed


async def test_the_grid_shows_every_environment_of_a_service_and_what_waits(scenario):
    await scenario.apply_pipeline()
    await scenario.promote_to_staging("1.0.0")
    await scenario.wait("gate.pending", env="prod", version="1.0.0")
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(100):  # the ledger projects asynchronously: until it has the prod verdict
            answer = (await client.get(f"{api.api_url()}/v1/grid", params={"search": scenario.service},
                                       headers=headers(admin_token()))).json()
            row = answer["services"][0]
            if row["cells"]["prod"]["waiting"]:
                break
            await asyncio.sleep(0.1)
    assert answer["total"] == 1 and row["service"] == scenario.service
    assert row["environments"] == ["dev", "test", "staging", "prod"]
    assert {env: cell["state"] for env, cell in row["cells"].items()} == \
        {"dev": "verified", "test": "verified", "staging": "verified", "prod": "empty"}
    assert row["cells"]["staging"]["version"] == "1.0.0" and row["cells"]["staging"]["since"]
    assert row["cells"]["prod"]["waiting"][0]["outcome"] == "pending"


async def test_the_live_feed_and_the_grid_need_a_token_and_bound_what_they_are_asked(scenario):
    async with httpx.AsyncClient(timeout=30) as client:
        for path in ("/v1/live", "/v1/grid"):
            refused = await client.get(f"{api.api_url()}{path}")
            assert refused.status_code == 401 and "no bearer token" in refused.json()["detail"]
        too_many = await client.get(f"{api.api_url()}/v1/live", headers=headers(admin_token()),
                                    params={"service": [f"s{i}" for i in range(501)]})
        assert too_many.status_code == 422 and "at most 500 services" in too_many.json()["detail"]
        too_long = await client.get(f"{api.api_url()}/v1/grid", headers=headers(admin_token()),
                                    params={"search": "x" * 64})
        assert too_long.status_code == 422
