"""The two-column table every benchmark ends with, and the line that says where it ran."""

from __future__ import annotations

import os
import platform
import sys
import time

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
        f"{time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}"
    )
