// A release's timeline: every ledger entry about it, oldest first (build, gates with their evidence and the
// verified identities that approved, deployments with their analysis figures, rollbacks, drift), the ledger's
// hash-chain check, and the evidence bundle of each environment it runs in.
import { useEffect, useState } from "preact/hooks";
import { call, download, path } from "./api.js";
import { Action, html, shortDigest } from "./ui.js";

// The few fields of an entry's data worth a line in the timeline, by name.
const SHOWN = ["author", "approver", "requested_by", "by", "applied_by", "reason", "comment", "strategy", "share",
  "step", "steps", "state", "target_version", "driver", "replicas"];

function details(data) {
  const lines = [];
  for (const key of SHOWN) {
    const value = data[key];
    if (value === undefined || value === null || value === "") continue;
    lines.push([key.replaceAll("_", " "), typeof value === "object" ? JSON.stringify(value) : String(value)]);
  }
  if (data.groups?.length) lines.push(["groups", data.groups.join(", ")]);
  for (const [name, value] of Object.entries(data.checks || {})) lines.push([`check ${name}`, value]);
  for (const reason of data.reasons || []) lines.push(["reason", reason]);
  for (const evidence of data.evidence || []) lines.push(["evidence", evidence]);
  for (const difference of data.differences || []) lines.push(["difference", difference]);
  return lines;
}

function family(type) {
  if (/failed|rejected|refused|drift\.detected|tag_moved/.test(type)) return "bad";
  if (/passed|granted|verified|succeeded|completed|registered|resolved/.test(type)) return "ok";
  return "busy";
}

export function Release({ service, version }) {
  const [audit, setAudit] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    call(`/v1/services/${path(service, "releases", version)}/audit`).then(setAudit, (e) => setError(e.message));
  }, [service, version]);
  if (error) return html`<p role="alert" class="refused">${error}</p>`;
  if (!audit) return html`<p>Loading ${service} ${version}…</p>`;
  const running = [...new Set(audit.events.filter((e) => e.type === "verification.passed").map((e) => e.env))];
  const digest = audit.events.find((e) => e.event.data.digest)?.event.data.digest;
  return html`<section class="release" aria-labelledby="release-title">
    <h1 id="release-title"><a href=${`#/services/${encodeURIComponent(service)}`}>${service}</a> ${version}</h1>
    <p><code title=${digest}>${digest || ""}</code></p>
    <p class=${audit.chain.intact ? "ok" : "bad"} role="status">${audit.chain.intact
      ? `Hash chain intact: ${audit.chain.entries} ledger entries checked.`
      : `Hash chain broken at entry #${audit.chain.first_broken_seq}.`}</p>
    <div class="actions">${running.map((env) => html`<${Action} label=${`Evidence bundle for ${env}`}
      run=${async () => { await download(`/v1/services/${path(service, "environments", env)}/bundle`,
        `${service}-${env}-bundle.json`); return "downloaded (check it with promote verify-bundle)"; }} />`)}</div>
    <ol class="timeline">${audit.events.map((entry) => html`<li class=${family(entry.type)}>
      <div class="head"><strong>${entry.type}</strong>${entry.env ? html` <span class="env">${entry.env}</span>` : ""}
        <time datetime=${entry.time}>${new Date(entry.time).toLocaleString()}</time> <span class="seq">#${entry.seq}</span>
        <code class="hash" title=${entry.hash}>${shortDigest(entry.hash)}</code></div>
      <dl>${details(entry.event.data).map(([key, value]) => html`<dt>${key}</dt><dd>${value}</dd>`)}</dl>
    </li>`)}</ol>
  </section>`;
}
