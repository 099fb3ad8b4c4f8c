// Where each task of a DAG goes: dagre's layered layout, left to right. Pure (tests in
// graphLayout.test.ts); run once per set of tasks, never on a state change.
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

export function layoutGraph(tasks: LayoutInput[]): Positioned {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "LR", nodesep: 18, ranksep: 60, marginx: 10, marginy: 10 });
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
