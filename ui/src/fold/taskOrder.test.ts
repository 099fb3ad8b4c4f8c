import { describe, expect, it } from "vitest";
import type { FoldTask } from "./runFold";
import { byAttention, inState } from "./taskOrder";

const task = (i: number, state: string) => ({ task_id: `t${i}`, name: `shard_${i}`, task_index: i, state }) as FoldTask;

describe("byAttention", () => {
  it("lists failed, then running, retry_wait and queued tasks before the rest, each in task order", () => {
    const tasks = [task(0, "succeeded"), task(1, "running"), task(2, "pending"), task(3, "queued"), task(700, "failed"), task(4, "timed_out"), task(5, "retry_wait"), task(6, "running")];
    expect(byAttention(tasks).map((t) => t.task_index)).toEqual([4, 700, 1, 6, 5, 3, 0, 2]);
  });
});

describe("inState", () => {
  it("keeps only the tasks in that state, in task order", () => {
    const tasks = [task(9, "failed"), task(1, "succeeded"), task(3, "failed")];
    expect(inState(tasks, "failed").map((t) => t.task_id)).toEqual(["t3", "t9"]);
    expect(inState(tasks, "running")).toEqual([]);
  });
});
