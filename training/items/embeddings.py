"""Item-embedding modes behind one interface: ``id``, ``llminit`` and ``alphafuse``.

Every mode is an ``nn.Module`` with ``forward(item_idx) -> (..., d)`` (a gather, padding index N gives zeros)
and ``table() -> (N, d)`` (the full item table used for scoring). Input and output embeddings are the same table.

- ``id``: a plain trainable table.
- ``llminit``: a trainable table initialised with the whitened top-d principal components of the language
  embeddings (``core.alphafuse`` with no null space).
- ``alphafuse``: the frozen standardized language part from ``core.alphafuse.project`` plus a trainable ID
  table of width d_n added onto the last d_n coordinates. With ``seen`` given, the ID rows of items never seen in
  training are held at exactly zero (their value and gradient are masked), so such items are scored from text alone,
  as cold-start items are at serving time. With ``id_dropout`` p > 0, training zeroes each item occurrence's ID
  part with probability p (history rows, targets, negatives and the full table alike; no rescaling), so the
  encoder also learns to rank items that carry their language part only, the form a new item is served in.
  With ``language_map`` ``scale`` or ``linear``, one trainable map shared by all items (a per-coordinate scale, or
  a d x d matrix; both start as the identity) re-weights the language part before the ID part is added. It has no
  per-item parameters, so a new item still gets its row from its text alone: the exporter folds the map into the
  basis the service projects new items with (``core.alphafuse.map_language``).
"""

from __future__ import annotations

from typing import Literal, TypeGuard

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from core.alphafuse import SemanticBasis, fit_semantic_basis, project

__all__ = [
    "AlphaFuseEmbedding",
    "IDEmbedding",
    "ItemEmbedding",
    "LanguageMap",
    "alphafuse_with_null_space",
    "build_item_embedding",
    "has_null_space",
    "has_semantic_query",
    "trim_padding",
]

IdInit = Literal["zeros", "normal"]
LanguageMap = Literal["none", "scale", "linear"]


class ItemEmbedding(nn.Module):
    """Common interface: gather rows (pad index = num_items gives zeros) and expose the full table."""

    num_items: int
    dim: int

    def table(self) -> torch.Tensor:  # (N, d)
        raise NotImplementedError

    def forward(self, item_idx: torch.Tensor) -> torch.Tensor:  # (...) -> (..., d)
        raise NotImplementedError


class IDEmbedding(ItemEmbedding):
    """A trainable table (``id`` mode, or ``llminit`` when given initial weights)."""

    def __init__(
        self, num_items: int, dim: int, *, init: torch.Tensor | None = None, std: float = 1.0
    ):
        super().__init__()
        self.num_items, self.dim = num_items, dim
        self.weight = nn.Embedding(num_items + 1, dim, padding_idx=num_items)
        with torch.no_grad():
            if init is None:
                nn.init.normal_(self.weight.weight, std=std)
            else:
                if init.shape != (num_items, dim):
                    raise ValueError(
                        f"init must have shape {(num_items, dim)}, got {tuple(init.shape)}"
                    )
                self.weight.weight[:num_items] = init
            self.weight.weight[num_items] = 0.0

    def table(self) -> torch.Tensor:
        return self.weight.weight[: self.num_items]  # (N, d)

    def forward(self, item_idx: torch.Tensor) -> torch.Tensor:
        return self.weight(item_idx)  # type: ignore[no-any-return]


