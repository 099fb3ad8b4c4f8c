// A run's (or, later, the builder's) DAG: React Flow with dagre positions computed once per set
// of tasks; a state change only changes node data (a 1,000-task run stays smooth).
// Performance (bench/playground.py, a 2,000-task fan-out): a node object is made anew only when
// its task's state, label or selection changed (React Flow re-renders only those), and each
// carries its size (NODE_W x NODE_H, fixed in CSS), so React Flow never re-measures the DOM for
// a state change; edges too are kept, and only a small DAG animates the edges into running tasks.
// When tasks are added (a dynamic or ReAct run) the view is fitted again, unless the person has
// panned or zoomed since (the Controls' fit button hands it back to the page).
import { useEffect, useMemo, useRef, useState } from "react";
import { Background, ControlButton, Controls, MiniMap, Position, ReactFlow, type Edge, type Node, type ReactFlowInstance } from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import { NODE_H, NODE_W, layoutGraph } from "./graphLayout";

/** The minimap's node colours: the DAG's state colours (styles.css). */
const STATE_COLOUR: Record<string, string> = {
  pending: "#a3aab8",
  queued: "#8e7cc3",
  running: "#2f7de1",
  retry_wait: "#e0a800",
  succeeded: "#1f9d55",
  failed: "#d64545",
  timed_out: "#d64545",
  cancelled: "#8a919f",
};
const stateOf = (n: Node) => (n.domAttributes as Record<string, string> | undefined)?.["data-state"] ?? "pending";

/** A lone task is not blown up to fill the pane. */
const FIT = { maxZoom: 1, padding: 0.1 };

export interface DagTask {
  id: string;
  label: string;
  state: string;
  upstream: string[];
}

interface Props {
  tasks: DagTask[];
  selected: string | null;
  onSelect: (id: string) => void;
}

export function Dag({ tasks, selected, onSelect }: Props) {
  const shape = tasks.map((t) => t.id + ":" + t.upstream.join(",")).join("|");
  // eslint-disable-next-line react-hooks/exhaustive-deps
  const layout = useMemo(() => layoutGraph(tasks), [shape]);
  const big = tasks.length > 300;
  const made = useRef(new Map<string, { key: string; node: Node }>());
  const nodes: Node[] = useMemo(() => {
    const before = made.current;
    const now = new Map<string, { key: string; node: Node }>();
    const out = tasks.map((t) => {
      const position = layout.positions.get(t.id) ?? { x: 0, y: 0 };
      const key = `${t.state}|${t.label}|${t.id === selected}|${position.x},${position.y}`;
      const kept = before.get(t.id);
      const node =
        kept && kept.key === key
          ? kept.node
          : ({
              id: t.id,
              position,
              data: { label: t.label },
              className: `dag-node state-${t.state}${t.id === selected ? " selected" : ""}`,
              draggable: false,
              sourcePosition: Position.Right,
              targetPosition: Position.Left,
              connectable: false,
              width: NODE_W,
              height: NODE_H,
              measured: { width: NODE_W, height: NODE_H },
              ariaLabel: `${t.label}: ${t.state}`,
              // the browser tests read these
              domAttributes: { "data-task": t.id, "data-state": t.state },
            } as Node);
      now.set(t.id, { key, node });
      return node;
    });
    made.current = now;
    return out;
  }, [tasks, layout, selected]);
  const running = big ? "" : tasks.filter((t) => t.state === "running").map((t) => t.id).join(",");
  const edges: Edge[] = useMemo(() => {
    const animated = new Set(running ? running.split(",") : []);
    return layout.edges.map((e) => (animated.has(e.target) ? { ...e, animated: true } : e));
  }, [layout, running]);
  const [showMap, setShowMap] = useState(tasks.length > 12); // small DAGs need none
  const flow = useRef<ReactFlowInstance | null>(null);
  const moved = useRef(false); // by the person (a move the page makes has no event)
  const count = tasks.length;
  useEffect(() => {
    if (moved.current || !flow.current) return;
    const frame = requestAnimationFrame(() => flow.current?.fitView(FIT));
    return () => cancelAnimationFrame(frame);
  }, [layout, count]);
  return (
    <div className="dag">
      <ReactFlow
        nodes={nodes}
        edges={edges}
        fitView
        fitViewOptions={FIT}
        onInit={(instance) => (flow.current = instance)}
        onMoveStart={(event) => {
          if (event) moved.current = true;
        }}
        minZoom={0.05}
        nodesDraggable={false}
        nodesConnectable={false}
        onlyRenderVisibleElements={big}
        onNodeClick={(_, n) => onSelect(n.id)}
        proOptions={{ hideAttribution: true }}
      >
        <Background gap={20} />
        <Controls showInteractive={false} onFitView={() => (moved.current = false)}>
          {big ? null : (
            <ControlButton onClick={() => setShowMap((v) => !v)} title={showMap ? "hide the minimap" : "show the minimap"} aria-label="toggle minimap">
              ▦
            </ControlButton>
          )}
        </Controls>
        {big || !showMap ? null : (
          <MiniMap pannable zoomable position="top-right" style={{ width: 120, height: 80 }} nodeColor={(n) => STATE_COLOUR[stateOf(n)] ?? "#a3aab8"} nodeStrokeWidth={0} />
        )}
      </ReactFlow>
    </div>
  );
}
