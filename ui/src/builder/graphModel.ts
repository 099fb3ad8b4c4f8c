// The builder canvas's model, pure (no React, no browser): what a node holds, the check of a
// connection before it is drawn (the same type rule as maze/api/graphs.py), the graph the head
// gets, a saved graph back onto the canvas, and where each validation problem is shown.
import type { Graph, GraphProblem, TaskInfo } from "../api/builder";

export interface NodeData {
  info: TaskInfo;
  label: string;
  inputs: Record<string, unknown>;
  resources: Record<string, number>;
  timeout: number | null;
  /** Output handles the user named, for a task whose outputs are not known before it runs. */
  extraOutputs: string[];
  [key: string]: unknown;
}

export interface CanvasNode {
  id: string;
  position: { x: number; y: number };
  data: NodeData;
}

export interface CanvasEdge {
  id: string;
  source: string;
  target: string;
  sourceHandle?: string | null;
  targetHandle?: string | null;
}

export interface Connection {
  source: string | null;
  target: string | null;
  sourceHandle?: string | null;
  targetHandle?: string | null;
}

export const RESOURCE_KEYS = ["cpu", "cpu_mem", "gpu", "gpu_mem"] as const;
const NODE_ID_RE = /^[A-Za-z0-9_-]{1,128}$/;
const HANDLE_RE = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;

/** As `types_connect`: either side undeclared, the same type, or an int feeding a float. */
export function typesConnect(output: string | undefined, input: string | undefined): boolean {
  if (!output || !input || output === input) return true;
  return output === "int" && input === "float";
}

export function outputsOf(data: NodeData): string[] {
  return [...(data.info.outputs ?? []), ...data.extraOutputs];
}

/** Why the canvas refuses this connection (null: it may be drawn). */
export function connectionRefusal(conn: Connection, nodes: CanvasNode[], edges: CanvasEdge[]): string | null {
  const source = nodes.find((n) => n.id === conn.source);
  const target = nodes.find((n) => n.id === conn.target);
  if (!source || !target || !conn.sourceHandle || !conn.targetHandle) return "connect an output handle to an input handle";
  if (source.id === target.id) return `${source.data.label} cannot feed itself`;
  const out = conn.sourceHandle;
  const inp = conn.targetHandle;
  if (source.data.info.outputs !== null && !outputsOf(source.data).includes(out)) {
    return `${source.data.label} has no output ${out}`;
  }
  if (!target.data.info.inputs.includes(inp)) return `${target.data.label} has no input ${inp}`;
  const outType = source.data.info.data_types[out];
  const inType = target.data.info.data_types[inp];
  if (!typesConnect(outType, inType)) {
    return `type mismatch: output ${out} of ${source.data.label} is ${outType}, input ${inp} of ${target.data.label} takes ${inType}`;
  }
  if (edges.some((e) => e.target === target.id && e.targetHandle === inp)) {
    return `input ${inp} of ${target.data.label} is already wired`;
  }
  if (inp in target.data.inputs) return `input ${inp} of ${target.data.label} has a value: clear it to wire it`;
  return null;
}

/** A node id for a new block: its name, made an id, numbered when taken. */
export function newNodeId(info: TaskInfo, taken: Iterable<string>): string {
  const base =
    (info.ref.split(":").pop() || info.name)
      .replace(/[^A-Za-z0-9_-]+/g, "_")
      .replace(/^_+|_+$/g, "")
      .slice(0, 100) || "node";
  const used = new Set(taken);
  if (!used.has(base)) return base;
  for (let i = 2; ; i++) if (!used.has(`${base}-${i}`)) return `${base}-${i}`;
}

export function newNodeData(info: TaskInfo): NodeData {
  return { info, label: info.name, inputs: {}, resources: {}, timeout: null, extraOutputs: [] };
}

/** What the head gets: POST /workflows/validate, /workflows/run, PUT /workflows/{name}. */
export function toGraph(nodes: CanvasNode[], edges: CanvasEdge[]): Graph {
  return {
    nodes: nodes.map((n) => ({
      id: n.id,
      task: n.data.info.ref,
      label: n.data.label === n.data.info.name ? "" : n.data.label,
      inputs: n.data.inputs,
      resources: Object.keys(n.data.resources).length ? n.data.resources : null,
      timeout_seconds: n.data.timeout,
      position: { x: Math.round(n.position.x), y: Math.round(n.position.y) },
    })),
    edges: edges.map((e) => ({
      id: e.id,
      source: e.source,
      source_handle: e.sourceHandle ?? "",
      target: e.target,
      target_handle: e.targetHandle ?? "",
    })),
  };
}

/** A task the catalog no longer has (a deleted workspace file): drawn, and validation says why. */
export function unknownTask(ref: string): TaskInfo {
  return {
    ref,
    name: ref.split(":").pop() || ref,
    kind: "unknown",
    inputs: [],
    required_inputs: [],
    accepted_inputs: null,
    defaults: {},
    outputs: null,
    data_types: {},
    resources: {},
    timeout_seconds: null,
  };
}