class AlphaFuseEmbedding(ItemEmbedding):
    """Frozen language coordinates + trainable ID coordinates in the null space."""

    language: torch.Tensor  # (N+1, d) buffer, pad row N is zero
    id_keep: torch.Tensor  # (N+1,) buffer, 1 = trainable ID row, 0 = held at zero

    def __init__(
        self,
        language: torch.Tensor,
        null_dim: int,
        *,
        id_init: IdInit = "zeros",
        init_std: float = 1.0,
        seen: torch.Tensor | None = None,
        id_dropout: float = 0.0,
        language_map: LanguageMap = "none",
    ) -> None:
        super().__init__()
        N, d = language.shape
        if not 0 <= null_dim <= d:
            raise ValueError(f"null_dim must be in [0, {d}], got {null_dim}")
        if not 0.0 <= id_dropout < 1.0:
            raise ValueError(f"id_dropout must be in [0, 1), got {id_dropout}")
        self.num_items, self.dim, self.null_dim = N, d, null_dim
        self.id_dropout = id_dropout
        pad = torch.zeros(1, d, dtype=language.dtype)
        self.register_buffer("language", torch.cat([language, pad]))  # (N+1, d), frozen
        self.ids = nn.Embedding(N + 1, null_dim, padding_idx=N)
        with torch.no_grad():
            if id_init == "zeros":
                self.ids.weight.zero_()
            else:
                nn.init.normal_(self.ids.weight, std=init_std)
            self.ids.weight[N] = 0.0
        keep = torch.ones(N + 1) if seen is None else torch.cat([seen.float(), torch.zeros(1)])
        if keep.shape != (N + 1,):
            raise ValueError(f"seen must have shape ({N},), got {tuple(seen.shape)}")  # type: ignore[union-attr]
        self.register_buffer("id_keep", keep)  # (N+1,) 1 = trainable ID row, 0 = held at zero
        # the map is identity + map_delta, so it starts as the identity and any weight decay pulls it back there
        shape = {"none": None, "scale": (d,), "linear": (d, d)}[language_map]
        self.map_delta = None if shape is None else nn.Parameter(torch.zeros(shape))

    def _mapped(self, lang: torch.Tensor) -> torch.Tensor:
        """(..., d) language coordinates through the shared language map (unchanged without one)."""
        if self.map_delta is None:
            return lang
        if self.map_delta.dim() == 1:
            return lang * (1.0 + self.map_delta)
        return lang + lang @ self.map_delta

    def language_map_matrix(self) -> torch.Tensor | None:
        """The (d, d) shared language map (None without one): a row's language part is ``language @ matrix``."""
        if self.map_delta is None:
            return None
        eye = torch.eye(self.dim, dtype=self.map_delta.dtype, device=self.map_delta.device)
        delta = self.map_delta
        return eye + (torch.diag(delta) if delta.dim() == 1 else delta)

    def language_rows(self, item_idx: torch.Tensor | None = None) -> torch.Tensor:
        """(..., d) the language part of rows ``item_idx`` (all N rows if None), the shared map applied: an item's
        row without its ID part, i.e. what a new item with the same text is served as."""
        lang = self.language[: self.num_items] if item_idx is None else self.language[item_idx]
        return self._mapped(lang)

    def _dropped(self, ids: torch.Tensor) -> torch.Tensor:
        """(..., d_n) ID parts with whole rows zeroed at rate ``id_dropout`` while training."""
        if not self.training or self.id_dropout == 0.0:
            return ids
        keep = torch.rand(ids.shape[:-1], device=ids.device) >= self.id_dropout  # (...)
        return ids * keep.unsqueeze(-1).to(ids.dtype)

    @property
    def semantic_dim(self) -> int:
        """d_s = d - d_n: the leading coordinates that are pure language (no ID part)."""
        return self.dim - self.null_dim

    def id_table(self) -> torch.Tensor:
        """(N, d_n) effective ID rows (zero for masked items)."""
        return self.ids.weight[: self.num_items] * self.id_keep[: self.num_items, None]

    def table(self) -> torch.Tensor:
        lang = self.language_rows()  # (N, d)
        if self.null_dim == 0:
            return lang
        d_s = self.semantic_dim
        ids = self._dropped(self.id_table())  # (N, d_n)
        return torch.cat([lang[:, :d_s], lang[:, d_s:] + ids], dim=1)  # (N, d)

    def forward(self, item_idx: torch.Tensor) -> torch.Tensor:
        lang = self.language_rows(item_idx)  # (..., d)
        if self.null_dim == 0:
            return lang
        ids = self._dropped(self.ids(item_idx) * self.id_keep[item_idx].unsqueeze(-1))  # (..., d_n)
        d_s = self.semantic_dim
        return torch.cat([lang[..., :d_s], lang[..., d_s:] + ids], dim=-1)


