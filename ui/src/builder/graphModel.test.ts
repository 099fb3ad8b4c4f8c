import { describe, expect, it } from "vitest";
import type { TaskInfo } from "../api/builder";
import {
  badHandles,
  connectionRefusal,
  formatInputValue,
  fromGraph,
  newNodeData,
  newNodeId,
  parseInputValue,
  placeProblems,
  toGraph,
  typesConnect,
  type CanvasNode,
} from "./graphModel";

function info(ref: string, over: Partial<TaskInfo> = {}): TaskInfo {
  return {
    ref,
    name: ref.split(":").pop()!,
    kind: "builtin",
    inputs: [],
    required_inputs: [],
    accepted_inputs: [],
    defaults: {},
    outputs: [],
    data_types: {},
    resources: {},
    timeout_seconds: null,
    ...over,
  };
}

const readFile = info("builtin:read_file", {
  name: "Read File",
  inputs: ["path", "offset"],
  required_inputs: ["path"],
  outputs: ["content", "size"],
  data_types: { path: "str", offset: "int", content: "str", size: "int" },
});
const writeFile = info("builtin:write_file", {
  name: "Write File",
  inputs: ["path", "content"],
  required_inputs: ["path", "content"],
  outputs: ["path", "bytes"],
  data_types: { path: "str", content: "str", bytes: "int" },
});
const scale = info("workspace:m.py:scale", { kind: "workspace", inputs: ["x"], outputs: ["y"], data_types: { x: "float" } });
const loose = info("workspace:m.py:loose", { kind: "workspace", inputs: ["a"], outputs: null });

const node = (id: string, i: TaskInfo, inputs: Record<string, unknown> = {}): CanvasNode => ({
  id,
  position: { x: 1.4, y: 2.6 },
  data: { ...newNodeData(i), inputs },
});

describe("connections", () => {
  const nodes = [node("w", writeFile), node("r", readFile), node("s", scale), node("l", loose)];
  it("follows the head's type rule", () => {
    expect(typesConnect("str", "str")).toBe(true);
    expect(typesConnect("int", "float")).toBe(true);
    expect(typesConnect("float", "int")).toBe(false);
    expect(typesConnect(undefined, "int")).toBe(true);
    expect(typesConnect("str", "int")).toBe(false);
  });
  it("accepts matching types and refuses a mismatch, saying why", () => {
    expect(connectionRefusal({ source: "w", sourceHandle: "path", target: "r", targetHandle: "path" }, nodes, [])).toBeNull();
    expect(connectionRefusal({ source: "r", sourceHandle: "size", target: "s", targetHandle: "x" }, nodes, [])).toBeNull();
    const why = connectionRefusal({ source: "r", sourceHandle: "size", target: "w", targetHandle: "content" }, nodes, []);
    expect(why).toContain("type mismatch");
    expect(why).toContain("int");
    expect(why).toContain("str");
  });
  it("refuses self-loops, unknown handles, an input wired twice or already given a value", () => {
    expect(connectionRefusal({ source: "w", sourceHandle: "path", target: "w", targetHandle: "content" }, nodes, [])).toContain("itself");
    expect(connectionRefusal({ source: "w", sourceHandle: "nope", target: "r", targetHandle: "path" }, nodes, [])).toContain("no output nope");
    const edges = [{ id: "e", source: "w", sourceHandle: "path", target: "r", targetHandle: "path" }];
    expect(connectionRefusal({ source: "w", sourceHandle: "path", target: "r", targetHandle: "path" }, nodes, edges)).toContain("already wired");
    const given = [node("w", writeFile), node("r", readFile, { path: "x.txt" })];
    expect(connectionRefusal({ source: "w", sourceHandle: "path", target: "r", targetHandle: "path" }, given, [])).toContain("has a value");
  });
  it("lets any named output of a task with unknown outputs be wired", () => {
    expect(connectionRefusal({ source: "l", sourceHandle: "whatever", target: "r", targetHandle: "path" }, nodes, [])).toBeNull();
  });
});

