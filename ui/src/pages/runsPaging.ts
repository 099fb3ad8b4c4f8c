// The Runs console's paging, kept pure: the cursors belong to one set of filters (a new filter
// starts at the first page in the very same render, so no request ever pairs the old cursor with
// the new filter), and each request carries a sequence number so an older answer that arrives
// after a newer one is dropped.

export interface RunsFilters {
  state: string;
  kind: string;
  after: string;
  before: string;
  search: string;
}

/** The cursor of each page seen (this one last), for the filters they were read with. */
export interface Pager {
  key: string;
  cursors: string[];
}

/** The pages seen under `key`: the first page alone when the filters changed since. */
export function cursorsFor(pager: Pager, key: string): string[] {
  return pager.key === key ? pager.cursors : [""];
}

function toIso(local: string): string {
  return local ? new Date(local).toISOString() : "";
}

/** The `GET /runs` query for these filters, at this cursor ("" = the first page). */
export function runsQuery(filters: RunsFilters, cursor: string, limit: number, minSeq?: number): URLSearchParams {
  const q = new URLSearchParams({ limit: String(limit) });
  if (filters.state) q.set("state", filters.state);
  if (filters.kind) q.set("kind", filters.kind);
  if (filters.after) q.set("created_after", toIso(filters.after));
  if (filters.before) q.set("created_before", toIso(filters.before));
  if (filters.search) q.set("search", filters.search);
  if (cursor) q.set("cursor", cursor);
  if (minSeq) q.set("min_seq", String(minSeq));
  return q;
}

/** Numbers requests; only the answer to the latest one is current. */
export class RequestSeq {
  private last = 0;
  begin(): number {
    this.last += 1;
    return this.last;
  }
  isCurrent(seq: number): boolean {
    return seq === this.last;
  }
}
