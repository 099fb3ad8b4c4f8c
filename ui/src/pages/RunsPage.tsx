// The Runs console: every run of every kind, filtered and paged by the head (`GET /runs` with its
// cursor: never every run in the browser), refreshed live from `GET /runs/changes`.
import { useCallback, useEffect, useRef, useState } from "react";
import { Link, useSearchParams } from "react-router-dom";
import { ApiError, apiFetch } from "../api/client";
import { useFollow } from "../api/hooks";
import type { ListedRun } from "../api/types";
import { ErrorBox, StateBadge, duration, when } from "../components/common";
import { StreamStatus } from "../components/StreamStatus";
import { type Pager, RequestSeq, cursorsFor, runsQuery } from "./runsPaging";

const STATES = ["", "created", "running", "succeeded", "failed", "cancelled", "timed_out"];
const KINDS = ["", "static", "dynamic", "react", "app"];
const PAGE = 50;

export function RunsPage() {
  const [params, setParams] = useSearchParams();
  const filters = {
    state: params.get("state") ?? "",
    kind: params.get("kind") ?? "",
    after: params.get("after") ?? "",
    before: params.get("before") ?? "",
    search: params.get("search") ?? "",
  };
  const [searchText, setSearchText] = useState(filters.search);
  const [runs, setRuns] = useState<ListedRun[] | null>(null);
  const [nextOf, setNextOf] = useState<{ key: string; cursor: string | null }>({ key: "", cursor: null });
  const [error, setError] = useState<ApiError | null>(null);
  const [, tick] = useState(0);
  const key = JSON.stringify(filters);
  const [pager, setPager] = useState<Pager>({ key, cursors: [""] });
  const cursors = cursorsFor(pager, key); // a new filter is on its first page in this very render
  const cursor = cursors[cursors.length - 1];
  const setCursors = (c: string[]) => setPager({ key, cursors: c });
  const requests = useRef(new RequestSeq());
  const next = nextOf.key === key ? nextOf.cursor : null; // never the next page of other filters

  const load = useCallback(
    async (minSeq?: number) => {
      const seq = requests.current.begin();
      const q = runsQuery(filters, cursor, PAGE, minSeq);
      try {
        const resp = await apiFetch(`/runs?${q}`);
        const body = (await resp.json()) as ListedRun[];
        if (!requests.current.isCurrent(seq)) return; // a newer request was sent since
        setRuns(body);
        setNextOf({ key, cursor: resp.headers.get("x-next-cursor") });
        setError(null);
      } catch (e) {
        if (!requests.current.isCurrent(seq)) return;
        setRuns(null); // no rows from another filter or page under the error
        setNextOf({ key, cursor: null });
        setError(e as ApiError);
      }
    },
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [key, cursor],
  );

  useEffect(() => {
    load();
  }, [load]);
  useEffect(() => {
    const t = setInterval(() => tick((n) => n + 1), 1000); // running durations move
    return () => clearInterval(t);
  }, []);
  useEffect(() => {
    const t = setTimeout(() => set("search", searchText), 300);
    return () => clearTimeout(t);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [searchText]);

  // a change anywhere: read this page again (coalesced), at least as far as the change
  const pending = useRef<number | null>(null);
  const reload = useRef(load);
  reload.current = load;
  const { status } = useFollow(
    "/runs/changes?hold_s=60",
    (ev) => {
      if (ev.event !== "changes") return;
      const body = JSON.parse(ev.data) as { seq: number; runs: Record<string, number>; overflow: boolean };
      if (!body.overflow && !Object.keys(body.runs).length) return;
      if (pending.current !== null) return;
      pending.current = window.setTimeout(() => {
        pending.current = null;
        reload.current(body.seq);
      }, 300);
    },
    { renew: true },
  );

  function set(name: string, value: string) {
    if ((params.get(name) ?? "") === value) return;
    setParams(
      (prev) => {
        const p = new URLSearchParams(prev);
        if (value) p.set(name, value);
        else p.delete(name);
        return p;
      },
      { replace: true },
    );
  }

  const now = Date.now();
  return (
    <div className="page">
      <div className="page-head">
        <h1>Runs</h1>
        <StreamStatus status={status} />
      </div>
      <div className="filters">
        <label>
          Status
          <select aria-label="status" value={filters.state} onChange={(e) => set("state", e.target.value)}>
            {STATES.map((s) => (
              <option key={s} value={s}>{s || "any"}</option>
            ))}
          </select>
        </label>
        <label>
          Kind
          <select aria-label="kind" value={filters.kind} onChange={(e) => set("kind", e.target.value)}>
            {KINDS.map((s) => (
              <option key={s} value={s}>{s || "any"}</option>
            ))}
          </select>
        </label>
        <label>
          From
          <input aria-label="created after" type="datetime-local" value={filters.after} onChange={(e) => set("after", e.target.value)} />
        </label>
        <label>
          To
          <input aria-label="created before" type="datetime-local" value={filters.before} onChange={(e) => set("before", e.target.value)} />
        </label>
        <label className="grow">
          Search
          <input aria-label="search" type="search" placeholder="workflow id or task name" value={searchText} onChange={(e) => setSearchText(e.target.value)} />
        </label>
      </div>
      <ErrorBox error={error} />
      <table className="runs">
        <thead>
          <tr>
            <th>Status</th>
            <th>Kind</th>
            <th>Name</th>
            <th>Run</th>
            <th>Tasks</th>
            <th>Started</th>
            <th>Duration</th>
          </tr>
        </thead>
        <tbody>
          {(runs ?? []).map((r) => (
            <tr key={r.run_id} data-run={r.run_id} data-state={r.state}>
              <td><StateBadge state={r.state} /></td>
              <td><span className="kind">{r.kind}</span></td>
              <td><Link to={`/runs/${r.run_id}`}>{r.workflow_id}</Link></td>
              <td className="mono muted"><Link to={`/runs/${r.run_id}`}>{r.run_id}</Link></td>
              <td>{r.tasks_succeeded}/{r.task_count}{r.tasks_failed ? <span className="bad"> · {r.tasks_failed} failed</span> : null}</td>
              <td>{when(r.started_at_ms ?? r.created_at_ms)}</td>
              <td>{r.started_at_ms ? duration((r.finished_at_ms ?? now) - r.started_at_ms) : "—"}</td>
            </tr>
          ))}
          {runs && !runs.length ? (
            <tr><td colSpan={7} className="muted empty">No runs match.</td></tr>
          ) : null}
        </tbody>
      </table>
      <div className="pager">
        <button disabled={cursors.length < 2} onClick={() => setCursors(cursors.slice(0, -1))}>← Newer</button>
        <span className="muted">page {cursors.length}</span>
        <button disabled={!next} onClick={() => next && setCursors([...cursors, next])}>Older →</button>
      </div>
    </div>
  );
}
