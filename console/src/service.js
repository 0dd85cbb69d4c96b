// One service: its pipeline graph (fan-out and fan-in drawn as they are declared), what runs in each environment
// and what waits at its gates, and the actions the caller may take there (or why not).
import { useEffect, useState } from "preact/hooks";
import { call, path } from "./api.js";
import { Action, Outcome, family, html, post, shortDigest } from "./ui.js";

const BOX_W = 200;
const BOX_H = 108;
const GAP_X = 56;
const GAP_Y = 20;

// Column of each environment: 0 for one that comes after nothing, else one more than the latest it comes after.
export function layout(graph) {
  const depth = {};
  const visit = (env) => {
    if (depth[env.name] !== undefined) return depth[env.name];
    depth[env.name] = 0;
    const before = env.after.map((name) => graph.find((e) => e.name === name)).filter(Boolean);
    depth[env.name] = before.length ? Math.max(...before.map(visit)) + 1 : 0;
    return depth[env.name];
  };
  graph.forEach(visit);
  const rows = {};
  const place = {};
  for (const env of graph) {
    const column = depth[env.name];
    rows[column] = (rows[column] || 0) + 1;
    place[env.name] = { x: column * (BOX_W + GAP_X), y: (rows[column] - 1) * (BOX_H + GAP_Y) };
  }
  const width = (Math.max(0, ...Object.values(depth)) + 1) * (BOX_W + GAP_X) - GAP_X;
  const height = Math.max(...Object.values(rows)) * (BOX_H + GAP_Y) - GAP_Y;
  return { place, width, height };
}

function Graph({ status, selected, onSelect }) {
  const { place, width, height } = layout(status.graph);
  const edges = status.graph.flatMap((env) => env.after.filter((name) => place[name]).map((name) => ({ from: name, to: env.name, require: env.require })));
  return html`<figure class="pipeline">
    <figcaption>Pipeline of ${status.service}: ${status.graph.map((e) => e.after.length
      ? `${e.name} after ${e.after.join(e.require === "any" ? " or " : " and ")}` : `${e.name} first`).join("; ")}</figcaption>
    <div class="canvas" style=${`width:${width}px;height:${height}px`}>
      <svg width=${width} height=${height} aria-hidden="true">
        ${edges.map(({ from, to }) => {
          const a = place[from];
          const b = place[to];
          const x1 = a.x + BOX_W, y1 = a.y + BOX_H / 2, x2 = b.x, y2 = b.y + BOX_H / 2;
          const mid = (x1 + x2) / 2;
          return html`<path d=${`M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`} class="edge" />`;
        })}
      </svg>
      ${status.graph.map((env) => {
        const cell = status.environments[env.name];
        const at = place[env.name];
        return html`<button type="button" class=${`node ${family(cell.state)}${selected === env.name ? " selected" : ""}`}
          style=${`left:${at.x}px;top:${at.y}px;width:${BOX_W}px;height:${BOX_H}px`} aria-pressed=${selected === env.name}
          onClick=${() => onSelect(env.name)} data-env=${env.name}>
          <strong>${env.name}</strong>
          <span>${cell.version || "—"} <code>${shortDigest(cell.digest)}</code></span>
          <span class="state">${cell.state}</span>
          ${cell.waiting.length ? html`<span class="waiting">${cell.waiting.length} waiting</span>` : ""}
        </button>`;
      })}
    </div>
  </figure>`;
}

function Decision({ service, env, wait, allowed, onDone, report }) {
  const [comment, setComment] = useState("");
  const decide = (decision) => async () => {
    const answer = await post(`/v1/services/${path(service, "releases", wait.version)}/decisions`,
      { env, decision, comment: comment || null });
    onDone();
    const verdict = answer.verdict ? ` — the gate says ${answer.verdict.outcome}` : "";
    return `${answer.recorded} of ${wait.version} recorded as ${answer.approver}${verdict}`;
  };
  return html`<li class="decision">
    <p><strong>${wait.version}</strong> ${wait.outcome}: ${wait.reasons.join("; ")}</p>
    <label>Comment <input value=${comment} maxlength="1000" onInput=${(e) => setComment(e.currentTarget.value)} /></label>
    <${Action} label=${`Approve ${wait.version} for ${env}`} refused=${allowed?.approve} run=${decide("granted")}
      className="primary" report=${report} />
    <${Action} label=${`Reject ${wait.version} for ${env}`} refused=${allowed?.reject} run=${decide("rejected")}
      className="danger" report=${report} />
  </li>`;
}

