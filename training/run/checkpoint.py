"""Load a finished run directory back into a model, without the dataset or the text embeddings.

``load_run`` rebuilds the modules from ``config.json`` (d, d_n, max_len, blocks, heads) and ``item_ids.json`` (N)
with placeholder weights of the right shapes, then loads the best checkpoint ``model.safetensors``: AlphaFuse's
frozen ``language`` table and ``id_keep`` mask are buffers inside it, so nothing has to be re-embedded. The
exporter is its main user; the trainer itself rebuilds from data (``training.experiment.evaluate_run``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import ValidationError
from safetensors.torch import load_file

from core.alphafuse import SemanticBasis, load_basis
from training.config import ExperimentConfig
from training.items.embeddings import AlphaFuseEmbedding, IDEmbedding, ItemEmbedding
from training.models.dreamrec import DreamRec, DreamRecEncoder, dreamrec_config
from training.models.llmesr.setup import build_llmesr_model
from training.models.recommender import LossConfig, Recommender, SequentialRecommender
from training.models.sasrec import SASRec, SASRecConfig

__all__ = ["LoadedRun", "load_run"]

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
ITEM_IDS_FILE = "item_ids.json"
WEIGHTS_FILE = "model.safetensors"
BASIS_FILE = "semantic_basis.npz"
POPULARITY_FILE = "popularity.npy"


@dataclass(frozen=True, eq=False)
class LoadedRun:
    """A trained run, ready to score or export.

    Attributes:
        config: the run's resolved experiment config.
        item_ids: external id of every item row (row i = item_idx i).
        model: the best checkpoint, in eval mode.
        basis: the AlphaFuse basis (``alphafuse`` mode), else None.
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
    config = _read_config(run_dir / CONFIG_FILE)
    item_ids = _read_item_ids(run_dir / ITEM_IDS_FILE)
    basis = (
        _read_basis(run_dir / BASIS_FILE, config) if config.embedding.mode == "alphafuse" else None
    )
    weights = run_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise ValueError(f"{weights}: missing (the run never finished a validation)")
    state = load_file(weights)
    model: Recommender
    if config.model.name == "llmesr":
        model = _empty_llmesr(weights, config, len(item_ids), state)
    else:
        model = _empty_model(config, len(item_ids), basis)
    _check_shapes(weights, model, state)
    model.load_state_dict(state)
    popularity = _read_popularity(run_dir / POPULARITY_FILE, len(item_ids))
    return LoadedRun(config, item_ids, model.to(device).eval(), basis, popularity)


def _empty_model(
    config: ExperimentConfig, num_items: int, basis: SemanticBasis | None
) -> Recommender:
    """The run's modules with placeholder weights of the trained shapes."""
    emb, m, t = config.embedding, config.model, config.train
    items: ItemEmbedding
    if basis is not None:
        language = torch.zeros(num_items, emb.dim)  # (N, d), replaced by the checkpoint's buffer
        items = AlphaFuseEmbedding(language, basis.null_dim)
    else:
        items = IDEmbedding(num_items, emb.dim)
    if m.name == "dreamrec":
        return DreamRec(items, DreamRecEncoder(dreamrec_config(config, config.data.max_len)))
    encoder = SASRec(
        SASRecConfig(
            dim=emb.dim,
            max_len=config.data.max_len,
            num_blocks=m.num_blocks,
            num_heads=m.num_heads,
            dropout=m.dropout,
        )
    )
    return SequentialRecommender(items, encoder, LossConfig(t.loss, t.num_negatives, t.temperature))


def _empty_llmesr(
    path: Path, config: ExperimentConfig, num_items: int, state: dict[str, torch.Tensor]
) -> SequentialRecommender:
    """LLM-ESR with placeholder weights; the language width comes from the checkpoint's buffer."""
    language = state.get("items.language")
    if language is None or language.ndim != 2:
        raise ValueError(f"{path}: no 2-D items.language buffer for model llmesr")
    placeholder = np.zeros((num_items, language.shape[1]), dtype=np.float32)  # (N, d_l)
    return build_llmesr_model(config, placeholder, config.data.max_len)


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


def _read_config(path: Path) -> ExperimentConfig:
    raw = _read_json(path)
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"{path}: not a valid experiment config: {exc}") from exc


def _read_item_ids(path: Path) -> list[str]:
    raw = _read_json(path)
    if not isinstance(raw, list) or not raw or not all(isinstance(i, str) for i in raw):
        raise ValueError(f"{path}: expected a non-empty JSON list of item id strings")
    if len(set(raw)) != len(raw):
        raise ValueError(f"{path}: {len(raw) - len(set(raw))} duplicate item ids")
    return raw


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ValueError(f"{path}: missing")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable JSON: {exc}") from exc


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
