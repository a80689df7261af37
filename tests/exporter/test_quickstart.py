"""The README's first command, small: ``recsys quickstart`` trains, exports, serves and prints a real answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter.cli import main


def test_quickstart_trains_exports_serves_and_prints_a_recommendation(
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RECSYS_ML100K_DIR", str(shared_data / "ml-100k"))
    args = ["quickstart", "--run-dir", str(tmp_path), "--epochs", "1", "--modes", "alphafuse"]
    assert main([*args, "--set", "data.max_len=10", "--set", "train.threads=1"]) == 0
    out = capsys.readouterr().out
    assert "NDCG@10" in out
    answer = json.loads(next(line for line in out.splitlines() if line.startswith('{"items"')))
    assert len(answer["items"]) == 10
    assert answer["source"] == "model"
    assert (tmp_path / "artifacts" / answer["model_version"] / "manifest.json").exists()
    assert "POST /items" in out


def test_cli_reports_bad_input_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(tmp_path / "no-run")]) == 2
    assert "no-run" in capsys.readouterr().err
