"""The console at scale: N services x 4 environments seeded through the real pipeline (builds published to
Kafka, carried by intake, gates and the deployer, projected by the ledger: nothing written to the database),
then measured in Debian's Chromium driven by Playwright (tests/e2e/browser.py).

- First useful paint: a fresh page signed in (the token in sessionStorage), from navigation start until a
  cell with a release is in the page, `--loads` times; and until every service is loaded. Baseline in the same
  run: the API's own part, GET /v1/grid of the first page (200 services) by httpx.
- Live update: builds for the `--watched` services shown (search narrows the grid to them; the feed still
  carries every service), `--rounds` times; for each deployment event of theirs, the time from its append to
  Kafka (the record's LogAppendTime) until its cell shows the new state in the page (DOM mutation) and until
  the next frame after it. Baseline in the same run: the same events read from /v1/live by httpx (the API's
  part of the path, with no browser).

Targets (issue 13): first paint < 1 s, live update p99 < 250 ms. Seeding 2,000 services takes a few minutes.

    .venv/bin/python -m bench.console --services 2000 --json /tmp/console.json [--screenshots docs/img]
"""

import argparse
import asyncio
import json
import time
from pathlib import Path

import asyncpg
import httpx

import devstack
from bench import common
from bench.common import console
from shared.contracts import topics
from shared.contracts.events import new_event
from shared.contracts.pipeline import PipelineDefinition, parse_pipeline
from shared.platform.client import Publisher
from shared.platform.credentials import READER, database_dsn
from cli.ops import pipeline_applied
from tests.e2e.browser import chromium

PIPELINE = """service: template
environments:
  - {name: dev, driver: noop}
  - {name: test, driver: noop}
  - {name: staging, driver: noop}
  - {name: prod, driver: noop, gates: [{approval: {min: 1, not_author: true}}]}
"""
STATES = {"deployment.started": "deploying", "deployment.succeeded": "deployed", "verification.passed": "verified"}
PAINT_TARGET_MS, LIVE_TARGET_MS = 1000.0, 250.0

WATCH_CELLS = """
window.__mutations = [];
new MutationObserver((mutations) => {
  const at = Date.now();
  const cells = new Set();
  for (const m of mutations) {
    const node = m.target.nodeType === 3 ? m.target.parentElement : m.target;
    const cell = node && node.closest && node.closest('[data-cell]');
    if (cell) cells.add(cell);
  }
  const seen = [...cells].map((cell) => [cell.dataset.cell, cell.textContent, at]);
  if (!seen.length) return;
  requestAnimationFrame(() => { const frame = Date.now(); for (const s of seen) window.__mutations.push([...s, frame]); });
}).observe(document.querySelector('table.grid'), { subtree: true, childList: true, characterData: true });
"""
FIRST_PAINT = """
(() => {
  const observer = new MutationObserver(() => {
    if (!window.__firstPaint && document.querySelector('[data-cell] .version')) window.__firstPaint = performance.now();
    const count = document.querySelector('.count');
    if (!window.__allLoaded && count && !count.textContent.includes('loading') && document.querySelector('[data-cell]'))
      window.__allLoaded = performance.now();
  });
  document.addEventListener('DOMContentLoaded', () => observer.observe(document.body, { subtree: true, childList: true, characterData: true }));
})();
"""


async def seed(rid: str, count: int, publisher: Publisher, folder: Path) -> tuple[list[str], float]:
    """Pipelines and a first build for `count` services, carried to staging and waiting at prod's approval."""
    services = [f"cs-{rid}-{i:04d}" for i in range(count)]
    template = parse_pipeline(PIPELINE).model_dump(mode="json")
    t0 = time.monotonic()
    for service in services:
        await publisher.publish(new_event(pipeline_applied(
            PipelineDefinition.model_validate({**template, "service": service}), "bench"), source="/bench"))
    console.print(f"seed: {count} pipelines stored in {await common.wait_pipelines(services):.1f} s")
    for service in services:
        await publisher.publish(common.build_event(service, "1.0.0", folder))
    conn = await asyncpg.connect(database_dsn(common.SETTINGS, READER))
    try:
        while True:
            verified = await conn.fetchval("select count(*) from ledger.environments where service like $1 "
                                           "and state = 'verified'", f"cs-{rid}-%")
            waiting = await conn.fetchval("select count(*) from ledger.waiting where service like $1", f"cs-{rid}-%")
            console.print(f"seed: {verified}/{3 * count} environments verified, {waiting}/{count} waiting at prod "
                          f"({time.monotonic() - t0:.0f} s)")
            if verified >= 3 * count and waiting >= count:
                return services, time.monotonic() - t0
            await asyncio.sleep(5)
    finally:
        await conn.close()


