// A run followed live: its events read (paged), folded (runFold.ts), then its SSE stream folded
// as it comes; one render per animation frame however many batches arrive. The run page and the
// builder's live view share it.
import { useEffect, useRef, useState } from "react";
import { ApiError, getJson } from "../api/client";
import { useFollow } from "../api/hooks";
import type { EventsPage, MazeEvent } from "../api/types";
import { emptyRun, foldEvent, foldEvents, type FoldRun } from "./runFold";

export async function loadEvents(runId: string): Promise<{ events: MazeEvent[]; last: number }> {
  const events: MazeEvent[] = [];
  let after = 0;
  for (;;) {
    const page = await getJson<EventsPage>(`/runs/${runId}/events?after=${after}`);
    events.push(...page.events);
    after = page.last_seq;
    if (!page.more) return { events, last: after };
  }
}

export const FINISHED = ["succeeded", "failed", "cancelled", "timed_out"];

export function useLiveRun(runId: string | null) {
  const events = useRef<MazeEvent[]>([]);
  const live = useRef<FoldRun>(emptyRun(runId ?? ""));
  const [streamFrom, setStreamFrom] = useState<number | null>(null);
  const [version, setVersion] = useState(0);
  const [error, setError] = useState<ApiError | null>(null);
  const frame = useRef<number | null>(null);

  useEffect(() => {
    let stop = false;
    events.current = [];
    live.current = emptyRun(runId ?? "");
    setStreamFrom(null);
    setError(null);
    setVersion((v) => v + 1);
    if (!runId) return;
    loadEvents(runId)
      .then((loaded) => {
        if (stop) return;
        events.current = loaded.events;
        live.current = foldEvents(loaded.events);
        setStreamFrom(loaded.last);
        setVersion((v) => v + 1);
      })
      .catch((e) => !stop && setError(e));
    return () => {
      stop = true;
    };
  }, [runId]);

  const { status } = useFollow(runId && streamFrom !== null ? `/runs/${runId}/stream?after=${streamFrom}` : null, (ev) => {
    if (ev.event !== "events") return;
    const batch = JSON.parse(ev.data) as MazeEvent[];
    for (const e of batch) {
      events.current.push(e);
      foldEvent(live.current, e);
    }
    if (frame.current === null) {
      frame.current = requestAnimationFrame(() => {
        frame.current = null;
        setVersion((v) => v + 1);
      });
    }
  });
  const finished = FINISHED.includes(live.current.state);
  return { events, live, version, status, error, finished };
}
