// React hooks over the API client: a one-shot read, and a followed SSE route.
import { useEffect, useRef, useState } from "react";
import { ApiError, getJson } from "./client";
import { follow, type StreamStatus } from "./sse";
import type { SseEvent } from "./sseParser";

export function useJson<T>(path: string | null, deps: unknown[] = []) {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  useEffect(() => {
    if (!path) return;
    let live = true;
    getJson<T>(path)
      .then((d) => live && (setData(d), setError(null)))
      .catch((e) => live && setError(e));
    return () => {
      live = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [path, ...deps]);
  return { data, error };
}

/** Follows an SSE route while mounted (and `path` is set). */
export function useFollow(
  path: string | null,
  onEvent: (ev: SseEvent) => void,
  opts: { renew?: boolean; lastEventId?: string | null } = {},
) {
  const [status, setStatus] = useState<StreamStatus>("connecting");
  const [error, setError] = useState<ApiError | null>(null);
  const handler = useRef(onEvent);
  handler.current = onEvent;
  useEffect(() => {
    if (!path) return;
    return follow(path, {
      onEvent: (ev) => handler.current(ev),
      onStatus: (s, e) => {
        setStatus(s);
        setError(e ?? null);
      },
      renew: opts.renew,
      lastEventId: opts.lastEventId,
    });
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [path]);
  return { status, error };
}
