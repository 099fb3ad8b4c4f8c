// A workspace's files: upload by drag-and-drop (or a file picker) with a progress bar each, list,
// preview (text, CSV as a table, images), download (with the token) and delete. Runs of the
// workspace (the builder's included) see these files by their relative path.
import { useEffect, useState } from "react";
import { ApiError, apiFetch, download, getJson } from "../api/client";
import { uploadWithProgress, workspaceFileUrl, type WorkspaceFile } from "../api/upload";
import { useWorkspace } from "../api/workspace";
import { ErrorBox, when } from "../components/common";
import { WorkspacePicker } from "../components/WorkspacePicker";

interface Preview {
  path: string;
  kind: "text" | "csv" | "image" | "binary";
  content_type: string;
  size: number;
  download: string;
  truncated: boolean;
  lines: string[] | null;
  columns: string[] | null;
  rows: string[][] | null;
  width: number | null;
  height: number | null;
}

interface Upload {
  id: number;
  path: string;
  sent: number;
  total: number;
  error: ApiError | null;
  done: boolean;
}

let uploadIds = 0;

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

export function FilesPage() {
  const [workspace, setWorkspace] = useWorkspace();
  const [files, setFiles] = useState<WorkspaceFile[] | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [uploads, setUploads] = useState<Upload[]>([]);
  const [dragging, setDragging] = useState(false);
  const [selected, setSelected] = useState<string | null>(null);
  const [refresh, setRefresh] = useState(0);
  const [dir, setDir] = useState("");

  useEffect(() => {
    let live = true;
    getJson<WorkspaceFile[]>(`/workspaces/${encodeURIComponent(workspace)}/files`)
      .then((f) => live && (setFiles(f), setError(null)))
      .catch((e) => live && setError(e));
    return () => {
      live = false;
    };
  }, [workspace, refresh]);

  function upload(list: FileList | File[]) {
    for (const file of Array.from(list)) {
      const path = (dir.replace(/^\/+|\/+$/g, "") ? dir.replace(/^\/+|\/+$/g, "") + "/" : "") + file.name;
      const id = ++uploadIds;
      const patch = (p: Partial<Upload>) => setUploads((us) => us.map((u) => (u.id === id ? { ...u, ...p } : u)));
      setUploads((us) => [...us, { id, path, sent: 0, total: file.size, error: null, done: false }]);
      uploadWithProgress(workspaceFileUrl(workspace, "files", path), file, (sent, total) => patch({ sent, total }))
        .then(() => {
          patch({ done: true });
          setRefresh((r) => r + 1);
        })
        .catch((e) => patch({ error: e }));
    }
  }

  async function remove(path: string) {
    if (!window.confirm(`Delete ${path} from workspace ${workspace}?`)) return;
    try {
      await apiFetch(workspaceFileUrl(workspace, "files", path), { method: "DELETE" });
      if (selected === path) setSelected(null);
      setRefresh((r) => r + 1);
    } catch (e) {
      setError(e as ApiError);
    }
  }

  return (
    <div className="page files-page">
      <div className="page-head">
        <h1>Files</h1>
        <WorkspacePicker value={workspace} onChange={(w) => (setWorkspace(w), setSelected(null))} />
        <div className="spacer" />
        <span className="muted">Tasks of this workspace's runs read these files by their path (e.g. <code>Path("data.csv")</code>).</span>
      </div>
      <div
        className={`dropzone${dragging ? " over" : ""}`}
        data-dropzone
        onDragOver={(e) => {
          e.preventDefault();
          setDragging(true);
        }}
        onDragLeave={() => setDragging(false)}
        onDrop={(e) => {
          e.preventDefault();
          setDragging(false);
          if (e.dataTransfer.files.length) upload(e.dataTransfer.files);
        }}
      >
        <div>Drop files here to upload them to <b>{workspace}</b></div>
        <div className="dropzone-row">
          <label>
            into folder{" "}
            <input aria-label="folder" placeholder="(top)" value={dir} onChange={(e) => setDir(e.target.value)} />
          </label>
          <label className="button-like">
            or choose files…
            <input
              type="file"
              multiple
              hidden
              aria-label="choose files"
              onChange={(e) => {
                if (e.target.files) upload(e.target.files);
                e.target.value = "";
              }}
            />
          </label>
        </div>
      </div>
      {uploads.length ? (
        <div className="uploads">
          {uploads.map((u) => (
            <div key={u.id} className="upload" data-upload={u.path} data-done={u.done ? "true" : "false"}>
              <span className="mono">{u.path}</span>
              <progress max={u.total || 1} value={u.sent} aria-label={`upload ${u.path}`} />
              <span className="muted">{u.error ? "failed" : u.done ? "uploaded" : `${Math.floor((100 * u.sent) / (u.total || 1))}%`}</span>
              {u.error ? <ErrorBox error={u.error} /> : null}
            </div>
          ))}
          <button onClick={() => setUploads((us) => us.filter((u) => !u.done && !u.error))}>Clear finished</button>
        </div>
      ) : null}
      <ErrorBox error={error} />
      <div className="files-body">
        <table className="runs files">
          <thead>
            <tr>
              <th>Path</th>
              <th>Size</th>
              <th>Modified</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {files && !files.length ? (
              <tr>
                <td className="empty muted" colSpan={4}>Workspace {workspace} holds no files yet: drop some above.</td>
              </tr>
            ) : null}
            {(files ?? []).map((f) => (
              <tr key={f.path} data-file={f.path} className={selected === f.path ? "selected" : ""}>
                <td className="mono">
                  <a href="#" onClick={(e) => (e.preventDefault(), setSelected(f.path))}>{f.path}</a>
                </td>
                <td>{bytes(f.size)}</td>
                <td className="muted">{when(f.modified_ms)}</td>
                <td className="actions">
                  <button onClick={() => setSelected(f.path)}>Preview</button>
                  <button onClick={() => download(workspaceFileUrl(workspace, "files", f.path), f.path.split("/").pop() || f.path).catch(setError)}>
                    Download
                  </button>
                  <button className="danger" onClick={() => remove(f.path)}>Delete</button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        <div className="panel preview-panel">
          {selected ? <FilePreview workspace={workspace} path={selected} /> : <div className="muted">Select a file to preview it.</div>}
        </div>
      </div>
    </div>
  );
}

function FilePreview({ workspace, path }: { workspace: string; path: string }) {
  const [shown, setShown] = useState<Preview | null>(null);
  const [image, setImage] = useState<string | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  useEffect(() => {
    let live = true;
    let url: string | null = null;
    setShown(null);
    setImage(null);
    setError(null);
    getJson<Preview>(workspaceFileUrl(workspace, "preview", path))
      .then(async (p) => {
        if (!live) return;
        setShown(p);
        if (p.kind === "image") {
          // fetched with the token, shown from a blob: an <img src> could not send the header
          const blob = await (await apiFetch(p.download)).blob();
          url = URL.createObjectURL(blob);
          if (live) setImage(url);
        }
      })
      .catch((e) => live && setError(e));
    return () => {
      live = false;
      if (url) URL.revokeObjectURL(url);
    };
  }, [workspace, path]);
  return (
    <div className="preview" data-preview={path} data-kind={shown?.kind ?? ""}>
      <h3 className="mono">{path}</h3>
      <ErrorBox error={error} />
      {shown ? (
        <div className="muted">
          {shown.content_type} · {bytes(shown.size)}
          {shown.kind === "image" && shown.width ? ` · ${shown.width}×${shown.height}` : ""}
          {shown.truncated ? " · only the beginning is shown" : ""}
        </div>
      ) : null}
      {shown?.kind === "csv" ? (
        <div className="csv-wrap">
          <table className="csv">
            <thead>
              <tr>{(shown.columns ?? []).map((c, i) => <th key={i}>{c}</th>)}</tr>
            </thead>
            <tbody>
              {(shown.rows ?? []).map((r, i) => (
                <tr key={i}>{r.map((v, j) => <td key={j}>{v}</td>)}</tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
      {shown?.kind === "text" ? <pre className="json text-preview">{(shown.lines ?? []).join("\n")}</pre> : null}
      {shown?.kind === "image" && image ? <img className="image-preview" src={image} alt={path} /> : null}
      {shown?.kind === "binary" ? <div className="muted">No preview for this kind of file: download it.</div> : null}
    </div>
  );
}
