import { describe, expect, it } from "vitest";
import { NAME_RULE, saveBlockedReason } from "./saveRule";

describe("saveBlockedReason", () => {
  it("says the name rule for a name the head would refuse", () => {
    expect(saveBlockedReason("../../etc/passwd", 2)).toBe(`not a valid workflow name: ${NAME_RULE}`);
    expect(saveBlockedReason("-x", 1)).toContain(NAME_RULE);
    expect(saveBlockedReason("a".repeat(65), 1)).toContain("not a valid");
  });
  it("asks for a name when there is none, and for a task on an empty canvas", () => {
    expect(saveBlockedReason("", 1)).toContain("name the workflow");
    expect(saveBlockedReason("good_name", 0)).toBe("add a task to save the workflow");
  });
  it("lets a valid name with tasks be saved", () => {
    expect(saveBlockedReason("rude-flow_2", 3)).toBeNull();
  });
});
