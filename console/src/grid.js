// The grid: services x environments, each cell with its release (version, short digest), state, since when and
// what waits at its gates. Only the rows in view are in the page (a window over every service), so thousands of
// services scroll and update as fast as a few.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { ago, family, html, shortDigest } from "./ui.js";

const ROW_HEIGHT = 76; // px, as in style.css (.grid tbody tr)
const OVERSCAN = 8;

const FILTERS = {
  all: ["every service", () => true],
  waiting: ["waiting at a gate", (cells) => cells.some((c) => c.waiting.some((w) => w.outcome === "pending"))],
  busy: ["deploying or in canary", (cells) => cells.some((c) => family(c.state) === "busy")],
  failed: ["failed", (cells) => cells.some((c) => c.state === "failed" || c.waiting.some((w) => w.outcome === "failed"))],
  drifted: ["drifted", (cells) => cells.some((c) => c.state === "drifted")],
};

function Cell({ service, env, cell, now }) {
  if (!cell) return html`<td class="cell none" aria-label="not in this pipeline">—</td>`;
  const pending = [...new Map(cell.waiting.filter((w) => w.outcome !== "passed").map((w) => [w.version, w])).values()];
  const newest = pending[pending.length - 1];
  const more = pending.length - 1;
  return html`<td class=${`cell ${family(cell.state)}`} data-cell=${`${service}/${env}`}><div class="inner">
    ${cell.version
      ? html`<a class="version" href=${`#/services/${encodeURIComponent(service)}/releases/${encodeURIComponent(cell.version)}`}>
          ${cell.version}</a> <code class="digest" title=${cell.digest}>${shortDigest(cell.digest)}</code>
        <div><span class="state">${cell.state}</span> <time datetime=${cell.since} title=${cell.since}>${ago(cell.since, now)}</time></div>`
      : html`<span class="state">nothing deployed</span>`}
    ${newest && html`<div class=${`waiting ${newest.outcome}`} title=${pending.map((w) => `${w.version}: ${w.reasons.join("; ")}`).join("\n")}>
      ${newest.outcome === "failed" ? "stopped" : "waiting"}: ${newest.version} — ${newest.reasons[0] || newest.outcome}</div>`}
    ${more > 0 && html`<div class="waiting more">and ${more} more waiting</div>`}
  </div></td>`;
}

export function Grid({ store, tick }) {
  const [search, setSearch] = useState("");
  const [filter, setFilter] = useState("all");
  const [top, setTop] = useState(0);
  const [height, setHeight] = useState(800);
  const [now, setNow] = useState(Date.now());
  const viewport = useRef(null);

  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), 15_000);
    const resize = () => viewport.current && setHeight(viewport.current.clientHeight);
    resize();
    window.addEventListener("resize", resize);
    return () => { clearInterval(timer); window.removeEventListener("resize", resize); };
  }, []);

  const columns = store.columns();
  const rows = useMemo(() => {
    const words = search.trim().toLowerCase();
    const keep = FILTERS[filter][1];
    const all = [...store.rows.values()].filter((row) => (!words || row.service.includes(words))
      && keep(Object.values(row.cells)));
    return all.sort((a, b) => (a.service < b.service ? -1 : 1));
  }, [tick, search, filter]);

  const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - OVERSCAN);
  const last = Math.min(rows.length, Math.ceil((top + height) / ROW_HEIGHT) + OVERSCAN);
  const shown = rows.slice(first, last);

  return html`<section class="grid-view" aria-labelledby="grid-title">
    <div class="toolbar">
      <h1 id="grid-title">Releases</h1>
      <label>Search services <input type="search" value=${search} placeholder="name contains…"
        onInput=${(e) => { setSearch(e.currentTarget.value); viewport.current.scrollTop = 0; }} /></label>
      <label>Show <select value=${filter} onChange=${(e) => setFilter(e.currentTarget.value)}>
        ${Object.entries(FILTERS).map(([key, [label]]) => html`<option value=${key}>${label}</option>`)}
      </select></label>
      <span class="count" aria-live="polite">${rows.length} of ${store.total} services${store.loaded ? "" : " (loading…)"}</span>
    </div>
    <div class="viewport" ref=${viewport} tabindex="0" aria-label="services by environment"
      onScroll=${(e) => setTop(e.currentTarget.scrollTop)}>
      <table class="grid" aria-rowcount=${rows.length + 1}>
        <thead><tr aria-rowindex="1"><th scope="col">Service</th>
          ${columns.map((env) => html`<th scope="col">${env}</th>`)}</tr></thead>
        <tbody>
          ${first > 0 && html`<tr class="spacer" aria-hidden="true" style=${`height:${first * ROW_HEIGHT}px`}></tr>`}
          ${shown.map((row, index) => html`<tr key=${row.service} aria-rowindex=${first + index + 2}>
            <th scope="row"><a href=${`#/services/${encodeURIComponent(row.service)}`}>${row.service}</a></th>
            ${columns.map((env) => html`<${Cell} service=${row.service} env=${env} cell=${row.cells[env]} now=${now} />`)}
          </tr>`)}
          ${last < rows.length && html`<tr class="spacer" aria-hidden="true"
            style=${`height:${(rows.length - last) * ROW_HEIGHT}px`}></tr>`}
        </tbody>
      </table>
      ${store.loaded && !rows.length && html`<p class="empty">${store.total ? "No service matches." :
        "No service yet: apply a pipeline (promote pipeline apply FILE)."}</p>`}
    </div>
  </section>`;
}
