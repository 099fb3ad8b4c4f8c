// Picks the named workspace: one that holds files (GET /workspaces), or a new name.
import { useEffect, useState } from "react";
import { useJson } from "../api/hooks";
import { WORKSPACE_RE } from "../api/workspace";

interface Summary {
  name: string;
  files: number;
  bytes: number;
}

export function WorkspacePicker({ value, onChange }: { value: string; onChange: (name: string) => void }) {
  const [draft, setDraft] = useState(value);
  useEffect(() => setDraft(value), [value]); // switched from elsewhere (a loaded workflow's own)
  const { data } = useJson<Summary[]>("/workspaces", [value]);
  const bad = draft !== "" && !WORKSPACE_RE.test(draft);
  return (
    <label className="workspace-picker">
      <span className="muted">Workspace</span>
      <input
        aria-label="workspace"
        list="workspace-names"
        value={draft}
        onChange={(e) => setDraft(e.target.value)}
        onBlur={() => (WORKSPACE_RE.test(draft) ? onChange(draft) : setDraft(value))}
        onKeyDown={(e) => e.key === "Enter" && WORKSPACE_RE.test(draft) && onChange(draft)}
        className={bad ? "invalid" : ""}
        title={bad ? "1 to 64 letters, digits, _ or -, starting with a letter or digit" : ""}
      />
      <datalist id="workspace-names">
        {(data ?? []).map((w) => (
          <option key={w.name} value={w.name}>{`${w.files} files`}</option>
        ))}
      </datalist>
    </label>
  );
}
