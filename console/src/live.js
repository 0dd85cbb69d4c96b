// The live feed (GET /v1/live, server-sent events) read with fetch, so that the bearer token goes in a header
// (EventSource cannot send one). A stream that breaks, or goes quiet past the server's keepalive, is opened
// again with backoff; the status says "retrying" meanwhile, and the page reloads what it shows once the stream
// is back, since changes made while it was down were not sent to it.
import { token } from "./api.js";

const QUIET_LIMIT_MS = 40_000; // the server sends a keepalive every 15 s
const MAX_DELAY_MS = 30_000;

function parse(block) {
  const message = { event: "message", data: "" };
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") message.event = value;
    else if (field === "data") message.data += (message.data ? "\n" : "") + value;
  }
  return message;
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
});

// Follows the feed until stop() is called: onChange(change) per change, onStatus({state, ...}) on each turn
// (connecting, live, retrying with retryIn seconds, refused with the API's reason), onReload() when what the
// page shows may have missed changes (after a break, or when the server said overflow).
export function follow({ onChange, onStatus, onReload }) {
  const stopping = new AbortController();
  (async () => {
    let failures = 0;
    while (!stopping.signal.aborted) {
      const attempt = new AbortController();
      const abort = () => attempt.abort();
      stopping.signal.addEventListener("abort", abort, { once: true });
      let watchdog = setTimeout(abort, QUIET_LIMIT_MS);
      const heard = () => { clearTimeout(watchdog); watchdog = setTimeout(abort, QUIET_LIMIT_MS); };
      try {
        onStatus({ state: failures ? "reconnecting" : "connecting" });
        const response = await fetch("/v1/live", {
          headers: { Authorization: `Bearer ${token()}`, Accept: "text/event-stream" },
          cache: "no-store", signal: attempt.signal,
        });
        if (response.status === 401 || response.status === 403) {
          const body = await response.json().catch(() => ({}));
          onStatus({ state: "refused", detail: body.detail || `${response.status}` });
          return;
        }
        if (!response.ok || !response.body) throw new Error(`${response.status}`);
        onStatus({ state: "live" });
        if (failures) onReload();
        failures = 0;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          heard();
          buffer += value.replaceAll("\r\n", "\n");
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const message = parse(buffer.slice(0, end));
            buffer = buffer.slice(end + 2);
            if (message.event === "change") onChange(JSON.parse(message.data));
            else if (message.event === "overflow") onReload();
          }
        }
      } catch {
        // a broken or silent stream: tried again below
      } finally {
        clearTimeout(watchdog);
        stopping.signal.removeEventListener("abort", abort);
      }
      if (stopping.signal.aborted) return;
      failures += 1;
      const delay = Math.min(MAX_DELAY_MS, 1000 * 2 ** Math.min(failures - 1, 5));
      onStatus({ state: "retrying", retryIn: Math.round(delay / 1000), failures });
      await sleep(delay, stopping.signal);
    }
  })();
  return () => stopping.abort();
}
