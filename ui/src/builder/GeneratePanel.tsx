// "Generate task from a prompt": the head asks its OpenAI-compatible endpoint for `@task` code;
// the answer opens in the editor for review. Without an endpoint the button is disabled and says
// how to configure one (GET /playground/llm).
import { useState } from "react";
import { ApiError } from "../api/client";
import { generateTask, problemText, type LlmStatus } from "../api/generate";
import { useJson } from "../api/hooks";
import { ErrorBox } from "../components/common";
import type { EditorOpen } from "./editorOpen";

export function GeneratePanel({ onGenerated }: { onGenerated: (open: EditorOpen) => void }) {
  const { data: llm, error: llmError } = useJson<LlmStatus>("/playground/llm");
  const [prompt, setPrompt] = useState("");
  const [file, setFile] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<ApiError | Error | null>(null);
  const ready = !!llm?.configured;

  async function submit() {
    setBusy(true);
    setError(null);
    try {
      const got = await generateTask(prompt, file);
      onGenerated({ file: got.file, source: got.source, generated: { model: got.model, problems: got.problems.map(problemText) } });
    } catch (e) {
      setError(e as Error);
    } finally {
      setBusy(false);
    }
  }

  return (
    <div className="generate" data-llm={llm ? (ready ? "configured" : "not-configured") : llmError ? "error" : "loading"}>
      <textarea
        aria-label="task prompt"
        placeholder="Describe the task, e.g. “read data.csv and return the number of rows and the mean of the price column”"
        value={prompt}
        onChange={(e) => setPrompt(e.target.value)}
        rows={4}
      />
      <input aria-label="generated file name" placeholder="file name (optional), e.g. stats.py" value={file} onChange={(e) => setFile(e.target.value)} />
      <button className="primary" disabled={!ready || busy || !prompt.trim()} onClick={submit}>
        {busy ? "Generating…" : "Generate"}
      </button>
      {llm && ready ? <div className="muted small">Model {llm.model} at {llm.base_url}</div> : null}
      {llm && !ready ? <div className="notice small" data-how-to>{llm.how_to_configure}</div> : null}
      {llmError ? (
        <div className="small" data-how-to>
          Tasks from a prompt are not available from this head:
          <ErrorBox error={llmError} />
        </div>
      ) : null}
      <ErrorBox error={error} />
    </div>
  );
}
