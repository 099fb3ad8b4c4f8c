"""The API's memory of elections in the runs stream, which fences what it shows: an election a
reader sees in passing, past ones not read yet, neither hides those nor is lost."""

from __future__ import annotations

from maze.api.event_reader import Elections


def test_an_election_seen_ahead_keeps_its_place_and_marks_nothing_known() -> None:
    known = Elections()
    known.note(10, 3)  # seen in passing by a reader that started at seq 9
    assert known.read_to == 0  # the elections before it are still to be read
    known.note(5, 2)  # read later by refresh, from the start
    known.note(10, 3)  # and the one seen before, again: kept once
    assert known.seqs == [5, 10]
    assert [known.before(s) for s in (1, 5, 6, 10, 11)] == [0, 0, 2, 2, 3]
    known.note(20, 1)  # an older epoch elected later (a lost race): the highest stays in force
    assert known.before(21) == 3
    known.note(15, 4)
    assert [known.before(s) for s in (16, 21)] == [4, 4]
