"""The path rules of maze/core/paths.py: the regular expression the API's document shows and the
rules said in words accept exactly the same paths, and no accepted path leads out of its root."""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maze.core.errors import ValidationError
from maze.core.paths import (
    MAX_DEPTH,
    MAX_PATH_CHARS,
    MAX_SEGMENT_CHARS,
    PATH_PATTERN,
    PREFIX_PATTERN,
    check_prefix,
    check_relative_path,
    check_workspace_name,
    resolve_inside,
)

ACCEPTED = ["a", "a/b.txt", ".hidden", "...", "..a", "a./b", "dir with space/ü 文件.csv", "C:", "a" * 255]
REFUSED = {
    "": "empty",
    "/abs": "absolute",
    "/": "absolute",
    "..": "up a directory",
    "a/../b": "up a directory",
    "a/..": "up a directory",
    ".": "current directory",
    "./a": "current directory",
    "a//b": "empty segment",
    "a/": "empty segment",
    "a\\b": "backslash",
    "..\\x": "backslash",
    "a\x00b": "control character",
    "a\nb": "control character",
    "a\x7f": "control character",
    "a\x85": "control character",
    "a" * 256: "segment is longer",
    "/".join(["a"] * (MAX_DEPTH + 1)): "deeper",
    "/".join(["a" * 200] * 6): "longer than 1024",
}


def plain_rules(text: str) -> bool:
    """The rules as README "Workspaces" says them, without a regular expression."""
    segments = text.split("/")
    return (
        0 < len(text) <= MAX_PATH_CHARS
        and "\\" not in text
        and not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text)
        and all(s not in ("", ".", "..") and len(s) <= MAX_SEGMENT_CHARS for s in segments)
        and len(segments) <= MAX_DEPTH
    )


@pytest.mark.parametrize("path", ACCEPTED)
def test_accepted_paths_are_kept_as_they_are(path: str) -> None:
    assert check_relative_path(path) == path


@pytest.mark.parametrize(("path", "why"), REFUSED.items())
def test_refused_paths_say_why(path: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        check_relative_path(path)


def test_pure_paths_are_taken_in_posix_form() -> None:
    assert check_relative_path(PurePosixPath("a/b")) == "a/b"
    assert check_relative_path(PureWindowsPath("a\\b")) == "a/b"
    for absolute in (PureWindowsPath("C:\\x"), PureWindowsPath("C:x"), PurePosixPath("/x")):
        with pytest.raises(ValidationError, match="absolute"):
            check_relative_path(absolute)


ALPHABET = st.sampled_from(["a", "b", ".", "/", "\\", "\x00", "\n", "\x85", "é", " ", "%"])


@settings(max_examples=3000, deadline=None)
@given(st.text(ALPHABET, max_size=12))
def test_the_pattern_and_the_rules_agree(text: str) -> None:
    accepted = bool(re.fullmatch(PATH_PATTERN, text))
    assert accepted == plain_rules(text), text
    if accepted:
        assert check_relative_path(text) == text
        assert PurePosixPath(text).as_posix() == text  # already in normal form
        assert not PurePosixPath(text).is_absolute()
        assert ".." not in PurePosixPath(text).parts
    else:
        with pytest.raises(ValidationError):
            check_relative_path(text)


@settings(max_examples=500, deadline=None)
@given(st.text(ALPHABET, max_size=12))
def test_an_accepted_path_stays_inside_its_root(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    if not plain_rules(text):
        return
    root = tmp_path_factory.getbasetemp() / "root"
    root.mkdir(exist_ok=True)
    assert resolve_inside(root, text).is_relative_to(root.resolve())


def test_a_symlink_that_leads_out_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "inside").mkdir(parents=True)
    (tmp_path / "secret").write_text("x")
    os.symlink(tmp_path, root / "out")
    os.symlink(root / "inside", root / "in")
    with pytest.raises(ValidationError, match="outside"):
        resolve_inside(root, "out/secret")
    assert resolve_inside(root, "in/file") == (root / "inside" / "file").resolve()


@pytest.mark.parametrize("prefix", ["", "d", "data/", "data/tr", "a/b/.", "a/.."])
def test_listing_prefixes(prefix: str) -> None:
    assert check_prefix(prefix) == prefix and re.fullmatch(PREFIX_PATTERN, prefix)


@pytest.mark.parametrize("prefix", ["/", "/a", "../", "a//", "./x", "a\\", "a\x00"])
def test_refused_prefixes(prefix: str) -> None:
    with pytest.raises(ValidationError):
        check_prefix(prefix)
    assert not re.fullmatch(PREFIX_PATTERN, prefix)


@pytest.mark.parametrize("name", ["ws", "My_ws-1", "a" * 64])
def test_workspace_names(name: str) -> None:
    assert check_workspace_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", "a.b", "a/b", "..", "a b", "a" * 65, "a*", "a>"])
def test_refused_workspace_names(name: str) -> None:
    with pytest.raises(ValidationError, match="workspace name"):
        check_workspace_name(name)
