// The Cluster view: every node with its state and CPU / memory / per-GPU memory bars, its running
// attempts, and the queues with pending reasons and retry waits, live from `GET /cluster/stream`.
import { useState } from "react";
import { Link } from "react-router-dom";
import { useFollow } from "../api/hooks";
import { ErrorBox, StateBadge, UsageBar } from "../components/common";
import { StreamStatus } from "../components/StreamStatus";

interface Gpu { index: number; name?: string; total_mem_mb: number; reserved_mem_mb: number; free_mem_mb: number; nvml_free_mb?: number | null }
interface NodeView {
  node_id: string;
  hostname: string;
  ip: string;
  state: string;
  heartbeat_age_s: number | null;
  running: number;
  waiting: number;
  cpu: { total: number; committed: number; free: number; in_use: number };
  memory_mb: { total: number; committed: number; free: number };
  gpus: Gpu[];
  sandbox: { available: boolean; reason?: string };
}
interface Placed { run_id: string; task_id: string; attempt: number; node_id: string; state: string; timeout_seconds: number | null }
interface Pending { run_id: string; task_id: string; name: string; resource_class: string; reason: string }
interface RetryWait { run_id: string; task_id: string; next_attempt: number; retry_in_s: number; reason: string | null }
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
          <div key={n.node_id} className="node-card" data-node={n.node_id}>
            <div className="node-head">
              <b>{n.node_id}</b> <StateBadge state={n.state} />
              <span className="muted"> {n.hostname} · {n.ip}{n.heartbeat_age_s !== null ? ` · beat ${n.heartbeat_age_s.toFixed(1)} s ago` : ""}</span>
            </div>
            <UsageBar label="CPU" used={n.cpu.committed} total={n.cpu.total} unit="CPUs" />
            <UsageBar label="Memory" used={n.memory_mb.committed} total={n.memory_mb.total} unit="MB" />
            {n.gpus.map((g) => (
              <UsageBar key={g.index} label={`GPU ${g.index}${g.name ? ` ${g.name}` : ""}`} used={g.reserved_mem_mb} total={g.total_mem_mb} unit="MB" />
            ))}
            <div className="muted">
              {n.running} running · {n.waiting} waiting · sandbox {n.sandbox.available ? "available" : `unavailable (${n.sandbox.reason ?? "?"})`}
            </div>
            <AttemptList items={(q?.placed ?? []).filter((p) => p.node_id === n.node_id)} />
          </div>
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
                  <td><Link to={`/runs/${r.run_id}`}>{r.task_id}</Link></td>
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
        </section>
      </div>
    </div>
  );
}

function AttemptList({ items }: { items: Placed[] }) {
  if (!items.length) return null;
  return (
    <ul className="attempt-list">
      {items.map((p) => (
        <li key={`${p.run_id}/${p.task_id}/${p.attempt}`}>
          <StateBadge state={p.state} /> <Link to={`/runs/${p.run_id}`}>{p.task_id}</Link> #{p.attempt}
          {p.timeout_seconds ? <span className="muted"> · timeout {p.timeout_seconds} s</span> : null}
        </li>
      ))}
    </ul>
  );
}
