// What the grid shows: every service's row, loaded from GET /v1/grid page by page, then kept current by the
// live feed's changes (the same fields the grid answers, so a change is applied where it belongs).
import { call } from "./api.js";

export const PAGE = 200; // the first page is painted before the rest arrives

export function emptyCell() {
  return { version: null, digest: null, state: "empty", since: null, drift: null, waiting: [] };
}

export class Store {
  constructor(onUpdate) {
    this.rows = new Map(); // service -> {service, environments, cells}
    this.total = 0;
    this.loaded = false;
    this.onUpdate = onUpdate;
    this.generation = 0;
    this.reloadTimer = null;
    this.during = null; // changes that arrived while a load was under way
    this.order = null;
  }

  // Loads every service: the first page is painted at once (on the first load), the rest follows in large
  // pages. Changes that arrive meanwhile are applied again on top of what was loaded (an older one is ignored).
  async load() {
    const generation = ++this.generation;
    this.during = [];
    const rows = new Map();
    let limit = PAGE;
    for (;;) {
      const page = await call(`/v1/grid?limit=${limit}&offset=${rows.size}`);
      if (generation !== this.generation) return; // a newer load replaced this one
      for (const row of page.services) rows.set(row.service, row);
      this.total = page.total;
      if (rows.size >= page.total || !page.services.length) break;
      if (!this.loaded) {
        this.rows = new Map(rows);
        this.onUpdate();
      }
      limit = 2000;
    }
    const during = this.during;
    this.during = null;
    this.rows = rows;
    this.order = null;
    this.loaded = true;
    for (const change of during) this.apply(change, false);
    this.onUpdate();
  }

  // A reload soon (many signals may ask for one at once: a new service, a break in the feed).
  reloadSoon() {
    clearTimeout(this.reloadTimer);
    this.reloadTimer = setTimeout(() => this.load().catch(() => {}), 250);
  }

  // One change from the live feed (services/api/live.py change_of); false if it needs a reload instead.
  apply(change, notify = true) {
    if (this.during && notify) this.during.push(change);
    const row = this.rows.get(change.service);
    if (!row || (change.env && !row.environments.includes(change.env))) {
      if (this.loaded && !this.during) this.reloadSoon(); // a service or environment not loaded yet
      return false;
    }
    const cells = row.cells;
    const cell = { ...(cells[change.env] || emptyCell()) }; // copies: a row may be shared with a load under way
    switch (change.kind) {
      case "environment":
        if (cell.since && change.time < cell.since) return false; // the grid already shows something newer
        Object.assign(cell, { version: change.version, digest: change.digest, state: change.state, since: change.time });
        cell.drift = change.state === "drifted" ? change.drift || cell.drift : null;
        break;
      case "waiting":
        cell.waiting = cell.waiting.filter((w) => w.version !== change.version);
        if (change.outcome !== "passed") {
          cell.waiting = [...cell.waiting, { version: change.version, outcome: change.outcome, reasons: change.reasons }];
        }
        break;
      case "drift_resolved":
        cell.drift = null;
        if (cell.state === "drifted") cell.state = "verified";
        break;
      case "pruned":
        Object.assign(cell, emptyCell());
        break;
      default:
        return false;
    }
    this.rows.set(change.service, { ...row, cells: { ...cells, [change.env]: cell } });
    if (notify) this.onUpdate(change);
    return true;
  }

  // Environment names in the order pipelines list them: one that only some pipelines have goes just before the
  // next one it precedes there (staging between test and prod), or just after the last it follows.
  columns() {
    if (this.order && this.loaded) return this.order;
    const order = [];
    for (const row of this.rows.values()) {
      let at = 0;
      let unplaced = [];
      for (const env of row.environments) {
        let found = order.indexOf(env);
        if (found < 0) {
          unplaced.push(env);
          continue;
        }
        if (unplaced.length) {
          order.splice(found, 0, ...unplaced);
          found += unplaced.length;
          unplaced = [];
        }
        at = found + 1;
      }
      order.splice(at, 0, ...unplaced);
    }
    this.order = order;
    return order;
  }
}
