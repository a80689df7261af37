"""core.files: a file or folder is there complete, or not at all."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from core.files import atomic_write, publish_dir, write_json


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text("old")
    write_json(path, {"b": 1, "a": [2]})
    assert json.loads(path.read_text()) == {"a": [2], "b": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failed_atomic_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("old")

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_publish_dir_renames_the_written_folder_into_place(tmp_path: Path) -> None:
    target = tmp_path / "v1"
    seen: list[Path] = []

    def write(folder: Path) -> None:
        seen.append(folder)
        assert folder.parent == tmp_path
        assert folder.name.startswith(".tmp-v1-")
        (folder / "x.txt").write_text("x")

    publish_dir(target, write)
    assert (target / "x.txt").read_text() == "x"
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert not seen[0].exists()
    assert [p.name for p in tmp_path.iterdir()] == ["v1"]


def test_publish_dir_never_replaces_a_folder_and_cleans_up_after_a_failure(tmp_path: Path) -> None:
    target = tmp_path / "v1"
    target.mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        publish_dir(target, lambda folder: None)

    other = tmp_path / "v2"

    def racing(folder: Path) -> None:
        other.mkdir()  # another writer publishes first, with an empty folder rename(2) would replace

    with pytest.raises(FileExistsError, match="appeared while it was being written"):
        publish_dir(other, racing)

    def broken(folder: Path) -> None:
        (folder / "half").write_text("h")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        publish_dir(tmp_path / "v3", broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1", "v2"]
