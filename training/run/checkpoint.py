"""Load a finished run directory back into a model, without the dataset or the text embeddings.

``load_run`` rebuilds the modules from ``config.json`` (d, d_n, max_len, blocks, heads) and ``item_ids.json`` (N)
with placeholder weights of the right shapes (``training.run.builder.build_model``, as training builds them), then
loads the best checkpoint ``model.safetensors``: AlphaFuse's frozen ``language`` table and ``id_keep`` mask are
buffers inside it, so nothing has to be re-embedded. The exporter is its main user; the trainer itself rebuilds
from data (``training.experiment.evaluate_run``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from safetensors.torch import load_file

from core.alphafuse import SemanticBasis, load_basis, map_language
from training.config import ExperimentConfig
from training.items.embeddings import AlphaFuseEmbedding
from training.models.recommender import Recommender
from training.run.builder import TrainedShapes, build_model
from training.run.rundir import RunDir

__all__ = ["LoadedRun", "load_run"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class LoadedRun:
    """A trained run, ready to score or export.

    Attributes:
        config: the run's resolved experiment config.
        item_ids: external id of every item row (row i = item_idx i).
        model: the best checkpoint, in eval mode.
        basis: the basis that embeds an item's text as the model's rows do (``alphafuse`` mode), else None: the
            fitted AlphaFuse basis, with the trained language map folded in when the model has one.
        popularity: (N,) training interaction counts, None for runs written before they were saved.
    """

    config: ExperimentConfig
    item_ids: list[str]
    model: Recommender
    basis: SemanticBasis | None
    popularity: NDArray[np.int64] | None


def load_run(run_dir: Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild a run's best model from its directory.

    Args:
        run_dir: a directory written by ``training.experiment.run_experiment``.
        device: where to put the model.

    Returns:
        The loaded run; ``model.scores(histories)`` equals the trained model's.

    Raises:
        ValueError: naming the file that is missing, unreadable or inconsistent with the others.

    Example:
        >>> run = load_run(Path("runs/ml-100k-alphafuse-s0"))  # doctest: +SKIP
        >>> run.model.scores(torch.tensor([[5, 7, 9]])).shape  # doctest: +SKIP
        torch.Size([1, 1682])
    """
    files = RunDir(run_dir)
    config = files.read_config()
    item_ids = _read_item_ids(files)
    basis = _read_basis(files.basis, config) if config.embedding.mode == "alphafuse" else None
    weights = files.weights
    if not weights.is_file():
        raise ValueError(f"{weights}: missing (the run never finished a validation)")
    state = load_file(weights)
    shapes = TrainedShapes(
        len(item_ids), config.data.max_len, _language_width(weights, config, state)
    )
    model = build_model(config, shapes, basis)
    _check_shapes(weights, model, state)
    model.load_state_dict(state)
    basis = _text_basis(basis, model)
    popularity = _read_popularity(files.popularity, len(item_ids))
    return LoadedRun(config, item_ids, model.to(device).eval(), basis, popularity)


def _text_basis(basis: SemanticBasis | None, model: Recommender) -> SemanticBasis | None:
    """``basis`` followed by the model's trained language map, if it has one (`core.alphafuse.map_language`)."""
    items = getattr(model, "items", None)
    matrix = items.language_map_matrix() if isinstance(items, AlphaFuseEmbedding) else None
    if basis is None or matrix is None:
        return basis
    return map_language(basis, matrix.detach().double().cpu().numpy())


def _language_width(
    path: Path, config: ExperimentConfig, state: dict[str, torch.Tensor]
) -> int | None:
    """LLM-ESR's d_l, from the checkpoint's frozen language buffer; None for the other models."""
    if config.model.name != "llmesr":
        return None
    language = state.get("items.language")
    if language is None or language.ndim != 2:
        raise ValueError(f"{path}: no 2-D items.language buffer for model llmesr")
    return int(language.shape[1])


def _check_shapes(path: Path, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{path}: does not match config.json's model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    wrong = [
        f"{name} {tuple(state[name].shape)} != {tuple(tensor.shape)}"
        for name, tensor in expected.items()
        if state[name].shape != tensor.shape
    ]
    if wrong:
        raise ValueError(
            f"{path}: tensor shapes do not match config.json and item_ids.json "
            f"(checkpoint != expected): {wrong[:5]}"
        )


def _read_item_ids(files: RunDir) -> list[str]:
    path = files.item_ids
    raw = files.read_json(path)
    if not isinstance(raw, list) or not raw or not all(isinstance(i, str) for i in raw):
        raise ValueError(f"{path}: expected a non-empty JSON list of item id strings")
    if len(set(raw)) != len(raw):
        raise ValueError(f"{path}: {len(raw) - len(set(raw))} duplicate item ids")
    return raw


def _read_basis(path: Path, config: ExperimentConfig) -> SemanticBasis:
    if not path.is_file():
        raise ValueError(f"{path}: missing (needed by embedding.mode='alphafuse')")
    try:
        basis = load_basis(path)
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable semantic basis: {exc}") from exc
    emb = config.embedding
    if basis.dim != emb.dim or (emb.null_dim is not None and basis.null_dim != emb.null_dim):
        raise ValueError(
            f"{path}: basis has dim={basis.dim}, null_dim={basis.null_dim}; config.json says "
            f"dim={emb.dim}, null_dim={emb.null_dim}"
        )
    return basis


def _read_popularity(path: Path, num_items: int) -> NDArray[np.int64] | None:
    if not path.is_file():
        logger.warning("%s: missing (a run from before popularity was saved)", path)
        return None
    try:
        counts: NDArray[Any] = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable: {exc}") from exc
    if counts.shape != (num_items,) or counts.dtype.kind not in "iu" or (counts < 0).any():
        raise ValueError(
            f"{path}: expected ({num_items},) non-negative integers, got {counts.shape} {counts.dtype}"
        )
    return counts.astype(np.int64)
