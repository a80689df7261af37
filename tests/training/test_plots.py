"""Tests of training/evaluation/plots.py: PNG files are written atomically and bad inputs are rejected."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.evaluation.groups import metrics_by_group
from training.evaluation.plots import plot_group_metrics, plot_validation_curve

REPO_ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 1000
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_validation_curve_writes_png(tmp_path: Path) -> None:
    history = [
        {"epoch": e, "loss": 1.0 / (e + 1), **({"valid_NDCG@10": 0.01 * e} if e % 5 == 0 else {})}
        for e in range(1, 31)
    ]
    path = tmp_path / "run" / "valid.png"
    plot_validation_curve(history, "valid_NDCG@10", path)
    assert_png(path)
    plot_validation_curve(history, "valid_NDCG@10", path)  # overwriting an existing file works
    assert_png(path)


def test_validation_curve_rejects_missing_metric(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'valid_HR@10' is in no history row"):
        plot_validation_curve([{"epoch": 1, "loss": 0.5}], "valid_HR@10", tmp_path / "x.png")
    with pytest.raises(ValueError, match="'epoch'"):
        plot_validation_curve([], "valid_HR@10", tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def test_group_metrics_writes_png(tmp_path: Path) -> None:
    ranks = np.array([0, 3, 12, 40, 2, 7])
    masks = {
        "tail_item": np.array([False, True, True, True, False, False]),
        "head_item": np.array([True, False, False, False, True, True]),
        "tail_user": np.zeros(6, dtype=bool),  # an empty group: NaN metrics
        "head_user": np.ones(6, dtype=bool),
    }
    groups = metrics_by_group(ranks, masks, ks=(10,))
    assert math.isnan(groups["tail_user"]["NDCG@10"])
    path = tmp_path / "groups.png"
    plot_group_metrics(groups, "NDCG@10", path)
    assert_png(path)
    with pytest.raises(ValueError, match=r"'HR@5' missing for groups \['overall'"):
        plot_group_metrics(groups, "HR@5", tmp_path / "bad.png")


def test_plots_leave_pyplot_alone(tmp_path: Path) -> None:
    """In a fresh interpreter (other tests may import pyplot): plotting never loads pyplot."""
    code = (
        "import sys; from pathlib import Path; from training.evaluation.plots import plot_group_metrics; "
        "plot_group_metrics({'overall': {'HR@10': 0.3}}, 'HR@10', Path(sys.argv[1])); "
        "assert 'matplotlib.pyplot' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "g.png")], check=True, cwd=REPO_ROOT)
    assert_png(tmp_path / "g.png")
