"""Atomic file replacement: content is all-or-nothing, interrupted writes leave no debris after cleanup."""
from pathlib import Path

from shared.atomic_file import atomic_write, remove_leftovers, temp_path


def test_replaces_content_and_leaves_no_temp_file(tmp_path: Path):
    target = tmp_path / "sub" / "state.json"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]


def test_leftover_of_an_interrupted_write_is_removed_and_target_untouched(tmp_path: Path):
    target = tmp_path / "state.json"
    atomic_write(target, b"good")
    temp_path(target).write_bytes(b"half a wri")  # what a crash before the rename leaves
    remove_leftovers(target)
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
