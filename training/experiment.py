"""One training run, end to end: data -> split -> language embeddings -> basis -> model -> fit -> test.

Model selection uses the validation cases only (early stopping on ``train.select_metric``); the test cases are
scored once, at the end, with the best checkpoint. A run directory holds::

    config.json              resolved experiment config
    semantic_basis.npz       AlphaFuse basis (alphafuse mode), for the exporter
    item_ids.json            external id of every item row
    popularity.npy           (N,) int64 training interaction counts, for the exporter
    model.safetensors        best model weights (by validation)
    last.safetensors, state.json   latest weights + optimiser + loop state, to resume an interrupted run
    history.json             one entry per evaluation: epoch, loss, validation metrics
    metrics.json             test metrics (full ranking with and without history masking, sampled, groups)
    plots/*.png              validation curve, metrics by head/tail group

Every file is written to a temporary name and renamed, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from safetensors.torch import load_file

from core.alphafuse import SemanticBasis, fit_semantic_basis, load_basis, save_basis
from core.files import atomic_write, write_json
from training.config import ExperimentConfig
from training.data.dataset import SequenceDataset, Split, format_stats
from training.data.filters import kcore_filter, truncate_sequences
from training.data.readers import load_dataset
from training.data.splits import cold_start_users, leave_one_out
from training.evaluation.plots import plot_group_metrics, plot_validation_curve
from training.evaluation.run_metrics import test_metrics
from training.items.embeddings import build_item_embedding
from training.items.text_embeddings import embed_item_texts
from training.models.dreamrec import DreamRec, DreamRecEncoder, dreamrec_config
from training.models.llmesr.setup import build_llmesr_model
from training.models.recommender import LossConfig, Recommender, SequentialRecommender
from training.models.sasrec import SASRec, SASRecConfig
from training.protocols import cold_items as cold
from training.run.loop import TrainLoop

__all__ = [
    "Prepared",
    "RunResult",
    "build_model",
    "evaluate_run",
    "measure_throughput",
    "prepare",
    "run_experiment",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Prepared:
    """Everything a run needs before the model exists (shared by runs that differ only in model/seed)."""

    dataset: SequenceDataset
    split: Split
    text_embeddings: NDArray[np.float32] | None


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)


def prepare(config: ExperimentConfig, *, with_text: bool | None = None) -> Prepared:
    """Load, filter and split the data and compute the language embeddings (cached on disk)."""
    data = config.data
    ds = load_dataset(data.source)
    if data.min_user_interactions or data.min_item_interactions:
        ds = kcore_filter(ds, data.min_user_interactions, data.min_item_interactions)
    if data.max_sequence_length:
        ds = truncate_sequences(ds, data.max_sequence_length)
    logger.info("dataset %s:\n%s", ds.name, format_stats(ds.stats()))
    if data.protocol == "leave_one_out":
        split = leave_one_out(ds, data.max_len, train_seen=False)
    elif data.protocol == "cold_items":
        ds, split = cold.make_cold_item_split(
            ds,
            data.source,
            share=data.cold_share,
            pick=data.cold_pick,
            seed=data.split_seed,
            max_len=data.max_len,
            tuning=data.cold_tuning,
        )
    else:
        split = cold_start_users(ds, seed=data.split_seed, window=data.max_len, train_seen=False)
    need_text = config.embedding.mode != "id" if with_text is None else with_text
    text = embed_item_texts(ds.item_texts, config.text) if need_text else None
    return Prepared(dataset=ds, split=split, text_embeddings=text)


def fit_basis(config: ExperimentConfig, prepared: Prepared) -> SemanticBasis:
    """The AlphaFuse basis over the catalogue's text (item weights from training data only).

    Under ``cold_items`` only the warm items' text is used: held-out items are never in the fit.
    """
    emb = config.embedding
    assert prepared.text_embeddings is not None
    weights = None
    if emb.item_weighting == "popularity":
        weights = prepared.split.train_sequences.item_interaction_counts().astype(np.float64) + 1.0
    rows = cold.warm_rows(prepared.split)  # None: every row
    return fit_semantic_basis(
        prepared.text_embeddings if rows is None else prepared.text_embeddings[rows],
        dim=emb.dim,
        null_dim=emb.null_dim if emb.null_threshold is None else None,
        null_threshold=emb.null_threshold,
        weights=weights if weights is None or rows is None else weights[rows],
        scale=emb.scale,
        standardize=emb.standardize,
        cover=emb.cover,
    )


def build_model(
    config: ExperimentConfig, prepared: Prepared, basis: SemanticBasis | None
) -> Recommender:
    if (
        config.model.name == "llmesr"
    ):  # its own item views and encoder: training/models/llmesr/setup.py
        split = prepared.split
        return build_llmesr_model(config, prepared.text_embeddings, split.max_len, split)
    emb, split = config.embedding, prepared.split
    seen = split.train_sequences.item_interaction_counts() > 0 if emb.zero_unseen_ids else None
    items = build_item_embedding(
        emb.mode,
        split.num_items,
        emb.dim,
        basis=basis,
        text_embeddings=prepared.text_embeddings,
        id_init=emb.id_init,
        init_std=emb.init_std,
        seen=seen,
        fit_rows=cold.warm_rows(split),
        id_dropout=emb.id_dropout,
    )
    m = config.model
    if m.name == "dreamrec":
        return DreamRec(items, DreamRecEncoder(dreamrec_config(config, split.max_len)))
    encoder = SASRec(
        SASRecConfig(
            dim=emb.dim,
            max_len=split.max_len,
            num_blocks=m.num_blocks,
            num_heads=m.num_heads,
            dropout=m.dropout,
        )
    )
    t = config.train
    model = SequentialRecommender(
        items, encoder, LossConfig(t.loss, t.num_negatives, t.temperature)
    )
    model.exclude_from_loss(cold.loss_exclusion(split))
    return model


def run_experiment(
    config: ExperimentConfig,
    run_dir: Path,
    *,
    prepared: Prepared | None = None,
    resume: bool = False,
) -> RunResult:
    """Train, select on validation, test once; write the run directory. Returns the test metrics."""
    run_dir.mkdir(parents=True, exist_ok=True)
    t = config.train
    configure_torch(t.threads)
    _seed_everything(t.seed)
    prepared = prepared or prepare(config)
    basis = fit_basis(config, prepared) if config.embedding.mode == "alphafuse" else None
    device = _device(t.device)
    model = build_model(config, prepared, basis).to(device)
    write_json(run_dir / "config.json", config.model_dump(mode="json"))
    write_json(run_dir / "item_ids.json", prepared.dataset.item_ids)
    held_out = cold.held_out_ids(prepared.split, prepared.dataset.item_ids)
    if held_out is not None:  # the exporter leaves these out of the artifact
        write_json(run_dir / cold.HELD_OUT_FILE, held_out)
    popularity = prepared.split.train_sequences.item_interaction_counts()  # (N,) int64
    atomic_write(run_dir / "popularity.npy", lambda p: np.save(p, popularity), suffix=".npy")
    if basis is not None:
        atomic_write(run_dir / "semantic_basis.npz", lambda p: save_basis(basis, p), suffix=".npz")
    loop = TrainLoop(config, prepared.split, model, device, run_dir)
    if resume:
        loop.restore()
    loop.run()
    model.load_state_dict(load_file(run_dir / "model.safetensors", device=str(device)))
    metrics = test_metrics(config, prepared, model, device)
    metrics.update(loop.summary())
    write_json(run_dir / "metrics.json", metrics)
    write_json(run_dir / "history.json", loop.history)
    _plots(config, run_dir, loop.history, metrics)
    return RunResult(run_dir=run_dir, metrics=metrics, history=loop.history)


def evaluate_run(run_dir: Path) -> dict[str, Any]:
    """Re-evaluate a finished run's best model on its test cases (same data, split and seed)."""
    config = ExperimentConfig.model_validate(json.loads((run_dir / "config.json").read_text()))
    prepared = prepare(config)
    basis = (
        load_basis(run_dir / "semantic_basis.npz") if config.embedding.mode == "alphafuse" else None
    )
    device = _device(config.train.device)
    model = build_model(config, prepared, basis).to(device)
    model.load_state_dict(load_file(run_dir / "model.safetensors", device=str(device)))
    return test_metrics(config, prepared, model, device)


