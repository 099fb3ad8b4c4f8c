// The one way the app talks to the head: same origin, the API token (when the head asks for one)
// from localStorage, errors as ApiError with the envelope's type and message.

const TOKEN_KEY = "maze.token";

export class ApiError extends Error {
  constructor(
    public status: number,
    public type: string,
    message: string,
    public details: unknown = null,
  ) {
    super(message);
  }
}

type Listener = () => void;
const unauthorizedListeners = new Set<Listener>();

/** Called when the head answers 401: the app shows its token prompt. */
export function onUnauthorized(listener: Listener): () => void {
  unauthorizedListeners.add(listener);
  return () => unauthorizedListeners.delete(listener);
}

export function getToken(): string | null {
  return localStorage.getItem(TOKEN_KEY);
}

export function setToken(token: string | null): void {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

export function authHeaders(extra: Record<string, string> = {}): Record<string, string> {
  const token = getToken();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

/** The error a failed answer carries (the head's envelope, or what the status says). */
export async function errorOf(resp: Response): Promise<ApiError> {
  let type = "http_error";
  let message = `${resp.status} ${resp.statusText}`;
  let details: unknown = null;
  try {
    const body = await resp.json();
    if (body && body.error) {
      type = body.error.type ?? type;
      message = body.error.message ?? message;
      details = body.error.details ?? null;
    }
  } catch {
    /* not JSON: the status says it */
  }
  if (resp.status === 401) unauthorizedListeners.forEach((l) => l());
  return new ApiError(resp.status, type, message, details);
}

export async function apiFetch(path: string, init: RequestInit = {}): Promise<Response> {
  const headers = authHeaders((init.headers as Record<string, string>) ?? {});
  let resp: Response;
  try {
    resp = await fetch(path, { ...init, headers });
  } catch (e) {
    throw new ApiError(0, "network_error", `the head did not answer: ${(e as Error).message}`);
  }
  if (!resp.ok) throw await errorOf(resp);
  return resp;
}

/** The answer's JSON; an answer that is not JSON (a route this head does not have, answered by
 * the Playground's own page) is an ApiError saying so, not a parse error. */
export async function jsonOf<T>(resp: Response, path: string): Promise<T> {
  const type = resp.headers.get("content-type") ?? "";
  if (!type.includes("json")) {
    throw new ApiError(resp.status, "unexpected_answer", `${path} answered ${type || "no content type"}, not JSON: this head does not serve it`);
  }
  return resp.json() as Promise<T>;
}

export async function getJson<T>(path: string, init: RequestInit = {}): Promise<T> {
  return jsonOf<T>(await apiFetch(path, init), path);
}

export async function postJson<T>(path: string, body: unknown = {}): Promise<T> {
  const resp = await apiFetch(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return jsonOf<T>(resp, path);
}

/** A file from the API saved by the browser: fetched with the token, handed over as a blob. */
export async function download(path: string, filename: string): Promise<void> {
  const blob = await (await apiFetch(path)).blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
