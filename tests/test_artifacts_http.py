"""The blob routes with large content (issue 15): a 200 MB round trip streamed both ways and
checked, a corrupted upload refused with nothing stored, and byte ranges."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import HeadProcess

MB = 1024 * 1024
BIG = 200 * MB


def _write_big(path: Path, size: int) -> str:
    """A file of `size` pseudo-random bytes (1 MB blocks, each the hash chain of the last), made
    a block at a time; its sha256."""
    hasher = hashlib.sha256()
    seed = b"maze"
    with path.open("wb") as f:
        for _ in range(size // MB):
            seed = hashlib.sha512(seed).digest()
            block = seed * (MB // len(seed))
            f.write(block)
            hasher.update(block)
    return hasher.hexdigest()


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(MB):
            yield chunk


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("big") / "big.bin"
    return path, _write_big(path, BIG)


def test_a_200_mb_blob_round_trips_streamed_and_checked(
    head: HeadProcess, big_file: tuple[Path, str]
) -> None:
    path, sha = big_file
    url = f"{head.url}/artifacts/sha256/{sha}"
    with httpx.Client(timeout=httpx.Timeout(60.0, read=600.0, write=600.0)) as http:
        put = http.put(url, content=_chunks(path), headers={"content-type": "application/octet-stream"})
        assert put.status_code == 201, put.text
        assert put.json() == {
            "sha256": sha,
            "size": BIG,
            "uri": f"maze://artifacts/sha256/{sha}",
            "created": True,
        }
        again = http.put(url, content=_chunks(path), headers={"content-type": "application/octet-stream"})
        assert again.status_code == 200 and again.json()["created"] is False  # stored once
        probe = http.head(url)
        assert probe.status_code == 200 and int(probe.headers["content-length"]) == BIG
        hasher = hashlib.sha256()
        received = 0
        with http.stream("GET", url) as resp:
            assert resp.status_code == 200
            assert resp.headers["accept-ranges"] == "bytes"
            for chunk in resp.iter_bytes():  # hashed as it comes: never held whole
                hasher.update(chunk)
                received += len(chunk)
        assert received == BIG and hasher.hexdigest() == sha


def test_byte_ranges(head: HeadProcess, big_file: tuple[Path, str]) -> None:
    path, sha = big_file
    url = f"{head.url}/artifacts/sha256/{sha}"
    with httpx.Client(timeout=httpx.Timeout(60.0, read=600.0, write=600.0)) as http:
        if http.head(url).status_code == 404:
            http.put(url, content=_chunks(path)).raise_for_status()
        with path.open("rb") as f:
            f.seek(150 * MB - 10)
            across = f.read(MB + 20)  # across a chunk boundary
            f.seek(BIG - 100)
            tail = f.read()
        got = http.get(url, headers={"range": f"bytes={150 * MB - 10}-{151 * MB + 9}"})
        assert got.status_code == 206
        assert got.headers["content-range"] == f"bytes {150 * MB - 10}-{151 * MB + 9}/{BIG}"
        assert got.content == across
        suffix = http.get(url, headers={"range": "bytes=-100"})
        assert suffix.status_code == 206 and suffix.content == tail
        open_end = http.get(url, headers={"range": f"bytes={BIG - 100}-"})
        assert open_end.status_code == 206 and open_end.content == tail
        past = http.get(url, headers={"range": f"bytes={BIG}-"})
        assert past.status_code == 416
        assert past.headers["content-range"] == f"bytes */{BIG}"
        assert past.json()["error"]["type"] == "range_not_satisfiable"
    # a small blob (answered whole when no range is asked) takes ranges too
    small = b"0123456789"
    small_sha = hashlib.sha256(small).hexdigest()
    httpx.put(f"{head.url}/artifacts/sha256/{small_sha}", content=small).raise_for_status()
    first = httpx.get(f"{head.url}/artifacts/sha256/{small_sha}", headers={"range": "bytes=2-4"})
    assert first.status_code == 206 and first.content == b"234"
    ignored = httpx.get(f"{head.url}/artifacts/sha256/{small_sha}", headers={"range": "lines=1-2"})
    assert ignored.status_code == 200 and ignored.content == small


def test_a_corrupted_upload_is_refused_and_nothing_is_stored(head: HeadProcess, tmp_path: Path) -> None:
    path = tmp_path / "mid.bin"
    sha = _write_big(path, 20 * MB)
    corrupt = bytearray(path.read_bytes())
    corrupt[12345] ^= 0xFF
    url = f"{head.url}/artifacts/sha256/{sha}"
    resp = httpx.put(url, content=bytes(corrupt), timeout=120)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["details"]["actual"] == hashlib.sha256(corrupt).hexdigest()
    assert httpx.head(url).status_code == 404
    assert httpx.get(url).status_code == 404
    # cut short: refused the same way
    short = httpx.put(url, content=bytes(corrupt[: 10 * MB]), timeout=120)
    assert short.status_code == 400
    assert httpx.head(url).status_code == 404
    # the right bytes afterwards are stored
    assert httpx.put(url, content=_chunks(path), timeout=120).status_code == 201
    assert httpx.head(url).status_code == 200
