// The dead letters: what a consumer could not take, with the reason, inspected and (admin) resubmitted.
import { useEffect, useState } from "preact/hooks";
import { call, path } from "./api.js";
import { Action, html, post } from "./ui.js";

export function DeadLetters({ me }) {
  const [letters, setLetters] = useState(null);
  const [error, setError] = useState(null);
  const [open, setOpen] = useState(null);
  useEffect(() => {
    call("/v1/dead-letters?limit=200").then((d) => setLetters(d.dead_letters.reverse()), (e) => setError(e.message));
  }, []);
  if (error) return html`<p role="alert" class="refused">${error}</p>`;
  if (!letters) return html`<p>Loading dead letters…</p>`;
  const refused = me.admin ? null : `resubmitting needs the admin role in every environment (your roles: ${me.roles.join(", ") || "none"})`;
  return html`<section aria-labelledby="dl-title">
    <h1 id="dl-title">Dead letters</h1>
    ${!letters.length && html`<p>None: every event was taken.</p>`}
    <table class="letters">
      <thead><tr><th scope="col">When</th><th scope="col">From</th><th scope="col">Consumer</th><th scope="col">Reason</th><th scope="col"></th></tr></thead>
      <tbody>${letters.map((letter) => html`<tr key=${letter.id}>
        <td><time datetime=${letter.time}>${letter.time}</time></td>
        <td>${letter.source.topic} [${letter.source.partition}] @${letter.source.offset}</td>
        <td>${letter.consumer}</td><td>${letter.reason}</td>
        <td><button type="button" aria-expanded=${open === letter.id} onClick=${() => setOpen(open === letter.id ? null : letter.id)}>
          Inspect</button>
          <${Action} label="Resubmit" refused=${refused} confirm="Resubmit this record to the topic it came from?"
            run=${async () => { const r = await post(`/v1/dead-letters/${path(letter.id)}/replay`);
              return `resubmitted to ${r.topic} [${r.partition}] @${r.offset}`; }} /></td>
      </tr>${open === letter.id && html`<tr><td colspan="5"><pre>${letter.value_text}</pre></td></tr>`}`)}</tbody>
    </table>
  </section>`;
}
