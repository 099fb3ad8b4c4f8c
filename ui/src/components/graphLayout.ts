// Where each task of a DAG goes: dagre's layered layout, left to right; many tasks with no edge
// (independent tasks) in a grid below it. Pure (tests in graphLayout.test.ts); run once per set of
// tasks, never on a state change.
import dagre from "@dagrejs/dagre";

export const NODE_W = 180;
export const NODE_H = 44;

export interface LayoutInput {
  id: string;
  upstream: string[];
}

export interface Positioned {
  positions: Map<string, { x: number; y: number }>;
  edges: { id: string; source: string; target: string }[];
}

/** Above this many tasks dagre's layout blocks the page too long (~0.8 s for 2,000 tasks, one long
 * task: bench/playground.py): a layered layout in linear time is used instead. */
export const BIG_GRAPH = 300;
const NODESEP = 18;
const RANKSEP = 60;

/** At least this many tasks with no edge at all (a map of independent tasks) go in a grid below
 * the rest, rather than in one column thousands of rows tall. */
export const GRID_FROM = 12;

export function layoutGraph(tasks: LayoutInput[]): Positioned {
  const ids = new Set(tasks.map((t) => t.id));
  const linked = new Set<string>();
  for (const t of tasks) {
    for (const up of t.upstream) {
      if (!ids.has(up) || up === t.id) continue;
      linked.add(up);
      linked.add(t.id);
    }
  }
  const alone = tasks.filter((t) => !linked.has(t.id));
  if (alone.length < GRID_FROM) return layoutLinked(tasks);
  const rest = layoutLinked(tasks.filter((t) => linked.has(t.id)));
  let bottom = 0;
  for (const p of rest.positions.values()) bottom = Math.max(bottom, p.y + NODE_H + RANKSEP);
  gridLayout(alone.map((t) => t.id), bottom, rest.positions);
  return rest;
}

/** `ids` in rows under `top`, about twice as wide as tall (the DAG pane's shape), in order. */
export function gridLayout(ids: string[], top: number, into: Positioned["positions"]): void {
  const cellW = NODE_W + NODESEP;
  const cellH = NODE_H + NODESEP;
  const columns = Math.max(1, Math.ceil(Math.sqrt((ids.length * 2 * cellH) / cellW)));
  ids.forEach((id, i) => into.set(id, { x: 10 + (i % columns) * cellW, y: 10 + top + Math.floor(i / columns) * cellH }));
}

function layoutLinked(tasks: LayoutInput[]): Positioned {
  if (!tasks.length) return { positions: new Map(), edges: [] };
  if (tasks.length > BIG_GRAPH) return layeredLayout(tasks);
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "LR", nodesep: NODESEP, ranksep: RANKSEP, marginx: 10, marginy: 10 });
  g.setDefaultEdgeLabel(() => ({}));
  const ids = new Set(tasks.map((t) => t.id));
  for (const t of tasks) g.setNode(t.id, { width: NODE_W, height: NODE_H });
  const edges: Positioned["edges"] = [];
  for (const t of tasks) {
    for (const up of t.upstream) {
      if (!ids.has(up)) continue; // a task the run does not hold (yet)
      g.setEdge(up, t.id);
      edges.push({ id: `${up}->${t.id}`, source: up, target: t.id });
    }
  }
  dagre.layout(g);
  const positions = new Map<string, { x: number; y: number }>();
  for (const t of tasks) {
    const n = g.node(t.id);
    positions.set(t.id, { x: n.x - NODE_W / 2, y: n.y - NODE_H / 2 });
  }
  return { positions, edges };
}

/** Left to right as dagre: a task's column is its longest path from a task with no upstream
 * (Kahn's order; a task left in a cycle, which a run cannot have, goes in column 0), rows in the
 * order given, each column centred. No crossing reduction: O(tasks + edges). */
export function layeredLayout(tasks: LayoutInput[]): Positioned {
  const ids = new Set(tasks.map((t) => t.id));
  const edges: Positioned["edges"] = [];
  const downstream = new Map<string, string[]>();
  const waiting = new Map<string, number>();
  for (const t of tasks) {
    let n = 0;
    for (const up of t.upstream) {
      if (!ids.has(up)) continue;
      edges.push({ id: `${up}->${t.id}`, source: up, target: t.id });
      if (!downstream.has(up)) downstream.set(up, []);
      downstream.get(up)!.push(t.id);
      n += 1;
    }
    waiting.set(t.id, n);
  }
  const rank = new Map<string, number>();
  const ready = tasks.filter((t) => waiting.get(t.id) === 0).map((t) => t.id);
  for (const id of ready) rank.set(id, 0);
  for (let i = 0; i < ready.length; i++) {
    const id = ready[i];
    for (const down of downstream.get(id) ?? []) {
      rank.set(down, Math.max(rank.get(down) ?? 0, rank.get(id)! + 1));
      const left = waiting.get(down)! - 1;
      waiting.set(down, left);
      if (left === 0) ready.push(down);
    }
  }
  const columns: string[][] = [];
  for (const t of tasks) {
    const r = waiting.get(t.id) === 0 ? rank.get(t.id)! : 0;
    (columns[r] ??= []).push(t.id);
  }
  const tallest = Math.max(...columns.map((c) => c?.length ?? 0));
  const positions = new Map<string, { x: number; y: number }>();
  columns.forEach((column, r) => {
    const top = ((tallest - column.length) * (NODE_H + NODESEP)) / 2;
    column.forEach((id, row) => positions.set(id, { x: 10 + r * (NODE_W + RANKSEP), y: 10 + top + row * (NODE_H + NODESEP) }));
  });
  return { positions, edges };
}
