// The operator API, as the page calls it: the bearer token of this tab, one-line errors, and the roles rule.
const TOKEN = "promote.token";

export function token() {
  return sessionStorage.getItem(TOKEN);
}

export function signIn(value) {
  sessionStorage.setItem(TOKEN, value.trim());
}

export function signOut() {
  sessionStorage.removeItem(TOKEN);
}

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

// A call to the API: JSON in, JSON out; an answer that is not 2xx throws ApiError with the API's one line.
export async function call(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "the API cannot be reached");
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const detail = data && typeof data.detail === "string" ? data.detail : `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, detail);
  }
  return data;
}

// A download the API answers as JSON (the evidence bundle), saved as a file by the browser.
export async function download(path, filename) {
  const data = await call(path);
  const url = URL.createObjectURL(new Blob([JSON.stringify(data, null, 2)], { type: "application/json" }));
  const link = Object.assign(document.createElement("a"), { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export function path(...parts) {
  return parts.map((part) => encodeURIComponent(part)).join("/");
}
