// Small pieces every page uses: state badges, error boxes, durations, usage bars.
import type { ApiError } from "../api/client";

export function StateBadge({ state }: { state: string }) {
  return <span className={`badge state-${state}`} data-state={state}>{state}</span>;
}

export function ErrorBox({ error }: { error: ApiError | Error | null }) {
  if (!error) return null;
  const typed = error as ApiError;
  return (
    <div className="error-box" role="alert">
      {typed.type ? <b>{typed.type}</b> : null}
      {typed.status ? <span className="muted"> ({typed.status})</span> : null}: {error.message}
    </div>
  );
}

export function duration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || ms < 0) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${Math.round(s % 60)}s`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

export function when(ms: number | null | undefined): string {
  return ms ? new Date(ms).toLocaleString() : "—";
}

export function UsageBar({ label, used, total, unit }: { label: string; used: number; total: number; unit: string }) {
  const pct = total > 0 ? Math.min(100, (used / total) * 100) : 0;
  const fmt = (v: number) => (Number.isInteger(v) ? String(v) : v.toFixed(2));
  return (
    <div className="usage" data-usage={label}>
      <div className="usage-label">
        <span>{label}</span>
        <span className="muted">
          {fmt(used)} / {fmt(total)} {unit}
        </span>
      </div>
      <div className="usage-track">
        <div className={`usage-fill${pct > 90 ? " hot" : ""}`} style={{ width: `${pct}%` }} />
      </div>
    </div>
  );
}

export function Json({ value }: { value: unknown }) {
  return <pre className="json">{JSON.stringify(value, null, 2)}</pre>;
}
