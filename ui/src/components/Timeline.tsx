// Each task's attempts on one time axis: queued (placed → started), running (started → end),
// retry_wait (the backoff before the next attempt). From the fold, so time travel moves it too.
// Failed, then running, waiting and queued tasks come first (taskOrder.ts).
import type { FoldRun } from "../fold/runFold";
import { byAttention } from "../fold/taskOrder";

const MAX_ROWS = 200;

interface Props {
  run: FoldRun;
  /** Where what is still open (queued, running) ends: now, or the chosen event's time in history. */
  now: number;
  /** The axis' end: the run's end (or now), also in history, so the bars keep their scale. */
  end?: number;
  selected: string | null;
  onSelect: (id: string) => void;
}

export function Timeline({ run, now, end, selected, onSelect }: Props) {
  const t0 = run.created_at_ms ?? now;
  const t1 = Math.max(end ?? run.finished_at_ms ?? now, t0 + 1);
  const span = t1 - t0;
  const pct = (t: number) => `${(Math.max(0, Math.min(t, t1) - t0) / span) * 100}%`;
  const width = (a: number, b: number) => `${Math.max(0.3, ((Math.min(b, t1) - Math.max(a, t0)) / span) * 100)}%`;
  const byTask = new Map<string, { kind: string; from: number; to: number; label: string }[]>();
  const bar = (task: string, kind: string, from: number, to: number, label: string) => {
    if (!byTask.has(task)) byTask.set(task, []);
    byTask.get(task)!.push({ kind, from, to, label });
  };
  for (const a of run.attempts.values()) {
    if (a.placed_at_ms !== null) {
      const end = a.started_at_ms ?? a.finished_at_ms ?? (a.state === "queued" ? now : a.placed_at_ms);
      bar(a.task_id, "queued", a.placed_at_ms, end, `attempt ${a.attempt} queued`);
    }
    if (a.started_at_ms !== null) {
      bar(a.task_id, a.state === "running" ? "running" : a.state, a.started_at_ms, a.finished_at_ms ?? now, `attempt ${a.attempt} ${a.state}`);
    }
  }
  for (const w of run.waits) bar(w.task_id, "retry_wait", w.from_ms, w.until_ms, "retry_wait");
  const tasks = byAttention(run.tasks.values()); // failed and running first: found in a big run
  const shown = tasks.slice(0, MAX_ROWS);
  return (
    <div className="timeline">
      <div className="legend">
        <span className="tl-bar tl-queued" /> queued <span className="tl-bar tl-running" /> running
        <span className="tl-bar tl-retry_wait" /> retry_wait <span className="tl-bar tl-succeeded" /> succeeded
        <span className="tl-bar tl-failed" /> failed
      </div>
      {shown.map((t) => (
        <div key={t.task_id} className={`tl-row${t.task_id === selected ? " selected" : ""}`} onClick={() => onSelect(t.task_id)}>
          <div className="tl-name" title={t.task_id}>{t.name}</div>
          <div className="tl-track">
            {(byTask.get(t.task_id) ?? []).map((b, i) => (
              <div key={i} className={`tl-seg tl-${b.kind}`} style={{ left: pct(b.from), width: width(b.from, b.to) }} title={b.label} />
            ))}
          </div>
        </div>
      ))}
      {tasks.length > MAX_ROWS ? <div className="muted">… {tasks.length - MAX_ROWS} more tasks (select one in the DAG)</div> : null}
    </div>
  );
}
