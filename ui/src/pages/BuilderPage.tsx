// The workflow builder: blocks from the sidebar dragged onto a React Flow canvas, outputs wired
// to inputs (a connection whose data types differ is refused, saying why), each block's inputs,
// resources and timeout set in its panel, the graph validated by the head as it changes (each
// problem on its node, handle or edge), saved and loaded by name, and run: the canvas then shows
// the run live (the run page's fold over the run's SSE stream).
import { Suspense, lazy, useCallback, useEffect, useMemo, useState, type DragEvent } from "react";
import { Link } from "react-router-dom";
import {
  Background,
  Controls,
  ReactFlow,
  ReactFlowProvider,
  addEdge,
  useEdgesState,
  useNodesState,
  useReactFlow,
  type Connection as FlowConnection,
  type Edge,
  type FinalConnectionState,
  type Node,
} from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import { builderApi, type Catalog, type SavedWorkflow, type TaskFile, type TaskInfo, type Validation } from "../api/builder";
import { ApiError } from "../api/client";
import { useJson } from "../api/hooks";
import { useWorkspace } from "../api/workspace";
import { saveBlockedReason } from "../builder/saveRule";
import { ErrorBox, StateBadge } from "../components/common";
import { StreamStatus } from "../components/StreamStatus";
import { WorkspacePicker } from "../components/WorkspacePicker";
import { useLiveRun } from "../fold/useLiveRun";
import {
  badHandles,
  connectionRefusal,
  fromGraph,
  newNodeData,
  newNodeId,
  placeProblems,
  toGraph,
  type NodeData,
} from "../builder/graphModel";
import { NodePanel } from "../builder/NodePanel";
import { DRAG_TYPE, Sidebar } from "../builder/Sidebar";
import { NEW_TASK_SOURCE, type EditorOpen } from "../builder/editorOpen";
import { TaskNode } from "../builder/TaskNode";

type BNode = Node<NodeData, "task">;
const nodeTypes = { task: TaskNode };
// CodeMirror is most of the editor's weight: loaded the first time the editor opens
const TaskEditor = lazy(() => import("../builder/TaskEditor").then((m) => ({ default: m.TaskEditor })));
const VALIDATE_DEBOUNCE_MS = 300;

export function BuilderPage() {
  return (
    <ReactFlowProvider>
      <Builder />
    </ReactFlowProvider>
  );
}

