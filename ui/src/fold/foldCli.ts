// For tests/test_playground_fold.py: a run's events (JSON list on stdin) folded by this module,
// printed as the server's read models show them, so that the two folds can be compared.
import { foldEvents } from "./runFold";
import type { MazeEvent } from "../api/types";

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const events = JSON.parse(input) as MazeEvent[];
  const run = foldEvents(events);
  const tasks = [...run.tasks.values()].map((t) => ({
    task_id: t.task_id,
    state: t.state,
    attempt: t.attempt,
    failures: t.failures,
    node_id: t.node_id,
    task_index: t.task_index,
    upstream: t.upstream,
  }));
  const attempts = [...run.attempts.values()].map((a) => ({ task_id: a.task_id, attempt: a.attempt, state: a.state, node_id: a.node_id }));
  process.stdout.write(JSON.stringify({ state: run.state, kind: run.kind, tasks, attempts }));
});
