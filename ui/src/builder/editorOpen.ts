// What the task editor opens with (kept apart from the editor, which loads on first use).
export interface EditorOpen {
  file: string;
  source: string;
  /** Set when the code came from a prompt: reviewed here before it is saved. */
  generated?: { model: string; problems: string[] };
  /** Editing a stored file (its name is fixed; a new name saves a copy). */
  existing?: boolean;
}

export const NEW_TASK_SOURCE = `from maze import task


# inputs are the function's parameters; outputs the keys of the dict it returns
@task(outputs=["result"], data_types={"text": "str", "result": "str"}, timeout_seconds=60)
def shout(text: str, times: int = 1):
    return {"result": " ".join([text.upper()] * times)}
`;
