// The console's shell: sign-in (an API token, or the OIDC provider when the API has one), who you are, the live
// feed's status, and the views by the page's #/ address.
import { render } from "preact";
import { useEffect, useMemo, useState } from "preact/hooks";
import { call, signIn, signOut, token } from "./api.js";
import { DeadLetters } from "./dead-letters.js";
import { Grid } from "./grid.js";
import { follow } from "./live.js";
import { finishSignIn, startSignIn } from "./oidc.js";
import { Release } from "./release.js";
import { Service } from "./service.js";
import { Store } from "./store.js";
import { html } from "./ui.js";

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "services" && parts[1] && parts[2] === "releases" && parts[3]) {
    return { view: "release", service: parts[1], version: parts[3] };
  }
  if (parts[0] === "services" && parts[1]) return { view: "service", service: parts[1] };
  if (parts[0] === "dead-letters") return { view: "dead-letters" };
  return { view: "grid" };
}

function SignIn({ config, error, onToken }) {
  const [value, setValue] = useState("");
  return html`<main class="signin" aria-labelledby="signin-title">
    <h1 id="signin-title">promote console</h1>
    ${error && html`<p role="alert" class="refused">${error}</p>`}
    ${config?.oidc && html`<p><button type="button" class="primary" onClick=${() => startSignIn(config.oidc)}>
      Sign in with ${new URL(config.oidc.issuer).host}</button></p><p>or</p>`}
    ${config?.oidc_unavailable && html`<p class="why">OIDC sign-in is unavailable: ${config.oidc_unavailable}</p>`}
    <form onSubmit=${(e) => { e.preventDefault(); if (value.trim()) onToken(value); }}>
      <label for="token">API token</label>
      <input id="token" type="password" autocomplete="off" value=${value} required
        onInput=${(e) => setValue(e.currentTarget.value)} />
      <button type="submit">Sign in</button>
      <p class="hint">An operator makes one with <code>promote token create</code>; the local stack's first admin token is in
        <code>var/credentials/api/admin.token</code>. It stays in this tab only.</p>
    </form>
  </main>`;
}

function LiveStatus({ status }) {
  const text = {
    connecting: "connecting…", reconnecting: "reconnecting…", live: "live",
    retrying: `connection lost, retrying in ${status.retryIn} s`,
    refused: `live updates refused: ${status.detail}`,
  }[status.state] || status.state;
  return html`<span class=${`live ${status.state}`} role="status" aria-live="polite" data-live=${status.state}>${text}</span>`;
}

function Shell({ me, onSignOut }) {
  const [where, setWhere] = useState(route());
  const [tick, setTick] = useState(0);
  const [serviceTick, setServiceTick] = useState(0);
  const [live, setLive] = useState({ state: "connecting" });
  const [error, setError] = useState(null);
  const store = useMemo(() => new Store(() => setTick((n) => n + 1)), []);

  useEffect(() => {
    const moved = () => setWhere(route());
    window.addEventListener("hashchange", moved);
    store.onUpdate = (change) => {
      setTick((n) => n + 1);
      if (change && change.service === route().service) setServiceTick((n) => n + 1);
    };
    const stop = follow({ onChange: (change) => store.apply(change), onStatus: setLive, onReload: () => store.reloadSoon() });
    store.load().catch((failure) => setError(failure.message));
    return () => { stop(); window.removeEventListener("hashchange", moved); };
  }, []);

  let view;
  if (where.view === "release") view = html`<${Release} service=${where.service} version=${where.version} />`;
  else if (where.view === "service") {
    view = html`<${Service} name=${where.service} tick=${serviceTick} store=${store} />`;
  }
  else if (where.view === "dead-letters") view = html`<${DeadLetters} me=${me} />`;
  else view = html`<${Grid} store=${store} tick=${tick} />`;
  return html`<header>
      <nav aria-label="console"><a href="#/" class="brand">promote</a> <a href="#/">Releases</a>
        <a href="#/dead-letters">Dead letters</a></nav>
      <${LiveStatus} status=${live} />
      <span class="me">${me.subject} <small>(${me.roles.join(", ") || "no roles"}, ${me.method})</small></span>
      <button type="button" onClick=${onSignOut}>Sign out</button>
    </header>
    <main>${error && html`<p role="alert" class="refused">${error}</p>`}${view}</main>`;
}

function App() {
  const [config, setConfig] = useState(null);
  const [me, setMe] = useState(null);
  const [error, setError] = useState(null);
  const [checking, setChecking] = useState(true);

  async function identify() {
    try {
      const who = await call("/v1/whoami");
      setMe({ ...who, admin: who.roles.includes("admin:*") });
      setError(null);
    } catch (failure) {
      signOut();
      setMe(null);
      setError(failure.message);
    }
  }

  useEffect(() => {
    (async () => {
      const found = await call("/console/config.json").catch(() => ({ oidc: null }));
      setConfig(found);
      try {
        await finishSignIn(found.oidc);
      } catch (failure) {
        setError(failure.message);
      }
      if (token()) await identify();
      setChecking(false);
    })();
  }, []);

  if (checking) return html`<p class="loading">Loading…</p>`;
  if (!me) {
    return html`<${SignIn} config=${config} error=${error} onToken=${async (value) => { signIn(value); await identify(); }} />`;
  }
  return html`<${Shell} me=${me} onSignOut=${() => { signOut(); setMe(null); }} />`;
}

render(html`<${App} />`, document.getElementById("app"));
