// What the head answers (maze/api/views.py), as the app reads it.

export type RunState = "created" | "running" | "succeeded" | "failed" | "cancelled" | "timed_out";

export interface TaskError {
  error_type: string;
  message: string;
  retryable?: boolean;
  origin?: string;
  node_id?: string | null;
  node_ip?: string | null;
  attempt?: number;
  traceback?: string | null;
  exception_type?: string | null;
}

export interface ListedRun {
  run_id: string;
  workflow_id: string;
  kind: string;
  state: RunState;
  created_at_ms: number;
  started_at_ms: number | null;
  finished_at_ms: number | null;
  task_count: number;
  tasks_succeeded: number;
  tasks_failed: number;
  error: TaskError | null;
  failed_task_id: string | null;
  run_seq: number;
  progress: Record<string, number>;
  retry_of: string | null;
}

export interface RunView extends ListedRun {
  result_summary: unknown;
  retried_by: string[];
}

export interface TaskView {
  run_id: string;
  task_id: string;
  name: string;
  func_name: string;
  task_type: string;
  state: string;
  attempt: number;
  failures: number;
  node_id: string | null;
  node_ip: string | null;
  gpus: number[] | null;
  resources: Record<string, unknown>;
  inputs: Record<string, unknown>;
  upstream: string[];
  outputs: string[] | null;
  result: unknown;
  error: TaskError | null;
  placement_reason: string | null;
  queued_at_ms: number | null;
  started_at_ms: number | null;
  finished_at_ms: number | null;
  task_index: number;
  pending_reason: string | null;
}

export interface AttemptView {
  attempt: number;
  node_id: string | null;
  node_ip: string | null;
  pid: number | null;
  state: string;
  reason: string | null;
  error: TaskError | null;
  placed_at_ms: number | null;
  started_at_ms: number | null;
  finished_at_ms: number | null;
  duration_ms: number | null;
}

export interface TaskDetail extends TaskView {
  attempts: AttemptView[];
}

export interface LogLine {
  cursor: number;
  task_id: string;
  attempt: number;
  node_id: string;
  stream: "stdout" | "stderr" | "maze";
  at_ms: number;
  line: string;
}

export interface ArtifactView {
  task_id: string;
  attempt: number;
  path: string;
  sha256: string;
  size: number;
  node_id: string;
  at_ms: number;
  uri: string;
}

/** An event as the log holds it: `{type: <tag>, seq, ...}`. */
export type MazeEvent = { type: string; seq?: number; [key: string]: unknown };

export interface EventsPage {
  run_id: string;
  events: MazeEvent[];
  last_seq: number;
  more: boolean;
}
