// The named workspace the Builder and Files pages work in ("default" until another is chosen),
// kept in the browser's localStorage so both pages (and a reload) agree.
import { useState } from "react";

const KEY = "maze.workspace";
export const WORKSPACE_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

export function storedWorkspace(): string {
  const found = localStorage.getItem(KEY);
  return found && WORKSPACE_RE.test(found) ? found : "default";
}

export function useWorkspace(): [string, (name: string) => void] {
  const [name, setName] = useState(storedWorkspace);
  return [
    name,
    (next: string) => {
      if (!WORKSPACE_RE.test(next)) return;
      localStorage.setItem(KEY, next);
      setName(next);
    },
  ];
}
