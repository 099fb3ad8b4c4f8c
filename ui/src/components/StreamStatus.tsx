import type { StreamStatus as Status } from "../api/sse";

const TEXT: Record<Status, string> = {
  connecting: "connecting…",
  live: "live",
  reconnecting: "connection lost — reconnecting…",
  ended: "ended",
  error: "stream refused",
};

export function StreamStatus({ status }: { status: Status }) {
  return <span className={`stream stream-${status}`} data-stream={status}>● {TEXT[status]}</span>;
}
