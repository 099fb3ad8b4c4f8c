// Which tasks a person looks for first in a big run: failed ones, then those running, waiting to
// retry or queued, then the rest, each group in task order. Pure (tests in taskOrder.test.ts).
import type { FoldTask } from "./runFold";

const ATTENTION: Record<string, number> = { failed: 0, timed_out: 0, running: 1, retry_wait: 2, queued: 3 };

export function byAttention(tasks: Iterable<FoldTask>): FoldTask[] {
  const rank = (t: FoldTask) => ATTENTION[t.state] ?? 4;
  return [...tasks].sort((a, b) => rank(a) - rank(b) || a.task_index - b.task_index);
}

/** The tasks in `state`, in task order. */
export function inState(tasks: Iterable<FoldTask>, state: string): FoldTask[] {
  return [...tasks].filter((t) => t.state === state).sort((a, b) => a.task_index - b.task_index);
}
