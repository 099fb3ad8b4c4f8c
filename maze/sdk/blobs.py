"""The SDK's side of values and code: turning task inputs of any kind into what POST /runs takes,
uploading blobs the head does not have yet, and rebuilding results (fetching blobs, checking their
hash) from the events the head sends."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx

from maze.core.errors import ArtifactError, NotFound, Unavailable
from maze.events import values
from maze.sdk.http import Http, raise_for_error
from maze.sdk.serialize import local_modules_by_value

INLINE_CODE_BYTES = 256 * 1024  # code up to this size rides along in POST /runs
SMALL_VALUE_BYTES = 16 * 1024  # below this no value can exceed the head's inline limit


class BlobClient:
    """Per head: its value limits (asked once, only when a value is large), the blobs known to be
    stored there, and blob upload/download with hash checks."""

    def __init__(self, http: Http) -> None:
        self.http = http
        self.known: set[str] = set()
        self._limits: dict[str, int] | None = None

    def limits(self) -> dict[str, int]:
        if self._limits is None:
            self._limits = dict(self.http.get("/cluster/limits"))
        return self._limits

    # ---- inputs -------------------------------------------------------------------------------
    def encode_input(self, value: Any, where: str) -> tuple[dict[str, Any], dict[str, bytes]]:
        """(the input as POST /runs takes it, blobs to upload first). Raises SerializationError
        naming `where` and the type when the value cannot be carried at all."""
        if values.is_plain(value):
            codec, content = values.encode_content(value, where)
            if len(content) <= SMALL_VALUE_BYTES:
                return {"value": value}, {}
        else:
            with local_modules_by_value():
                codec, content = values.encode_content(value, where)
        kind = values.type_name(value)
        wire = values.wire_from_content(codec, content, kind)
        if len(wire) <= SMALL_VALUE_BYTES or len(wire) <= self.limits()["inline_value_bytes"]:
            return {"encoded": wire}, {}
        limit = self.limits()["blob_max_bytes"]
        if len(content) > limit:
            raise values.too_large(where, len(content), limit)
        ref = values.blob_ref_for(codec, content, kind)
        return {"encoded": values.wire_blob(ref)}, {ref.sha256: content}

    # ---- storing ------------------------------------------------------------------------------
    def upload(self, blobs: dict[str, bytes]) -> None:
        """PUT every blob the head does not have (asked in one request)."""
        todo = [sha for sha in blobs if sha not in self.known]
        if not todo:
            return
        missing = set(self.http.post("/artifacts/missing", json={"sha256": todo})["missing"])
        for sha in todo:
            if sha in missing:
                self.http.request(
                    "PUT",
                    f"/artifacts/sha256/{sha}",
                    content=blobs[sha],
                    headers={"content-type": "application/octet-stream"},
                    timeout=httpx.Timeout(30.0, write=None, read=300.0),
                )
            self.known.add(sha)

    def split_code(self, functions: dict[str, bytes]) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """(code to send inline with the run, code to upload first): what the head is not known to
        have, small enough to ride along or not."""
        inline: dict[str, bytes] = {}
        upload: dict[str, bytes] = {}
        for sha, blob in functions.items():
            if sha in self.known:
                continue
            (inline if len(blob) <= INLINE_CODE_BYTES else upload)[sha] = blob
        return inline, upload

    # ---- reading ------------------------------------------------------------------------------
    def fetch(self, sha: str) -> bytes:
        """A blob's content from the head, checked against its sha256."""
        try:
            resp = self.http.client.get(f"/artifacts/sha256/{sha}", timeout=httpx.Timeout(30.0, read=300.0))
        except httpx.RemoteProtocolError as exc:
            raise ArtifactError(
                f"the transfer of blob {values.URI_PREFIX}{sha} was cut short (a network error, or the "
                f"head found the blob corrupt: see its log); it was not used",
                sha256=sha,
            ) from exc
        except httpx.TransportError as exc:
            raise Unavailable(f"cannot fetch blob {sha[:12]}… from {self.http.server_url}: {exc}") from exc
        if resp.status_code == 404:
            raise NotFound(f"blob {values.URI_PREFIX}{sha} is not in the blob store", sha256=sha)
        raise_for_error(resp.status_code, resp.content)
        got = hashlib.sha256(resp.content).hexdigest()
        if got != sha:
            raise ArtifactError(
                f"blob {values.URI_PREFIX}{sha} arrived corrupt or cut short ({len(resp.content)} bytes "
                f"hashing to {got}); it was not used",
                sha256=sha,
                actual=got,
            )
        return resp.content

    def load(self, descriptor: dict[str, Any]) -> Any:
        """The value a descriptor (`{"__maze_value__": ...}`) stands for."""
        return values.from_descriptor(descriptor, self.fetch)

    def materialize(self, event: dict[str, Any]) -> dict[str, Any]:
        """An attempt.succeeded event with its non-plain result values rebuilt (and a run's
        tasks' results carried from the run it retries)."""
        if event.get("type") in ("run.created", "tasks.added") and any(
            t.get("carried_encoded") for t in event["tasks"]
        ):
            tasks = []
            for task in event["tasks"]:
                if task.get("carried_encoded"):
                    carried = dict(task["carried"])
                    for key in task["carried_encoded"]:
                        carried[key] = self.load(carried[key])
                    task = {**task, "carried": carried}
                tasks.append(task)
            return {**event, "tasks": tasks}
        encoded = event.get("encoded") or []
        if not encoded:
            return event
        result = dict(event["result"])
        for key in encoded:
            result[key] = self.load(result[key])
        return {**event, "result": result}
