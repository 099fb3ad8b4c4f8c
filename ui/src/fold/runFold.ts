// A run's tasks and attempts as they were after a prefix of its events: the same fold as the
// server's read models (maze/projections/fold.py), in the same state vocabulary. Pure: events in,
// model out; `foldEvent` changes the model it is given (a copy is the caller's choice).
import type { MazeEvent } from "../api/types";
import { FAILED_NOW, PLACED, REQUEUED, STARTED, SUCCEEDED, TERMINAL, foreign, failureState, transition } from "./taskMachine";

export interface FoldTask {
  task_id: string;
  name: string;
  func_name: string;
  task_index: number;
  upstream: string[];
  state: string;
  attempt: number;
  failures: number;
  node_id: string | null;
  queued_at_ms: number | null;
  started_at_ms: number | null;
  finished_at_ms: number | null;
  error: unknown;
}

export interface FoldAttempt {
  task_id: string;
  attempt: number;
  state: string;
  node_id: string | null;
  placed_at_ms: number | null;
  started_at_ms: number | null;
  finished_at_ms: number | null;
  error: unknown;
}

/** A wait before a retry (the timeline's retry_wait bar). */
export interface FoldWait {
  task_id: string;
  from_ms: number;
  until_ms: number;
}

export interface FoldRun {
  run_id: string;
  kind: string;
  state: string;
  created_at_ms: number | null;
  started_at_ms: number | null;
  finished_at_ms: number | null;
  max_tasks: number | null;
  tasks: Map<string, FoldTask>;
  attempts: Map<string, FoldAttempt>;
  waits: FoldWait[];
  /** How many events were folded. */
  events: number;
  last_seq: number;
}

const ATTEMPT_ENDED = new Set(["succeeded", "failed", "timed_out", "rejected", "lost", "cancelled"]);
const ATTEMPT_EVENTS = new Set([
  "attempt.placed",
  "attempt.started",
  "attempt.succeeded",
  "attempt.failed",
  "attempt.rejected",
  "attempt.lost",
]);

export function emptyRun(runId = ""): FoldRun {
  return {
    run_id: runId,
    kind: "static",
    state: "created",
    created_at_ms: null,
    started_at_ms: null,
    finished_at_ms: null,
    max_tasks: null,
    tasks: new Map(),
    attempts: new Map(),
    waits: [],
    events: 0,
    last_seq: 0,
  };
}

const attemptKey = (taskId: string, n: number) => `${taskId}#${n}`;

type Spec = { task_id: string; name: string; func_name: string; inputs?: Record<string, unknown>; after?: string[]; carried?: unknown };

/** The tasks a spec's inputs read from, and those it waits for (`after`), sorted. */
export function upstreamOf(spec: Spec): string[] {
  const found = new Set<string>(spec.after ?? []);
  const visit = (given: unknown) => {
    const g = given as { type?: string; task_id?: string; items?: unknown[] };
    if (!g || typeof g !== "object") return;
    if (g.type === "ref" && g.task_id) found.add(g.task_id);
    else if (g.type === "gather") (g.items ?? []).forEach(visit);
  };
  Object.values(spec.inputs ?? {}).forEach(visit);
  return [...found].sort();
}

function addTasks(run: FoldRun, specs: Spec[], offset: number): void {
  specs.forEach((spec, i) => {
    if (run.tasks.has(spec.task_id)) return;
    const carried = spec.carried !== null && spec.carried !== undefined;
    run.tasks.set(spec.task_id, {
      task_id: spec.task_id,
      name: spec.name,
      func_name: spec.func_name,
      task_index: offset + i,
      upstream: upstreamOf(spec),
      state: carried ? "succeeded" : "pending",
      attempt: 0,
      failures: 0,
      node_id: null,
      queued_at_ms: null,
      started_at_ms: null,
      finished_at_ms: null,
      error: null,
    });
  });
}

function appendRefused(run: FoldRun, specs: Spec[]): boolean {
  if (run.max_tasks === null || TERMINAL.has(run.state) || run.tasks.size + specs.length > run.max_tasks) return true;
  const fresh = new Set<string>();
  for (const spec of specs) {
    if (run.tasks.has(spec.task_id) || fresh.has(spec.task_id)) return true;
    if (upstreamOf(spec).some((up) => !run.tasks.has(up) && !fresh.has(up))) return true;
    fresh.add(spec.task_id);
  }
  return false;
}

function finish(run: FoldRun, ev: MazeEvent): void {
  if (TERMINAL.has(run.state)) return;
  run.state = ev.state as string;
  run.finished_at_ms = ev.at_ms as number;
  for (const task of run.tasks.values()) {
    if (task.state === "pending" || task.state === "retry_wait") {
      task.state = "cancelled";
      task.error = { error_type: "cancelled", message: `not run: the run ended ${run.state}`, origin: "controller" };
    }
  }
}