function Builder() {
  const flow = useReactFlow();
  const [workspace, setWorkspace] = useWorkspace();
  const { data: catalog, error: catalogError } = useJson<Catalog>("/playground/catalog");
  const [taskFiles, setTaskFiles] = useState<TaskFile[] | null>(null);
  const [filesError, setFilesError] = useState<ApiError | null>(null);
  const [filesVersion, setFilesVersion] = useState(0);
  const [filesWorkspace, setFilesWorkspace] = useState<string | null>(null); // whose task files these are
  const [pendingLoad, setPendingLoad] = useState<SavedWorkflow | null>(null); // drawn once its workspace's tasks are in
  const [nodes, setNodes, onNodesChange] = useNodesState<BNode>([]);
  const [edges, setEdges, onEdgesChange] = useEdgesState<Edge>([]);
  const [selected, setSelected] = useState<string | null>(null);
  const [refusal, setRefusal] = useState<string | null>(null);
  const [validation, setValidation] = useState<{ key: string; result: Validation | null; error: ApiError | null } | null>(null);
  const [runId, setRunId] = useState<string | null>(null);
  const [actionError, setActionError] = useState<ApiError | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [editor, setEditor] = useState<EditorOpen | null>(null);
  const [name, setName] = useState("");
  const [savedVersion, setSavedVersion] = useState(0);
  const [toLoad, setToLoad] = useState("");
  const { data: saved } = useJson<{ name: string; nodes: number }[]>("/workflows", [savedVersion]);
  const run = useLiveRun(runId);

  useEffect(() => {
    let live = true;
    setTaskFiles(null);
    builderApi
      .taskFiles(workspace)
      .then((f) => live && (setTaskFiles(f), setFilesError(null), setFilesWorkspace(workspace)))
      .catch((e) => live && (setFilesError(e), setFilesWorkspace(workspace)));
    return () => {
      live = false;
    };
  }, [workspace, filesVersion]);

  const tasks = useMemo(() => {
    const all = new Map<string, TaskInfo>();
    for (const t of [...(catalog?.builtin_tasks ?? []), ...(catalog?.builtin_workflows ?? [])]) all.set(t.ref, t);
    for (const f of taskFiles ?? []) for (const t of f.tasks) all.set(t.ref, t);
    return all;
  }, [catalog, taskFiles]);

  // a task file saved again: its blocks on the canvas take its new inputs and outputs
  useEffect(() => {
    setNodes((ns) =>
      ns.map((n) => {
        const info = tasks.get(n.data.info.ref);
        return info && info !== n.data.info ? { ...n, data: { ...n.data, info } } : n;
      }),
    );
  }, [tasks, setNodes]);

  // validated by the head as the graph changes (not when a block is only moved)
  const graph = useMemo(() => toGraph(nodes, edges), [nodes, edges]);
  const key = useMemo(
    () => JSON.stringify({ workspace, nodes: graph.nodes.map((n) => ({ ...n, position: null })), edges: graph.edges }),
    [graph, workspace],
  );
  useEffect(() => {
    if (!nodes.length) {
      setValidation(null);
      return;
    }
    let live = true;
    const t = setTimeout(() => {
      builderApi
        .validate(graph, workspace)
        .then((result) => live && setValidation({ key, result, error: null }))
        .catch((error) => live && setValidation({ key, result: null, error }));
    }, VALIDATE_DEBOUNCE_MS);
    return () => {
      live = false;
      clearTimeout(t);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key]);
  const current = validation?.key === key ? validation : null;
  const placed = placeProblems(validation?.result?.problems ?? [], edges);
  const valid = !!current?.result?.valid;

  const stateOf = (id: string): string | null => {
    if (!runId) return null;
    if (run.live.current.kind === "react") return run.live.current.state === "created" ? "pending" : run.live.current.state;
    return run.live.current.tasks.get(id)?.state ?? "pending";
  };
  const shownNodes = nodes.map((n) => {
    const problems = runId ? [] : placed.byNode.get(n.id) ?? [];
    const bad = badHandles(n.id, problems, edges);
    return {
    ...n,
    type: "task" as const,
    draggable: !runId,
    data: {
      ...n.data,
      problems,
      badInputs: bad.inputs,
      badOutputs: bad.outputs,
      runState: stateOf(n.id),
      wired: edges.filter((e) => e.target === n.id).map((e) => e.targetHandle ?? ""),
    },
  };
  });
  const shownEdges = edges.map((e) => {
    const problems = runId ? [] : placed.byEdge.get(e.id) ?? [];
    if (problems.length) {
      return { ...e, className: "bad-edge", label: problems.map((p) => p.message).join("; "), style: { stroke: "var(--bad)", strokeWidth: 2 } };
    }
    return runId ? { ...e, animated: stateOf(e.target) === "running" } : e;
  });

  const addNode = useCallback(
    (info: TaskInfo, position?: { x: number; y: number }) => {
      setNodes((ns) => {
        const id = newNodeId(info, ns.map((n) => n.id));
        const at = position ?? { x: 80 + 40 * ns.length, y: 80 + 30 * ns.length };
        return [...ns, { id, type: "task", position: at, data: newNodeData(info) }];
      });
    },
    [setNodes],
  );

  function onDrop(e: DragEvent) {
    e.preventDefault();
    const info = tasks.get(e.dataTransfer.getData(DRAG_TYPE));
    if (!info || runId) return;
    addNode(info, flow.screenToFlowPosition({ x: e.clientX, y: e.clientY }));
  }

  const isValidConnection = (c: FlowConnection | Edge) => connectionRefusal(c, nodes, edges) === null;
  function onConnect(c: FlowConnection) {
    setRefusal(null);
    setEdges((es) => addEdge({ ...c, id: `e-${c.source}.${c.sourceHandle}-${c.target}.${c.targetHandle}` }, es));
  }
  function onConnectEnd(_: unknown, state: FinalConnectionState) {
    if (!state.toHandle || state.isValid || !state.fromHandle || !state.fromNode || !state.toNode) return;
    const fromSource = state.fromHandle.type === "source";
    const [src, srcHandle, tgt, tgtHandle] = fromSource
      ? [state.fromNode.id, state.fromHandle.id, state.toNode.id, state.toHandle.id]
      : [state.toNode.id, state.toHandle.id, state.fromNode.id, state.fromHandle.id];
    setRefusal(connectionRefusal({ source: src, sourceHandle: srcHandle, target: tgt, targetHandle: tgtHandle }, nodes, edges));
  }

  async function startRun() {
    setActionError(null);
    setNotice(null);
    try {
      const made = await builderApi.run(graph, workspace);
      setSelected(null);
      setRunId(made.run_id);
    } catch (e) {
      setActionError(e as ApiError);
    }
  }

  async function save() {
    setActionError(null);
    try {
      await builderApi.saveWorkflow(name, graph, workspace);
      setNotice(`Saved as ${name}.`);
      setSavedVersion((v) => v + 1);
    } catch (e) {
      setActionError(e as ApiError);
    }
  }

  async function load(which: string) {
    setActionError(null);
    try {
      const got = await builderApi.workflow(which);
      if (got.workspace && got.workspace !== workspace) {
        // its `workspace:` tasks live there: switch, and draw it once that workspace's tasks are in
        setPendingLoad(got);
        setWorkspace(got.workspace);
      } else draw(got, "");
    } catch (e) {
      setActionError(e as ApiError);
    }
  }

  function draw(got: SavedWorkflow, switched: string) {
    const shown = fromGraph(got.graph, tasks);
    setRunId(null);
    setSelected(null);
    setNodes(shown.nodes.map((n) => ({ ...n, type: "task" })));
    setEdges(shown.edges);
    setName(got.name);
    setNotice(`Loaded ${got.name}${switched}.`);
    setTimeout(() => flow.fitView({ padding: 0.2 }), 50);
  }

  useEffect(() => {
    if (!pendingLoad || filesWorkspace !== pendingLoad.workspace) return;
    setPendingLoad(null);
    draw(pendingLoad, ` (switched to its workspace ${pendingLoad.workspace})`);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [pendingLoad, filesWorkspace, tasks]);

  async function editFile(file: string) {
    try {
      const got = await builderApi.taskSource(workspace, file);
      setEditor({ file: got.file, source: got.source, existing: true });
    } catch (e) {
      setFilesError(e as ApiError);
    }
  }

  async function uploadTaskFile(file: File) {
    const source = await file.text();
    try {
      await builderApi.saveTaskFile(workspace, file.name, source);
      setNotice(`Uploaded ${file.name}.`);
      setFilesVersion((v) => v + 1);
    } catch (e) {
      // a file that does not parse opens in the editor, its error at its line
      if (e instanceof ApiError && e.status === 400) setEditor({ file: file.name, source });
      else setFilesError(e as ApiError);
    }
  }

  const sel = nodes.find((n) => n.id === selected);
  const saveBlocked = saveBlockedReason(name, nodes.length);
  const runState = run.live.current.state;
  return (
    <div className="builder">
      <div className="page-head builder-head">
        <h1>Builder</h1>
        <WorkspacePicker value={workspace} onChange={setWorkspace} />
        <input aria-label="workflow name" placeholder="workflow name" value={name} onChange={(e) => setName(e.target.value)} />
        <button onClick={save} disabled={saveBlocked !== null} title={saveBlocked ?? ""}>Save</button>
        {saveBlocked && name && nodes.length ? (
          <span className="bad save-hint" data-save-hint>{saveBlocked}</span>
        ) : null}
        <select aria-label="saved workflows" value={toLoad} onChange={(e) => setToLoad(e.target.value)}>
          <option value="">saved workflows…</option>
          {(saved ?? []).map((w) => (
            <option key={w.name} value={w.name}>{`${w.name} (${w.nodes} nodes)`}</option>
          ))}
        </select>
        <button onClick={() => load(toLoad)} disabled={!toLoad || taskFiles === null}>Load</button>
        <div className="spacer" />
        <span className="validation" data-validation={!nodes.length ? "empty" : !current ? "checking" : valid ? "valid" : "invalid"}>
          {!nodes.length ? "" : !current ? "checking…" : valid ? "✓ ready to run" : `${current.result?.problems.length ?? "?"} problem(s)`}
        </span>
        {runId ? (
          <button onClick={() => setRunId(null)}>Edit workflow</button>
        ) : (
          <button className="primary" disabled={!valid} onClick={startRun} title={valid ? "" : "fix the problems first"}>
            Run
          </button>
        )}
      </div>
      <ErrorBox error={catalogError} />
      <ErrorBox error={actionError} />
      <ErrorBox error={validation?.error ?? null} />
      {notice ? <div className="notice">{notice}</div> : null}
      {runId ? (
        <div className="run-banner" data-run={runId} data-run-state={runState}>
          Run <span className="mono">{runId}</span> <StateBadge state={runState} />
          <StreamStatus status={run.finished && run.status !== "live" ? "ended" : run.status} />
          <Link to={`/runs/${runId}`}>Open the run page →</Link>
          <ErrorBox error={run.error} />
        </div>
      ) : null}
      {refusal ? (
        <div className="error-box refusal" role="alert" data-refusal>
          <b>connection refused</b>: {refusal} <button className="link" onClick={() => setRefusal(null)}>dismiss</button>
        </div>
      ) : null}
      {!runId && placed.general.length ? (
        <div className="error-box">{placed.general.map((p) => p.message).join("; ")}</div>
      ) : null}
      <div className="builder-body">
        <Sidebar
          catalog={catalog}
          taskFiles={taskFiles}
          error={filesError}
          onAdd={(info) => !runId && addNode(info)}
          onNewTask={() => setEditor({ file: "my_tasks.py", source: NEW_TASK_SOURCE })}
          onEditFile={editFile}
          onUpload={uploadTaskFile}
          onOpenEditor={setEditor}
        />
        <div className="builder-canvas" onDragOver={(e) => (e.preventDefault(), (e.dataTransfer.dropEffect = "move"))} onDrop={onDrop}>
          <ReactFlow
            nodes={shownNodes}
            edges={shownEdges}
            nodeTypes={nodeTypes}
            onNodesChange={onNodesChange}
            onEdgesChange={onEdgesChange}
            onConnect={onConnect}
            onConnectEnd={onConnectEnd}
            isValidConnection={isValidConnection}
            onNodeClick={(_, n) => setSelected(n.id)}
            onPaneClick={() => setSelected(null)}
            nodesConnectable={!runId}
            deleteKeyCode={runId ? null : ["Backspace", "Delete"]}
            proOptions={{ hideAttribution: true }}
          >
            <Background gap={20} />
            <Controls showInteractive={false} />
          </ReactFlow>
          {!nodes.length ? <div className="canvas-hint muted">Drag blocks here from the left, then wire outputs (right) to inputs (left).</div> : null}
        </div>
        <div className="builder-side">
          {sel && !runId ? (
            <NodePanel
              id={sel.id}
              data={sel.data}
              edges={edges}
              problems={placed.byNode.get(sel.id) ?? []}
              onChange={(patch) => setNodes((ns) => ns.map((n) => (n.id === sel.id ? { ...n, data: { ...n.data, ...patch } } : n)))}
              onDelete={() => {
                setNodes((ns) => ns.filter((n) => n.id !== sel.id));
                setEdges((es) => es.filter((e) => e.source !== sel.id && e.target !== sel.id));
                setSelected(null);
              }}
            />
          ) : sel && runId ? (
            <div className="panel">
              <h3>{sel.data.label}</h3>
              <StateBadge state={stateOf(sel.id) ?? "pending"} />
              <p className="muted small">Its inputs, outputs, logs and errors are on the <Link to={`/runs/${runId}`}>run page</Link>.</p>
            </div>
          ) : (
            <div className="panel muted small">
              Select a block to set its inputs, resources and timeout. Wire an output (right) to an input (left); inputs marked * are required.
              {current?.result && !current.result.valid ? (
                <ul className="problem-list">
                  {current.result.problems.map((p, i) => (
                    <li key={i} data-problem={p.code}>{p.node ? <b>{p.node}: </b> : null}{p.message}</li>
                  ))}
                </ul>
              ) : null}
            </div>
          )}
        </div>
      </div>
      {editor ? (
        <Suspense fallback={<div className="modal-backdrop"><div className="modal">Loading the editor…</div></div>}>
        <TaskEditor
          workspace={workspace}
          open={editor}
          onClose={() => setEditor(null)}
          onSaved={(file) => {
            setEditor(null);
            setNotice(`Saved ${file} in workspace ${workspace}.`);
            setFilesVersion((v) => v + 1);
          }}
        />
        </Suspense>
      ) : null}
    </div>
  );
}
