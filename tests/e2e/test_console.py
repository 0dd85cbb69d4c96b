"""The operator console in a real browser (Debian's Chromium, driven by Playwright) against the real stack: a
promotion arrives live, an approver approves it and sees prod change, the author is told why they cannot, a
rollback from the console, a canary paused, resumed and promoted now, a release's timeline, dead letters inspected, and the live connection's loss and
return. (Sign-in through Keycloak's code flow with
PKCE is in tests/e2e/test_oidc.py, beside the provider it needs.)"""

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from playwright.async_api import TimeoutError as PlaywrightTimeout
from playwright.async_api import expect

import devstack
from cli import api
from tests.e2e.browser import chromium, shot, sign_in_with_token
from shared.contracts import topics
from tests.e2e.support import admin_token, api_token, dead_letters, dlq_end
from tests.e2e.test_canaries import canary
from tests.e2e.test_strategies import load, release, router_port

pytestmark = pytest.mark.e2e


async def in_grid(service: str) -> None:
    """Until the ledger has projected the service's pipeline (the grid lists it)."""
    async with httpx.AsyncClient(timeout=10, headers={"Authorization": f"Bearer {admin_token()}"}) as client:
        for _ in range(300):
            answer = (await client.get(f"{api.api_url()}/v1/grid", params={"search": service})).json()
            if answer["total"]:
                return
            await asyncio.sleep(0.1)
    pytest.fail(f"{service} never appeared in the grid")


def cell(page, service: str, env: str):
    return page.locator(f'[data-cell="{service}/{env}"]')


async def grid_loads(page) -> int:
    """How many times the page has fetched the grid (a change that came live needs none)."""
    return await page.evaluate("performance.getEntriesByType('resource').filter(e => e.name.includes('/v1/grid')).length")


async def download_bundle(page, env: str) -> dict:
    """The evidence bundle the timeline's button downloads (the ledger signs a checkpoint every few seconds: until
    one covers the release the API answers 409 and the page says so; the button is pressed again)."""
    for _ in range(30):
        try:
            async with page.expect_download(timeout=3000) as started:
                await page.get_by_role("button", name=f"Evidence bundle for {env}").click()
            return json.loads(Path(await (await started.value).path()).read_text())
        except PlaywrightTimeout:
            await expect(page.get_by_role("alert").first).to_contain_text("checkpoint")
    pytest.fail("no evidence bundle was downloaded")


async def test_a_promotion_arrives_live_and_an_approval_sends_it_to_prod(scenario, tmp_path):
    await scenario.apply_pipeline()
    await in_grid(scenario.service)
    bob = api_token("bob", "approver:prod", "viewer:*")
    async with chromium(tmp_path / "profile") as browser:
        page = await browser.new_page()
        await sign_in_with_token(page, api.api_url(), bob)
        await expect(page.locator("[data-live]")).to_have_attribute("data-live", "live")
        await page.get_by_label("Search services").fill(scenario.service)
        await expect(cell(page, scenario.service, "dev")).to_contain_text("nothing deployed")
        loads = await grid_loads(page)

        await scenario.promote_to_staging("1.0.0")
        await expect(cell(page, scenario.service, "staging")).to_contain_text("1.0.0")
        await expect(cell(page, scenario.service, "staging")).to_contain_text("verified")
        await expect(cell(page, scenario.service, "prod")).to_contain_text("waiting: 1.0.0")
        assert await grid_loads(page) == loads  # the cells changed from the live feed, not by loading again
        await shot(page, "promotion-live")  # (docs/img/console-grid.png is of 2,010 services: bench/console.py)

        await page.get_by_role("link", name=scenario.service, exact=True).click()
        approve = page.get_by_role("button", name="Approve 1.0.0 for prod")
        await expect(approve).to_have_attribute("aria-disabled", "false")
        await approve.focus()  # by keyboard, as anyone without a mouse does
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("status").filter(has_text="approval of 1.0.0 recorded as bob")).to_be_visible()
        await expect(page.locator('[data-env="prod"]')).to_contain_text("verified", timeout=60_000)
        await shot(page, "service")

        await page.locator('[data-env="prod"]').click()
        await page.get_by_role("link", name="1.0.0", exact=True).first.click()  # the release's timeline
        timeline = page.locator("ol.timeline")
        granted = timeline.locator("li").filter(has_text="approval.granted")
        await expect(granted).to_contain_text("approverbob")  # <dt>approver</dt><dd>bob</dd>
        await expect(timeline.locator("li").filter(has_text="verification.passed").filter(has_text="prod")).to_have_count(1)
        await expect(page.get_by_role("status").filter(has_text="Hash chain intact")).to_be_visible()
        await shot(page, "timeline")
        bundle = await download_bundle(page, "prod")
        assert (bundle["service"], bundle["env"], bundle["version"]) == (scenario.service, "prod", "1.0.0")
    verified = await scenario.wait("verification.passed", env="prod", version="1.0.0")
    granted = scenario.seen("approval.granted", env="prod", version="1.0.0")
    assert [event.data.approver for event in granted] == ["bob"] and verified.data.digest == granted[0].data.digest