describe("graphs", () => {
  it("numbers node ids made from the task's name", () => {
    expect(newNodeId(readFile, [])).toBe("read_file");
    expect(newNodeId(readFile, ["read_file", "read_file-2"])).toBe("read_file-3");
    expect(newNodeId(info("workspace:my tasks.py:a b"), [])).toBe("a_b");
  });
  it("round-trips through the head's graph shape", () => {
    const nodes = [node("w", writeFile, { path: "out.txt" }), node("r", readFile)];
    nodes[1].data.resources = { cpu: 0.5 };
    nodes[1].data.timeout = 30;
    nodes[1].data.label = "Reader";
    const edges = [{ id: "e1", source: "w", sourceHandle: "path", target: "r", targetHandle: "path" }];
    const graph = toGraph(nodes, edges);
    expect(graph.nodes[0]).toEqual({
      id: "w",
      task: "builtin:write_file",
      label: "",
      inputs: { path: "out.txt" },
      resources: null,
      timeout_seconds: null,
      position: { x: 1, y: 3 },
    });
    expect(graph.nodes[1]).toMatchObject({ label: "Reader", resources: { cpu: 0.5 }, timeout_seconds: 30 });
    expect(graph.edges).toEqual([{ id: "e1", source: "w", source_handle: "path", target: "r", target_handle: "path" }]);
    const back = fromGraph(graph, new Map([[writeFile.ref, writeFile], [readFile.ref, readFile]]));
    expect(back.nodes.map((n) => [n.id, n.data.label, n.data.timeout])).toEqual([["w", "Write File", null], ["r", "Reader", 30]]);
    expect(back.edges[0]).toMatchObject({ source: "w", sourceHandle: "path", target: "r", targetHandle: "path" });
  });
  it("keeps a node whose task is gone, as an unknown task", () => {
    const back = fromGraph({ nodes: [{ id: "x", task: "workspace:gone.py:f", inputs: {} }], edges: [] }, new Map());
    expect(back.nodes[0].data.info.kind).toBe("unknown");
  });
  it("places each problem on its node, edge, or every node of a cycle", () => {
    const edges = [{ id: "e1", source: "a", target: "b", sourceHandle: "y", targetHandle: "x" }];
    const placed = placeProblems(
      [
        { code: "missing_input", message: "m", node: "a", handle: "x" },
        { code: "type_mismatch", message: "t", node: "b", edge: 0, handle: "x" },
        { code: "cycle", message: "c", nodes: ["a", "b"] },
        { code: "empty", message: "e" },
      ],
      edges,
    );
    expect(placed.byNode.get("a")!.map((p) => p.code)).toEqual(["missing_input", "cycle"]);
    expect(placed.byNode.get("b")!.map((p) => p.code)).toEqual(["type_mismatch", "cycle"]);
    expect(placed.byEdge.get("e1")!.map((p) => p.code)).toEqual(["type_mismatch"]);
    expect(placed.general.map((p) => p.code)).toEqual(["empty"]);
  });
});

describe("input values", () => {
  it("reads a field by its declared type", () => {
    expect(parseInputValue("", "int")).toEqual({ set: false });
    expect(parseInputValue("42", "int")).toEqual({ set: true, value: 42 });
    expect(parseInputValue("4.5", "int")).toHaveProperty("error");
    expect(parseInputValue("4.5", "float")).toEqual({ set: true, value: 4.5 });
    expect(parseInputValue("42", "str")).toEqual({ set: true, value: "42" });
    expect(parseInputValue("true", "bool")).toEqual({ set: true, value: true });
    expect(parseInputValue("[1, 2]", "list")).toEqual({ set: true, value: [1, 2] });
    expect(parseInputValue("[1, 2]", "dict")).toHaveProperty("error");
    expect(parseInputValue("7", undefined)).toEqual({ set: true, value: 7 });
    expect(parseInputValue("hello", undefined)).toEqual({ set: true, value: "hello" });
  });
  it("writes a value back so that it reads the same", () => {
    for (const [v, t] of [[42, "int"], ["42", "str"], ["42", undefined], ["hi", undefined], [{ a: 1 }, "dict"], [true, undefined]] as const) {
      const back = parseInputValue(formatInputValue(v, t), t);
      expect(back).toEqual({ set: true, value: v });
    }
  });
});

describe("bad handles", () => {
  it("tells an input from an output of the same name", () => {
    const edges = [{ id: "e1", source: "w", sourceHandle: "path", target: "r", targetHandle: "path" }];
    expect(badHandles("w", [{ code: "missing_input", message: "", node: "w", handle: "path" }], edges)).toEqual({ inputs: ["path"], outputs: [] });
    expect(badHandles("w", [{ code: "unknown_handle", message: "", node: "w", handle: "path", edge_id: "e1" }], edges)).toEqual({ inputs: [], outputs: ["path"] });
    expect(badHandles("r", [{ code: "type_mismatch", message: "", node: "r", handle: "path", edge: 0 }], edges)).toEqual({ inputs: ["path"], outputs: [] });
  });
});