/** A saved graph back onto the canvas, each node with its task as the catalog has it now. */
export function fromGraph(graph: Graph, tasks: Map<string, TaskInfo>): { nodes: CanvasNode[]; edges: CanvasEdge[] } {
  const nodes = graph.nodes.map((n, i) => {
    const info = tasks.get(n.task) ?? unknownTask(n.task);
    const wiredOut = graph.edges.filter((e) => e.source === n.id).map((e) => e.source_handle);
    const extra = info.outputs === null ? [...new Set(wiredOut)] : [];
    return {
      id: n.id,
      position: n.position ?? { x: 240 * i, y: 80 },
      data: {
        info,
        label: n.label || info.name,
        inputs: { ...n.inputs },
        resources: { ...(n.resources ?? {}) },
        timeout: n.timeout_seconds ?? null,
        extraOutputs: extra,
      },
    };
  });
  const edges = graph.edges.map((e, i) => ({
    id: e.id || `e${i}-${e.source}.${e.source_handle}-${e.target}.${e.target_handle}`,
    source: e.source,
    sourceHandle: e.source_handle,
    target: e.target,
    targetHandle: e.target_handle,
  }));
  return { nodes, edges };
}

export interface PlacedProblems {
  byNode: Map<string, GraphProblem[]>;
  byEdge: Map<string, GraphProblem[]>;
  /** Problems of the whole graph (no node): shown above the canvas. */
  general: GraphProblem[];
}

/** Where each problem goes: on its node (and handle), on its edge, every node of a cycle. */
export function placeProblems(problems: GraphProblem[], edges: CanvasEdge[]): PlacedProblems {
  const byNode = new Map<string, GraphProblem[]>();
  const byEdge = new Map<string, GraphProblem[]>();
  const general: GraphProblem[] = [];
  const add = (map: Map<string, GraphProblem[]>, key: string, p: GraphProblem) => map.set(key, [...(map.get(key) ?? []), p]);
  for (const p of problems) {
    const edgeId = p.edge_id ?? (p.edge !== null && p.edge !== undefined ? edges[p.edge]?.id : undefined);
    if (edgeId) add(byEdge, edgeId, p);
    const onNodes = p.nodes && p.nodes.length ? p.nodes : p.node ? [p.node] : [];
    for (const n of onNodes) add(byNode, n, p);
    if (!onNodes.length && !edgeId) general.push(p);
  }
  return { byNode, byEdge, general };
}

export type ParsedValue = { set: false } | { set: true; value: unknown } | { error: string };

/** An input's text field to its JSON value, by its declared type ('' leaves the input unset). */
export function parseInputValue(text: string, dataType: string | undefined): ParsedValue {
  if (text.trim() === "") return { set: false };
  switch (dataType) {
    case "str":
      return { set: true, value: text };
    case "int": {
      const v = Number(text);
      return Number.isInteger(v) ? { set: true, value: v } : { error: `${text} is not an int` };
    }
    case "float": {
      const v = Number(text);
      return Number.isFinite(v) ? { set: true, value: v } : { error: `${text} is not a number` };
    }
    case "bool":
      if (text === "true" || text === "false") return { set: true, value: text === "true" };
      return { error: "true or false" };
    case "list":
    case "dict": {
      try {
        const v = JSON.parse(text);
        const ok = dataType === "list" ? Array.isArray(v) : v !== null && typeof v === "object" && !Array.isArray(v);
        return ok ? { set: true, value: v } : { error: `a JSON ${dataType === "list" ? "array" : "object"}` };
      } catch {
        return { error: `a JSON ${dataType === "list" ? "array" : "object"}` };
      }
    }
    default:
      // undeclared: JSON when it reads as JSON (5, true, [1], {"a": 1}, "quoted"), else the text itself
      try {
        return { set: true, value: JSON.parse(text) };
      } catch {
        return { set: true, value: text };
      }
  }
}

/** A value back into its text field. */
export function formatInputValue(value: unknown, dataType: string | undefined): string {
  if (value === undefined) return "";
  if (typeof value === "string") {
    if (dataType === "str") return value;
    // an undeclared input holding a string that would read back as JSON keeps its quotes
    try {
      JSON.parse(value);
      return JSON.stringify(value);
    } catch {
      return value;
    }
  }
  return JSON.stringify(value);
}

export function validHandleName(name: string): boolean {
  return HANDLE_RE.test(name);
}

export function validNodeId(id: string): boolean {
  return NODE_ID_RE.test(id);
}

/** The handles of node `id` its problems point at: an output when the problem is on an edge
 * leaving it from that handle, else an input. */
export function badHandles(id: string, problems: GraphProblem[], edges: CanvasEdge[]): { inputs: string[]; outputs: string[] } {
  const inputs: string[] = [];
  const outputs: string[] = [];
  for (const p of problems) {
    if (!p.handle) continue;
    const edge = p.edge_id ? edges.find((e) => e.id === p.edge_id) : p.edge !== null && p.edge !== undefined ? edges[p.edge] : undefined;
    if (edge && edge.source === id && edge.sourceHandle === p.handle && edge.target !== id) outputs.push(p.handle);
    else inputs.push(p.handle);
  }
  return { inputs, outputs };
}
