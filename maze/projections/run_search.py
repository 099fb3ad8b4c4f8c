"""Searching run history: filters, a sort order and an opaque cursor, answered by one DuckDB query.

`RunQuery.parse` validates what `GET /runs` was given (once, in the head: a bad value is a 400
before the read models are asked); `search_runs` runs it in the read models' process. This module
imports no DuckDB, so the head can use it.

Paging is keyset, never OFFSET: a page is ordered by (sort key, run_seq), both descending or both
ascending, and the cursor carries the last row's pair; the next page starts strictly after it. The
stream sequence of a run's `run.created` (`run_seq`) is unique per run and an integer, so ties of
the sort key are broken by log order. A run is seen once across pages however many runs are
created meanwhile (new ones land before the first page in the newest-first order). Sorting by
`finished` puts runs that have not finished after every finished one (as if they finished at the
end of time: first newest-first, last oldest-first); a run that finishes while a client pages
through moves, as with any key that changes.

Speed (bench/history.py): DuckDB's Top-N operator costs ~70 ns per row it is fed (~7 ms over 100,000
runs on the 2-core VM, most of a 20 ms budget), while a scan with a filter costs ~1 ms. So a page is
two scans: `max(key, n)` (an aggregate that keeps the n largest keys, 2 ms) gives the n-th key of
the rows that match, and the ordered query takes only the rows at or past it, a few dozen.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from maze.core.errors import ValidationError
from maze.projections.run_summary import searchable
from maze.projections.schema import TABLES

if TYPE_CHECKING:
    import duckdb

RUN_STATES = ("created", "running", "succeeded", "failed", "cancelled", "timed_out")
SORTS = ("created", "finished")
ORDERS = ("desc", "asc")
MAX_LIMIT = 1000
MAX_SEARCH_CHARS = 200
MAX_LIST_ITEMS = 20
MAX_BOUNDED = 10_000  # the most keys `max(key, n)` keeps; past it (deep offsets) a plain Top-N
UNFINISHED = 1 << 62  # a run not finished sorts as if it finished after every run that did
CURSOR_VERSION = 1
_KIND = r"[A-Za-z0-9_.-]{1,64}"
_KIND_RE = re.compile(rf"^{_KIND}$")
_MS_RE = re.compile(r"[0-9]+")  # ASCII digits only: str.isdigit() also takes '¹' and '٣'


def _list_pattern(item: str) -> str:
    """What `_list` accepts, as a regular expression: nothing or blanks (no filter), or
    comma-separated values, blanks around them and empty ones ignored, 1 to MAX_LIST_ITEMS values
    (commas alone name nothing, and are refused rather than taken for no filter)."""
    return rf"^(\s*|[\s,]*{item}(\s*,[\s,]*{item}){{0,{MAX_LIST_ITEMS - 1}}}[\s,]*)$"


# The document's patterns of `GET /runs`'s filters: every value they match is accepted (the
# patterns are what the parser below does, tests/test_history.py checks it)
STATE_PATTERN = _list_pattern(f"({'|'.join(RUN_STATES)})")
KIND_PATTERN = _list_pattern(_KIND)
# an ISO 8601 date or date-time, from 1971 (so that no offset makes it fall before the epoch)
# to 9999, that `datetime.fromisoformat` takes; the parser takes more forms than these (and dates
# in 1970, and 29 February), the document shows the usual ones
ISO_PATTERN = (
    r"^(197[1-9]|19[89][0-9]|[2-9][0-9]{3})-"
    r"((0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)"
    r"([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?)?$"
)
MAX_TIME_MS = UNFINISHED - 1
# what `GET /runs` lists: every column but the search text and the result summary (`GET
# /runs/{id}` has that), so a page of 50 runs stays small
LIST_COLUMNS = tuple(c for c in TABLES["runs"] if c not in ("names", "result_summary"))
_SORT_SQL = {"created": "created_at_ms", "finished": f"coalesce(finished_at_ms, {UNFINISHED})"}


class RunQuery(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A validated search of run history (`parse` makes one from query-string values)."""

    limit: int = 50
    offset: int = 0
    states: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    created_after: int | None = None  # ms since the epoch, inclusive
    created_before: int | None = None  # ms since the epoch, exclusive
    search: str = ""  # as `searchable` makes it; "" is no text filter
    sort: str = "created"
    order: str = "desc"
    after_key: int | None = None  # from the cursor: the last row of the page before
    after_seq: int | None = None

    @classmethod
    def parse(
        cls,
        limit: int = 50,
        offset: int = 0,
        state: str | None = None,
        kind: str | None = None,
        created_after: str | int | None = None,
        created_before: str | int | None = None,
        search: str | None = None,
        sort: str | None = None,
        order: str | None = None,
        cursor: str | None = None,
    ) -> RunQuery:
        """Raises ValidationError naming the parameter that is wrong."""
        if not 1 <= limit <= MAX_LIMIT:
            raise ValidationError(f"limit must be between 1 and {MAX_LIMIT}")
        if offset < 0:
            raise ValidationError("offset must not be negative")
        states = _list("state", state)
        for s in states:
            if s not in RUN_STATES:
                raise ValidationError(f"unknown state {s!r}; one of {list(RUN_STATES)}")
        kinds = _list("kind", kind)
        for k in kinds:
            if not _KIND_RE.match(k):
                raise ValidationError(f"kind {k!r} is not a run kind (letters, digits, '_', '.', '-')")
        after, before = _time("created_after", created_after), _time("created_before", created_before)
        if after is not None and before is not None and after >= before:
            raise ValidationError("created_after must be earlier than created_before")
        if search and len(search) > MAX_SEARCH_CHARS:  # as given: lowercasing can lengthen it
            raise ValidationError(f"search is {MAX_SEARCH_CHARS} characters at most")
        text = searchable(search or "")
        sort = sort or "created"
        if sort not in SORTS:
            raise ValidationError(f"sort is one of {list(SORTS)}, not {sort!r}")
        order = order or "desc"
        if order not in ORDERS:
            raise ValidationError(f"order is one of {list(ORDERS)}, not {order!r}")
        after_key = after_seq = None
        if cursor:
            if offset:
                raise ValidationError("give either cursor or offset, not both")
            after_key, after_seq = decode_cursor(cursor, sort, order)
        return cls(
            limit=limit,
            offset=offset,
            states=tuple(states),
            kinds=tuple(kinds),
            created_after=after,
            created_before=before,
            search=text,
            sort=sort,
            order=order,
            after_key=after_key,
            after_seq=after_seq,
        )

    def sql(self) -> tuple[str, list[Any]]:
        """The page's query (n + 1 rows: one more says there is a next page) and its parameters."""
        key = _SORT_SQL[self.sort]
        where: list[str] = []
        params: list[Any] = []
        if self.states:
            where.append(f"state IN ({', '.join('?' * len(self.states))})")
            params += self.states
        if self.kinds:
            where.append(f"kind IN ({', '.join('?' * len(self.kinds))})")
            params += self.kinds
        if self.created_after is not None:
            where.append("created_at_ms >= ?")
            params.append(self.created_after)
        if self.created_before is not None:
            where.append("created_at_ms < ?")
            params.append(self.created_before)
        if self.search:
            where.append("contains(names, ?)")
            params.append(self.search)
        desc = self.order == "desc"
        if self.after_key is not None:
            past = "<" if desc else ">"
            where.append(f"({key} {past} ? OR ({key} = ? AND run_seq {past} ?))")
            params += [self.after_key, self.after_key, self.after_seq]
        cond = " AND ".join(where) or "TRUE"
        wanted = self.offset + self.limit + 1
        direction = "DESC" if desc else "ASC"
        order = f"ORDER BY {key} {direction}, run_seq {direction} LIMIT ? OFFSET ?"
        if wanted > MAX_BOUNDED:  # a deep offset (the older way to page): a plain Top-N
            return f"SELECT {', '.join(LIST_COLUMNS)} FROM runs WHERE {cond} {order}", [
                *params,
                self.limit + 1,
                self.offset,
            ]
        # the `wanted`-th key of the matching rows (NULL when none match: then no row passes)
        bound = f"(SELECT {'max' if desc else 'min'}({key}, {wanted})[-1] FROM runs WHERE {cond})"
        sql = (
            f"SELECT {', '.join(LIST_COLUMNS)} FROM runs WHERE {cond} AND {key} {'>=' if desc else '<='} "
            f"{bound} {order}"
        )
        return sql, [*params, *params, self.limit + 1, self.offset]

    def key_of(self, row: dict[str, Any]) -> int:
        if self.sort == "created":
            return int(row["created_at_ms"])
        finished = row["finished_at_ms"]
        return UNFINISHED if finished is None else int(finished)


