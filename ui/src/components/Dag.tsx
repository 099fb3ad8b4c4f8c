// A run's (or, later, the builder's) DAG: React Flow with dagre positions computed once per set
// of tasks; a state change only changes node data (a 1,000-task run stays smooth).
import { useMemo } from "react";
import { Background, Controls, MiniMap, Position, ReactFlow, type Edge, type Node } from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import { layoutGraph } from "./graphLayout";

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
  const nodes: Node[] = useMemo(
    () =>
      tasks.map((t) => ({
        id: t.id,
        position: layout.positions.get(t.id) ?? { x: 0, y: 0 },
        data: { label: t.label },
        className: `dag-node state-${t.state}${t.id === selected ? " selected" : ""}`,
        draggable: false,
        sourcePosition: Position.Right,
        targetPosition: Position.Left,
        connectable: false,
        ariaLabel: `${t.label}: ${t.state}`,
        // the browser tests read these
        domAttributes: { "data-task": t.id, "data-state": t.state },
      })) as Node[],
    [tasks, layout, selected],
  );
  const running = new Set(tasks.filter((t) => t.state === "running").map((t) => t.id));
  const edges: Edge[] = useMemo(
    () => layout.edges.map((e) => ({ ...e, animated: running.has(e.target) })),
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [layout, [...running].join(",")],
  );
  const big = tasks.length > 300;
  return (
    <div className="dag">
      <ReactFlow
        nodes={nodes}
        edges={edges}
        fitView
        minZoom={0.05}
        nodesDraggable={false}
        nodesConnectable={false}
        onlyRenderVisibleElements={big}
        onNodeClick={(_, n) => onSelect(n.id)}
        proOptions={{ hideAttribution: true }}
      >
        <Background gap={20} />
        <Controls showInteractive={false} />
        {big ? null : <MiniMap pannable zoomable />}
      </ReactFlow>
    </div>
  );
}
