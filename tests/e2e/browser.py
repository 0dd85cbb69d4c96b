"""A real browser for the console's tests: Debian's Chromium (installed by the stack when missing) driven by
Playwright, with an empty user-data directory per test and the flags this machine needs (without the
background-networking ones Chromium's own connections are refused here and it stalls).

PROMOTE_SCREENSHOTS=DIR keeps the screenshots the tests take (docs/img holds the ones the docs show).
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import BrowserContext, Page, async_playwright

from devstack import console

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1440, "height": 900}


@asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[BrowserContext]:
    """Chromium with `profile` (an empty directory) as its user-data dir."""
    executable = console.chromium()
    profile.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(executable), headless=True, args=FLAGS, viewport=VIEWPORT,
            chromium_sandbox=False, accept_downloads=True)
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            await context.close()


async def sign_in_with_token(page: Page, base_url: str, token: str) -> None:
    """Open the console and sign in with an API token, as a person pastes one."""
    await page.goto(f"{base_url}/console/")
    await page.get_by_label("API token").fill(token)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await page.get_by_role("button", name="Sign out").wait_for()


async def shot(page: Page, name: str) -> None:
    """A screenshot for the docs, when PROMOTE_SCREENSHOTS names where to keep them."""
    where = os.environ.get("PROMOTE_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(where) / f"console-{name}.png"))
