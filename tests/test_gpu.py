"""Checks that need a real NVIDIA GPU: skipped where pynvml finds none (CI has none)."""

from __future__ import annotations

import os
import time

import pytest

from maze import MaClient, task
from maze.workers.capacity import detect_gpus
from tests.helpers import HeadProcess

GPUS = detect_gpus()
pytestmark = pytest.mark.skipif(not GPUS, reason="pynvml finds no NVIDIA GPU on this machine")


@task
def on_gpu(seconds: float = 1.0):
    start = time.time()
    time.sleep(seconds)
    return {"cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time()}


def test_pynvml_sees_cards_with_memory() -> None:
    for gpu in GPUS:
        assert gpu.total_mem_mb > 0 and 0 <= gpu.free_mem_mb <= gpu.total_mem_mb and gpu.name


def test_gpu_memory_packing_and_visible_devices(tmp_path) -> None:
    head = HeadProcess(tmp_path / "head", extra=["--gpus", "0"])
    head.start()
    try:
        card = GPUS[0]
        share = int(card.total_mem_mb * 0.4)
        client = MaClient(head.url)
        wf = client.create_workflow()
        tasks = [
            wf.add_task(task(resources={"cpu": 1, "gpu_mem": share})(on_gpu), inputs={"seconds": 1.5})
            for _ in range(4)
        ]
        summary = wf.show_results(wf.run())
        assert summary["state"] == "succeeded"
        spans = [summary["task_results"][t.task_id] for t in tasks]
        assert all(s["cuda"] == "0" for s in spans)
        for s in spans:  # at most two 40% tasks share the card at any moment
            assert sum(1 for o in spans if o["start"] <= s["start"] < o["end"]) <= 2
    finally:
        head.stop()
