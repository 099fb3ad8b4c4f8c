"""CPU cores for each attempt: a node's CPU share maps onto this machine's cores, least-loaded
first, so concurrent attempts spread over cores instead of piling on one."""

from __future__ import annotations

import math
import os


def available_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


class CoreAllocator:
    def __init__(self, cores: list[int] | None = None) -> None:
        self.cores = cores if cores is not None else available_cores()
        self.load: dict[int, float] = dict.fromkeys(self.cores, 0.0)

    def take(self, cpu: float) -> list[int]:
        """Cores for an attempt asking `cpu` CPUs ([] where affinity is not supported)."""
        if not self.cores:
            return []
        count = min(len(self.cores), max(1, math.ceil(cpu)))
        chosen = sorted(self.cores, key=lambda c: (self.load[c], c))[:count]
        for core in chosen:
            self.load[core] += cpu / count
        return sorted(chosen)

    def give_back(self, cores: list[int], cpu: float) -> None:
        for core in cores:
            self.load[core] = max(0.0, self.load[core] - cpu / len(cores))