def _list(name: str, value: str | None) -> list[str]:
    """`a,b` (or one value): the distinct values, in the order given."""
    if not value or not value.strip():
        return []
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:  # `state=,,`: a filter that names nothing would silently filter nothing
        raise ValidationError(f"{name}={value!r} names no value; give one or more, comma-separated")
    if len(items) > MAX_LIST_ITEMS:
        raise ValidationError(f"{name} takes at most {MAX_LIST_ITEMS} values")
    return list(dict.fromkeys(items))


def _time(name: str, value: str | int | None) -> int | None:
    """Milliseconds since the epoch, given as such or as an ISO 8601 date or date-time (UTC
    unless it names its offset)."""
    if value is None or value == "":
        return None
    if isinstance(value, int) or _MS_RE.fullmatch(value):
        ms = int(value)
    else:
        try:
            when = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValidationError(
                f"{name} is milliseconds since the epoch or an ISO 8601 date-time, not {value!r}"
            ) from exc
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        ms = int(when.timestamp() * 1000)
    if not 0 <= ms <= MAX_TIME_MS:
        raise ValidationError(f"{name} is out of range (from the epoch to {MAX_TIME_MS} ms)")
    return ms


def encode_cursor(query: RunQuery, row: dict[str, Any]) -> str:
    """An opaque cursor naming the row a page ended with (for the same sort and order)."""
    raw = msgspec.msgpack.encode([CURSOR_VERSION, query.sort, query.order, query.key_of(row), row["run_seq"]])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str, order: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, c_sort, c_order, key, seq = msgspec.msgpack.decode(raw, type=tuple[int, str, str, int, int])
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise ValidationError("cursor is not one this API gave (pass next_cursor as it came)") from exc
    if version != CURSOR_VERSION:
        raise ValidationError("cursor is from another version of Maze: start from the first page")
    if (c_sort, c_order) != (sort, order):
        raise ValidationError(
            f"cursor was made for sort={c_sort} order={c_order}; ask with the same sort and order"
        )
    return key, seq


def search_runs(cur: duckdb.DuckDBPyConnection, query: RunQuery) -> tuple[list[dict[str, Any]], str | None]:
    """One page of runs and the cursor of the next page (None: this was the last)."""
    from maze.projections.db import rows

    sql, params = query.sql()
    found = rows(cur, sql, params)
    if len(found) <= query.limit:
        return found, None
    page = found[: query.limit]
    return page, encode_cursor(query, page[-1])
