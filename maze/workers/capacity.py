"""What this machine offers: CPUs, memory, and each NVIDIA GPU read with pynvml."""

from __future__ import annotations

import socket

import structlog

from maze.core.errors import ValidationError
from maze.core.host_limits import cgroup_cpu_quota, cgroup_memory_limit, cpus_within, memory_mb_within
from maze.events.specs import GpuInfo, NodeCapacity

log = structlog.get_logger(__name__)


def detect_gpus() -> list[GpuInfo]:
    """Every GPU pynvml sees, or [] where there is no NVIDIA driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # no driver / library: a CPU-only node
        log.debug("gpu.none", reason=str(exc))
        return []
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            gpus.append(
                GpuInfo(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    total_mem_mb=int(mem.total // (1024 * 1024)),
                    free_mem_mb=int(mem.free // (1024 * 1024)),
                    uuid=uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                )
            )
        return gpus
    finally:
        pynvml.nvmlShutdown()


def parse_gpus(spec: str) -> list[GpuInfo]:
    """`--gpus` values: `none`, `auto`, a list of indices `0,1` (of detected cards), or declared
    cards `16GB`, `2x24GB` / `24000MB` (for tests and for sharing a machine)."""
    spec = spec.strip().lower()
    if spec in ("", "auto"):
        return detect_gpus()
    if spec in ("none", "0x"):
        return []
    if all(part.strip().isdigit() for part in spec.split(",")):
        wanted = {int(p) for p in spec.split(",")}
        found = [g for g in detect_gpus() if g.index in wanted]
        if len(found) != len(wanted):
            raise ValidationError(f"--gpus {spec}: pynvml sees only GPUs {[g.index for g in detect_gpus()]}")
        return found
    count, _, size = spec.rpartition("x")
    n = int(count) if count else 1
    if size.endswith("gb"):
        mb = int(float(size[:-2]) * 1024)
    elif size.endswith("mb"):
        mb = int(float(size[:-2]))
    else:
        raise ValidationError(f"--gpus {spec!r}: expected auto, none, 0,1 or NxSIZE like 2x16GB")
    return [GpuInfo(index=i, name="declared", total_mem_mb=mb, free_mem_mb=mb) for i in range(n)]


def local_capacity(cpus: float | None, memory_mb: int | None, gpus: str | None) -> NodeCapacity:
    """What this node offers: what the operator declared, else what it may use (its CPU affinity
    and the machine's memory, each within its cgroup's limits: a container's, not the host's)."""
    if cpus is not None and cpus <= 0:
        raise ValidationError("--cpus must be greater than 0")
    if memory_mb is not None and memory_mb < 0:
        raise ValidationError("--memory-mb must not be negative")
    if cpus is None or memory_mb is None:
        quota = cgroup_cpu_quota() if cpus is None else None
        limit = cgroup_memory_limit() if memory_mb is None else None
        cpus = cpus if cpus is not None else cpus_within(quota)
        memory_mb = memory_mb if memory_mb is not None else memory_mb_within(limit)
        log.info(
            "worker.capacity_detected",
            cpus=cpus,
            memory_mb=memory_mb,
            cgroup_cpu_quota=quota,
            cgroup_memory_limit_mb=limit // (1 << 20) if limit else None,
        )
        if cpus < 1:
            log.warning(
                "worker.cpu_quota_below_one",
                cpus=cpus,
                note="tasks asking 1 CPU (the default) will not fit this node; --cpus declares what it offers",
            )
    return NodeCapacity(cpus=float(cpus), memory_mb=int(memory_mb), gpus=parse_gpus(gpus or "auto"))


def local_ip() -> str:
    """This host's address as its resolver knows it, else loopback."""
    try:
        ip = socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"
    return ip


def gpu_free_mb(capacity: NodeCapacity) -> dict[int, int]:
    """Free memory of the real (pynvml-detected) cards of this node now; declared cards are skipped."""
    real = [g.index for g in capacity.gpus if g.name != "declared"]
    if not real:
        return {}
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return {}
    try:
        out = {}
        for index in real:
            mem = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index))
            out[index] = int(mem.free // (1024 * 1024))
        return out
    finally:
        pynvml.nvmlShutdown()