def trim_padding(histories: torch.Tensor, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the leading columns that are padding in every row of a left-padded batch.

    Args:
        histories: (B, T) item indices, left-padded with ``pad`` (= N).
        pad: the padding index.

    Returns:
        (B, T') the histories from the first column with a real item (the last column if none has one), and their
        (B, T') mask, True at real items.
    """
    mask = histories != pad  # (B, T)
    first = int(mask.any(0).float().argmax()) if bool(mask.any()) else histories.shape[1] - 1
    return histories[:, first:], mask[:, first:]


def has_null_space(items: object) -> TypeGuard[AlphaFuseEmbedding]:
    """An AlphaFuse table with ID coordinates (null_dim > 0): what the semantic query and the remedies need."""
    return isinstance(items, AlphaFuseEmbedding) and items.null_dim > 0


def has_semantic_query(items: object) -> TypeGuard[AlphaFuseEmbedding]:
    """An AlphaFuse table with both ID coordinates and pure-language ones (0 < null_dim < dim): the semantic
    query adds to the latter, so a table whose every coordinate hosts an ID part (null_dim = dim) has none."""
    return has_null_space(items) and items.semantic_dim > 0


def alphafuse_with_null_space(items: nn.Module, purpose: str) -> AlphaFuseEmbedding:
    """``items`` as the AlphaFuse table with a null space (null_dim > 0) that ``purpose`` needs.

    Raises:
        ValueError: naming ``purpose``, for any other item table.
    """
    if not has_null_space(items):
        raise ValueError(f"{purpose} needs an alphafuse model with a null space (null_dim > 0)")
    return items


def build_item_embedding(
    mode: Literal["id", "llminit", "alphafuse"],
    num_items: int,
    dim: int,
    *,
    basis: SemanticBasis | None = None,
    text_embeddings: NDArray[np.float32] | None = None,
    id_init: IdInit = "zeros",
    init_std: float = 1.0,
    seen: NDArray[np.bool_] | None = None,
    fit_rows: NDArray[np.int64] | None = None,
    id_dropout: float = 0.0,
    language_map: LanguageMap = "none",
) -> ItemEmbedding:
    """Build the item-embedding module of a mode.

    Args:
        mode: ``id``, ``llminit`` or ``alphafuse``.
        num_items: N.
        dim: d.
        basis: the fitted AlphaFuse basis (``alphafuse``); its ``dim`` must equal ``dim``.
        text_embeddings: (N, D) raw language embeddings (``llminit`` and ``alphafuse``).
        id_init: ``zeros`` or ``normal`` for the AlphaFuse ID table.
        init_std: std of normal initialisation (``id`` mode and ``alphafuse`` normal init).
        seen: (N,) items present in the training data; ``alphafuse`` keeps the others' ID rows at zero.
        fit_rows: rows whose text fits the ``llminit`` projection (default all; ``cold_items``: the warm ones).
        id_dropout: ``alphafuse`` only: the training-time rate at which an item occurrence's ID part is zeroed.
        language_map: ``alphafuse`` only: ``scale`` or ``linear`` trains one map shared by every language part.
    """
    if (id_dropout or language_map != "none") and mode != "alphafuse":
        raise ValueError(
            f"id_dropout and language_map apply to mode 'alphafuse' only, got mode {mode!r}"
        )
    if mode == "id":
        return IDEmbedding(num_items, dim, std=init_std)
    if text_embeddings is None or len(text_embeddings) != num_items:
        got = None if text_embeddings is None else len(text_embeddings)
        raise ValueError(f"mode {mode!r} needs text_embeddings with {num_items} rows, got {got}")
    if mode == "llminit":
        fit_on = text_embeddings if fit_rows is None else text_embeddings[fit_rows]
        pca = fit_semantic_basis(fit_on, dim=dim, null_dim=0)
        init = torch.from_numpy(project(text_embeddings, pca).astype(np.float32))
        return IDEmbedding(num_items, dim, init=init)
    if mode == "alphafuse":
        if basis is None or basis.dim != dim:
            raise ValueError(f"alphafuse needs a basis with dim={dim}, got {basis and basis.dim}")
        language = torch.from_numpy(project(text_embeddings, basis).astype(np.float32))
        seen_t = None if seen is None else torch.from_numpy(np.asarray(seen, dtype=bool))
        return AlphaFuseEmbedding(
            language,
            basis.null_dim,
            id_init=id_init,
            init_std=init_std,
            seen=seen_t,
            id_dropout=id_dropout,
            language_map=language_map,
        )
    raise ValueError(f"unknown item-embedding mode {mode!r}; expected id, llminit or alphafuse")
