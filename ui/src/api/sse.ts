// Follow an SSE route with fetch() (the token travels in the Authorization header, never in the
// URL), reconnecting with Last-Event-ID after a drop so that nothing is missed or repeated.
import { authHeaders, errorOf, ApiError } from "./client";
import { SseParser, type SseEvent } from "./sseParser";

export type StreamStatus = "connecting" | "live" | "reconnecting" | "ended" | "error";

export interface FollowOptions {
  onEvent: (event: SseEvent) => void;
  onStatus?: (status: StreamStatus, error?: ApiError) => void;
  /** Reconnect after an `end` event too (streams with a bounded life). */
  renew?: boolean;
  lastEventId?: string | null;
}

/** Follows `path` until the returned function is called (or the stream ends for good). */
export function follow(path: string, opts: FollowOptions): () => void {
  const abort = new AbortController();
  let lastId = opts.lastEventId ?? null;
  let stopped = false;
  const status = (s: StreamStatus, e?: ApiError) => opts.onStatus?.(s, e);

  async function once(): Promise<"end" | "drop"> {
    const headers = authHeaders({ accept: "text/event-stream" });
    if (lastId !== null) headers["Last-Event-ID"] = lastId;
    const resp = await fetch(path, { headers, signal: abort.signal, cache: "no-store" });
    if (!resp.ok || !resp.body) throw await errorOf(resp);
    status("live");
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new SseParser();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return "drop";
      for (const ev of parser.push(value)) {
        if (ev.id !== null) lastId = ev.id;
        if (ev.event === "end") return "end";
        opts.onEvent(ev);
      }
    }
  }

  (async () => {
    let delay = 500;
    status("connecting");
    while (!stopped) {
      try {
        const how = await once();
        delay = 500;
        if (how === "end") {
          if (!opts.renew) {
            status("ended");
            return;
          }
          continue; // a bounded stream's clean end: renewed at once, still "live" (no flash)
        }
      } catch (e) {
        if (stopped) return;
        const err = e instanceof ApiError ? e : null;
        if (err && err.status >= 400 && err.status < 500 && err.status !== 429) {
          status("error", err); // a refusal, not a drop: retrying would not help
          return;
        }
      }
      if (stopped) return;
      status("reconnecting");
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 5000);
    }
  })();

  return () => {
    stopped = true;
    abort.abort();
  };
}
