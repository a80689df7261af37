"""Model construction, in one place: the recommender an experiment config names.

`build_model` serves both ends of a run. Training builds from the run's data (`Prepared`): item rows from the
language embeddings and the AlphaFuse basis, fitted and trained only where the split's `TrainingRules` allow.
Loading a finished run (``training.run.checkpoint.load_run``, the exporter) builds from its shapes alone
(`TrainedShapes`): placeholder weights of the trained shapes, which the checkpoint then replaces. The encoder
configs (`sasrec_config`, `dreamrec_config`) and the loss (`loss_config`) are read from the experiment config here
and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from core.alphafuse import SemanticBasis, fit_semantic_basis
from training.config import ExperimentConfig
from training.data.dataset import SequenceDataset, Split
from training.items.embeddings import (
    AlphaFuseEmbedding,
    IDEmbedding,
    ItemEmbedding,
    build_item_embedding,
)
from training.models.dreamrec import DiffusionSettings, DreamRec, DreamRecConfig, DreamRecEncoder
from training.models.llmesr.model import LLMESR, LLMESRConfig, build_llmesr
from training.models.llmesr.setup import set_up_distillation
from training.models.recommender import LossConfig, Recommender, SequentialRecommender
from training.models.sasrec import SASRec, SASRecConfig
from training.models.semantic_query import SemanticQueryEncoder

__all__ = [
    "Prepared",
    "TrainedShapes",
    "build_model",
    "dreamrec_config",
    "fit_basis",
    "loss_config",
    "sasrec_config",
]


@dataclass(frozen=True, eq=False)
class Prepared:
    """Everything a run needs before the model exists (shared by runs that differ only in model/seed)."""

    dataset: SequenceDataset
    split: Split
    text_embeddings: NDArray[np.float32] | None

    @property
    def num_items(self) -> int:
        return self.split.num_items

    @property
    def max_len(self) -> int:
        return self.split.max_len


@dataclass(frozen=True, eq=False)
class TrainedShapes:
    """A finished run's shapes: enough to rebuild its modules with placeholder weights.

    Attributes:
        num_items: N, the rows of the trained item table.
        max_len: L, the history window (``data.max_len``).
        language_width: d_l of LLM-ESR's frozen language buffer; None for the other models.
        split: always None: no training data, so no training rules and no LLM-ESR distillation.
    """

    num_items: int
    max_len: int
    language_width: int | None = None
    split: None = None

    @property
    def text_embeddings(self) -> NDArray[np.float32] | None:
        """(N, d_l) zeros of the trained language width (LLM-ESR), replaced by the checkpoint's buffer."""
        if self.language_width is None:
            return None
        return np.zeros((self.num_items, self.language_width), dtype=np.float32)


def sasrec_config(config: ExperimentConfig, max_len: int) -> SASRecConfig:
    """The SASRec encoder of an experiment (``model`` section, width ``embedding.dim``)."""
    m = config.model
    return SASRecConfig(
        dim=config.embedding.dim,
        max_len=max_len,
        num_blocks=m.num_blocks,
        num_heads=m.num_heads,
        dropout=m.dropout,
    )


def loss_config(config: ExperimentConfig) -> LossConfig:
    """The training loss of an experiment (``train`` section)."""
    t = config.train
    return LossConfig(t.loss, t.num_negatives, t.temperature)


def dreamrec_config(config: ExperimentConfig, max_len: int) -> DreamRecConfig:
    """The model config of an experiment (``model`` section for the encoder, ``diffusion`` for the rest)."""
    dc = config.diffusion
    settings = DiffusionSettings(
        timesteps=dc.timesteps,
        schedule=dc.schedule,
        beta_start=dc.beta_start,
        beta_end=dc.beta_end,
        p_uncond=dc.p_uncond,
        w=dc.w,
        sampler=dc.sampler,
        steps=dc.steps,
        init_noise=dc.init_noise,
        noise_seed=dc.noise_seed,
    )
    return DreamRecConfig(encoder=sasrec_config(config, max_len), diffusion=settings)


