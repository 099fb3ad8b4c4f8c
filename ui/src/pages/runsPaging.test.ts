import { describe, expect, it } from "vitest";
import { RequestSeq, cursorsFor, runsQuery } from "./runsPaging";

const none = { state: "", kind: "", after: "", before: "", search: "" };

describe("cursorsFor", () => {
  it("keeps the pages seen while the filters stay the same", () => {
    const pager = { key: JSON.stringify(none), cursors: ["", "c2", "c3"] };
    expect(cursorsFor(pager, JSON.stringify(none))).toEqual(["", "c2", "c3"]);
  });
  it("starts at the first page as soon as a filter changes: no old cursor with the new filter", () => {
    const pager = { key: JSON.stringify(none), cursors: ["", "c2", "c3"] };
    const failed = { ...none, state: "failed" };
    const cursors = cursorsFor(pager, JSON.stringify(failed));
    expect(cursors).toEqual([""]);
    const q = runsQuery(failed, cursors[cursors.length - 1], 50);
    expect(q.get("state")).toBe("failed");
    expect(q.has("cursor")).toBe(false);
  });
});

describe("runsQuery", () => {
  it("sends only the filters set, the cursor and min_seq when given", () => {
    const q = runsQuery({ ...none, kind: "react", search: "noop" }, "abc", 50, 7);
    expect(Object.fromEntries(q)).toEqual({ limit: "50", kind: "react", search: "noop", cursor: "abc", min_seq: "7" });
  });
});

describe("RequestSeq", () => {
  it("marks an older request's answer as stale once a newer one began", () => {
    const seq = new RequestSeq();
    const first = seq.begin();
    const second = seq.begin();
    expect(seq.isCurrent(first)).toBe(false);
    expect(seq.isCurrent(second)).toBe(true);
  });
});
