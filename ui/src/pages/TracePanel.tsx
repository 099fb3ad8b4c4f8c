// A ReAct run's agent trace (`GET /runs/{id}/trace`): each step's decision, tool calls,
// observations, repairs and compactions, and the final answer; read again shortly after new events
// and when the run finishes, so a live run's trace never stays behind its DAG.
import { useEffect, useRef, useState } from "react";
import { useJson } from "../api/hooks";
import { ErrorBox, Json, StateBadge } from "../components/common";

interface Step {
  step: number;
  decision?: { task_id: string; kind: string; action: unknown };
  tool_calls?: Record<string, { call: string; tool: string; args: unknown; task?: { state?: string } }> | unknown[];
  observations?: unknown[];
  repair?: string;
  compactions?: Record<string, unknown>;
}
interface Trace {
  prompt?: string;
  state: string;
  steps: Step[];
  final: unknown;
  error?: { message: string } | null;
}

/** After new events, the trace is read again this long after the first of them (at most once
 * per this long however fast they come), and once more when the run finishes. */
const TRAILING_MS = 700;

export function TracePanel({ runId, version, finished }: { runId: string; version: number; finished: boolean }) {
  const [reads, setReads] = useState(0);
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null);
  useEffect(() => {
    if (timer.current !== null) return; // one is due: it reads what came meanwhile too
    timer.current = setTimeout(() => {
      timer.current = null;
      setReads((n) => n + 1);
    }, TRAILING_MS);
  }, [version]);
  useEffect(
    () => () => {
      if (timer.current !== null) clearTimeout(timer.current);
      timer.current = null;
    },
    [],
  );
  // the route reads the run's log itself (up to its end when asked): nothing the page has is missed
  const { data, error } = useJson<Trace>(`/runs/${runId}/trace`, [reads, finished]);
  if (error) return <ErrorBox error={error} />;
  if (!data) return <div className="muted">loading trace…</div>;
  return (
    <div className="panel trace">
      {data.prompt ? <div className="prompt"><b>Prompt:</b> {data.prompt}</div> : null}
      {data.steps.map((s) => {
        const calls = Array.isArray(s.tool_calls) ? s.tool_calls : Object.values(s.tool_calls ?? {});
        return (
          <div key={s.step} className="trace-step">
            <div className="trace-head">Step {s.step} {s.decision ? <span className="muted">· {s.decision.kind}</span> : null}</div>
            {s.decision ? <Json value={s.decision.action} /> : null}
            {calls.map((c, i) => {
              const call = c as { tool: string; args: unknown; task?: { state?: string } };
              return (
                <div key={i} className="tool-call">
                  🔧 <b>{call.tool}</b> {call.task?.state ? <StateBadge state={call.task.state} /> : null}
                  <Json value={call.args} />
                </div>
              );
            })}
            {s.repair ? <div className="repair">⚠ repair: {s.repair}</div> : null}
            {s.observations?.length ? <details><summary>observations</summary><Json value={s.observations} /></details> : null}
            {s.compactions ? <details><summary>compactions</summary><Json value={s.compactions} /></details> : null}
          </div>
        );
      })}
      {data.final !== null && data.final !== undefined ? <div className="final"><b>Final answer:</b> <Json value={data.final} /></div> : null}
      {data.error ? <div className="error-box">{data.error.message}</div> : null}
    </div>
  );
}
