// Small pieces every view uses: html (htm bound to Preact), time, digests, states, roles, action buttons.
import { h } from "preact";
import { useState } from "preact/hooks";
import htm from "htm";
import { call } from "./api.js";

export const html = htm.bind(h);

export function shortDigest(digest) {
  if (!digest) return "";
  const [algorithm, hex] = digest.includes(":") ? digest.split(":", 2) : ["", digest];
  return `${algorithm ? `${algorithm}:` : ""}${hex.slice(0, 12)}`;
}

export function ago(iso, now = Date.now()) {
  if (!iso) return "";
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

// The colour family of an environment's state (the text always says the state: colour is never the only cue).
export function family(state) {
  if (state === "verified") return "ok";
  if (state === "failed") return "bad";
  if (state === "drifted") return "warn";
  if (!state || state === "empty") return "empty";
  return "busy"; // deploying, deployed (not verified yet), canary n/m, rolling-back, restoring
}

// A button that may be refused: disabled with the reason shown beside it (and read out with it) when `refused`
// says why; otherwise it runs `run` and shows what came back, or the API's one-line refusal (or hands it to
// `report`, for a button that may be gone once its action is done: a decision on a release no longer waiting).
export function Outcome({ outcome }) {
  return outcome && html`<span class=${outcome.ok ? "done" : "refused"} role=${outcome.ok ? "status" : "alert"}>
    ${outcome.text}</span>`;
}

export function Action({ label, refused, run, confirm: question, className = "", report }) {
  const [busy, setBusy] = useState(false);
  const [outcome, setOutcome] = useState(null);
  const [id] = useState(() => `why-${Math.random().toString(36).slice(2, 10)}`);
  async function click() {
    if (refused || busy) return;
    if (question && !window.confirm(question)) return;
    setBusy(true);
    setOutcome(null);
    const tell = report || setOutcome;
    try {
      tell({ ok: true, text: await run() });
    } catch (error) {
      tell({ ok: false, text: error.message });
    } finally {
      setBusy(false);
    }
  }
  return html`<span class="action">
    <button type="button" class=${className} aria-disabled=${refused ? "true" : "false"} disabled=${busy}
      aria-describedby=${refused ? id : undefined} onClick=${click}>${busy ? `${label}…` : label}</button>
    ${refused && html`<span class="why" id=${id}>${refused}</span>`}
    <${Outcome} outcome=${outcome} />
  </span>`;
}

export function post(path, body) {
  return call(path, { method: "POST", body });
}