async def test_the_author_is_refused_and_told_the_rule_and_a_viewer_why_they_cannot_roll_back(scenario, tmp_path):
    await scenario.apply_pipeline()
    await scenario.promote_to_staging("2.0.0", author="alice")
    await scenario.wait("gate.pending", env="prod", version="2.0.0")
    alice = api_token("alice", "approver:prod", "viewer:*")
    async with chromium(tmp_path / "profile") as browser:
        page = await browser.new_page()
        await sign_in_with_token(page, api.api_url(), alice)
        await page.goto(f"{api.api_url()}/console/#/services/{scenario.service}")
        approve = page.get_by_role("button", name="Approve 2.0.0 for prod")
        await expect(approve).to_have_attribute("aria-disabled", "true")
        reason = page.locator(f"#{await approve.get_attribute('aria-describedby')}")
        await expect(reason).to_have_text("you are the author of this release (alice): this environment's approvals "
                                          "must come from someone else")
        await approve.click(force=True)  # refused in the page: nothing is sent (Playwright waits for an enabled one)
        reject = page.get_by_role("button", name="Reject 2.0.0 for prod")
        await expect(reject).to_have_attribute("aria-disabled", "false")  # rejecting one's own release is allowed

        await page.locator('[data-env="staging"]').click()
        rollback = page.get_by_role("button", name="Roll back staging")
        await expect(rollback).to_have_attribute("aria-disabled", "true")
        await expect(page.locator(f"#{await rollback.get_attribute('aria-describedby')}")).to_have_text(
            "this needs the promoter role in staging (your roles: approver:prod, viewer:*)")
        await shot(page, "refused")
    await asyncio.sleep(0)  # the page sent nothing: no approval is on the bus, and the release still waits
    assert scenario.seen("approval.granted", version="2.0.0") == []
    assert scenario.seen("rollback.requested") == []


async def test_rolling_back_from_the_console_returns_the_environment_to_its_last_verified_release(scenario, tmp_path):
    await scenario.apply_pipeline()
    await scenario.promote_to_staging("1.0.0")
    await scenario.promote_to_staging("1.1.0")
    carol = api_token("carol", "promoter:*")
    async with chromium(tmp_path / "profile") as browser:
        page = await browser.new_page()
        page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await sign_in_with_token(page, api.api_url(), carol)
        await page.goto(f"{api.api_url()}/console/#/services/{scenario.service}")
        await page.locator('[data-env="staging"]').click()
        await expect(page.locator('[data-env="staging"]')).to_contain_text("1.1.0")
        await page.get_by_role("button", name="Roll back staging").click()
        await expect(page.get_by_role("status").filter(has_text="rolled back to 1.0.0")).to_be_visible(timeout=60_000)
        await expect(page.locator('[data-env="staging"]')).to_contain_text("1.0.0")
    completed = await scenario.wait("rollback.completed", env="staging")
    assert completed.data.version == "1.0.0"
    assert [e.data.requested_by for e in scenario.seen("rollback.requested", env="staging")] == ["carol"]


