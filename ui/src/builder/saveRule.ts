// Why the builder's Save button is disabled, in words (null: it is not). A saved workflow's name
// follows the head's rule for names (the same as a workspace's).
import { WORKSPACE_RE } from "../api/workspace";

export const NAME_RULE = "1–64 letters, digits, '-' or '_', starting with a letter or digit";

export function saveBlockedReason(name: string, nodeCount: number): string | null {
  if (!nodeCount) return "add a task to save the workflow";
  if (!name) return `name the workflow to save it: ${NAME_RULE}`;
  if (!WORKSPACE_RE.test(name)) return `not a valid workflow name: ${NAME_RULE}`;
  return null;
}
