"""Configuration in one typed place, built once at start-up from flags and MAZE_* variables."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from msgspec import Struct

from maze.core.errors import ValidationError


def default_data_dir() -> Path:
    """`$MAZE_DATA_DIR`, else `~/.maze`: the embedded JetStream store and the DuckDB read models."""
    return Path(os.environ.get("MAZE_DATA_DIR") or Path.home() / ".maze")


# A node's session is lost after this many of its own heartbeat intervals without a beat (never
# sooner than the head's liveness timeout: maze/head/liveness.py).
BEATS_MISSED = 3
# The longest heartbeat interval a worker may declare: a third of the time the heartbeat bucket
# keeps a silent node's key (HEARTBEAT_TTL_S, maze/events/store.py).
MAX_HEARTBEAT_INTERVAL_S = 40.0


class ValueLimits(Struct, frozen=True):
    """How values travel: inline in events up to `inline_bytes`, as blobs up to `blob_max_bytes`;
    and how much of what an attempt prints is kept (`log_cap_bytes`, maze/workers/capture.py).
    Workers learn these from the head when they join."""

    inline_bytes: int = 256 * 1024
    blob_max_bytes: int = 512 * 1024 * 1024
    log_cap_bytes: int = 8 * 1024 * 1024


class Settings(Struct, frozen=True):
    nats_urls: list[str] = []  # empty: start the embedded server
    data_dir: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    nats_host: str = "127.0.0.1"
    nats_port: int = 4222
    fsync: str = "always"  # "always" | "interval" (explicit, documented opt-in for throughput)
    local_worker: bool = True
    worker_cpus: float | None = None
    worker_memory_mb: int | None = None
    worker_gpus: str | None = None
    node_id: str | None = None
    heartbeat_interval: float = 2.0
    # a node with no heartbeat for this long is lost (longer for one that declared a long interval)
    liveness_timeout: float = 10.0
    node_queue_factor: float = 16.0
    # A run recorded in several chunks (run.created + tasks.added) whose chunks are not all in this
    # long after its run.created (the head died mid-submit and the client never retried) is failed
    # with `incomplete_submission` instead of waiting for ever.
    submission_grace_s: float = 600.0
    max_payload_mb: int = 8
    # JetStream replicas of Maze's streams; None: min(3, servers in the NATS cluster)
    stream_replicas: int | None = None
    # A task input or output larger than this (encoded) goes to the blob store, the event keeps a
    # `maze://artifacts/sha256/<hex>` reference.
    inline_value_kb: int = 256
    blob_max_mb: int = 512  # the largest value or function the blob store takes
    workspace_file_max_mb: int = (
        512  # the largest workspace file an upload may store (no more than blob_max_mb)
    )
    # The run controller's snapshot of its folded state: at most this often (and at least as long
    # apart as 100 x the last one took to make), and at shutdown.
    snapshot_interval_s: float = 30.0
    # Work for an attempt placed and not started is sent again after this, then twice as long...
    work_resend_s: float = 5.0
    # How long a new run's message waits for the attempts the head's own worker started with it
    # (maze/api/early.py), to take in their reports. Tests and benchmarks only
    # (MAZE_EARLY_LINGER_MS): the default suits every run.
    early_linger_ms: float = 2.0
    # Tests only (MAZE_FAULT_INJECTION): "kill-after-placed" kills the head right after it
    # recorded an attempt.placed and before it published the work.
    fault_injection: str = ""
    # bench/latency_hops.py only (MAZE_TRACE_HOPS): a directory to write per-hop timestamps to.
    trace_hops: str = ""
    log_level: str = "warning"  # the head's, and its read models' process's
    # The API's bearer token (--token / MAZE_TOKEN; else made once in the data dir): required on
    # every call of a head that binds anything but loopback, unless `insecure`.
    api_token: str = ""
    insecure: bool = False
    # Serve the Playground (the web app in ui/, built into maze/api/static/playground) under
    # /playground/ on the API's port (maze/api/playground.py)
    playground: bool = False
    # Live streams (SSE) a head serves at once, in all and per client address (429 past either)
    # This head's identity for the controller's lease (made once per data dir by the head) and the
    # lease's period: a dead leader is replaced within about 1.3 of it
    head_id: str = ""
    # With your own NATS (--nats): the URLs (their credentials included) handed to workers that
    # join; without, the head's own URLs without their credentials. The embedded server hands each
    # worker node a user of its own instead (maze/head/nats_auth.py).
    worker_nats_urls: list[str] = []
    worker_js_api_prefix: str = ""  # where those workers' account has the JetStream API ("": $JS.API)
    # TLS (maze/core/tls.py): the head's certificate and key for HTTPS and its embedded NATS, and
    # the CA its clients trust
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    lease_s: float = 5.0
    max_streams: int = 1_000
    max_streams_per_client: int = 100
    max_submit_bytes: int = 1024 * 1024 * 1024  # submission bodies read at once (maze/api/limits.py)
    # What tasks print (README "Logs"): kept per attempt up to `log_cap_kb` (the rest is cut, with a
    # marker line), and in the MAZE_LOGS stream up to `logs_max_mb` and `logs_max_age_h` (oldest
    # lines dropped first)
    log_cap_kb: int = 8 * 1024
    logs_max_mb: int = 4 * 1024
    logs_max_age_h: float = 7 * 24.0
    # The Playground's "tasks from a prompt" (maze/api/task_generation.py): an OpenAI-compatible
    # endpoint and model, and the NAME of the environment variable of the head's process that holds
    # its API key (the key itself is read from there when used, never kept here); each request to
    # it is bounded by `llm_timeout_s`
    llm_base_url: str = ""
    llm_model: str = ""
    llm_api_key_env: str = ""
    llm_timeout_s: float = 60.0

    @property
    def limits(self) -> ValueLimits:
        return ValueLimits(
            inline_bytes=self.inline_value_kb * 1024,
            blob_max_bytes=self.blob_max_mb * 1024 * 1024,
            log_cap_bytes=self.log_cap_kb * 1024,
        )

    @property
    def workspace_file_max_bytes(self) -> int:
        return self.workspace_file_max_mb * 1024 * 1024

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir) if self.data_dir else default_data_dir()


def env_settings(**overrides: object) -> Settings:
    """Settings from MAZE_* variables, with explicit (non-None) flag values on top."""
    values: dict[str, object] = {}
    env = os.environ
    if env.get("MAZE_NATS_URL"):
        values["nats_urls"] = split_urls(env["MAZE_NATS_URL"])
    if env.get("MAZE_DATA_DIR"):
        values["data_dir"] = env["MAZE_DATA_DIR"]
    if env.get("MAZE_FSYNC"):
        values["fsync"] = env["MAZE_FSYNC"]
    if env.get("MAZE_TRACE_HOPS"):
        values["trace_hops"] = env["MAZE_TRACE_HOPS"]
    if env.get("MAZE_TOKEN"):
        values["api_token"] = env["MAZE_TOKEN"]
    for name in ("max_streams", "max_streams_per_client", "max_submit_bytes", "log_cap_kb", "logs_max_mb"):
        if env.get(f"MAZE_{name.upper()}"):
            values[name] = int(env[f"MAZE_{name.upper()}"])
    if env.get("MAZE_LOGS_MAX_AGE_H"):
        values["logs_max_age_h"] = float(env["MAZE_LOGS_MAX_AGE_H"])
    for name in ("llm_base_url", "llm_model", "llm_api_key_env"):
        if env.get(f"MAZE_{name.upper()}"):
            values[name] = env[f"MAZE_{name.upper()}"]
    if env.get("MAZE_LLM_TIMEOUT_S"):
        values["llm_timeout_s"] = _env_number(env, "MAZE_LLM_TIMEOUT_S", "seconds")
    if env.get("MAZE_EARLY_LINGER_MS"):
        values["early_linger_ms"] = _env_number(env, "MAZE_EARLY_LINGER_MS", "milliseconds", high=1000.0)
    if env.get("MAZE_FAULT_INJECTION"):
        values["fault_injection"] = env["MAZE_FAULT_INJECTION"]
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)  # type: ignore[arg-type]


def _env_number(env: Mapping[str, str], name: str, unit: str, high: float | None = None) -> float:
    """A number from the environment (0 up to `high`): else a one-line error naming it."""
    try:
        value = float(env[name])
    except ValueError:
        raise ValidationError(f"{name} must be a number of {unit}, not {env[name]!r}") from None
    if not (value >= 0 and (high is None or value <= high)) or math.isinf(value):
        bound = f" up to {high:g}" if high is not None else ""
        raise ValidationError(f"{name} must be a number of {unit} from 0{bound}, not {env[name]!r}")
    return value


def split_urls(text: str) -> list[str]:
    """`nats.connect` wants a list: split `a,b,c` ourselves (DESIGN.md §8)."""
    return [u.strip() for u in text.split(",") if u.strip()]


def redact(url: str) -> str:
    """A NATS URL with its credentials hidden, for logs and banners."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def without_credentials(url: str) -> str:
    """A NATS URL with its user, password or token taken out."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url.rpartition("@")[2]
    return f"{scheme}://{rest.rpartition('@')[2]}"
