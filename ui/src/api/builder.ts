// The workflow builder's side of the API (maze/api/builder.py, graphs.py, workspace_tasks.py):
// the shapes it answers and the calls the Builder page makes.
import { apiFetch, getJson, jsonOf, postJson } from "./client";

/** A block of the catalog: a builtin task, the ReAct template, or a workspace `@task`. */
export interface TaskInfo {
  ref: string;
  name: string;
  kind: string; // "builtin" | "workspace" | "workflow"
  description?: string;
  inputs: string[];
  required_inputs: string[];
  accepted_inputs: string[] | null;
  defaults: Record<string, unknown>;
  outputs: string[] | null;
  data_types: Record<string, string>;
  resources: Record<string, unknown>;
  timeout_seconds: number | null;
  file?: string | null;
  line?: number | null;
}

export interface Catalog {
  builtin_tasks: TaskInfo[];
  builtin_workflows: TaskInfo[];
  data_types: string[];
}

export interface TaskFile {
  file: string;
  sha256: string;
  size: number;
  modified_ms: number;
  tasks: TaskInfo[];
  error: { message?: string; line?: number; column?: number } | null;
}

export interface TaskSource {
  file: string;
  sha256: string;
  source: string;
  tasks: TaskInfo[];
}

export interface GraphNode {
  id: string;
  task: string;
  label?: string;
  inputs: Record<string, unknown>;
  resources?: Record<string, number> | null;
  timeout_seconds?: number | null;
  position?: { x: number; y: number } | null;
}

export interface GraphEdge {
  id?: string;
  source: string;
  source_handle: string;
  target: string;
  target_handle: string;
}

export interface Graph {
  nodes: GraphNode[];
  edges: GraphEdge[];
}

export interface GraphProblem {
  code: string;
  message: string;
  node?: string | null;
  edge?: number | null;
  edge_id?: string | null;
  handle?: string | null;
  nodes?: string[];
}

export interface Validation {
  valid: boolean;
  problems: GraphProblem[];
}

export interface GraphRunCreated {
  run_id: string;
  kind: string;
  workflow_id: string;
  seq: number;
  tasks: number;
}

export interface SavedWorkflow {
  name: string;
  description: string;
  graph: Graph;
  saved_ms: number;
  workspace?: string | null; // the workspace it was saved in (none: saved before it was kept)
}

export interface WorkflowSummary {
  name: string;
  description: string;
  nodes: number;
  edges: number;
  saved_ms: number;
}

const ws = (name: string) => `/workspaces/${encodeURIComponent(name)}`;

export const builderApi = {
  catalog: () => getJson<Catalog>("/playground/catalog"),
  taskFiles: (workspace: string) => getJson<TaskFile[]>(`${ws(workspace)}/tasks`),
  taskSource: (workspace: string, file: string) =>
    getJson<TaskSource>(`${ws(workspace)}/tasks/${encodeURIComponent(file)}`),
  async saveTaskFile(workspace: string, file: string, source: string): Promise<TaskSource> {
    const resp = await apiFetch(`${ws(workspace)}/tasks/${encodeURIComponent(file)}`, {
      method: "PUT",
      headers: { "content-type": "text/x-python" },
      body: source,
    });
    return jsonOf<TaskSource>(resp, "PUT task file");
  },
  async deleteTaskFile(workspace: string, file: string): Promise<void> {
    await apiFetch(`${ws(workspace)}/tasks/${encodeURIComponent(file)}`, { method: "DELETE" });
  },
  async parse(file: string, source: string): Promise<{ tasks: TaskInfo[] }> {
    const resp = await apiFetch(`/playground/tasks/parse?file=${encodeURIComponent(file)}`, {
      method: "POST",
      headers: { "content-type": "text/x-python" },
      body: source,
    });
    return jsonOf<{ tasks: TaskInfo[] }>(resp, "/playground/tasks/parse");
  },
  validate: (graph: Graph, workspace: string) => postJson<Validation>("/workflows/validate", { graph, workspace }),
  run: (graph: Graph, workspace: string) => postJson<GraphRunCreated>("/workflows/run", { graph, workspace }),
  workflows: () => getJson<WorkflowSummary[]>("/workflows"),
  workflow: (name: string) => getJson<SavedWorkflow>(`/workflows/${encodeURIComponent(name)}`),
  async saveWorkflow(name: string, graph: Graph, workspace: string, description = ""): Promise<SavedWorkflow> {
    const resp = await apiFetch(`/workflows/${encodeURIComponent(name)}`, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ graph, description, workspace }),
    });
    return jsonOf<SavedWorkflow>(resp, "PUT /workflows");
  },
};