def fit_basis(config: ExperimentConfig, prepared: Prepared) -> SemanticBasis:
    """The AlphaFuse basis over the catalogue's text (item weights from training data only).

    Only the rows the split's rules allow (``fit_rows``) are in the fit: under ``cold_items`` the held-out items'
    text never is.
    """
    emb = config.embedding
    assert prepared.text_embeddings is not None
    weights = None
    if emb.item_weighting == "popularity":
        weights = prepared.split.train_sequences.item_interaction_counts().astype(np.float64) + 1.0
    rows = prepared.split.rules.fit_rows  # None: every row
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
    config: ExperimentConfig, source: Prepared | TrainedShapes, basis: SemanticBasis | None
) -> Recommender:
    """The recommender ``config.model.name`` names, for training (``source`` a `Prepared`) or for loading a
    checkpoint (``source`` the run's `TrainedShapes`).

    Args:
        config: the experiment config.
        source: the run's data, or a finished run's shapes.
        basis: the AlphaFuse basis (``embedding.mode = "alphafuse"``), else None.
    """
    name, max_len = config.model.name, source.max_len
    if name == "llmesr":  # its own item views and encoder
        return _llmesr(config, source)
    items = _item_table(config, source, basis)
    if name == "dreamrec":
        return DreamRec(items, DreamRecEncoder(dreamrec_config(config, max_len)))
    sasrec = SASRec(sasrec_config(config, max_len))
    beta, null_dim = config.model.semantic_query_beta, config.embedding.null_dim or 0
    # trained with its semantic query, and served with it: the exported encoder is this one
    encoder = SemanticQueryEncoder(sasrec, items.dim - null_dim, beta) if beta else sasrec
    model = SequentialRecommender(items, encoder, loss_config(config))
    exclusion = None if source.split is None else source.split.rules.loss_exclusion
    model.exclude_from_loss(None if exclusion is None else torch.from_numpy(exclusion))
    return model


def _item_table(
    config: ExperimentConfig, source: Prepared | TrainedShapes, basis: SemanticBasis | None
) -> ItemEmbedding:
    """The item rows: from the language embeddings and the basis (training), or placeholders (loading)."""
    emb, split = config.embedding, source.split
    if (
        split is None
    ):  # AlphaFuse's frozen language table and id_keep mask are buffers in the checkpoint
        if basis is not None:
            language = torch.zeros(source.num_items, emb.dim)  # (N, d)
            return AlphaFuseEmbedding(language, basis.null_dim, language_map=emb.language_map)
        return IDEmbedding(source.num_items, emb.dim)
    seen = split.train_sequences.item_interaction_counts() > 0 if emb.zero_unseen_ids else None
    return build_item_embedding(
        emb.mode,
        split.num_items,
        emb.dim,
        basis=basis,
        text_embeddings=source.text_embeddings,
        id_init=emb.id_init,
        init_std=emb.init_std,
        seen=seen,
        fit_rows=split.rules.fit_rows,
        id_dropout=emb.id_dropout,
        language_map=emb.language_map,
    )


def _llmesr(config: ExperimentConfig, source: Prepared | TrainedShapes) -> LLMESR:
    """LLM-ESR over the (N, d_l) item language embeddings; with a training split (and alpha > 0) its
    self-distillation is set up, without one (loading a checkpoint) it is off."""
    text, split = source.text_embeddings, source.split
    if text is None:
        raise ValueError("model llmesr needs the items' language embeddings")
    if split is not None and len(text) != split.num_items:
        raise ValueError(f"llmesr: {len(text)} language embeddings for {split.num_items} items")
    m = config.model
    encoder = LLMESRConfig(
        view_dim=config.embedding.dim // 2,
        max_len=source.max_len,
        num_blocks=m.num_blocks,
        num_heads=m.num_heads,
        dropout=m.dropout,
        cross_heads=m.llmesr.cross_heads,
    )
    model = build_llmesr(
        text,
        encoder,
        loss_config(config),
        alpha=m.llmesr.alpha,
        adapter_hidden=m.llmesr.adapter_hidden,
    )
    if split is not None:
        set_up_distillation(model, split, text, m.llmesr, config.text)
    return model
