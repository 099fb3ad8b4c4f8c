// A run: its DAG coloured by task state and moved live by the run's SSE stream (the events are
// folded here, by the same rules as the server's read models), a time-travel slider over those
// events, the attempts timeline, the selected task, artifacts, the agent trace of a ReAct run,
// and Cancel / Retry.
import { useEffect, useMemo, useState } from "react";
import { useNavigate, useParams } from "react-router-dom";
import { ApiError, getJson, postJson } from "../api/client";
import type { RunView } from "../api/types";
import { Dag, type DagTask } from "../components/Dag";
import { ErrorBox, StateBadge, duration, when } from "../components/common";
import { StateTasks } from "../components/StateTasks";
import { StreamStatus } from "../components/StreamStatus";
import { Timeline } from "../components/Timeline";
import { countStates, foldEvents } from "../fold/runFold";
import { inState } from "../fold/taskOrder";
import { useLiveRun } from "../fold/useLiveRun";
import { ArtifactsPanel } from "./ArtifactsPanel";
import { TaskPanel } from "./TaskPanel";
import { TracePanel } from "./TracePanel";

export function RunPage() {
  const { runId = "" } = useParams();
  const navigate = useNavigate();
  const [run, setRun] = useState<RunView | null>(null);
  const [actionError, setActionError] = useState<ApiError | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [position, setPosition] = useState<number | null>(null); // null: live (the last event)
  const [selected, setSelected] = useState<string | null>(null);
  const [chosenState, setChosenState] = useState<string | null>(null); // a count chip clicked
  const [tab, setTab] = useState<"timeline" | "artifacts" | "trace">("timeline");
  const { events, live, version, status, error: loadError, finished } = useLiveRun(runId);

  useEffect(() => {
    let stop = false;
    setPosition(null);
    setSelected(null);
    setChosenState(null);
    setRun(null);
    getJson<RunView>(`/runs/${runId}`)
      .then((view) => !stop && setRun(view))
      .catch(() => null);
    return () => {
      stop = true;
    };
  }, [runId]);
  const error = loadError;
  useEffect(() => {
    if (finished) getJson<RunView>(`/runs/${runId}?min_seq=${live.current.last_seq}`).then(setRun).catch(() => null);
  }, [finished, runId]);
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    if (finished) return;
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, [finished]);

  const total = events.current.length;
  const shownModel = useMemo(
    () => (position === null || position >= total ? live.current : foldEvents(events.current, position)),
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [position, version, total],
  );
  const dagTasks: DagTask[] = useMemo(
    () =>
      [...shownModel.tasks.values()]
        .sort((a, b) => a.task_index - b.task_index)
        .map((t) => ({ id: t.task_id, label: t.name, state: t.state, upstream: t.upstream })),
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [shownModel, version],
  );
  const counts = countStates(shownModel);
  const sel = selected ? live.current.tasks.get(selected) : undefined;
  const chosenTasks = chosenState ? inState(shownModel.tasks.values(), chosenState) : [];
  function chooseState(state: string) {
    if (state === chosenState) return setChosenState(null);
    setChosenState(state);
    const first = inState(shownModel.tasks.values(), state)[0];
    if (first) setSelected(first.task_id);
  }
  const failedTask = run?.failed_task_id ? live.current.tasks.get(run.failed_task_id) : undefined;

  async function act(what: "cancel" | "retry") {
    setActionError(null);
    setNotice(null);
    try {
      if (what === "cancel") {
        const r = await postJson<{ state: string }>(`/runs/${runId}/cancel`, {});
        setNotice(r.state === "cancelled" ? "Run cancelled." : "Cancelling…");
      } else {
        const r = await postJson<{ run_id: string }>(`/runs/${runId}/retry`, {});
        navigate(`/runs/${r.run_id}`);
      }
    } catch (e) {
      setActionError(e as ApiError);
    }
  }

  if (error) return <div className="page"><ErrorBox error={error} /></div>;
  const at = position === null ? total : position;
  const atEvent = at > 0 ? events.current[at - 1] : null;
  // in history, "now" is the chosen event's time: what was running then ends there, not today
  const atNow = position === null ? now : ((atEvent?.at_ms as number | undefined) ?? live.current.created_at_ms ?? now);
  return (
    <div className="page run-page">
      <div className="page-head">
        <h1>{run?.workflow_id ?? runId}</h1>
        <StateBadge state={shownModel.state} />
        <span className="kind">{live.current.kind}</span>
        <StreamStatus status={finished && status !== "live" ? "ended" : status} />
        <div className="spacer" />
        <button className="danger" disabled={finished} onClick={() => act("cancel")}>Cancel</button>
        <button onClick={() => act("retry")}>Retry</button>
      </div>
      <div className="run-meta muted">
        <span className="mono">{runId}</span> · created {when(live.current.created_at_ms)} · duration{" "}
        {live.current.started_at_ms ? duration((live.current.finished_at_ms ?? now) - live.current.started_at_ms) : "—"}
        {run?.retry_of ? <> · retries <a href={`/playground/runs/${run.retry_of}`}>{run.retry_of}</a></> : null}
      </div>
      {notice ? <div className="notice">{notice}</div> : null}
      <ErrorBox error={actionError} />
      {run?.error && shownModel.state === live.current.state ? (
        <div className="error-box run-error" role="alert">
          <b>{run.error.error_type}</b>: {run.error.message}
          {run.failed_task_id ? (
            <>
              {" "}· in task{" "}
              <button className="link" data-failed-task={run.failed_task_id} onClick={() => setSelected(run.failed_task_id)}>
                {failedTask?.name ?? run.failed_task_id}
              </button>
            </>
          ) : null}
        </div>
      ) : null}
      <div className="counts">
        {Object.entries(counts).map(([s, n]) => (
          <button
            key={s}
            className={`count state-${s}${s === chosenState ? " chosen" : ""}`}
            data-count={s}
            title={`list the tasks ${s}`}
            onClick={() => chooseState(s)}
          >
            {s} {n}
          </button>
        ))}
      </div>
      {chosenState ? (
        <StateTasks state={chosenState} tasks={chosenTasks} selected={selected} onSelect={setSelected} onClose={() => setChosenState(null)} />
      ) : null}
      <div className="timetravel">
        <input
          type="range"
          aria-label="time travel"
          min={0}
          max={total}
          value={at}
          onChange={(e) => {
            const v = Number(e.target.value);
            setPosition(v >= total ? null : v);
          }}
        />
        <span className="tt-label" data-position={at}>
          {position === null ? "live" : "history"} · event {at} of {total}
          {atEvent ? ` · ${atEvent.type}${atEvent.task_id ? ` ${live.current.tasks.get(atEvent.task_id as string)?.name ?? ""}` : ""} · ${when(atEvent.at_ms as number)}` : ""}
        </span>
        {position !== null ? <button onClick={() => setPosition(null)}>Back to live</button> : null}
      </div>
      <div className="run-body">
        <div className="run-main">
          <Dag tasks={dagTasks} selected={selected} onSelect={setSelected} />
          <div className="tabs">
            <button className={tab === "timeline" ? "active" : ""} onClick={() => setTab("timeline")}>Timeline</button>
            <button className={tab === "artifacts" ? "active" : ""} onClick={() => setTab("artifacts")}>Artifacts</button>
            {live.current.kind === "react" ? (
              <button className={tab === "trace" ? "active" : ""} onClick={() => setTab("trace")}>Agent trace</button>
            ) : null}
          </div>
          {tab === "timeline" ? <Timeline run={shownModel} now={atNow} end={live.current.finished_at_ms ?? now} selected={selected} onSelect={setSelected} /> : null}
          {tab === "artifacts" ? <ArtifactsPanel runId={runId} version={finished ? 1 : 0} /> : null}
          {tab === "trace" ? <TracePanel runId={runId} version={version} finished={finished} /> : null}
        </div>
        <div className="run-side">
          {selected && sel ? (
            <TaskPanel
              runId={runId}
              taskId={selected}
              version={`${sel.state}:${sel.attempt}`}
              minSeq={live.current.last_seq}
              events={events.current}
              nameOf={(id) => live.current.tasks.get(id)?.name}
            />
          ) : (
            <div className="panel muted">Select a task in the DAG or the timeline.</div>
          )}
        </div>
      </div>
    </div>
  );
}
