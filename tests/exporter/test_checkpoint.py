"""training.run.checkpoint.load_run: a run directory back into the same model, without the data; clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from core.alphafuse import load_basis
from training.items.embeddings import AlphaFuseEmbedding, IDEmbedding
from training.models.recommender import SequentialRecommender
from training.run.builder import Prepared, build_model
from training.run.checkpoint import load_run

RUN_FILES = ["config.json", "item_ids.json", "model.safetensors", "popularity.npy"]


def _trained_model(run_dir: Path, prepared: Prepared) -> SequentialRecommender:
    """The model as training rebuilds it from the data (training.experiment.evaluate_run's way)."""
    run = load_run(run_dir)
    basis_file = run_dir / "semantic_basis.npz"
    basis = load_basis(basis_file) if basis_file.exists() else None
    model = build_model(run.config, prepared, basis)
    model.load_state_dict(load_file(run_dir / "model.safetensors"))
    return model.eval()


def _copy_run(run_dir: Path, to: Path) -> Path:
    to.mkdir()
    for name in [*RUN_FILES, "semantic_basis.npz"]:
        if (run_dir / name).exists():
            shutil.copy(run_dir / name, to / name)
    return to


@pytest.mark.parametrize("mode", ["alphafuse", "id"])
def test_load_run_scores_exactly_like_the_trained_model(
    mode: str, alphafuse_run: Path, id_run: Path, prepared: Prepared
) -> None:
    run_dir = alphafuse_run if mode == "alphafuse" else id_run
    run = load_run(run_dir)
    assert run.config.embedding.mode == mode
    assert not run.model.training
    assert isinstance(run.model.items, AlphaFuseEmbedding if mode == "alphafuse" else IDEmbedding)
    assert (run.basis is not None) == (mode == "alphafuse")
    assert run.item_ids == prepared.dataset.item_ids
    expected_counts = prepared.split.train_sequences.item_interaction_counts()
    assert run.popularity is not None
    np.testing.assert_array_equal(run.popularity, expected_counts)
    histories = torch.from_numpy(prepared.split.test.histories[:128])  # (B, L)
    trained = _trained_model(run_dir, prepared)
    with torch.no_grad():
        got, want = run.model.scores(histories), trained.scores(histories)  # (B, N)
    assert got.shape == (128, len(run.item_ids))
    assert torch.equal(got, want)


def test_alphafuse_buffers_come_from_the_checkpoint(alphafuse_run: Path) -> None:
    run = load_run(alphafuse_run)
    items = run.model.items
    assert isinstance(items, AlphaFuseEmbedding)
    assert run.basis is not None
    assert items.null_dim == run.basis.null_dim
    # the language table is the projected text, not the zero placeholder load_run builds first
    assert float(items.language[:-1].abs().sum()) > 0
    assert float(items.language[-1].abs().sum()) == 0.0  # the pad row
    assert set(torch.unique(items.id_keep).tolist()) <= {0.0, 1.0}


def test_missing_popularity_reads_as_none(alphafuse_run: Path, tmp_path: Path) -> None:
    run_dir = _copy_run(alphafuse_run, tmp_path / "run")
    (run_dir / "popularity.npy").unlink()
    assert load_run(run_dir).popularity is None


@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        ("model.safetensors", "delete", "model.safetensors"),
        ("semantic_basis.npz", "delete", "semantic_basis.npz"),
        ("item_ids.json", "drop_one", "item_ids.json"),
        ("config.json", "dim_64", "semantic_basis.npz"),
        ("config.json", "blocks_2", "model.safetensors"),
        ("popularity.npy", "wrong_length", "popularity.npy"),
    ],
)
def test_broken_run_directories_raise_naming_the_file(
    alphafuse_run: Path, tmp_path: Path, name: str, damage: str, message: str
) -> None:
    run_dir = _copy_run(alphafuse_run, tmp_path / "run")
    path = run_dir / name
    if damage == "delete":
        path.unlink()
    elif damage == "drop_one":
        path.write_text(json.dumps(json.loads(path.read_text())[:-1]))
    elif damage == "wrong_length":
        np.save(path, np.zeros(3, dtype=np.int64))
    else:
        config = json.loads(path.read_text())
        if damage == "dim_64":
            config["embedding"]["dim"] = 64
        else:
            config["model"]["num_blocks"] = 2
        path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        load_run(run_dir)
