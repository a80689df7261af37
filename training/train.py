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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from safetensors.torch import load_file, save_file

from core.alphafuse import SemanticBasis, fit_semantic_basis, load_basis, save_basis
from training import cold_items as cold
from training import evaluate as ev
from training.config import ExperimentConfig
from training.data.dataset import Examples, SequenceDataset, Split, format_stats
from training.data.filters import kcore_filter, truncate_sequences
from training.data.readers import load_dataset
from training.data.splits import cold_start_users, leave_one_out
from training.embeddings import build_item_embedding
from training.groups import group_masks, metrics_by_group
from training.llmesr_setup import build_llmesr_model
from training.long_tail import SampledEvaluator, long_tail_metrics
from training.models.dreamrec import DreamRec, DreamRecEncoder, dreamrec_config
from training.models.sasrec import SASRec, SASRecConfig
from training.plots import plot_group_metrics, plot_validation_curve
from training.recommender import LossConfig, Recommender, SequentialRecommender, sample_negatives
from training.sampled import evaluate_sampled, sample_candidates
from training.text_embeddings import embed_item_texts

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
        split = cold.make_cold_item_split(
            ds, data.source, share=data.cold_share, pick=data.cold_pick,
            seed=data.split_seed, max_len=data.max_len,
        )  # fmt: skip
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
    if config.model.name == "llmesr":  # its own item views and encoder: training/llmesr_setup.py
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
    if t.threads:
        torch.set_num_threads(t.threads)
    _seed_everything(t.seed)
    prepared = prepared or prepare(config)
    basis = fit_basis(config, prepared) if config.embedding.mode == "alphafuse" else None
    device = _device(t.device)
    model = build_model(config, prepared, basis).to(device)
    _write_json(run_dir / "config.json", config.model_dump(mode="json"))
    _write_json(run_dir / "item_ids.json", prepared.dataset.item_ids)
    held_out = cold.held_out_ids(prepared.split, prepared.dataset.item_ids)
    if held_out is not None:  # the exporter leaves these out of the artifact
        _write_json(run_dir / cold.HELD_OUT_FILE, held_out)
    popularity = prepared.split.train_sequences.item_interaction_counts()  # (N,) int64
    _atomic(run_dir / "popularity.npy", lambda p: np.save(p, popularity), suffix=".npy")
    if basis is not None:
        _atomic(run_dir / "semantic_basis.npz", lambda p: save_basis(basis, p), suffix=".npz")
    loop = _TrainLoop(config, prepared.split, model, device, run_dir)
    if resume:
        loop.restore()
    loop.run()
    model.load_state_dict(load_file(run_dir / "model.safetensors", device=str(device)))
    metrics = _test_metrics(config, prepared, model, device)
    metrics.update(loop.summary())
    _write_json(run_dir / "metrics.json", metrics)
    _write_json(run_dir / "history.json", loop.history)
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
    return _test_metrics(config, prepared, model, device)


def measure_throughput(config: ExperimentConfig, prepared: Prepared, epochs: int = 1) -> float:
    """Training sequences per second over ``epochs`` full epochs (no evaluation), for benchmarks."""
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    _seed_everything(config.train.seed)
    basis = fit_basis(config, prepared) if config.embedding.mode == "alphafuse" else None
    device = _device(config.train.device)
    model = build_model(config, prepared, basis).to(device)
    loop = _TrainLoop(config, prepared.split, model, device, Path(os.devnull))
    for _ in range(epochs):
        loop._epoch()
    return loop.sequences / loop.train_seconds


