// The client of tasks-from-a-prompt against a fetch that answers as the head does: the request it
// sends (method, path, body, token), what it makes of the answer, and the head's error envelope.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ApiError } from "./client";
import { generateBody, generateTask, llmStatus, problemText } from "./generate";

const store = new Map<string, string>();
beforeEach(() => {
  store.clear();
  vi.stubGlobal("localStorage", {
    getItem: (k: string) => store.get(k) ?? null,
    setItem: (k: string, v: string) => store.set(k, v),
    removeItem: (k: string) => store.delete(k),
  });
});
afterEach(() => vi.unstubAllGlobals());

function answering(status: number, body: unknown) {
  const calls: { url: string; init: RequestInit }[] = [];
  vi.stubGlobal("fetch", async (url: string, init: RequestInit) => {
    calls.push({ url, init });
    return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
  });
  return calls;
}

describe("generateBody", () => {
  it("trims the prompt and sends a file name only when given", () => {
    expect(generateBody("  count rows  ")).toEqual({ prompt: "count rows" });
    expect(generateBody("count rows", "")).toEqual({ prompt: "count rows" });
    expect(generateBody("count rows", " stats.py ")).toEqual({ prompt: "count rows", file: "stats.py" });
  });
  it("refuses an empty prompt and a bad file name before asking the head", () => {
    expect(() => generateBody("   ")).toThrow(/prompt is empty/);
    expect(() => generateBody("x", "../evil.py")).toThrow(/not a task file name/);
    expect(() => generateBody("x", "notes.txt")).toThrow(/not a task file name/);
  });
});

describe("the generate client", () => {
  it("posts the prompt with the token and returns the generated file", async () => {
    store.set("maze.token", "s3cret");
    const answer = { file: "stats.py", source: "from maze import task\n", tasks: [], model: "m", problems: ["no outputs declared"] };
    const calls = answering(200, answer);
    const got = await generateTask("count the rows of data.csv", "stats.py");
    expect(got).toEqual(answer);
    expect(calls).toHaveLength(1);
    expect(calls[0].url).toBe("/playground/tasks/generate");
    expect(calls[0].init.method).toBe("POST");
    expect(JSON.parse(calls[0].init.body as string)).toEqual({ prompt: "count the rows of data.csv", file: "stats.py" });
    expect((calls[0].init.headers as Record<string, string>).Authorization).toBe("Bearer s3cret");
  });
  it("throws the head's error type and message (llm_not_configured, llm_unavailable, generation_failed)", async () => {
    for (const [status, type] of [[409, "llm_not_configured"], [503, "llm_not_configured"], [502, "llm_unavailable"], [422, "generation_failed"]] as const) {
      answering(status, { error: { type, message: `because ${type}`, details: { how: 1 } } });
      const err = await generateTask("x").catch((e) => e);
      expect(err).toBeInstanceOf(ApiError);
      expect(err).toMatchObject({ status, type, message: `because ${type}`, details: { how: 1 } });
    }
  });
  it("reads the endpoint's status", async () => {
    const calls = answering(200, { configured: false, model: null, base_url: null, how_to_configure: "start the head with --llm-base-url" });
    const got = await llmStatus();
    expect(got.configured).toBe(false);
    expect(got.how_to_configure).toContain("--llm-base-url");
    expect(calls[0].url).toBe("/playground/llm");
  });
  it("says each problem in one line", () => {
    expect(problemText("plain")).toBe("plain");
    expect(problemText({ message: "bad return", line: 4 })).toBe("line 4: bad return");
    expect(problemText({ code: "no_task" })).toBe("no_task");
  });
});
