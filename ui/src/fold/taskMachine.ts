// The one task state machine, as maze/core/task_machine.py has it: the same states, the same
// rules, so that a fold of the events here says what the server's read models say.
import type { MazeEvent } from "../api/types";

export const TERMINAL = new Set(["succeeded", "failed", "cancelled", "timed_out"]);
const FAILED = new Set(["failed", "timed_out"]);
const PLACEABLE = new Set(["pending", "retry_wait"]);
const ACTIVE = new Set(["queued", "running"]);
const TIMEOUT_ERRORS = new Set(["timed_out", "timeout"]);

export const PLACED = "placed";
export const STARTED = "started";
export const SUCCEEDED = "succeeded";
export const FAILED_NOW = "failed";
export const REQUEUED = "requeued";
export const RETRY = "retry";

export interface Transition {
  state: string;
  attempt: number;
  failures: number;
  effect: string;
}

interface ErrorLike {
  error_type: string;
  origin?: string;
}

export function failureState(error: ErrorLike): string {
  if (error.error_type === "cancelled") return "cancelled";
  return TIMEOUT_ERRORS.has(error.error_type) ? "timed_out" : "failed";
}

/** Whether `ev` is a worker's report on an attempt not placed on its node. */
export function foreign(ev: MazeEvent, placedOn: string | null): boolean {
  const t = ev.type;
  if (t === "attempt.failed") {
    const error = ev.error as ErrorLike;
    if (error.origin === "controller" || ev.epoch) return false;
    return (ev.node_id ?? null) !== placedOn;
  }
  if (t === "attempt.started" || t === "attempt.succeeded" || t === "attempt.rejected" || t === "artifact.registered") {
    return ev.node_id !== placedOn;
  }
  return false;
}

export function transition(
  state: string,
  attempt: number,
  failures: number,
  ev: MazeEvent,
  placedOn: string | null,
): Transition | null {
  if (foreign(ev, placedOn)) return null;
  const n = ev.attempt as number;
  switch (ev.type) {
    case "retry.scheduled":
      if ((FAILED.has(state) || PLACEABLE.has(state)) && (ev.next_attempt as number) > attempt)
        return { state: "retry_wait", attempt, failures, effect: RETRY };
      return null;
    case "attempt.placed":
      if (PLACEABLE.has(state) && n > attempt) return { state: "queued", attempt: n, failures, effect: PLACED };
      return null;
    case "attempt.started":
      if (n === attempt && state === "queued") return { state: "running", attempt, failures, effect: STARTED };
      return null;
    case "attempt.succeeded":
      if (n === attempt && ACTIVE.has(state)) return { state: "succeeded", attempt, failures, effect: SUCCEEDED };
      return null;
    case "attempt.failed": {
      const error = ev.error as ErrorLike;
      if (error.origin === "controller" && n === attempt + 1 && PLACEABLE.has(state))
        return { state: failureState(error), attempt: n, failures: failures + 1, effect: FAILED_NOW };
      if (n === attempt && ACTIVE.has(state))
        return { state: failureState(error), attempt, failures: failures + 1, effect: FAILED_NOW };
      return null;
    }
    case "attempt.rejected":
      if (n === attempt && state === "queued") return { state: "pending", attempt, failures, effect: REQUEUED };
      return null;
    case "attempt.lost":
      if (n !== attempt || !ACTIVE.has(state)) return null;
      if (state === "queued") return { state: "pending", attempt, failures, effect: REQUEUED };
      return { state: "failed", attempt, failures: failures + 1, effect: FAILED_NOW };
    default:
      return null;
  }
}
