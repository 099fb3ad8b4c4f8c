// How the task panel words a task's error and inputs. Pure (tests in taskText.test.ts).
import type { TaskError } from "../api/types";

/** "user_code · ZeroDivisionError: division by zero": the exception's type once, though the
 * message the worker recorded may already begin with it. */
export function errorLine(error: TaskError): string {
  const kind = error.exception_type;
  let message = error.message;
  if (kind && message.startsWith(`${kind}: `)) message = message.slice(kind.length + 2);
  return `${error.error_type}${kind ? ` · ${kind}` : ""}: ${message}`;
}

/** A task row's inputs (`{"value": v}`, `{"ref": "<task>.output.<key>"}`, `{"gather": ...}`) as a
 * person reads them: a value as itself, a reference as "← <upstream task's name>.<key>". */
export function readableInputs(inputs: Record<string, unknown>, nameOf: (taskId: string) => string | undefined): Record<string, unknown> {
  const read = (given: unknown): unknown => {
    const g = given as { value?: unknown; ref?: unknown; gather?: unknown };
    if (!g || typeof g !== "object") return given;
    if ("value" in g) return g.value;
    if (typeof g.ref === "string") {
      const at = g.ref.indexOf(".output.");
      if (at < 0) return `← ${g.ref}`;
      const task = g.ref.slice(0, at);
      return `← ${nameOf(task) ?? task}.${g.ref.slice(at + ".output.".length)}`;
    }
    if (Array.isArray(g.gather)) return g.gather.map(read);
    if (g.gather && typeof g.gather === "object") {
      return Object.fromEntries(Object.entries(g.gather as Record<string, unknown>).map(([k, v]) => [k, read(v)]));
    }
    return given;
  };
  return Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, read(v)]));
}
