// The Cluster view: every node (NodeCard.tsx) with its state and CPU / memory / per-GPU memory bars, its running
// attempts, and the queues with pending reasons and retry waits, live from `GET /cluster/stream`.
import { useState } from "react";
import { Link } from "react-router-dom";
import { useFollow } from "../api/hooks";
import { ErrorBox } from "../components/common";
import { StreamStatus } from "../components/StreamStatus";
import { AttemptList, NodeCard, type NodeView, type Placed } from "./NodeCard";

interface Pending { run_id: string; task_id: string; name: string; resource_class: string; reason: string }
interface RetryWait { run_id: string; task_id: string; name?: string; next_attempt: number; retry_in_s: number; reason: string | null }
interface Snapshot {
  resources: { nodes: NodeView[]; unregistered_nodes: unknown[]; leader: unknown };
  queues: {
    totals: Record<string, number>;
    by_resource_class: Record<string, { pending: number; queued: number; running: number; reason: string | null }>;
    pending: Pending[];
    placed: Placed[];
    timeouts: Placed[];
    retry_waits: RetryWait[];
    recent_rejects: Record<string, unknown>;
  };
}

export function ClusterPage() {
  const [snap, setSnap] = useState<Snapshot | null>(null);
  const { status, error } = useFollow("/cluster/stream?hold_s=60", (ev) => {
    if (ev.event === "cluster") setSnap(JSON.parse(ev.data));
  }, { renew: true });
  const q = snap?.queues;
  return (
    <div className="page">
      <div className="page-head">
        <h1>Cluster</h1>
        <StreamStatus status={status} />
      </div>
      <ErrorBox error={error} />
      <div className="nodes">
        {(snap?.resources.nodes ?? []).map((n) => (
          <NodeCard key={n.node_id} node={n} placed={(q?.placed ?? []).filter((p) => p.node_id === n.node_id)} />
        ))}
        {snap && !snap.resources.nodes.length ? <div className="muted">No nodes registered.</div> : null}
      </div>
      {snap?.resources.unregistered_nodes.length ? (
        <div className="panel warn">Workers heartbeating but not registered: <pre>{JSON.stringify(snap.resources.unregistered_nodes, null, 1)}</pre></div>
      ) : null}
      <h2>Queues</h2>
      <div className="counts">
        {Object.entries(q?.totals ?? {}).map(([k, v]) => (
          <span key={k} className="count" data-total={k}>{k} {v}</span>
        ))}
      </div>
      <div className="queues">
        <section>
          <h3>Waiting for placement</h3>
          {Object.entries(q?.by_resource_class ?? {}).map(([cls, e]) => (
            <div key={cls} className="muted">{cls}: {e.pending} pending{e.reason ? ` — ${e.reason}` : ""}</div>
          ))}
          <table>
            <tbody>
              {(q?.pending ?? []).map((p) => (
                <tr key={p.run_id + p.task_id}>
                  <td><Link to={`/runs/${p.run_id}`}>{p.name || p.task_id}</Link></td>
                  <td className="muted">{p.resource_class}</td>
                  <td className="warn">{p.reason}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {!q?.pending.length ? <div className="muted">nothing pending</div> : null}
        </section>
        <section>
          <h3>Retry waits</h3>
          <table>
            <tbody>
              {(q?.retry_waits ?? []).map((r) => (
                <tr key={r.run_id + r.task_id}>
                  <td><Link to={`/runs/${r.run_id}`} title={r.task_id}>{r.name || r.task_id}</Link></td>
                  <td>attempt {r.next_attempt} in {r.retry_in_s.toFixed(1)} s</td>
                  <td className="muted">{r.reason ?? ""}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {!q?.retry_waits.length ? <div className="muted">no retries waiting</div> : null}
        </section>
        <section>
          <h3>With timeouts</h3>
          <AttemptList items={q?.timeouts ?? []} />
          {!q?.timeouts.length ? <div className="muted">no attempt with a timeout placed</div> : null}
        </section>
      </div>
    </div>
  );
}

