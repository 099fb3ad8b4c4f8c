// Tasks from a prompt (issue 17 item 7): the head asks its configured OpenAI-compatible endpoint
// for `@task` code; the app opens it in the editor for review before it is saved.
//   GET  /playground/llm             -> LlmStatus
//   POST /playground/tasks/generate  {prompt, file?} -> GeneratedTask
// Errors: 409/503 `llm_not_configured` (its message says how to configure one), 502
// `llm_unavailable`, 422 `generation_failed`: thrown as ApiError like every other call.
import type { TaskInfo } from "./builder";
import { getJson, postJson } from "./client";

export interface LlmStatus {
  configured: boolean;
  model: string | null;
  base_url: string | null;
  how_to_configure: string;
}

export type GenerationProblem = string | { message?: string; code?: string; line?: number | null };

export interface GeneratedTask {
  file: string;
  source: string;
  tasks: TaskInfo[];
  model: string;
  problems: GenerationProblem[];
}

export const TASK_FILE_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,60}\.py$/;

/** The request body: the prompt trimmed, `file` only when one is given (the head names it else). */
export function generateBody(prompt: string, file?: string | null): { prompt: string; file?: string } {
  const text = prompt.trim();
  if (!text) throw new Error("describe the task first: the prompt is empty");
  const name = (file ?? "").trim();
  if (name && !TASK_FILE_RE.test(name)) {
    throw new Error(`${name} is not a task file name (letters, digits, _ . -, ending in .py)`);
  }
  return name ? { prompt: text, file: name } : { prompt: text };
}

/** One line for a problem the head found in the generated code. */
export function problemText(p: GenerationProblem): string {
  if (typeof p === "string") return p;
  const where = p.line ? `line ${p.line}: ` : "";
  return `${where}${p.message ?? p.code ?? JSON.stringify(p)}`;
}

export const llmStatus = () => getJson<LlmStatus>("/playground/llm");

export const generateTask = (prompt: string, file?: string | null) =>
  postJson<GeneratedTask>("/playground/tasks/generate", generateBody(prompt, file));