class _TrainLoop:
    """Shuffled mini-batches, AdamW, validation every ``eval_every`` epochs, early stopping, checkpoints."""

    def __init__(
        self,
        config: ExperimentConfig,
        split: Split,
        model: Recommender,
        device: torch.device,
        run_dir: Path,
    ) -> None:
        self.config, self.split, self.model, self.device, self.run_dir = (
            config,
            split,
            model,
            device,
            run_dir,
        )
        t = config.train
        self.optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=t.lr, weight_decay=t.weight_decay
        )
        self.histories = torch.from_numpy(split.train.histories)
        self.targets = torch.from_numpy(split.train.targets)
        self.users = torch.from_numpy(split.train.users)  # (n,) for models that use them (LLM-ESR)
        self.generator = torch.Generator().manual_seed(t.seed)
        self.pool = cold.negative_pool(split)  # None: negatives from all N items
        self.history: list[dict[str, float]] = []
        self.epoch = 0
        self.best = -1.0
        self.best_epoch = 0
        self.train_seconds = 0.0
        self.sequences = 0
        self._sampled_valid: SampledEvaluator | None = None

    def run(self) -> None:
        t = self.config.train
        while (
            self.epoch < t.max_epochs and self.epoch - self.best_epoch < t.patience * t.eval_every
        ):
            self.epoch += 1
            loss = self._epoch()
            if self.epoch % t.eval_every and self.epoch < t.max_epochs:
                continue
            valid = self._validate()
            score = valid[t.select_metric]
            self.history.append(
                {"epoch": self.epoch, "loss": loss, **{f"valid_{k}": v for k, v in valid.items()}}
            )
            logger.info(
                "epoch %d loss %.4f valid %s %.4f", self.epoch, loss, t.select_metric, score
            )
            if score > self.best:
                self.best, self.best_epoch = score, self.epoch
                _atomic(
                    self.run_dir / "model.safetensors",
                    lambda p: save_file(_cpu_state(self.model), str(p)),
                )
            self._checkpoint()
        if not (self.run_dir / "model.safetensors").exists():
            raise RuntimeError(f"no validation ran in {self.run_dir}; check train.eval_every")

    def _validate(self) -> dict[str, float]:
        ev_cfg, split = self.config.eval, self.split
        if ev_cfg.protocol == "long_tail":  # LLM-ESR selects on the sampled protocol (long_tail.py)
            if self._sampled_valid is None:
                seed = self.config.data.split_seed + 1
                self._sampled_valid = SampledEvaluator(
                    split.valid, split.num_items, ev_cfg.sampled_negatives, seed
                )
            return self._sampled_valid(self.model, self.device, ev_cfg.batch_size).metrics
        return _full_metrics(
            self.model,
            split.valid,
            split.num_items,
            self.device,
            ev_cfg.mask_history,
            ev_cfg.batch_size,
        )

    def _epoch(self) -> float:
        t, model = self.config.train, self.model
        model.train()
        began = time.perf_counter()
        order = torch.randperm(len(self.targets), generator=self.generator)
        total, batches = 0.0, 0
        for start in range(0, len(order), t.batch_size):
            idx = order[start : start + t.batch_size]
            hist = self.histories[idx].to(self.device)  # (B, L)
            tgt = self.targets[idx].to(self.device)  # (B,)
            neg = self._negatives(self.targets[idx])
            neg = None if neg is None else neg.to(self.device)
            loss = model.loss(hist, tgt, neg, users=self.users[idx].to(self.device))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            self.optimizer.step()
            total, batches = total + loss.item(), batches + 1
        self.train_seconds += time.perf_counter() - began
        self.sequences += len(order)
        return total / max(batches, 1)

    def _negatives(self, targets: torch.Tensor) -> torch.Tensor | None:
        t, n = self.config.train, self.split.num_items
        if t.loss == "ce":
            return None
        if t.negatives == "shared" and self.pool is None:
            return torch.randint(0, n, (t.num_negatives,), generator=self.generator)
        if t.negatives == "shared":
            assert self.pool is not None
            draw = torch.randint(0, len(self.pool), (t.num_negatives,), generator=self.generator)
            return self.pool[draw]
        return sample_negatives(targets, n, t.num_negatives, self.generator, pool=self.pool)

    def summary(self) -> dict[str, Any]:
        return {
            "best_epoch": self.best_epoch,
            "epochs": self.epoch,
            "valid_best": self.best,
            "train_seconds": self.train_seconds,
            "sequences_per_second": self.sequences / max(self.train_seconds, 1e-9),
            "trainable_params": sum(p.numel() for p in self.model.parameters() if p.requires_grad),
        }

    def _checkpoint(self) -> None:
        state = {f"model.{k}": v for k, v in _cpu_state(self.model).items()}
        opt = self.optimizer.state_dict()
        for pid, slots in opt["state"].items():
            for name, value in slots.items():
                state[f"optim.{pid}.{name}"] = torch.as_tensor(value).detach().cpu().clone()
        state["rng"] = self.generator.get_state()
        _atomic(self.run_dir / "last.safetensors", lambda p: save_file(state, str(p)))
        _write_json(
            self.run_dir / "state.json",
            {
                "epoch": self.epoch,
                "best": self.best,
                "best_epoch": self.best_epoch,
                "train_seconds": self.train_seconds,
                "sequences": self.sequences,
                "history": self.history,
            },
        )

    def restore(self) -> None:
        """Continue from ``last.safetensors`` + ``state.json`` if present."""
        path = self.run_dir / "last.safetensors"
        if not path.exists():
            logger.info("nothing to resume in %s: starting fresh", self.run_dir)
            return
        tensors = load_file(path)
        model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        self.model.load_state_dict(model_state)
        opt = self.optimizer.state_dict()
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, pid, name = key.split(".", 2)
                opt["state"].setdefault(int(pid), {})[name] = value.to(self.device)
        self.optimizer.load_state_dict(opt)
        self.generator.set_state(tensors["rng"])
        state = json.loads((self.run_dir / "state.json").read_text())
        self.epoch, self.best, self.best_epoch = state["epoch"], state["best"], state["best_epoch"]
        self.train_seconds, self.sequences = state["train_seconds"], state["sequences"]
        self.history = state["history"]
        logger.info("resumed %s at epoch %d (best %.4f)", self.run_dir, self.epoch, self.best)


