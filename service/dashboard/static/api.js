// The API as the dashboard uses it: the key travels in the Authorization header only (never in a
// URL), kept in sessionStorage, or in localStorage when the person asked to be remembered.

const KEY = "robustlab.apiKey";

export class ApiError extends Error {
  constructor(status, type, message, problems = []) {
    super(message);
    this.status = status; // null: the server did not answer
    this.type = type;
    this.problems = problems;
  }
}

export function storedKey() {
  return sessionStorage.getItem(KEY) || localStorage.getItem(KEY);
}

export function storeKey(key, remember) {
  sessionStorage.setItem(KEY, key);
  if (remember) localStorage.setItem(KEY, key);
  else localStorage.removeItem(KEY);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
}

// Called when the server refuses the stored key (revoked, or the service was set up again).
let onUnauthorized = () => {};
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy's page, say
  }
  const error = body && body.error;
  if (error) return new ApiError(response.status, error.type, error.message, error.problems || []);
  return new ApiError(response.status, "http_error", `the server answered ${response.status} ${response.statusText}`);
}

// fetch with the key; `key` overrides the stored one (sign-in checks a key before storing it).
export async function request(path, { method = "GET", body, headers = {}, key, ok = [200], json = true } = {}) {
  const apiKey = key ?? storedKey();
  const init = { method, headers: { ...headers }, cache: "no-store" };
  if (apiKey) init.headers.Authorization = `Bearer ${apiKey}`;
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(null, "unreachable", `cannot reach the robustlab API (${err.message}): is the service running?`);
  }
  if (!ok.includes(response.status)) {
    const error = await errorOf(response);
    if (response.status === 401 && key === undefined) onUnauthorized(error);
    throw error;
  }
  if (!json || response.status === 304 || response.status === 204) return response;
  return { response, data: await response.json() };
}

export async function getJson(path, options) {
  return (await request(path, options)).data;
}

// A job with ETag polling: 304 while unchanged gives { job: null, etag }.
export async function pollJob(id, etag) {
  const headers = etag ? { "If-None-Match": etag } : {};
  const response = await request(`/v1/jobs/${encodeURIComponent(id)}`, { headers, ok: [200, 304], json: false });
  const tag = response.headers.get("ETag") || etag;
  if (response.status === 304) return { job: null, etag: tag };
  return { job: await response.json(), etag: tag };
}

// Downloads need the key too, so a plain link cannot work: fetch, then hand the Blob to the browser.
export async function download(path, filename) {
  const response = await request(path, { json: false });
  const url = URL.createObjectURL(await response.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
