"""LLM-ESR's retrieval side: the self-distillation's similar users (docs/algorithms.md, "LLM-ESR").

- :func:`user_prompts`: one text per user from the texts of the items in the user's TRAINING sequence
  (validation/test items never enter), keeping the most recent ``max_chars`` characters.
- :func:`mean_item_embeddings`: the cheap alternative user vector (``model.llmesr.user_text =
  "mean_items"``): the mean language embedding of those items, no encoder pass.
- :func:`similar_users`: top-k users by cosine similarity of their prompt embeddings, by exact FAISS
  inner-product search over L2-normalised vectors (memory O(U * d), never a U x U matrix); the user itself
  is excluded by index, not by dropping the first column (identical prompts would keep it otherwise).
- :func:`last_training_examples`: each user's last training prefix (history, target), the student/teacher
  input of the self-distillation.
- :func:`set_up_distillation`: those tables installed in a model built for training
  (``training.run.builder.build_model`` builds it).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from numpy.typing import NDArray

from core.arrays import IntArray
from training.config import LLMESRSettings
from training.data.dataset import Examples, SequenceDataset, Split
from training.items.text_embeddings import TextEmbeddingConfig, embed_item_texts
from training.models.llmesr.model import LLMESR

__all__ = [
    "last_training_examples",
    "mean_item_embeddings",
    "set_up_distillation",
    "similar_users",
    "user_prompts",
]

logger = logging.getLogger(__name__)


def user_prompts(sequences: SequenceDataset, max_chars: int = 1000) -> list[str]:
    """One prompt per user row of ``sequences`` from its items' texts, oldest first, tail-truncated."""
    texts = sequences.item_texts
    prompts = []
    for u in range(sequences.num_users):
        history = "; ".join(texts[i] for i in sequences.sequence(u))
        prompts.append(
            f"The user has visited following items: {history[-max_chars:]}. "
            "Please conclude the user's preference."
        )
    return prompts


def mean_item_embeddings(
    sequences: SequenceDataset, text_embeddings: NDArray[np.floating]
) -> NDArray[np.float32]:
    """(U, d_l) mean language embedding of each user's items (zeros for a user without items)."""
    lengths = sequences.lengths()  # (U,)
    sums = np.zeros((sequences.num_users, text_embeddings.shape[1]), dtype=np.float64)
    np.add.at(
        sums, np.repeat(np.arange(sequences.num_users), lengths), text_embeddings[sequences.items]
    )
    means: NDArray[np.float32] = (sums / np.maximum(lengths, 1)[:, None]).astype(np.float32)
    return means


def similar_users(user_embeddings: NDArray[np.floating], k: int) -> IntArray:
    """(U, D) -> (U, k) indices of each user's k most cosine-similar OTHER users, most similar first."""
    import faiss

    emb = np.ascontiguousarray(user_embeddings, dtype=np.float32)  # (U, D)
    U = len(emb)
    if emb.ndim != 2 or k >= U:
        raise ValueError(f"need (U, D) embeddings with U > k={k}, got shape {emb.shape}")
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(emb)
    _, found = index.search(emb, k + 1)  # (U, k+1)
    found = found.astype(np.int64)
    not_self = found != np.arange(U)[:, None]  # (U, k+1)
    # keep the first k non-self columns per row (self is absent when k+1 users tie with it)
    keep = not_self & (np.cumsum(not_self, axis=1) <= k)
    neighbours: IntArray = found[keep].reshape(U, k)
    return neighbours


def last_training_examples(train: Examples, num_users: int, pad: int) -> tuple[IntArray, IntArray]:
    """Each user's last training example: (U, L) histories (all ``pad`` if none) and (U,) targets (-1)."""
    histories = np.full((num_users, train.histories.shape[1]), pad, dtype=np.int64)
    targets = np.full(num_users, -1, dtype=np.int64)
    # examples are stored user by user, oldest target first: the last write per user wins
    histories[train.users] = train.histories
    targets[train.users] = train.targets
    return histories, targets


def set_up_distillation(
    model: LLMESR,
    split: Split,
    text_embeddings: NDArray[np.float32],
    settings: LLMESRSettings,
    text: TextEmbeddingConfig,
) -> None:
    """Install the self-distillation tables of a training ``split`` (a no-op at ``alpha`` 0).

    User vectors for the retrieval are the embedded user prompts (``settings.user_text = "prompt"``, cached like
    item texts, encoded as ``text`` says) or the mean item embeddings; each user's ``settings.similar_users`` most
    similar other users become its teachers.
    """
    if settings.alpha <= 0:
        return
    sequences = split.train_sequences
    if settings.user_text == "prompt":
        prompts = user_prompts(sequences, settings.prompt_chars)
        user_emb = embed_item_texts(prompts, text)  # (U, d_l), cached by content
    else:
        user_emb = mean_item_embeddings(sequences, text_embeddings)  # (U, d_l)
    neighbours = similar_users(user_emb, settings.similar_users)
    hist, tgt = last_training_examples(split.train, sequences.num_users, split.num_items)
    model.set_distillation(
        torch.from_numpy(hist), torch.from_numpy(tgt), torch.from_numpy(neighbours)
    )
    logger.info("llmesr: %d users, %d similar users each", len(neighbours), neighbours.shape[1])