def _score_fn(
    model: Recommender, device: torch.device
) -> Callable[[NDArray[np.int64]], torch.Tensor]:
    table = model.items.table().detach()  # (N, d), once per evaluation

    def scores(histories: NDArray[np.int64]) -> torch.Tensor:
        user = model.user_vectors(torch.from_numpy(histories).to(device))  # (B, d)
        return (user @ table.T).float().cpu()  # (B, N)

    return scores


@torch.no_grad()
def _full_metrics(
    model: Recommender,
    examples: Examples,
    num_items: int,
    device: torch.device,
    mask_history: bool,
    batch_size: int,
) -> dict[str, float]:
    model.eval()
    result = ev.evaluate_full(
        _score_fn(model, device),
        examples,
        num_items,
        mask_history=mask_history,
        batch_size=batch_size,
    )
    return result.metrics


@torch.no_grad()
def _test_metrics(
    config: ExperimentConfig,
    prepared: Prepared,
    model: Recommender,
    device: torch.device,
) -> dict[str, Any]:
    """Test once: full ranking (history kept and masked), sampled 1+100, head/tail groups."""
    model.eval()
    split, cfg = prepared.split, config.eval
    paired = ev.evaluate_full(
        _score_fn(model, device),
        split.test,
        split.num_items,
        mask_history="both",
        batch_size=cfg.batch_size,
    )
    primary = paired.masked if cfg.mask_history else paired.unmasked
    table = model.items.table().detach()

    def candidate_scores(histories: NDArray[np.int64], cands: NDArray[np.int64]) -> torch.Tensor:
        user = model.user_vectors(torch.from_numpy(histories).to(device))  # (B, d)
        return torch.einsum("bd,bcd->bc", user, table[torch.from_numpy(cands).to(device)]).cpu()

    candidates = sample_candidates(
        split.test, split.num_items, cfg.sampled_negatives, seed=config.data.split_seed
    )
    sampled = evaluate_sampled(
        candidate_scores, split.test, candidates, cfg.batch_size, ks=(10, 20)
    )
    popularity = prepared.dataset.item_user_counts()
    masks = group_masks(
        split.test,
        popularity,
        None,
        cfg.tail_item_threshold,
        cfg.tail_user_threshold,
        head_share=cfg.head_share,
    )
    groups = metrics_by_group(primary.ranks, masks)
    groups_sampled = metrics_by_group(sampled.ranks, masks, ks=(10,))
    if cfg.protocol == "long_tail":  # the sampled ranks are primary; groups at its thresholds
        return long_tail_metrics(config, prepared.dataset, split.test, sampled.ranks, paired)
    extra = {}
    if isinstance(split, cold.ColdItemSplit):
        extra["cold_items"] = cold.cold_item_metrics(
            model, split, _score_fn(model, device), cfg.batch_size
        )
    return {
        **extra,
        "protocol": config.data.protocol,
        "mask_history": cfg.mask_history,
        "test": primary.metrics,
        "test_unmasked": paired.unmasked.metrics,
        "test_masked": paired.masked.metrics,
        "test_sampled": sampled.metrics,
        "groups": groups,
        "groups_sampled": groups_sampled,
        "dataset": prepared.dataset.stats(),
    }


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


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 -- third-party code may use the legacy global RNG
    torch.manual_seed(seed)


def _atomic(path: Path, write: Callable[[Path], None], suffix: str = ".tmp") -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}{suffix}")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_json(path: Path, payload: Any) -> None:
    text = json.dumps(payload, indent=2, sort_keys=True) + "\n"

    def write(p: Path) -> None:
        p.write_text(text)

    _atomic(path, write)
