// Sign-in with the OIDC provider: the authorization code flow with PKCE (S256), as a public client; the access
// token it yields is the bearer token the API verifies (issuer, audience, signature, expiry).
import { signIn } from "./api.js";

const FLOW = "promote.oidc";

function base64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes))).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

function random(length) {
  return base64url(crypto.getRandomValues(new Uint8Array(length)));
}

export function redirectUri() {
  return `${location.origin}/console/`;
}

// Off to the provider's login page; it comes back to /console/?code=…&state=….
export async function startSignIn(oidc) {
  const verifier = random(48);
  const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const state = random(24);
  sessionStorage.setItem(FLOW, JSON.stringify({ verifier, state }));
  const query = new URLSearchParams({ response_type: "code", client_id: oidc.client_id, redirect_uri: redirectUri(),
    scope: "openid", state, code_challenge: challenge, code_challenge_method: "S256" });
  location.assign(`${oidc.authorization_endpoint}?${query}`);
}

// Back from the provider: the code exchanged for tokens (with the verifier only this tab holds). Returns null
// when this load is not a return from the provider; throws with the reason when the sign-in failed.
export async function finishSignIn(oidc) {
  const params = new URLSearchParams(location.search);
  if (!params.has("code") && !params.has("error")) return null;
  history.replaceState(null, "", redirectUri() + location.hash);
  const flow = JSON.parse(sessionStorage.getItem(FLOW) || "null");
  sessionStorage.removeItem(FLOW);
  if (params.has("error")) throw new Error(`sign-in refused: ${params.get("error_description") || params.get("error")}`);
  if (!flow || flow.state !== params.get("state")) throw new Error("sign-in refused: this answer is not for this tab (state differs)");
  if (!oidc) throw new Error("sign-in refused: this API accepts no OIDC tokens");
  const response = await fetch(oidc.token_endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ grant_type: "authorization_code", code: params.get("code"), redirect_uri: redirectUri(),
      client_id: oidc.client_id, code_verifier: flow.verifier }),
  });
  const tokens = await response.json().catch(() => ({}));
  if (!response.ok || !tokens.access_token) {
    throw new Error(`sign-in refused by the provider: ${tokens.error_description || tokens.error || response.status}`);
  }
  signIn(tokens.access_token);
  return tokens.access_token;
}
