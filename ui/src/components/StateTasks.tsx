// The tasks of a run in one state (a count chip clicked): a compact list, each one click from its
// panel, so a failed task among 1,000 is found without hunting in the DAG.
import type { FoldTask } from "../fold/runFold";

const MAX_SHOWN = 100;

interface Props {
  state: string;
  tasks: FoldTask[];
  selected: string | null;
  onSelect: (id: string) => void;
  onClose: () => void;
}

export function StateTasks({ state, tasks, selected, onSelect, onClose }: Props) {
  return (
    <div className="state-tasks panel" data-state-tasks={state}>
      <div className="state-tasks-head">
        <b>{tasks.length}</b> {tasks.length === 1 ? "task" : "tasks"} {state}
        <div className="spacer" />
        <button onClick={onClose} aria-label="close the task list">✕</button>
      </div>
      <div className="state-tasks-list">
        {tasks.slice(0, MAX_SHOWN).map((t) => (
          <button
            key={t.task_id}
            className={`state-task state-${t.state}${t.task_id === selected ? " selected" : ""}`}
            data-task-item={t.task_id}
            title={t.task_id}
            onClick={() => onSelect(t.task_id)}
          >
            {t.name}
          </button>
        ))}
        {tasks.length > MAX_SHOWN ? <span className="muted">… {tasks.length - MAX_SHOWN} more</span> : null}
        {!tasks.length ? <span className="muted">none now</span> : null}
      </div>
    </div>
  );
}