function foldAttemptRow(row: FoldAttempt, ev: MazeEvent): void {
  const at = ev.at_ms as number;
  switch (ev.type) {
    case "attempt.placed":
      row.node_id = ev.node_id as string;
      row.placed_at_ms = at;
      return;
    case "attempt.started":
      if (row.state === "queued") row.state = "running";
      row.node_id = ev.node_id as string;
      row.started_at_ms = at;
      return;
  }
  if (ATTEMPT_ENDED.has(row.state)) return;
  if (ev.type === "attempt.succeeded") {
    row.state = "succeeded";
    row.finished_at_ms = at;
    row.node_id = ev.node_id as string;
  } else if (ev.type === "attempt.rejected") {
    row.state = "rejected";
    row.finished_at_ms = at;
  } else if (ev.type === "attempt.lost") {
    if (row.state === "running") {
      row.state = "failed";
      row.error = {
        error_type: "node_lost",
        message: `node ${ev.node_id} (session ${ev.session ?? ""}) went away during the attempt` + (ev.reason ? ` (${ev.reason})` : ""),
        retryable: true,
        origin: "controller",
        node_id: ev.node_id,
        attempt: ev.attempt,
      };
    } else row.state = "lost";
    row.finished_at_ms = at;
  } else if (ev.type === "attempt.failed") {
    row.state = failureState(ev.error as { error_type: string });
    row.finished_at_ms = at;
    row.error = ev.error;
    if (ev.node_id && row.node_id === null) row.node_id = ev.node_id as string;
  }
}

/** Apply one event of the run's log to `run` (returned). */
export function foldEvent(run: FoldRun, ev: MazeEvent): FoldRun {
  run.events += 1;
  if (typeof ev.seq === "number") run.last_seq = Math.max(run.last_seq, ev.seq);
  // what this version could not read, or what the log refuses (a deposed leader's decision): no history
  if (ev.unknown_type || ev.malformed || ev.refused) return run;
  const type = ev.type;
  if (type === "run.created") {
    run.run_id = ev.run_id as string;
    run.kind = (ev.kind as string) ?? "static";
    run.created_at_ms = ev.at_ms as number;
    const kind = run.kind;
    run.max_tasks = kind === "dynamic" || kind === "react" ? ((ev.max_tasks as number) ?? 0) : null;
    addTasks(run, ev.tasks as Spec[], 0);
    return run;
  }
  if (type === "run.finished") {
    finish(run, ev);
    return run;
  }
  if (type === "tasks.added") {
    addTasks(run, ev.tasks as Spec[], (ev.offset as number) ?? 0);
    return run;
  }
  if (type === "task.appended") {
    const specs = ev.tasks as Spec[];
    if (!appendRefused(run, specs)) addTasks(run, specs, run.tasks.size);
    return run;
  }
  if (type !== "retry.scheduled" && !ATTEMPT_EVENTS.has(type)) return run; // commands, agent trace, artifacts
  const task = run.tasks.get(ev.task_id as string);
  if (!task) return run;
  const number = ev.attempt as number | undefined;
  const row = number !== undefined ? run.attempts.get(attemptKey(task.task_id, number)) : undefined;
  if (foreign(ev, row ? row.node_id : null)) return run;
  const step = transition(task.state, task.attempt, task.failures, ev, task.node_id);
  if (type === "retry.scheduled") {
    if (step) {
      task.state = step.state;
      const from = ev.at_ms as number;
      run.waits.push({ task_id: task.task_id, from_ms: from, until_ms: from + ((ev.delay_ms as number) ?? 0) });
    }
    return run;
  }
  const key = attemptKey(task.task_id, number as number);
  let attempt = run.attempts.get(key);
  if (!attempt) {
    attempt = {
      task_id: task.task_id,
      attempt: number as number,
      state: "queued",
      node_id: null,
      placed_at_ms: null,
      started_at_ms: null,
      finished_at_ms: null,
      error: null,
    };
    run.attempts.set(key, attempt);
  }
  foldAttemptRow(attempt, ev);
  if (!step) return run;
  task.state = step.state;
  task.attempt = step.attempt;
  task.failures = step.failures;
  const at = ev.at_ms as number;
  if (step.effect === PLACED) {
    task.node_id = ev.node_id as string;
    task.queued_at_ms = at;
    task.error = null;
    task.started_at_ms = task.finished_at_ms = null;
    if (run.state === "created") {
      run.state = "running";
      run.started_at_ms = at;
    }
  } else if (step.effect === STARTED) {
    task.node_id = ev.node_id as string;
    task.started_at_ms = at;
  } else if (step.effect === SUCCEEDED) {
    task.finished_at_ms = at;
    task.error = null;
  } else if (step.effect === FAILED_NOW) {
    task.error = attempt.error ?? ev.error ?? null;
    task.finished_at_ms = at;
  } else if (step.effect === REQUEUED) {
    /* back to pending: placement_reason only (not folded here) */
  }
  return run;
}

export function foldEvents(events: MazeEvent[], upTo = events.length): FoldRun {
  const run = emptyRun();
  for (let i = 0; i < upTo && i < events.length; i++) foldEvent(run, events[i]);
  return run;
}

/** Tasks per state, as the run's `progress` counts them. */
export function countStates(run: FoldRun): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const t of run.tasks.values()) counts[t.state] = (counts[t.state] ?? 0) + 1;
  return counts;
}
