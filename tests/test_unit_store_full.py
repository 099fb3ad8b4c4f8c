"""Which JetStream refusals mean the store has no room (StoreFull), and what /readyz is told."""

from __future__ import annotations

import pytest
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError

from maze.core.errors import StoreFull, Unavailable
from maze.events import store


def test_refusals_for_room_are_store_full_and_others_are_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "ROOM", store.Room())  # (the process's own is left as it was)
    full = store.store_full(
        ServiceUnavailableError(code=503, err_code=10023, description="insufficient resources"), "s"
    )
    assert isinstance(full, StoreFull) and isinstance(full, Unavailable)  # (internal writers wait)
    assert "insufficient resources" in full.message and full.details["err_code"] == 10023
    account = BadRequestError(code=400, err_code=10002, description="resource limits exceeded for account")
    assert isinstance(store.store_full(account, "s"), StoreFull)
    assert isinstance(store.store_full({"err_code": 10023, "description": "x"}, "s"), StoreFull)  # a raw ack
    assert (
        store.store_full(NotFoundError(code=404, err_code=10059, description="stream not found"), "s") is None
    )
    assert store.store_full(ServiceUnavailableError(code=503), "s") is None  # no responders: not full
    assert store.store_full({"description": "x"}, "s") is None
    assert store.ROOM.full_since is not None  # /readyz is told
    fresh = store.Room()
    monkeypatch.setattr(store, "ROOM", fresh)
    store.store_full({"err_code": 10023}, "maze.work.n1")  # the work stream is kept in memory
    assert fresh.full_since is None


def test_readyz_is_told_of_a_full_store_until_a_write_to_disk_is_stored() -> None:
    room = store.Room()
    assert room.full_since is None
    room.refused()
    assert room.full_since is not None
    room.stored("maze.work.n1")  # the work stream is kept in memory: says nothing of the disk
    assert room.full_since is not None
    room.stored("maze.run.r1")
    assert room.full_since is None
    room.refused()
    room.last -= store.FULL_SHOWN_S + 1  # no refusal seen for a minute: no longer said
    assert room.full_since is None
