// The builder's blocks: the workspace's own tasks (new in the editor, uploaded as .py, or
// generated from a prompt), the builtin workflows (ReAct) and the builtin tasks. Drag one onto
// the canvas (or double-click it).
import { useState, type DragEvent } from "react";
import type { ApiError } from "../api/client";
import type { Catalog, TaskFile, TaskInfo } from "../api/builder";
import { ErrorBox } from "../components/common";
import { GeneratePanel } from "./GeneratePanel";
import type { EditorOpen } from "./editorOpen";

export const DRAG_TYPE = "application/x-maze-task";

interface Props {
  catalog: Catalog | null;
  taskFiles: TaskFile[] | null;
  error: ApiError | null;
  onAdd: (info: TaskInfo) => void;
  onNewTask: () => void;
  onEditFile: (file: string) => void;
  onUpload: (file: File) => void;
  onOpenEditor: (open: EditorOpen) => void;
}

function Block({ info, onAdd }: { info: TaskInfo; onAdd: (info: TaskInfo) => void }) {
  return (
    <div
      className={`block kind-${info.kind}`}
      draggable
      data-block={info.ref}
      title={info.description || info.ref}
      onDragStart={(e: DragEvent) => {
        e.dataTransfer.setData(DRAG_TYPE, info.ref);
        e.dataTransfer.effectAllowed = "move";
      }}
      onDoubleClick={() => onAdd(info)}
    >
      <span className="block-name">{info.name}</span>
      <span className="muted small">
        {info.inputs.join(", ") || "—"} → {(info.outputs ?? ["?"]).join(", ")}
      </span>
    </div>
  );
}

export function Sidebar(props: Props) {
  const [open, setOpen] = useState({ ws: true, gen: true, wf: true, bt: true });
  const toggle = (k: keyof typeof open) => setOpen((o) => ({ ...o, [k]: !o[k] }));
  return (
    <aside className="builder-sidebar">
      <section>
        <h3 onClick={() => toggle("ws")}>Workspace tasks</h3>
        {open.ws ? (
          <>
            <div className="row">
              <button onClick={props.onNewTask}>New task</button>
              <label className="button-like">
                Upload .py
                <input
                  type="file"
                  accept=".py,text/x-python"
                  hidden
                  aria-label="upload task file"
                  onChange={(e) => {
                    const f = e.target.files?.[0];
                    if (f) props.onUpload(f);
                    e.target.value = "";
                  }}
                />
              </label>
            </div>
            <ErrorBox error={props.error} />
            {props.taskFiles && !props.taskFiles.length ? (
              <div className="muted small">No task files yet: write one, upload one, or generate one from a prompt.</div>
            ) : null}
            {(props.taskFiles ?? []).map((f) => (
              <div className="task-file" key={f.file} data-task-file={f.file}>
                <div className="task-file-head">
                  <span className="mono">{f.file}</span>
                  <button className="link" onClick={() => props.onEditFile(f.file)}>edit</button>
                </div>
                {f.error ? <div className="field-error small">{f.error.message ?? "does not parse"}</div> : null}
                {f.tasks.map((t) => (
                  <Block key={t.ref} info={t} onAdd={props.onAdd} />
                ))}
              </div>
            ))}
          </>
        ) : null}
      </section>
      <section>
        <h3 onClick={() => toggle("gen")}>Generate task from a prompt</h3>
        {open.gen ? <GeneratePanel onGenerated={props.onOpenEditor} /> : null}
      </section>
      <section>
        <h3 onClick={() => toggle("wf")}>Builtin workflows</h3>
        {open.wf ? (props.catalog?.builtin_workflows ?? []).map((t) => <Block key={t.ref} info={t} onAdd={props.onAdd} />) : null}
      </section>
      <section>
        <h3 onClick={() => toggle("bt")}>Builtin tasks</h3>
        {open.bt ? (props.catalog?.builtin_tasks ?? []).map((t) => <Block key={t.ref} info={t} onAdd={props.onAdd} />) : null}
      </section>
    </aside>
  );
}
