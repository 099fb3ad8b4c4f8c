"""Graph rules shared by the SDK (early errors) and the API (the authority): cycles and depth."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def find_cycle(deps: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A cycle as a list of task ids (first == last), or None. `deps[t]` are t's upstream tasks."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for root in deps:
        if state.get(root):
            continue
        stack: list[tuple[str, list[str]]] = [(root, list(deps.get(root, ())))]
        path = [root]
        state[root] = 1
        while stack:
            node, pending = stack[-1]
            if not pending:
                stack.pop()
                path.pop()
                state[node] = 2
                continue
            nxt = pending.pop()
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if not state.get(nxt) and nxt in deps:
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, list(deps.get(nxt, ()))))
    return None


def depth(deps: Mapping[str, Iterable[str]]) -> int:
    """Number of tasks on the longest dependency chain (0 for an empty graph). Assumes no cycle."""
    memo: dict[str, int] = {}

    def level(task: str) -> int:
        if task in memo:
            return memo[task]
        # iterative to survive long chains
        order = [task]
        stack = [task]
        while stack:
            cur = stack.pop()
            for up in deps.get(cur, ()):
                if up not in memo and up in deps:
                    order.append(up)
                    stack.append(up)
        for cur in reversed(order):
            ups = [memo.get(u, 1) for u in deps.get(cur, ()) if u in deps]
            memo[cur] = 1 + max(ups, default=0)
        return memo[task]

    return max((level(t) for t in deps), default=0)
