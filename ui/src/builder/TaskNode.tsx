// A block on the builder's canvas: its inputs as handles on the left, its outputs on the right
// (each named, with its data type), its validation problems in red, and in the live view its
// task's state.
import { Handle, Position, type NodeProps, type Node } from "@xyflow/react";
import type { GraphProblem } from "../api/builder";
import { outputsOf, type NodeData } from "./graphModel";

export type ShownData = NodeData & {
  problems: GraphProblem[];
  runState: string | null;
  wired: string[];
  /** Handles a problem points at: inputs, and outputs (an edge from an output this task lacks). */
  badInputs: string[];
  badOutputs: string[];
};
export type TaskFlowNode = Node<ShownData, "task">;

export function TaskNode({ id, data, selected }: NodeProps<TaskFlowNode>) {
  const { info, problems, runState } = data;
  const classes = ["builder-node", `kind-${info.kind}`];
  if (problems.length && !runState) classes.push("invalid");
  if (runState) classes.push(`state-${runState}`);
  if (selected) classes.push("selected");
  return (
    <div
      className={classes.join(" ")}
      data-node={id}
      data-state={runState ?? ""}
      data-invalid={problems.length ? "true" : "false"}
      title={info.description || info.ref}
    >
      <div className="bn-title">
        <span>{data.label}</span>
        <span className="bn-kind">{runState ?? (info.kind === "workflow" ? "workflow" : info.kind)}</span>
      </div>
      <div className="bn-ports">
        <div className="bn-inputs">
          {info.inputs.map((name) => (
            <div className={`bn-port in${data.badInputs.includes(name) ? " bad" : ""}`} key={name}>
              <Handle type="target" position={Position.Left} id={name} data-handle={`${id}:in:${name}`} />
              <span className={data.wired.includes(name) || name in data.inputs ? "" : "unset"}>
                {name}
                {info.required_inputs.includes(name) ? "*" : ""}
              </span>
              {info.data_types[name] ? <span className="dt">{info.data_types[name]}</span> : null}
            </div>
          ))}
        </div>
        <div className="bn-outputs">
          {outputsOf(data).map((name) => (
            <div className={`bn-port out${data.badOutputs.includes(name) ? " bad" : ""}`} key={name}>
              {info.data_types[name] ? <span className="dt">{info.data_types[name]}</span> : null}
              <span>{name}</span>
              <Handle type="source" position={Position.Right} id={name} data-handle={`${id}:out:${name}`} />
            </div>
          ))}
          {info.outputs === null && !data.extraOutputs.length ? (
            <div className="bn-port out muted">outputs: name them in the panel</div>
          ) : null}
        </div>
      </div>
      {problems.length && !runState ? (
        <ul className="bn-problems">
          {problems.map((p, i) => (
            <li key={i} data-problem={p.code}>{p.message}</li>
          ))}
        </ul>
      ) : null}
    </div>
  );
}
