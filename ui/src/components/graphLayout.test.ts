import { describe, expect, it } from "vitest";
import { layoutGraph } from "./graphLayout";

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
