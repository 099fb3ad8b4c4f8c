// The code editor (CodeMirror) for a workspace task file: `@task` functions, checked as you type
// (POST /playground/tasks/parse: nothing runs, nothing is stored), saved with
// PUT /workspaces/{ws}/tasks/{file}. A syntax error is shown at its line.
import { useEffect, useMemo, useRef, useState } from "react";
import CodeMirror, { Decoration, EditorView, StateEffect, StateField, type Extension } from "@uiw/react-codemirror";
import { python } from "@codemirror/lang-python";
import { ApiError } from "../api/client";
import { builderApi, type TaskInfo } from "../api/builder";
import { TASK_FILE_RE } from "../api/generate";
import { ErrorBox } from "../components/common";
import type { EditorOpen } from "./editorOpen";

const setErrorLine = StateEffect.define<number | null>();
const errorLine = StateField.define({
  create: () => Decoration.none,
  update(deco, tr) {
    deco = deco.map(tr.changes);
    for (const e of tr.effects) {
      if (!e.is(setErrorLine)) continue;
      if (e.value === null || e.value < 1 || e.value > tr.state.doc.lines) deco = Decoration.none;
      else deco = Decoration.set([Decoration.line({ class: "cm-error-line" }).range(tr.state.doc.line(e.value).from)]);
    }
    return deco;
  },
  provide: (f) => EditorView.decorations.from(f),
});

/** The line (1-based) an error of the head points at, if it names one. */
export function errorLineOf(error: ApiError | null): number | null {
  const details = error?.details as { line?: unknown } | null | undefined;
  return details && typeof details.line === "number" ? details.line : null;
}

interface Props {
  workspace: string;
  open: EditorOpen;
  onSaved: (file: string) => void;
  onClose: () => void;
}

export function TaskEditor({ workspace, open, onSaved, onClose }: Props) {
  const [file, setFile] = useState(open.file);
  const [source, setSource] = useState(open.source);
  const [checked, setChecked] = useState<TaskInfo[] | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [saving, setSaving] = useState(false);
  const view = useRef<EditorView | null>(null);
  const extensions: Extension[] = useMemo(() => [python(), errorLine], []);
  const badName = !TASK_FILE_RE.test(file);

  useEffect(() => {
    // checked as it is written (debounced): the tasks it defines, or where it does not parse
    const t = setTimeout(() => {
      builderApi
        .parse(TASK_FILE_RE.test(file) ? file : "tasks.py", source)
        .then((r) => (setChecked(r.tasks), setError(null)))
        .catch((e) => (setChecked(null), setError(e)));
    }, 400);
    return () => clearTimeout(t);
  }, [file, source]);

  useEffect(() => {
    view.current?.dispatch({ effects: setErrorLine.of(errorLineOf(error)) });
  }, [error]);

  async function save() {
    setSaving(true);
    try {
      await builderApi.saveTaskFile(workspace, file, source);
      onSaved(file);
    } catch (e) {
      setError(e as ApiError);
    } finally {
      setSaving(false);
    }
  }

  const line = errorLineOf(error);
  return (
    <div className="modal-backdrop">
      <div className="modal editor-modal" role="dialog" aria-label="task editor">
        <div className="panel-head">
          <h2>{open.existing ? "Edit task file" : open.generated ? "Review the generated task" : "New task"}</h2>
          <div className="spacer" />
          <span className="muted">workspace {workspace}</span>
        </div>
        {open.generated ? (
          <div className="notice" data-generated>
            Written by <b>{open.generated.model}</b> from your prompt. Read it before saving: it runs on a worker as your code.
            {open.generated.problems.length ? (
              <ul className="gen-problems">
                {open.generated.problems.map((p, i) => <li key={i}>{p}</li>)}
              </ul>
            ) : null}
          </div>
        ) : null}
        <label className={`field${badName ? " bad" : ""}`}>
          <span>File name</span>
          <input aria-label="task file name" value={file} onChange={(e) => setFile(e.target.value)} />
          {badName ? <span className="field-error">letters, digits, _ . -, ending in .py</span> : null}
        </label>
        <div className="code-box">
          <CodeMirror
            value={source}
            height="360px"
            extensions={extensions}
            onChange={setSource}
            onCreateEditor={(v) => {
              view.current = v;
              v.dispatch({ effects: setErrorLine.of(line) });
            }}
          />
        </div>
        {error ? (
          <div data-editor-error data-line={line ?? ""}>
            <ErrorBox error={error} />
          </div>
        ) : checked ? (
          <div className="muted small" data-editor-tasks>
            {checked.length
              ? `Tasks: ${checked.map((t) => `${t.name}(${t.inputs.join(", ")}) → ${(t.outputs ?? ["?"]).join(", ")}`).join(" · ")}`
              : "No @task function in this file yet."}
          </div>
        ) : null}
        <div className="modal-actions">
          <button onClick={onClose}>Cancel</button>
          <button className="primary" disabled={saving || badName} onClick={save}>
            Save task file
          </button>
        </div>
      </div>
    </div>
  );
}
