"""Views of a workflow's graph: ASCII, Mermaid, structural info and an image file."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from maze.core.dag import depth

if TYPE_CHECKING:
    from maze.sdk.workflow import MaWorkflow


def edges(wf: MaWorkflow) -> list[tuple[str, str]]:
    out = []
    for task in wf.tasks.values():
        for up in sorted(task.upstream()):
            out.append((up, task.task_id))
    return out


def ascii_graph(wf: MaWorkflow) -> str:
    lines = [
        "╔" + "═" * 62 + "╗",
        "║" + "Workflow Structure Visualization".center(62) + "║",
        "╚" + "═" * 62 + "╝",
        "",
        "Nodes (Tasks):",
    ]
    lines += [f"  • {t.task_id[:13]}... [{t.task_name}]" for t in wf.tasks.values()]
    lines += ["", "Dependencies (Edges):"]
    lines += [f"  {a[:13]}... → {b[:13]}..." for a, b in edges(wf)] or ["  (none)"]
    return "\n".join(lines)


def mermaid(wf: MaWorkflow) -> str:
    lines = ["graph TD"]
    for t in wf.tasks.values():
        label = t.task_name.replace('"', "'")
        lines.append(f'    {t.task_id}["{label}"]')
    lines += [f"    {a} --> {b}" for a, b in edges(wf)]
    return "\n".join(lines)


def info(wf: MaWorkflow) -> dict[str, Any]:
    nodes = {
        t.task_id: {
            "name": t.task_name,
            "func_name": t.meta.name,
            "inputs": list(t.inputs),
            "outputs": list(t.meta.outputs or []),
            "resources": dict(t.meta.resources),
        }
        for t in wf.tasks.values()
    }
    edge_list = [[a, b] for a, b in edges(wf)]
    deps = {t.task_id: t.upstream() for t in wf.tasks.values()}
    return {
        "nodes": nodes,
        "edges": edge_list,
        "stats": {"total_nodes": len(nodes), "total_edges": len(edge_list), "max_depth": depth(deps)},
    }


def draw(wf: MaWorkflow, output_path: str, method: str, figsize: tuple[float, float], dpi: int) -> str:
    if method not in ("auto", "graphviz", "matplotlib"):
        raise ValueError("method must be 'auto', 'graphviz' or 'matplotlib'")
    fmt = output_path.rsplit(".", 1)[-1].lower() if "." in output_path else "png"
    if method in ("auto", "graphviz"):
        try:
            import graphviz

            dot = graphviz.Digraph(format=fmt, graph_attr={"dpi": str(dpi)})
            for t in wf.tasks.values():
                dot.node(t.task_id, t.task_name)
            for a, b in edges(wf):
                dot.edge(a, b)
            base = output_path[: -(len(fmt) + 1)] if output_path.endswith("." + fmt) else output_path
            return str(dot.render(base, cleanup=True))
        except ImportError:
            if method == "graphviz":
                raise ImportError("draw_graph(method='graphviz') needs `pip install graphviz`") from None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import networkx as nx
    except ImportError:
        raise ImportError(
            "draw_graph needs graphviz (`pip install graphviz`) or matplotlib and networkx "
            "(`pip install matplotlib networkx`)"
        ) from None
    graph = nx.DiGraph()
    for t in wf.tasks.values():
        graph.add_node(t.task_id, label=t.task_name)
    graph.add_edges_from(edges(wf))
    fig = plt.figure(figsize=figsize)
    pos = nx.spring_layout(graph, seed=0)
    nx.draw(
        graph,
        pos,
        labels={t.task_id: t.task_name for t in wf.tasks.values()},
        with_labels=True,
        node_color="#cde",
        node_size=1800,
        arrows=True,
    )
    fig.savefig(output_path, dpi=dpi)
    plt.close(fig)
    return output_path
