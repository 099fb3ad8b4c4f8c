import { useJson } from "../api/hooks";
import { download } from "../api/client";
import type { ArtifactView } from "../api/types";
import { ErrorBox } from "../components/common";

export function ArtifactsPanel({ runId, version }: { runId: string; version: number }) {
  const { data, error } = useJson<ArtifactView[]>(`/runs/${runId}/artifacts`, [version]);
  return (
    <div className="panel">
      <ErrorBox error={error} />
      {data && !data.length ? <div className="muted">This run stored no artifacts.</div> : null}
      <table className="artifacts">
        <tbody>
          {(data ?? []).map((a) => (
            <tr key={`${a.task_id}/${a.attempt}/${a.path}`}>
              <td className="mono">{a.path}</td>
              <td className="muted">{a.task_id} #{a.attempt}</td>
              <td>{a.size.toLocaleString()} B</td>
              <td>
                <button onClick={() => download(`/artifacts/sha256/${a.sha256}`, a.path.split("/").pop() || a.sha256)}>Download</button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