def measure_throughput(config: ExperimentConfig, prepared: Prepared, epochs: int = 1) -> float:
    """Training sequences per second over ``epochs`` full epochs (no evaluation), for benchmarks."""
    configure_torch(config.train.threads)
    _seed_everything(config.train.seed)
    basis = fit_basis(config, prepared) if config.embedding.mode == "alphafuse" else None
    device = _device(config.train.device)
    model = build_model(config, prepared, basis).to(device)
    loop = TrainLoop(config, prepared.split, model, device, Path(os.devnull))
    for _ in range(epochs):
        loop.train_epoch()
    return loop.sequences / loop.train_seconds


def _plots(
    config: ExperimentConfig,
    run_dir: Path,
    history: list[dict[str, float]],
    metrics: dict[str, Any],
) -> None:
    plots = run_dir / "plots"
    plots.mkdir(exist_ok=True)
    metric = config.train.select_metric
    plot_validation_curve(history, f"valid_{metric}", plots / "validation_curve.png")
    plot_group_metrics(metrics["groups"], metric, plots / "groups.png")


def configure_torch(threads: int | None) -> None:
    """Process-wide CPU settings for training: the thread count, and subnormal floats flushed to zero.

    Flushing matters for speed, not accuracy: a sharp softmax (infoNCE at tau = 0.07 over wide standardized rows)
    sends probabilities and the gradients built from them below float32's smallest normal (1.2e-38), and x86
    arithmetic on such subnormals is many times slower. Seen: ml-100k at d = 384 (null_dim 32, id_dropout 0.5)
    had thousands of subnormal entries in the ID table's gradient by step 450 and had not finished 3 epochs after
    7 minutes, against 2 minutes flushed; at d = 128 the two took the same time and gave identical results.
    """
    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # returns False (and does nothing) where the CPU lacks FTZ/DAZ


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 -- third-party code may use the legacy global RNG
    torch.manual_seed(seed)
