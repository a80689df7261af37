"""One training run, end to end: data -> split -> language embeddings -> basis -> model -> fit -> test.

Model selection uses the validation cases only (early stopping on ``train.select_metric``); the test cases are
scored once, at the end, with the best checkpoint. What a run writes is listed in ``training.run.rundir``.

This module wires the product path (``training.run``, ``training.models``, ``training.items``, ``training.data``)
to the protocols: the split a config names and the figures its protocol adds come from ``training.protocols``;
the trainer itself only reads the split's `TrainingRules`.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from core.alphafuse import SemanticBasis, load_basis, save_basis
from core.files import atomic_write, write_json
from training.config import ExperimentConfig
from training.data.dataset import format_stats
from training.data.filters import kcore_filter, truncate_sequences
from training.data.readers import load_dataset
from training.evaluation.plots import plot_group_metrics, plot_validation_curve
from training.evaluation.run_metrics import standard_test_metrics, test_rankings
from training.items.text_embeddings import embed_item_texts
from training.models.recommender import Recommender
from training.protocols import make_split, protocol_metrics
from training.protocols.long_tail import long_tail_test_metrics
from training.run.builder import Prepared, build_model, fit_basis
from training.run.distributed import Workers
from training.run.loop import TrainLoop
from training.run.rundir import RunDir

__all__ = [
    "Prepared",
    "RunResult",
    "evaluate_run",
    "measure_throughput",
    "prepare",
    "run_experiment",
    "test_metrics",
]

logger = logging.getLogger(__name__)


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
    ds, split = make_split(data, ds)
    need_text = config.embedding.mode != "id" if with_text is None else with_text
    text = embed_item_texts(ds.item_texts, config.text) if need_text else None
    return Prepared(dataset=ds, split=split, text_embeddings=text)


def run_experiment(
    config: ExperimentConfig,
    run_dir: Path,
    *,
    prepared: Prepared | None = None,
    resume: bool = False,
) -> RunResult:
    """Train, select on validation, test once; write the run directory. Returns the test metrics.

    Under ``torchrun`` every worker calls this; rank 0 writes the run directory, tests and returns the metrics,
    the other ranks return empty metrics once training ends (``training.run.distributed``).
    """
    t = config.train
    workers = Workers.from_env(t.device)
    try:
        return _run(config, run_dir, prepared, resume, workers)
    finally:
        if workers is not None:
            workers.close()


def _run(
    config: ExperimentConfig,
    run_dir: Path,
    prepared: Prepared | None,
    resume: bool,
    workers: Workers | None,
) -> RunResult:
    main = workers is None or workers.is_main
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    t = config.train
    configure_torch(t.threads)
    _seed_everything(t.seed)
    prepared = prepared or prepare(config)
    basis = fit_basis(config, prepared) if config.embedding.mode == "alphafuse" else None
    device = _device(t.device, workers)
    model = build_model(config, prepared, basis).to(device)
    if main:
        _write_inputs(RunDir(run_dir), config, prepared, basis)
    _seed_worker(t.seed, workers)
    loop = TrainLoop(config, prepared.split, model, device, run_dir, workers)
    if resume:
        loop.restore()
    loop.run()
    if not main:
        return RunResult(run_dir=run_dir, metrics={}, history=loop.history)
    files = RunDir(run_dir)
    model.load_state_dict(load_file(files.weights, device=str(device)))
    metrics = test_metrics(config, prepared, model, device)
    metrics.update(loop.summary())
    if workers is not None:
        metrics["workers"] = workers.world
    write_json(files.metrics, metrics)
    write_json(files.history, loop.history)
    _plots(config, files, loop.history, metrics)
    return RunResult(run_dir=run_dir, metrics=metrics, history=loop.history)


def _write_inputs(
    files: RunDir, config: ExperimentConfig, prepared: Prepared, basis: SemanticBasis | None
) -> None:
    """What the exporter needs besides the weights: config, item ids, held-out ids, popularity, basis."""
    write_json(files.config, config.model_dump(mode="json"))
    write_json(files.item_ids, prepared.dataset.item_ids)
    held_out = prepared.split.rules.held_out_ids(prepared.dataset.item_ids)
    if held_out is not None:  # the exporter leaves these out of the artifact
        write_json(files.held_out, held_out)
    popularity = prepared.split.train_sequences.item_interaction_counts()  # (N,) int64
    atomic_write(files.popularity, lambda p: np.save(p, popularity), suffix=".npy")
    if basis is not None:
        atomic_write(files.basis, lambda p: save_basis(basis, p), suffix=".npz")


@torch.no_grad()
def test_metrics(
    config: ExperimentConfig,
    prepared: Prepared,
    model: Recommender,
    device: torch.device,
) -> dict[str, Any]:
    """Test once: full ranking (history kept and masked), sampled 1+100, head/tail groups, and AlphaFuse's
    semantic query (beta chosen on validation) or the figures of the split's protocol (``cold_items``)."""
    dataset, split = prepared.dataset, prepared.split
    rankings = test_rankings(config, split, model, device)
    if (
        config.eval.protocol == "long_tail"
    ):  # the sampled ranks are primary; groups at its thresholds
        return long_tail_test_metrics(config, dataset, split, model, device, rankings)
    protocol = protocol_metrics(config, split, model)
    return standard_test_metrics(config, dataset, split, model, rankings, protocol)


def evaluate_run(run_dir: Path) -> dict[str, Any]:
    """Re-evaluate a finished run's best model on its test cases (same data, split and seed)."""
    files = RunDir(run_dir)
    config = files.read_config()
    prepared = prepare(config)
    basis = load_basis(files.basis) if config.embedding.mode == "alphafuse" else None
    device = _device(config.train.device)
    model = build_model(config, prepared, basis).to(device)
    model.load_state_dict(load_file(files.weights, device=str(device)))
    return test_metrics(config, prepared, model, device)


def measure_throughput(config: ExperimentConfig, prepared: Prepared, epochs: int = 1) -> float:
    """Training sequences per second over ``epochs`` full epochs (no evaluation), for benchmarks.

    Under ``torchrun`` every worker calls this and each returns the global rate (all workers' sequences).
    """
    configure_torch(config.train.threads)
    _seed_everything(config.train.seed)
    workers = Workers.from_env(config.train.device)
    try:
        basis = fit_basis(config, prepared) if config.embedding.mode == "alphafuse" else None
        device = _device(config.train.device, workers)
        model = build_model(config, prepared, basis).to(device)
        _seed_worker(config.train.seed, workers)
        loop = TrainLoop(config, prepared.split, model, device, Path(os.devnull), workers)
        for _ in range(epochs):
            loop.train_epoch()
        return loop.sequences / loop.train_seconds
    finally:
        if workers is not None:
            workers.close()


def _plots(
    config: ExperimentConfig,
    files: RunDir,
    history: list[dict[str, float]],
    metrics: dict[str, Any],
) -> None:
    plots = files.plots
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


def _device(name: str, workers: Workers | None = None) -> torch.device:
    device = (
        torch.device("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else None
    )
    device = device or torch.device(name)
    return device if workers is None else workers.device(device)


def _seed_worker(seed: int, workers: Workers | None) -> None:
    """Ranks after 0 draw dropout masks (and DreamRec's noise) from their own global stream, as one process
    draws different masks for different rows. Called once the model is built: DDP starts every rank from rank 0's
    weights anyway."""
    if workers is not None and not workers.is_main:
        torch.manual_seed(seed + 1_000_003 * workers.rank)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 -- third-party code may use the legacy global RNG
    torch.manual_seed(seed)
