import { describe, expect, it } from "vitest";
import { countStates, foldEvents, upstreamOf } from "./runFold";
import type { MazeEvent } from "../api/types";

const spec = (id: string, inputs: Record<string, unknown> = {}) => ({ task_id: id, name: id, func_name: id, inputs, after: [], carried: null });
const ref = (id: string) => ({ type: "ref", task_id: id, key: "out" });
const created = (tasks: unknown[], extra: Record<string, unknown> = {}): MazeEvent => ({ type: "run.created", run_id: "run_x", at_ms: 1, kind: "static", tasks, seq: 1, ...extra });
const ev = (type: string, task: string, attempt: number, extra: Record<string, unknown> = {}, seq = 2): MazeEvent => ({ type, run_id: "run_x", task_id: task, attempt, node_id: "n1", at_ms: 10 * seq, seq, ...extra });
const err = (t = "user_code") => ({ error_type: t, message: "boom", origin: "task" });

describe("foldEvents", () => {
  it("walks a task through placed, started, succeeded, and the run from created to succeeded", () => {
    const events = [
      created([spec("a"), spec("b", { x: ref("a") })]),
      ev("attempt.placed", "a", 1, {}, 2),
      ev("attempt.started", "a", 1, {}, 3),
      ev("attempt.succeeded", "a", 1, {}, 4),
      { type: "run.finished", run_id: "run_x", at_ms: 50, state: "succeeded", seq: 5 },
    ];
    expect(foldEvents(events, 1).state).toBe("created");
    expect(foldEvents(events, 2).tasks.get("a")!.state).toBe("queued");
    expect(foldEvents(events, 2).state).toBe("running");
    expect(foldEvents(events, 3).tasks.get("a")!.state).toBe("running");
    const end = foldEvents(events);
    expect(end.tasks.get("a")!.state).toBe("succeeded");
    expect(end.tasks.get("b")!.state).toBe("cancelled"); // never placed: cancelled when the run ended
    expect(end.state).toBe("succeeded");
    expect(end.tasks.get("b")!.upstream).toEqual(["a"]);
    expect(countStates(end)).toEqual({ succeeded: 1, cancelled: 1 });
  });

  it("counts a failure, waits for a retry, and places the next attempt", () => {
    const events = [
      created([spec("a")]),
      ev("attempt.placed", "a", 1, {}, 2),
      ev("attempt.started", "a", 1, {}, 3),
      ev("attempt.failed", "a", 1, { error: err() }, 4),
      { type: "retry.scheduled", run_id: "run_x", task_id: "a", next_attempt: 2, at_ms: 41, delay_ms: 100, seq: 5 },
      ev("attempt.placed", "a", 2, {}, 6),
    ];
    const failed = foldEvents(events, 4).tasks.get("a")!;
    expect([failed.state, failed.attempt, failed.failures]).toEqual(["failed", 1, 1]);
    const waiting = foldEvents(events, 5);
    expect(waiting.tasks.get("a")!.state).toBe("retry_wait");
    expect(waiting.waits).toEqual([{ task_id: "a", from_ms: 41, until_ms: 141 }]);
    const again = foldEvents(events).tasks.get("a")!;
    expect([again.state, again.attempt, again.failures]).toEqual(["queued", 2, 1]);
  });

  it("ignores a report from a node the attempt was not placed on, and a second terminal event", () => {
    const events = [
      created([spec("a")]),
      ev("attempt.placed", "a", 1, {}, 2),
      ev("attempt.started", "a", 1, { node_id: "intruder" }, 3),
      ev("attempt.started", "a", 1, {}, 4),
      ev("attempt.succeeded", "a", 1, {}, 5),
      ev("attempt.failed", "a", 1, { error: err() }, 6),
    ];
    const run = foldEvents(events);
    expect(run.tasks.get("a")!.state).toBe("succeeded");
    expect(run.attempts.get("a#1")!.state).toBe("succeeded");
    expect(foldEvents(events, 3).tasks.get("a")!.state).toBe("queued");
  });

  it("maps error types to end states: timeout, cancelled; a rejection or a loss before the start requeues", () => {
    const timedOut = foldEvents([created([spec("a")]), ev("attempt.placed", "a", 1), ev("attempt.failed", "a", 1, { error: err("timeout") }, 3)]);
    expect(timedOut.tasks.get("a")!.state).toBe("timed_out");
    const cancelled = foldEvents([created([spec("a")]), ev("attempt.placed", "a", 1), ev("attempt.failed", "a", 1, { error: err("cancelled") }, 3)]);
    expect(cancelled.tasks.get("a")!.state).toBe("cancelled");
    const rejected = foldEvents([created([spec("a")]), ev("attempt.placed", "a", 1), ev("attempt.rejected", "a", 1, { reason: "full" }, 3)]);
    expect([rejected.tasks.get("a")!.state, rejected.attempts.get("a#1")!.state]).toEqual(["pending", "rejected"]);
    const lost = foldEvents([created([spec("a")]), ev("attempt.placed", "a", 1), ev("attempt.started", "a", 1, {}, 3), ev("attempt.lost", "a", 1, {}, 4)]);
    expect([lost.tasks.get("a")!.state, lost.tasks.get("a")!.failures]).toEqual(["failed", 1]);
  });

  it("skips refused and unknown events, adds chunks and appended tasks within max_tasks", () => {
    const run = foldEvents([
      created([spec("a")], { kind: "dynamic", max_tasks: 2 }),
      { ...ev("attempt.placed", "a", 1), refused: "deposed leader" },
      { type: "something.new", seq: 3, unknown_type: true },
      { type: "task.appended", run_id: "run_x", at_ms: 5, tasks: [spec("b", { x: ref("a") })], seq: 4 },
      { type: "task.appended", run_id: "run_x", at_ms: 6, tasks: [spec("c")], seq: 5 },
      { type: "tasks.added", run_id: "run_x", chunk: 1, at_ms: 7, tasks: [spec("d")], offset: 1, seq: 6 },
    ]);
    expect(run.tasks.get("a")!.state).toBe("pending");
    expect(run.tasks.has("b")).toBe(true);
    expect(run.tasks.has("c")).toBe(false); // past max_tasks: refused, as the controller refuses it
    expect(run.tasks.get("d")!.task_index).toBe(1);
    expect(run.events).toBe(6);
  });

  it("a carried task starts succeeded; upstream reads gathers and after", () => {
    const run = foldEvents([created([{ ...spec("a"), carried: "x" }])]);
    expect(run.tasks.get("a")!.state).toBe("succeeded");
    expect(
      upstreamOf({ task_id: "z", name: "z", func_name: "z", after: ["q"], inputs: { g: { type: "gather", items: [ref("b"), { type: "value", value: 1 }, ref("a")] } } }),
    ).toEqual(["a", "b", "q"]);
  });
});
