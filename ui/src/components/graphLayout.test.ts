import { describe, expect, it } from "vitest";
import { BIG_GRAPH, GRID_FROM, NODE_H, layoutGraph, layeredLayout } from "./graphLayout";

describe("layoutGraph", () => {
  it("puts a task right of the tasks it reads from, and leaves out edges to unknown tasks", () => {
    const { positions, edges } = layoutGraph([
      { id: "a", upstream: [] },
      { id: "b", upstream: ["a", "ghost"] },
      { id: "c", upstream: ["a"] },
    ]);
    expect(edges.map((e) => e.id)).toEqual(["a->b", "a->c"]);
    expect(positions.get("b")!.x).toBeGreaterThan(positions.get("a")!.x);
    expect(positions.get("b")!.y).not.toBe(positions.get("c")!.y);
  });
});

describe("layeredLayout (big graphs)", () => {
  it("puts each task one column right of its furthest upstream, rows in order, no overlap", () => {
    const { positions, edges } = layeredLayout([
      { id: "c", upstream: ["b", "a"] }, // listed before its upstream: still placed after it
      { id: "a", upstream: [] },
      { id: "b", upstream: ["a", "ghost"] },
      { id: "d", upstream: ["a"] },
    ]);
    expect(edges.map((e) => e.id)).toEqual(["b->c", "a->c", "a->b", "a->d"]);
    const x = (id: string) => positions.get(id)!.x;
    expect(x("b")).toBeGreaterThan(x("a"));
    expect(x("d")).toBe(x("b"));
    expect(x("c")).toBeGreaterThan(x("b"));
    expect(positions.get("b")!.y).not.toBe(positions.get("d")!.y);
  });

  it("is what layoutGraph uses above BIG_GRAPH tasks (a fan-out of 2,000)", () => {
    const tasks = [{ id: "root", upstream: [] as string[] }];
    for (let i = 0; i < 1999; i++) tasks.push({ id: `t${i}`, upstream: ["root"] });
    expect(tasks.length).toBeGreaterThan(BIG_GRAPH);
    const { positions, edges } = layoutGraph(tasks);
    expect(edges).toHaveLength(1999);
    const ys = new Set(tasks.slice(1).map((t) => positions.get(t.id)!.y));
    expect(ys.size).toBe(1999); // one column, every row its own
    expect(new Set(tasks.slice(1).map((t) => positions.get(t.id)!.x)).size).toBe(1);
  });
});

describe("independent tasks (no edges)", () => {
  it("wraps 1,000 of them into a grid wider than tall, no two on one spot", () => {
    const tasks = Array.from({ length: 1000 }, (_, i) => ({ id: `shard_${i}`, upstream: [] as string[] }));
    const { positions, edges } = layoutGraph(tasks);
    expect(edges).toHaveLength(0);
    const xs = new Set(tasks.map((t) => positions.get(t.id)!.x));
    const ys = new Set(tasks.map((t) => positions.get(t.id)!.y));
    expect(xs.size).toBeGreaterThan(10); // not one column
    const spots = new Set(tasks.map((t) => `${positions.get(t.id)!.x},${positions.get(t.id)!.y}`));
    expect(spots.size).toBe(1000);
    const width = Math.max(...xs) - Math.min(...xs);
    const height = Math.max(...ys) - Math.min(...ys);
    expect(width).toBeGreaterThan(height);
  });

  it("puts the grid below the linked tasks, which keep their layered layout", () => {
    const tasks = [
      { id: "a", upstream: [] as string[] },
      { id: "b", upstream: ["a"] },
    ];
    for (let i = 0; i < GRID_FROM; i++) tasks.push({ id: `x${i}`, upstream: [] });
    const { positions, edges } = layoutGraph(tasks);
    expect(edges.map((e) => e.id)).toEqual(["a->b"]);
    expect(positions.get("b")!.x).toBeGreaterThan(positions.get("a")!.x);
    const linkedBottom = Math.max(positions.get("a")!.y, positions.get("b")!.y) + NODE_H;
    for (let i = 0; i < GRID_FROM; i++) expect(positions.get(`x${i}`)!.y).toBeGreaterThan(linkedBottom);
  });

  it("leaves a few independent tasks to dagre", () => {
    const tasks = Array.from({ length: GRID_FROM - 1 }, (_, i) => ({ id: `t${i}`, upstream: [] as string[] }));
    const { positions } = layoutGraph(tasks);
    expect(new Set(tasks.map((t) => positions.get(t.id)!.x)).size).toBe(1); // dagre: one rank
  });
});
