"""Tasks Maze provides itself (run like any task, recorded in the one run history)."""