async def test_dead_letters_are_inspected_and_only_an_admin_may_resubmit_them(scenario, tmp_path):
    start = await dlq_end(scenario.settings)
    poison = b'{"not": "an event", "service": "%s"}' % scenario.service.encode()
    await scenario.publisher.publish_raw(topics.BUILDS, poison, key=scenario.service.encode())
    await dead_letters(scenario.settings, start, lambda got: any(h["dlq.consumer"] == "intake" for _, h in got))
    viewer = api_token("erin", "viewer:*")
    async with chromium(tmp_path / "profile") as browser:
        page = await browser.new_page()
        await sign_in_with_token(page, api.api_url(), viewer)
        await page.goto(f"{api.api_url()}/console/#/dead-letters")
        row = page.get_by_role("row").filter(has_text="promotion.builds").filter(has_text="intake").first  # newest
        await expect(row).to_contain_text("invalid envelope")
        await row.get_by_role("button", name="Inspect").click()
        await expect(page.locator("pre")).to_have_text(poison.decode())
        resubmit = row.get_by_role("button", name="Resubmit")
        await expect(resubmit).to_have_attribute("aria-disabled", "true")
        await expect(page.locator(f"#{await resubmit.get_attribute('aria-describedby')}")).to_have_text(
            "resubmitting needs the admin role in every environment (your roles: viewer:*)")

        admin = await browser.new_page()  # an admin may try, and is told why a build may not be resubmitted
        admin.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await sign_in_with_token(admin, api.api_url(), admin_token())
        await admin.goto(f"{api.api_url()}/console/#/dead-letters")
        row = admin.get_by_role("row").filter(has_text="promotion.builds").filter(has_text="intake").first
        await row.get_by_role("button", name="Resubmit").click()
        await expect(row.get_by_role("alert")).to_contain_text("came from promotion.builds, which only its producer")


async def test_a_canary_is_paused_resumed_and_promoted_now_from_the_console(scenario, tmp_path):
    await scenario.apply_pipeline(canary("[10, 50, 100]", "10s"))
    await release(scenario, "1.0.0", "staging")
    port = await router_port(scenario, "staging")
    ada = api_token("ada", "approver:staging")
    async with chromium(tmp_path / "profile") as browser, load(port):
        page = await browser.new_page()
        page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await sign_in_with_token(page, api.api_url(), ada)
        await page.goto(f"{api.api_url()}/console/#/services/{scenario.service}")
        path, digest = scenario.build("1.0.1")
        await scenario.send(scenario.build_completed("1.0.1", path, digest))
        node = page.locator('[data-env="staging"]')
        await expect(node).to_contain_text("canary 1/3 at 10%", timeout=60_000)
        await expect(page.get_by_role("button", name="Resume canary")).to_have_attribute("aria-disabled", "true")
        await page.get_by_role("button", name="Pause canary").click()
        await expect(page.get_by_role("status").filter(has_text="pause: deployment.progressed")).to_be_visible()
        await expect(node).to_contain_text("canary paused at 10%")
        await shot(page, "canary")
        await page.get_by_role("button", name="Resume canary").click()
        await expect(page.get_by_role("status").filter(has_text="resume: deployment.progressed")).to_be_visible()
        await page.get_by_role("button", name="Promote now").click()
        await expect(page.get_by_role("status").filter(has_text="promote: verification.passed")).to_be_visible(
            timeout=60_000)
        await expect(node).to_contain_text("verified")
    passed = await scenario.wait("verification.passed", env="staging", version="1.0.1")
    assert passed.data.checks["promoted_by"] == "ada"
    assert [(e.data.state, e.data.by) for e in scenario.seen("deployment.progressed", version="1.0.1")][:3] == \
        [("step", None), ("paused", "ada"), ("resumed", "ada")]


async def test_the_console_says_when_its_live_connection_is_lost_and_catches_up_once_it_is_back(scenario, tmp_path):
    await scenario.apply_pipeline()
    await in_grid(scenario.service)
    viewer = api_token("dana", "viewer:*")
    async with chromium(tmp_path / "profile") as browser:
        page = await browser.new_page()
        await sign_in_with_token(page, api.api_url(), viewer)
        await page.get_by_label("Search services").fill(scenario.service)
        live = page.locator("[data-live]")
        await expect(live).to_have_attribute("data-live", "live")
        await asyncio.to_thread(devstack.stop_service, devstack.API)
        try:
            await expect(live).to_have_attribute("data-live", "retrying")
            await expect(live).to_contain_text("connection lost, retrying in")
            await shot(page, "connection-lost")
            await scenario.promote_to_staging("1.0.0")  # while the console hears nothing
        finally:
            await asyncio.to_thread(devstack.start_service, devstack.API)
        await asyncio.to_thread(devstack.wait_services_ready, 60, names=[devstack.API])
        await expect(live).to_have_attribute("data-live", "live", timeout=60_000)
        await expect(cell(page, scenario.service, "staging")).to_contain_text("verified")
