"""Histories as the user encoder takes them: the last ``length`` item rows of each, padded on the left.

The ONNX user encoder reads ``item_emb`` (B, L, d) and ``mask`` (B, L): the most recent item at column L-1,
``mask`` True where a real item sits and the embeddings zero at the padding. ``left_pad`` builds the row matrix
and the mask from histories of any lengths; ``embed_histories`` also gathers the rows of an item table.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["embed_histories", "left_pad"]


def left_pad(
    histories: Sequence[ArrayLike], length: int, pad: int = 0
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """(B, length) item rows, each history's last ``length`` right-aligned and ``pad`` before; (B, length) mask.

    Args:
        histories: B one-dimensional sequences of item rows, oldest first (any lengths, empty ones too).
        length: the width L; a longer history keeps its last L items.
        pad: the row written at the padding (0 gathers a real row that the mask then zeroes; a model's own
            pad index where its embedding module has one).

    Raises:
        ValueError: ``length`` is negative or a history is not one-dimensional.
    """
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    rows = np.full((len(histories), length), pad, dtype=np.int64)  # (B, L)
    mask = np.zeros((len(histories), length), dtype=bool)  # (B, L)
    for b, history in enumerate(histories):
        h = np.asarray(history, dtype=np.int64)
        if h.ndim != 1:
            raise ValueError(f"history {b} must be one-dimensional, got shape {h.shape}")
        kept = h[len(h) - min(len(h), length) :]  # the last L items
        if len(kept):
            rows[b, length - len(kept) :] = kept
            mask[b, length - len(kept) :] = True
    return rows, mask


def embed_histories(
    table: NDArray[np.float32], histories: Sequence[ArrayLike], length: int
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """(B, length, d) rows of ``table`` for each history's last ``length`` items, zero at the padding; (B, L) mask.

    What the service feeds its ONNX user encoder: ``left_pad`` with pad row 0, gathered, times the mask.
    """
    rows, mask = left_pad(histories, length, pad=0)
    item_emb = table[rows] * mask[..., None]  # (B, L, d)
    return item_emb.astype(np.float32, copy=False), mask
