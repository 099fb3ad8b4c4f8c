// The selected task: inputs, outputs, resources, placement, structured error with traceback, its
// attempts, its logs (followed live) and its events.
import { useEffect, useRef, useState } from "react";
import { ApiError, getJson } from "../api/client";
import { useFollow } from "../api/hooks";
import type { LogLine, MazeEvent, TaskDetail } from "../api/types";
import { ErrorBox, Json, StateBadge, duration, when } from "../components/common";
import { StreamStatus } from "../components/StreamStatus";
import { errorLine, readableInputs } from "../components/taskText";

interface Props {
  runId: string;
  taskId: string;
  /** Changes whenever the task's folded state does: the detail is read again. */
  version: string;
  minSeq: number;
  events: MazeEvent[];
  /** The name of a task of the run, where the page knows it (inputs read from it). */
  nameOf: (taskId: string) => string | undefined;
}

const TABS = ["details", "logs", "events"] as const;

export function TaskPanel({ runId, taskId, version, minSeq, events, nameOf }: Props) {
  const [tab, setTab] = useState<(typeof TABS)[number]>("details");
  const [task, setTask] = useState<TaskDetail | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  useEffect(() => {
    let live = true;
    getJson<TaskDetail>(`/runs/${runId}/tasks/${encodeURIComponent(taskId)}?min_seq=${minSeq}`)
      .then((t) => live && (setTask(t), setError(null)))
      .catch((e) => live && setError(e));
    return () => {
      live = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [runId, taskId, version]);
  const mine = events.filter((e) => e.task_id === taskId);
  return (
    <div className="panel task-panel" data-task-panel={taskId}>
      <div className="panel-head">
        <h3>{task?.name ?? taskId}</h3>
        {task ? <StateBadge state={task.state} /> : null}
      </div>
      <div className="tabs">
        {TABS.map((t) => (
          <button key={t} className={t === tab ? "active" : ""} onClick={() => setTab(t)}>{t}</button>
        ))}
      </div>
      <ErrorBox error={error} />
      {tab === "details" && task ? <Details task={task} nameOf={nameOf} /> : null}
      {tab === "logs" ? <Logs runId={runId} taskId={taskId} /> : null}
      {tab === "events" ? (
        <div className="events-list">
          {mine.map((e, i) => (
            <details key={i}>
              <summary><span className="mono">#{e.seq}</span> {e.type} {e.attempt !== undefined ? `(attempt ${e.attempt})` : ""}</summary>
              <Json value={e} />
            </details>
          ))}
        </div>
      ) : null}
    </div>
  );
}

function Details({ task, nameOf }: { task: TaskDetail; nameOf: Props["nameOf"] }) {
  return (
    <div className="details">
      <dl>
        <dt>Task</dt><dd className="mono">{task.task_id}</dd>
        <dt>Function</dt><dd className="mono">{task.func_name}</dd>
        <dt>Attempt</dt><dd>{task.attempt} ({task.failures} failed)</dd>
        <dt>Placement</dt><dd>{task.node_id ? `${task.node_id}${task.node_ip ? ` (${task.node_ip})` : ""}` : "—"}{task.gpus?.length ? ` · GPUs ${task.gpus.join(",")}` : ""}</dd>
        <dt>Why there</dt><dd>{task.placement_reason ?? "—"}</dd>
        {task.pending_reason ? (<><dt>Waiting</dt><dd className="warn">{task.pending_reason}</dd></>) : null}
        <dt>Ran</dt><dd>{when(task.started_at_ms)} · {task.started_at_ms ? duration((task.finished_at_ms ?? Date.now()) - task.started_at_ms) : "—"}</dd>
      </dl>
      {task.error ? (
        <div className="task-error" data-error-type={task.error.error_type}>
          <div className="error-line">{errorLine(task.error)}</div>
          <div className="muted">origin {task.error.origin ?? "?"} · attempt {task.error.attempt ?? "?"}{task.error.retryable ? " · retryable" : ""}{task.error.node_id ? ` · on ${task.error.node_id}` : ""}</div>
          {task.error.traceback ? <pre className="traceback">{task.error.traceback}</pre> : null}
        </div>
      ) : null}
      <h4>Inputs</h4>
      <Json value={readableInputs(task.inputs, nameOf)} />
      <h4>Outputs</h4>
      <Json value={task.result ?? task.outputs} />
      <h4>Resources</h4>
      <Json value={task.resources} />
      <h4>Attempts</h4>
      <div className="table-scroll">
      <table className="attempts">
        <thead><tr><th>#</th><th>State</th><th>Node</th><th>Placed</th><th>Duration</th><th>Note</th></tr></thead>
        <tbody>
          {task.attempts.map((a) => (
            <tr key={a.attempt}>
              <td>{a.attempt}</td>
              <td><StateBadge state={a.state} /></td>
              <td>{a.node_id ?? "—"}</td>
              <td>{when(a.placed_at_ms)}</td>
              <td>{duration(a.duration_ms ?? (a.started_at_ms && a.finished_at_ms ? a.finished_at_ms - a.started_at_ms : null))}</td>
              <td className="muted">{a.error?.message ?? a.reason ?? ""}</td>
            </tr>
          ))}
        </tbody>
      </table>
      </div>
    </div>
  );
}

const MAX_LINES = 5000;

function Logs({ runId, taskId }: { runId: string; taskId: string }) {
  const [lines, setLines] = useState<LogLine[]>([]);
  const box = useRef<HTMLPreElement>(null);
  const { status, error } = useFollow(`/runs/${runId}/logs/stream?task_id=${encodeURIComponent(taskId)}`, (ev) => {
    if (ev.event !== "logs") return;
    const fresh = JSON.parse(ev.data) as LogLine[];
    setLines((old) => [...old, ...fresh].slice(-MAX_LINES));
  });
  useEffect(() => {
    const el = box.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [lines]);
  return (
    <div>
      <StreamStatus status={status} />
      <ErrorBox error={error} />
      <pre className="logs" ref={box} data-logs={taskId}>
        {lines.map((l) => (
          <div key={l.cursor} className={`log-${l.stream}`}>
            <span className="muted">{new Date(l.at_ms).toLocaleTimeString()} #{l.attempt} </span>
            {l.line}
          </div>
        ))}
        {!lines.length ? <span className="muted">no output yet</span> : null}
      </pre>
    </div>
  );
}
