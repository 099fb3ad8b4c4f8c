"""The process inside a sandbox (maze/workers/sandbox.py): the pool's task process
(maze/workers/child.py) for one attempt, on the socket the worker passed it."""

from __future__ import annotations

from multiprocessing.connection import Connection

from maze.workers.child import child_main


def main(conn_fd: int) -> None:
    child_main(Connection(conn_fd), once=True)
