// One node of the Cluster view. Bars show what its running attempts hold (`in_use`, from its
// heartbeat) over its total; attempts queued on it are counted apart with the CPUs they will need
// (`committed` - `in_use`), so a busy node never reads as over-committed. A GPU's bar is what is
// reserved on it, with the measured (nvml) use beside it where the node reports it.
import { Link } from "react-router-dom";
import { StateBadge, UsageBar } from "../components/common";

export interface Gpu { index: number; name?: string; total_mem_mb: number; reserved_mem_mb: number; free_mem_mb: number; nvml_free_mb?: number | null }
export interface NodeView {
  node_id: string;
  hostname: string;
  ip: string;
  state: string;
  heartbeat_age_s: number | null;
  running: number;
  waiting: number;
  cpu: { total: number; committed: number; free: number; in_use: number };
  memory_mb: { total: number; committed: number; free: number; in_use?: number };
  gpus: Gpu[];
  sandbox: { available: boolean; reason?: string };
}
export interface Placed { run_id: string; task_id: string; name?: string; attempt: number; node_id: string; state: string; timeout_seconds: number | null }

const round = (v: number) => Math.round(v * 100) / 100;

export function NodeCard({ node: n, placed }: { node: NodeView; placed: Placed[] }) {
  const queuedCpu = round(Math.max(0, n.cpu.committed - n.cpu.in_use));
  return (
    <div className="node-card" data-node={n.node_id}>
      <div className="node-head">
        <b>{n.node_id}</b> <StateBadge state={n.state} />
        <span className="muted"> {n.hostname} · {n.ip}{n.heartbeat_age_s !== null ? ` · beat ${n.heartbeat_age_s.toFixed(1)} s ago` : ""}</span>
      </div>
      <UsageBar label="CPU" used={n.cpu.in_use} total={n.cpu.total} unit="CPUs" />
      <UsageBar label="Memory" used={n.memory_mb.in_use ?? 0} total={n.memory_mb.total} unit="MB" />
      {n.gpus.map((g) => (
        <div key={g.index}>
          <UsageBar label={`GPU ${g.index}${g.name ? ` ${g.name}` : ""} reserved`} used={g.reserved_mem_mb} total={g.total_mem_mb} unit="MB" />
          {g.nvml_free_mb !== null && g.nvml_free_mb !== undefined ? (
            <UsageBar label={`GPU ${g.index} measured`} used={Math.max(0, g.total_mem_mb - g.nvml_free_mb)} total={g.total_mem_mb} unit="MB" />
          ) : null}
        </div>
      ))}
      <div className="muted" data-queued-here={n.waiting}>
        {n.running} running · {n.waiting ? `${n.waiting} queued here, needing ${queuedCpu} CPUs` : "nothing queued here"} · sandbox{" "}
        {n.sandbox.available ? "available" : `unavailable (${n.sandbox.reason ?? "?"})`}
      </div>
      <AttemptList items={placed} />
    </div>
  );
}

export function AttemptList({ items }: { items: Placed[] }) {
  if (!items.length) return null;
  return (
    <ul className="attempt-list">
      {items.map((p) => (
        <li key={`${p.run_id}/${p.task_id}/${p.attempt}`}>
          <StateBadge state={p.state} /> <Link to={`/runs/${p.run_id}`} title={p.task_id}>{p.name || p.task_id}</Link> #{p.attempt}
          {p.timeout_seconds ? <span className="muted"> · timeout {p.timeout_seconds} s</span> : null}
        </li>
      ))}
    </ul>
  );
}
