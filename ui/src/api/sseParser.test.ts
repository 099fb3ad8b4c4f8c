import { describe, expect, it } from "vitest";
import { SseParser } from "./sseParser";

describe("SseParser", () => {
  it("parses frames split across chunks, with ids, comments and CRLF", () => {
    const p = new SseParser();
    expect(p.push("id: 7\nevent: events\nda")).toEqual([]);
    expect(p.push('ta: [1]\n\n: keepalive\n\nevent: end\r\ndata: {}\r\n\r\n')).toEqual([
      { event: "events", data: "[1]", id: "7" },
      { event: "end", data: "{}", id: null },
    ]);
  });
});
