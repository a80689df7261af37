"""The cold_items replay through the served artifact equals the offline figures (ml-100k, newest, short run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.cold_replay import replay_cold_items
from training.config import load_config
from training.experiment import run_experiment
from training.run.rundir import HELD_OUT_FILE

CONFIG = Path(__file__).resolve().parents[2] / "training" / "configs" / "ml-100k.toml"


@pytest.fixture(scope="module")
def cold_run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    config = load_config(
        CONFIG,
        [
            f'data.source.path="{shared_data / "ml-100k"}"',
            'data.protocol="cold_items"',
            'data.cold_pick="newest"',
            "data.max_len=10",
            "data.max_sequence_length=30",  # each user's last 30 items: a fast, real-data run
            "train.max_epochs=2",
            "train.threads=1",
        ],
    )
    run_dir = tmp_path_factory.mktemp("cold-run")
    run_experiment(config, run_dir)
    return run_dir


@pytest.fixture(scope="module", params=[0.0, 0.5], ids=["plain", "semantic-query"])
def replay(
    cold_run: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> dict[str, object]:
    """The replay with the plain user vector, and with the semantic query folded into the encoder graph."""
    run_dir = cold_run
    result = replay_cold_items(
        run_dir,
        tmp_path_factory.mktemp("artifacts"),
        with_warm=True,
        semantic_query_beta=request.param,
    )
    result["held_out"] = json.loads((run_dir / HELD_OUT_FILE).read_text())
    result["run_items"] = len(json.loads((run_dir / "item_ids.json").read_text()))
    return result


def test_the_artifact_holds_only_warm_items_and_the_cold_ones_arrive_by_text(
    replay: dict[str, object],
) -> None:
    held_out = replay["held_out"]
    assert isinstance(held_out, list)
    assert replay["added_items"] == len(held_out) > 0
    assert replay["artifact_items"] == replay["run_items"] - len(held_out)  # type: ignore[operator]
    assert replay["unknown_history_items"] == 0


def test_served_figures_equal_offline(replay: dict[str, object]) -> None:
    diff, served = replay["abs_diff"], replay["served"]
    assert isinstance(diff, dict)
    assert isinstance(served, dict)
    for part in ("cold", "warm"):
        for metric in ("HR@10", "NDCG@10"):
            assert diff[part][metric] <= 0.002, (part, metric, replay)
    assert served["warm"]["HR@10"] > 0.0  # the comparison is not of two empty answers
    scores = replay["max_target_score_diff"]
    assert isinstance(scores, dict)
    assert (
        scores["cold"] < 1e-3
    )  # a cold target's served vector is its text's projection, as offline
    assert scores["warm"] < 1e-3
