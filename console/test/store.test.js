// The grid's store and the pipeline layout, under Node's own test runner (tests/unit/test_console.py runs it).
import assert from "node:assert/strict";
import { test } from "node:test";
import { Store, emptyCell } from "../src/store.js";
import { layout } from "../src/service.js";

function store(rows) {
  const updates = [];
  const s = new Store((change) => updates.push(change));
  for (const row of rows) s.rows.set(row.service, row);
  s.loaded = true;
  s.total = rows.length;
  return { s, updates };
}

const row = (service, environments = ["dev", "prod"]) => ({
  service, environments, cells: Object.fromEntries(environments.map((env) => [env, emptyCell()])),
});

test("an environment change sets the cell's release, state and since", () => {
  const { s, updates } = store([row("pay")]);
  const change = { kind: "environment", service: "pay", env: "dev", version: "1.0.0", digest: "sha256:ab", state: "deploying", time: "2026-12-04T01:00:00+00:00" };
  assert.equal(s.apply(change), true);
  assert.deepEqual(s.rows.get("pay").cells.dev, { ...emptyCell(), version: "1.0.0", digest: "sha256:ab", state: "deploying", since: change.time });
  assert.deepEqual(updates, [change]);
});

test("a change older than what the cell shows is ignored", () => {
  const { s } = store([row("pay")]);
  s.apply({ kind: "environment", service: "pay", env: "dev", version: "2.0.0", digest: "d2", state: "verified", time: "2026-12-04T02:00:00+00:00" });
  assert.equal(s.apply({ kind: "environment", service: "pay", env: "dev", version: "1.0.0", digest: "d1", state: "deploying", time: "2026-12-04T01:00:00+00:00" }), false);
  assert.equal(s.rows.get("pay").cells.dev.version, "2.0.0");
});

test("a release waits at a gate until it passes", () => {
  const { s } = store([row("pay")]);
  const base = { kind: "waiting", service: "pay", env: "prod", version: "1.0.0", time: "t" };
  s.apply({ ...base, outcome: "pending", reasons: ["waiting for 1 approval"] });
  s.apply({ ...base, outcome: "pending", reasons: ["waiting for 1 approval", "change window closed"] });
  assert.deepEqual(s.rows.get("pay").cells.prod.waiting, [{ version: "1.0.0", outcome: "pending", reasons: ["waiting for 1 approval", "change window closed"] }]);
  s.apply({ ...base, outcome: "passed", reasons: [] });
  assert.deepEqual(s.rows.get("pay").cells.prod.waiting, []);
});

test("drift resolved returns a drifted cell to verified; pruned empties it", () => {
  const { s } = store([row("pay")]);
  s.apply({ kind: "environment", service: "pay", env: "dev", version: "1", digest: "d", state: "drifted", time: "t1", drift: { differences: ["x"] } });
  assert.deepEqual(s.rows.get("pay").cells.dev.drift, { differences: ["x"] });
  s.apply({ kind: "drift_resolved", service: "pay", env: "dev", version: "1", time: "t2" });
  assert.equal(s.rows.get("pay").cells.dev.state, "verified");
  assert.equal(s.rows.get("pay").cells.dev.drift, null);
  s.apply({ kind: "pruned", service: "pay", env: "dev", time: "t3" });
  assert.deepEqual(s.rows.get("pay").cells.dev, emptyCell());
});

test("a change for a service or environment not loaded asks for a reload instead", () => {
  const { s } = store([row("pay")]);
  let reloads = 0;
  s.reloadSoon = () => { reloads += 1; };
  assert.equal(s.apply({ kind: "environment", service: "new", env: "dev", version: "1", digest: "d", state: "deploying", time: "t" }), false);
  assert.equal(s.apply({ kind: "environment", service: "pay", env: "qa", version: "1", digest: "d", state: "deploying", time: "t" }), false);
  assert.equal(reloads, 2);
});

test("columns follow the pipelines' order; an environment only some have goes where those place it", () => {
  const { s } = store([row("a", ["dev", "test", "prod"]), row("b", ["dev", "staging", "prod"]), row("c", ["dev", "prod", "prod-eu"])]);
  assert.deepEqual(s.columns(), ["dev", "test", "staging", "prod", "prod-eu"]);
});

test("the pipeline graph puts each environment one column after the latest it comes after (fan-out, fan-in)", () => {
  const graph = [
    { name: "dev", after: [], require: "all" },
    { name: "eu", after: ["dev"], require: "all" },
    { name: "us", after: ["dev"], require: "all" },
    { name: "prod", after: ["eu", "us"], require: "all" },
  ];
  const { place } = layout(graph);
  assert.deepEqual(Object.fromEntries(Object.entries(place).map(([name, at]) => [name, at.x > 0 ? Math.round(at.x / 256) : 0])),
    { dev: 0, eu: 1, us: 1, prod: 2 });
  assert.notEqual(place.eu.y, place.us.y);
});

test("a change leaves alone the row objects a load under way may share", () => {
  const shared = row("pay");
  const { s } = store([shared]);
  s.apply({ kind: "waiting", service: "pay", env: "prod", version: "1.0.0", outcome: "pending", reasons: ["r"], time: "t" });
  assert.deepEqual(shared.cells.prod, emptyCell());
  assert.equal(s.rows.get("pay").cells.prod.waiting.length, 1);
});

test("a service's page shows the live cell over what the ledger answered a moment before", async () => {
  const { withLive } = await import("../src/service.js");
  const status = { service: "pay", graph: [], environments: { prod: { ...emptyCell(), state: "canary 1/3 at 10%", config_version: "c" } } };
  const shown = withLive(status, { prod: { ...emptyCell(), state: "verified", version: "1.0.1" } });
  assert.equal(shown.environments.prod.state, "verified");
  assert.equal(shown.environments.prod.config_version, "c");
  assert.equal(withLive(status, undefined), status);
});
