"""Resource requests, node capacity and the fit rule. Pure functions, unit-tested."""

from __future__ import annotations

import math
from typing import Any

from msgspec import Struct

from maze.core.errors import ValidationError
from maze.events.specs import NodeCapacity, Resources

RESOURCE_KEYS = ("cpu", "cpu_mem", "gpu", "gpu_mem", "sandbox", "network")
FLAG_KEYS = ("sandbox", "network")  # booleans; the others are numbers
EPSILON = 1e-9


def normalize_resources(given: dict[str, Any] | None) -> Resources:
    """Fill defaults (cpu 1, cpu_mem 0, gpu 0, gpu_mem 0; gpu_mem > 0 implies gpu >= 1) and
    reject unknown keys, non-numbers, negatives and impossible shapes with one clear message.
    `sandbox` and `network` are booleans (default false); `network` only means something with
    `sandbox`."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(RESOURCE_KEYS))
    if unknown:
        raise ValidationError(
            f"unknown resource key(s) {unknown}; allowed: {list(RESOURCE_KEYS)}", keys=unknown
        )
    flags = {key: given.pop(key) for key in FLAG_KEYS if key in given}
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise ValidationError(f"resource {key!r} must be true or false, got {value!r}", key=key)
    sandbox, network = flags.get("sandbox", False), flags.get("network", False)
    if network and not sandbox:
        raise ValidationError(
            "resource 'network' applies to sandboxed tasks only (an unsandboxed task has the "
            "network); set 'sandbox' too",
            key="network",
        )
    for key, value in given.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValidationError(f"resource {key!r} must be a finite number, got {value!r}", key=key)
        if value < 0:
            raise ValidationError(f"resource {key!r} must not be negative, got {value!r}", key=key)
    cpu = float(given.get("cpu", 1))
    if cpu <= 0:
        raise ValidationError("resource 'cpu' must be greater than 0", key="cpu")
    gpu = float(given.get("gpu", 0))
    gpu_mem = given.get("gpu_mem", 0)
    cpu_mem = given.get("cpu_mem", 0)
    for key, value in (("cpu_mem", cpu_mem), ("gpu_mem", gpu_mem)):
        if float(value) != int(value):
            raise ValidationError(f"resource {key!r} is whole megabytes, got {value!r}", key=key)
    if gpu_mem > 0 and gpu == 0:
        gpu = 1.0
    if gpu > 1 and gpu != int(gpu):
        raise ValidationError(f"resource 'gpu' above 1 must be a whole number of cards, got {gpu}", key="gpu")
    if sandbox and gpu > 0:
        raise ValidationError(
            "a sandboxed task cannot have a GPU (the sandbox gives its code no GPU device); drop "
            "'gpu'/'gpu_mem' or 'sandbox'",
            key="gpu",
        )
    return Resources(
        cpu=cpu, cpu_mem=int(cpu_mem), gpu=gpu, gpu_mem=int(gpu_mem), sandbox=sandbox, network=network
    )


class Usage(Struct):
    """What is reserved on a node right now."""

    cpu: float = 0.0
    cpu_mem: int = 0
    gpu_share: dict[int, float] = {}  # card index -> share of the card in use (0..1)
    gpu_mem: dict[int, int] = {}  # card index -> MB reserved


def add_usage(usage: Usage, req: Resources, gpus: list[int], sign: int = 1) -> None:
    usage.cpu += sign * req.cpu
    usage.cpu_mem += sign * req.cpu_mem
    share = req.gpu if req.gpu <= 1 else 1.0
    for idx in gpus:
        usage.gpu_share[idx] = usage.gpu_share.get(idx, 0.0) + sign * share
        usage.gpu_mem[idx] = usage.gpu_mem.get(idx, 0) + sign * req.gpu_mem
        if abs(usage.gpu_share[idx]) < EPSILON and usage.gpu_mem[idx] == 0:
            del usage.gpu_share[idx]
            del usage.gpu_mem[idx]


def pick_gpus(capacity: NodeCapacity, usage: Usage, req: Resources) -> list[int] | None:
    """The cards an attempt would get on this node now, or None if it does not fit.

    Best fit: among cards with room, prefer the one with the least free memory that still holds
    the request, so large cards stay free for large tasks."""
    if req.gpu <= 0:
        return []
    count = max(1, math.ceil(req.gpu)) if req.gpu > 1 else 1
    share = req.gpu if req.gpu <= 1 else 1.0
    candidates = []
    for gpu in capacity.gpus:
        free_mem = gpu.total_mem_mb - usage.gpu_mem.get(gpu.index, 0)
        free_share = 1.0 - usage.gpu_share.get(gpu.index, 0.0)
        if free_mem >= req.gpu_mem and free_share + EPSILON >= share:
            candidates.append((free_mem, gpu.index))
    if len(candidates) < count:
        return None
    candidates.sort()
    return sorted(idx for _, idx in candidates[:count])


def _sandbox_missing(capacity: NodeCapacity, req: Resources) -> bool:
    return (req.sandbox and not capacity.sandbox) or (req.network and not capacity.sandbox_network)


def fits(capacity: NodeCapacity, usage: Usage, req: Resources) -> list[int] | None:
    """GPU indices the request would get if it fits the node's free capacity now, else None."""
    if _sandbox_missing(capacity, req):
        return None
    if usage.cpu + req.cpu > capacity.cpus + EPSILON:
        return None
    if usage.cpu_mem + req.cpu_mem > capacity.memory_mb:
        return None
    return pick_gpus(capacity, usage, req)


def could_ever_fit(capacity: NodeCapacity, req: Resources) -> str | None:
    """None if an empty node of this shape holds the request, else the reason it never can."""
    if req.sandbox and not capacity.sandbox:
        why = capacity.sandbox_limits or "it did not report a sandbox"
        return f"needs a sandbox, node has none ({why})"
    if req.network and not capacity.sandbox_network:
        return "needs a sandbox with network, node has none (slirp4netns is not installed there)"
    if req.cpu > capacity.cpus + EPSILON:
        return f"needs {req.cpu:g} CPUs, node has {capacity.cpus:g}"
    if req.cpu_mem > capacity.memory_mb:
        return f"needs {req.cpu_mem} MB memory, node has {capacity.memory_mb}"
    if req.gpu > 0:
        count = math.ceil(req.gpu) if req.gpu > 1 else 1
        big_enough = [g for g in capacity.gpus if g.total_mem_mb >= req.gpu_mem]
        if not capacity.gpus:
            return "needs a GPU, node has none"
        if len(big_enough) < count:
            return (
                f"needs {count} GPU(s) with {req.gpu_mem} MB each, node has "
                f"{len(big_enough)} such of {len(capacity.gpus)}"
            )
    return None


def fits_assigned(capacity: NodeCapacity, usage: Usage, req: Resources, gpus: list[int]) -> bool:
    """Whether an attempt with the cards the placer assigned fits what is running now (a
    sandboxed attempt never fits a node that cannot sandbox it)."""
    if _sandbox_missing(capacity, req):
        return False
    if usage.cpu + req.cpu > capacity.cpus + EPSILON:
        return False
    if usage.cpu_mem + req.cpu_mem > capacity.memory_mb:
        return False
    share = req.gpu if req.gpu <= 1 else 1.0
    by_index = {g.index: g for g in capacity.gpus}
    for idx in gpus:
        card = by_index.get(idx)
        if card is None:
            return False
        if usage.gpu_mem.get(idx, 0) + req.gpu_mem > card.total_mem_mb:
            return False
        if usage.gpu_share.get(idx, 0.0) + share > 1.0 + EPSILON:
            return False
    return True
