"""The io layer: atomic writes leave the old file or the new one, never a part, and no temporary
file."""

from __future__ import annotations

import pytest

from mofbalora.io import atomic_directory, atomic_path, atomic_write_bytes, atomic_write_json


def test_atomic_write_replaces_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_bytes(target, b"old")
    atomic_write_json(target, {"x": 1})
    assert target.read_text() == '{"x": 1}'
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "t.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target, suffix=".csv") as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]


def test_atomic_directory_keeps_a_copy_written_meanwhile_unless_told_to_replace(tmp_path):
    target = tmp_path / "entry"
    with atomic_directory(target) as tmp:
        (tmp / "f").write_text("mine")
        target.mkdir()  # another process finished first
        (target / "f").write_text("theirs")
    assert (target / "f").read_text() == "theirs"
    with atomic_directory(target, replace=True) as tmp:
        (tmp / "f").write_text("mine")
    assert (target / "f").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]