async def first_paint(context, url: str, token: str, loads: int) -> dict:
    paints, loaded = [], []
    for _ in range(loads):
        page = await context.new_page()
        await page.add_init_script(f"sessionStorage.setItem('promote.token', {json.dumps(token)});" + FIRST_PAINT)
        await page.goto(f"{url}/console/")
        await page.wait_for_function("() => window.__firstPaint && window.__allLoaded", timeout=60_000)
        paints.append(await page.evaluate("window.__firstPaint"))
        loaded.append(await page.evaluate("window.__allLoaded"))
        await page.close()
    return {"first_paint_ms": common.percentiles(paints), "all_loaded_ms": common.percentiles(loaded)}


async def api_first_page(url: str, token: str, loads: int) -> dict:
    took = []
    async with httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {token}"}) as http:
        for _ in range(loads):
            t0 = time.perf_counter()
            (await http.get(f"{url}/v1/grid", params={"limit": 200})).raise_for_status()
            took.append((time.perf_counter() - t0) * 1000)
    return common.percentiles(took)


async def follow_sse(url: str, token: str, services: list[str], arrived: dict[str, float], ready: asyncio.Event):
    """The baseline: /v1/live for the watched services, each change's arrival (ms since the epoch) by event id."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as http:
        async with http.stream("GET", f"{url}/v1/live", params={"service": services},
                               headers={"Authorization": f"Bearer {token}"}) as response:
            async for line in response.aiter_lines():
                if line.startswith(": following"):
                    ready.set()
                elif line.startswith("data: {"):
                    change = json.loads(line[6:])
                    arrived.setdefault(change["event_id"], time.time() * 1000)


def deployment_of(watched: set[str]):
    def keep(record):
        event = json.loads(record.value)
        data = event.get("data", {})
        if data.get("service") in watched and event.get("type") in STATES:
            return {"id": event["id"], "type": event["type"], "service": data["service"], "env": data["env"],
                    "version": data["version"], "appended_ms": record.timestamp}
        return None
    return keep


def match(events: list[dict], mutations: list[list]) -> tuple[list[float], list[float], int]:
    """Per event: the first mutation of its cell, at or after its append, that shows its version and state."""
    dom, frame, superseded = [], [], 0
    for event in events:
        key, state = f"{event['service']}/{event['env']}", STATES[event["type"]]
        found = next((m for m in mutations if m[0] == key and m[2] >= event["appended_ms"] - 1
                      and event["version"] in m[1] and state in m[1].split(event["version"], 1)[1]), None)
        if found is None:
            superseded += 1  # a later change reached the cell before the page rendered this one
            continue
        dom.append(found[2] - event["appended_ms"])
        frame.append(found[3] - event["appended_ms"])
    return dom, frame, superseded


async def live_updates(context, url: str, token: str, rid: str, services: list[str], watched_count: int,
                       rounds: int, publisher: Publisher, folder: Path) -> dict:
    watched = services[:watched_count]
    page = await context.new_page()
    await page.add_init_script(f"sessionStorage.setItem('promote.token', {json.dumps(token)});")
    await page.goto(f"{url}/console/")
    await page.wait_for_function("() => document.querySelector('.count') && !document.querySelector('.count')"
                                 ".textContent.includes('loading')", timeout=60_000)
    await page.locator('[data-live="live"]').wait_for()
    await page.get_by_label("Search services").fill(f"cs-{rid}-{'0' * (4 - len(str(watched_count - 1)))}")
    await page.locator(f'[data-cell="{watched[-1]}/dev"]').wait_for()
    await page.evaluate(WATCH_CELLS)
    arrived: dict[str, float] = {}
    ready = asyncio.Event()
    sse = asyncio.create_task(follow_sse(url, token, watched, arrived, ready))
    await asyncio.wait_for(ready.wait(), 30)
    async with common.Observer([topics.DEPLOYMENTS], keep=deployment_of(set(watched))) as observer:
        for round_ in range(rounds):
            version = f"1.1.{round_}"
            for service in watched:
                await publisher.publish(common.build_event(service, version, folder))
            deadline = time.monotonic() + 120
            while sum(1 for _, e in observer.seen if e["version"] == version and e["env"] == "staging"
                      and e["type"] == "verification.passed") < len(watched):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"round {round_}: staging not verified for every watched service")
                await asyncio.sleep(0.2)
            console.print(f"live: round {round_ + 1}/{rounds} carried to staging")
        await asyncio.sleep(1.0)  # the last renders and the SSE client's last reads
        events = [e for _, e in observer.seen]
    mutations = await page.evaluate("window.__mutations")
    sse.cancel()
    await asyncio.gather(sse, return_exceptions=True)
    dom, frame, superseded = match(events, mutations)
    baseline = [arrived[e["id"]] - e["appended_ms"] for e in events if e["id"] in arrived]
    await page.close()
    return {"events": len(events), "superseded_before_render": superseded, "dom_ms": common.percentiles(dom),
            "frame_ms": common.percentiles(frame), "baseline_sse_ms": common.percentiles(baseline)}


async def run(args) -> dict:
    url, token = common.SETTINGS.api_url, devstack.admin_token_file().read_text().strip()
    rid = common.run_id("cs")
    folder = common.drop_folder(f"bench-{rid}-")
    async with Publisher(common.SETTINGS) as publisher:
        services, seeded_s = await seed(rid, args.services, publisher, folder)
        console.print(f"seed: {len(services)} services x 4 environments in {seeded_s:.0f} s")
        async with chromium(Path(folder) / "profile") as context:
            paint = await first_paint(context, url, token, args.loads)
            api = await api_first_page(url, token, args.loads)
            live = await live_updates(context, url, token, rid, services, args.watched, args.rounds, publisher, folder)
            if args.screenshots:
                page = await context.new_page()
                await page.add_init_script(f"sessionStorage.setItem('promote.token', {json.dumps(token)});")
                await page.goto(f"{url}/console/")  # the whole grid, as an operator first sees it
                await page.wait_for_function("() => !document.querySelector('.count').textContent.includes('loading')")
                Path(args.screenshots).mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=str(Path(args.screenshots) / "console-grid.png"))
    total = await grid_total(url, token)
    return {"machine": common.machine(), "services": args.services, "services_in_grid": total,
            "seed_s": round(seeded_s, 1), "loads": args.loads, "paint": paint, "baseline_api_first_page_ms": api,
            "live": live, "targets": {"first_paint_ms": PAINT_TARGET_MS, "live_p99_ms": LIVE_TARGET_MS}}


async def grid_total(url: str, token: str) -> int:
    async with httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {token}"}) as http:
        return (await http.get(f"{url}/v1/grid", params={"limit": 1})).json()["total"]


def report(result: dict) -> None:
    paint, live = result["paint"], result["live"]
    console.print(f"grid: {result['services_in_grid']} services in all ({result['services']} seeded in "
                  f"{result['seed_s']} s)")
    console.print(f"first useful paint: p50 {paint['first_paint_ms']['p50']} ms, max {paint['first_paint_ms']['max']} "
                  f"ms (target < {PAINT_TARGET_MS:.0f}); every service loaded: p50 {paint['all_loaded_ms']['p50']} ms;"
                  f" baseline GET /v1/grid (200): p50 {result['baseline_api_first_page_ms']['p50']} ms")
    console.print(f"live, Kafka append -> cell in the page: p50 {live['dom_ms']['p50']} ms, p99 {live['dom_ms']['p99']}"
                  f" ms; -> next frame: p50 {live['frame_ms']['p50']} ms, p99 {live['frame_ms']['p99']} ms (target "
                  f"p99 < {LIVE_TARGET_MS:.0f}); baseline -> SSE client: p50 {live['baseline_sse_ms']['p50']} ms, "
                  f"p99 {live['baseline_sse_ms']['p99']} ms; {live['events']} events, "
                  f"{live['superseded_before_render']} superseded before a render")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--services", type=int, default=2000, help="services to seed (default 2000)")
    parser.add_argument("--loads", type=int, default=10, help="fresh page loads timed (default 10)")
    parser.add_argument("--watched", type=int, default=10, help="services whose cells are timed live (default 10)")
    parser.add_argument("--rounds", type=int, default=10, help="builds per watched service (default 10)")
    parser.add_argument("--screenshots", help="keep a screenshot of the grid here (console-grid.png)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    common.up()
    result = asyncio.run(run(args))
    report(result)
    common.write_json(args.json, result)


if __name__ == "__main__":
    main()
