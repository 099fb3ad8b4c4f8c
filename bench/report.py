"""The two-column table every benchmark ends with, and the line that says where it ran."""

from __future__ import annotations

import os
import platform
import sys
import time
import timeit

from rich.console import Console
from rich.table import Table


def print_rows(title: str, rows: list[tuple[str, str]]) -> None:
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    console = Console()
    console.print(table)
    console.print(
        f"{time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"CPU speed: {cpu_speed_us():.1f} µs for sum(range(1000))"
    )


def cpu_speed_us() -> float:
    """One core's speed now, to compare figures taken on different days: the same code on this
    shared VM has measured 2.4 times slower one day than another (bench/history.py's replay,
    2026-12-06 against 2026-12-05)."""
    runs = timeit.repeat("sum(range(1000))", number=2_000, repeat=5)
    return min(runs) / 2_000 * 1e6
