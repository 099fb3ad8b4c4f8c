from maze.head.run_changes import MAX_PENDING, ChangeWatcher


def test_a_watcher_keeps_each_runs_last_change_and_says_when_it_kept_too_few() -> None:
    watcher = ChangeWatcher()
    watcher.note("run_a", 3)
    watcher.note("run_a", 5)
    watcher.note("run_b", 4)
    assert watcher.changed.is_set()
    assert watcher.take() == ({"run_a": 5, "run_b": 4}, False, 5)
    assert not watcher.changed.is_set()
    for i in range(MAX_PENDING + 3):
        watcher.note(f"run_{i}", 10 + i)
    runs, overflow, last = watcher.take()
    assert len(runs) == MAX_PENDING and overflow and last == 10 + MAX_PENDING + 2
    assert watcher.take() == ({}, False, last)
