import { describe, expect, it } from "vitest";
import { errorLine, readableInputs } from "./taskText";

describe("errorLine", () => {
  it("names the exception type once when the message already starts with it", () => {
    const e = { error_type: "user_code", exception_type: "JSONDecodeError", message: "JSONDecodeError: Expecting value" };
    expect(errorLine(e)).toBe("user_code · JSONDecodeError: Expecting value");
  });
  it("keeps a message that does not start with it, and an error with no exception type", () => {
    expect(errorLine({ error_type: "user_code", exception_type: "KeyError", message: "'x'" })).toBe("user_code · KeyError: 'x'");
    expect(errorLine({ error_type: "node_lost", message: "node went away" })).toBe("node_lost: node went away");
  });
});

describe("readableInputs", () => {
  const names: Record<string, string> = { task_abc: "alpha_step" };
  const nameOf = (id: string) => names[id];
  it("shows values as themselves and references by the upstream task's name", () => {
    expect(
      readableInputs(
        {
          n: { value: 3 },
          up: { ref: "task_abc.output.n" },
          gone: { ref: "task_zzz.output.out.put" },
          all: { gather: [{ value: 1 }, { ref: "task_abc.output.n" }] },
          named: { gather: { a: { ref: "task_abc.output.m" } } },
        },
        nameOf,
      ),
    ).toEqual({ n: 3, up: "← alpha_step.n", gone: "← task_zzz.out.put", all: [1, "← alpha_step.n"], named: { a: "← alpha_step.m" } });
  });
});