function Environment({ status, actions, env, onDone }) {
  const [said, setSaid] = useState(null); // what the last action answered (its button may be gone since)
  const cell = status.environments[env];
  const may = actions?.environments[env] || {};
  const canary = cell.state.startsWith("canary");
  const paused = cell.state.startsWith("canary paused");
  const command = (action) => async () => {
    const answer = await post(`/v1/services/${path(status.service, "environments", env, "canary")}`, { action });
    onDone();
    return answer.outcome ? `${action}: ${answer.outcome.result}` : `${action} asked (no answer yet)`;
  };
  const rollback = async () => {
    const answer = await post(`/v1/services/${path(status.service, "rollbacks")}`, { env, reason: "from the console" });
    onDone();
    const outcome = answer.outcome;
    if (!outcome) return "rollback asked (no answer yet)";
    return outcome.result === "completed" ? `rolled back to ${outcome.version}` : `rollback ${outcome.result}: ${outcome.reason}`;
  };
  return html`<section class="environment" aria-labelledby=${`env-${env}`}>
    <h2 id=${`env-${env}`}>${env}</h2>
    <dl>
      <dt>Release</dt><dd>${cell.version
        ? html`<a href=${`#/services/${encodeURIComponent(status.service)}/releases/${encodeURIComponent(cell.version)}`}>${cell.version}</a>`
        : "none"} <code title=${cell.digest}>${shortDigest(cell.digest)}</code></dd>
      <dt>State</dt><dd class=${family(cell.state)}>${cell.state}</dd>
      ${cell.drift && html`<dt>Drift</dt><dd>${(cell.drift.differences || []).join("; ")}</dd>`}
    </dl>
    <div class="actions">
      <${Action} label=${`Roll back ${env}`} refused=${cell.version ? may.rollback : "nothing runs here to roll back"}
        run=${rollback} confirm=${`Return ${env} to its last verified release?`} className="danger" report=${setSaid} />
      ${canary && html`
        <${Action} label="Pause canary" refused=${paused ? "the canary is paused" : may.canary?.pause} run=${command("pause")} report=${setSaid} />
        <${Action} label="Resume canary" refused=${paused ? may.canary?.resume : "the canary is not paused"} run=${command("resume")} report=${setSaid} />
        <${Action} label="Abort canary" refused=${may.canary?.abort} run=${command("abort")} className="danger" report=${setSaid} />
        <${Action} label="Promote now" refused=${may.canary?.promote} run=${command("promote")} report=${setSaid}
          confirm="Promote now, leaving the rest of the analysis undone?" />`}
    </div>
    <p><${Outcome} outcome=${said} /></p>
    ${cell.waiting.length > 0 && html`<h3>Waiting at the gates</h3>
      <ul class="decisions">${cell.waiting.map((wait) => html`<${Decision} key=${wait.version} service=${status.service}
        env=${env} wait=${wait} allowed=${may.decisions?.[wait.version]} onDone=${onDone} report=${setSaid} />`)}</ul>`}
  </section>`;
}

// What the page shows of an environment: the live store's cell (kept current by the feed, as the grid's is) where
// the grid has loaded the service, else what /v1/status answered (the ledger's projection may lag the feed by a
// moment, so a page that only re-read it after a change could show the state before it).
export function withLive(status, cells) {
  if (!cells) return status;
  const environments = {};
  for (const [env, cell] of Object.entries(status.environments)) environments[env] = { ...cell, ...(cells[env] || {}) };
  return { ...status, environments };
}

export function Service({ name, tick, store }) {
  const [found, setFound] = useState(null);
  const [actions, setActions] = useState(null);
  const [error, setError] = useState(null);
  const [selected, setSelected] = useState(null);
  const [releases, setReleases] = useState([]);
  const [reloads, setReloads] = useState(0);

  useEffect(() => {
    let live = true;
    Promise.all([call(`/v1/status?service=${encodeURIComponent(name)}`),
      call(`/v1/services/${path(name)}/actions`),
      call(`/v1/services/${path(name)}/history?limit=200`)])
      .then(([answer, may, history]) => {
        if (!live) return;
        const service = answer.services[0];
        setFound(service);
        setSelected((chosen) => chosen || service.graph.find((e) => service.environments[e.name].waiting.length)?.name
          || service.graph[0]?.name); // kept once chosen: a decision made there does not move the page elsewhere
        setActions(may);
        setReleases([...new Set(history.entries.filter((e) => e.version).map((e) => e.version))].reverse().slice(0, 12));
        setError(null);
      })
      .catch((failure) => live && setError(failure.message));
    return () => { live = false; };
  }, [name, tick, reloads]);

  if (error) return html`<p role="alert" class="refused">${error}</p>`;
  if (!found) return html`<p>Loading ${name}…</p>`;
  const status = withLive(found, store?.rows.get(name)?.cells); // re-rendered with the shell on each change
  const env = selected && status.environments[selected] ? selected : status.graph[0]?.name;
  return html`<section class="service" aria-labelledby="service-title">
    <h1 id="service-title">${status.service}</h1>
    <${Graph} status=${status} selected=${env} onSelect=${setSelected} />
    ${env && html`<${Environment} key=${env} status=${status} actions=${actions} env=${env} onDone=${() => setReloads((n) => n + 1)} />`}
    <h2>Recent releases</h2>
    <ul class="releases">${releases.map((version) => html`<li><a
      href=${`#/services/${encodeURIComponent(name)}/releases/${encodeURIComponent(version)}`}>${version}</a></li>`)}</ul>
  </section>`;
}
