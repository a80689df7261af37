"""The canonical format: an interaction log plus an optional item catalogue (CSV/TSV/Parquet/JSONL).

Owns ``read_canonical`` and the canonical catalogue reader (``item_id`` plus text fields), which
the P5 reader also uses for an ``items.jsonl`` or an explicit ``items_path``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from training.data.dataset import SequenceDataset
from training.data.readers.tables import (
    Catalogue,
    _assemble,
    _choose_fields,
    _compose_texts,
    _id_column,
    _is_text,
    _keep_min_rating,
    _read_table,
    _require_columns,
    _timestamp_column,
)

logger = logging.getLogger(__name__)


def _table_catalogue(path: Path, text_fields: list[str] | None) -> Catalogue:
    """A canonical catalogue: ``item_id`` plus text fields; a duplicate item_id is an error."""
    frame, where = _read_table(path)
    _require_columns(frame, path, ["item_id"])
    ids = _id_column(frame, "item_id", where, "item_id")
    duplicated = np.flatnonzero(ids.duplicated().to_numpy())
    if len(duplicated):
        row = int(duplicated[0])
        raise ValueError(f"{where(row)}: field item_id: duplicate item_id {ids.iloc[row]!r}")
    others = [str(column) for column in frame.columns if column != "item_id"]
    text_like = [column for column in others if _is_text(frame[column])]
    fields = _choose_fields(text_like if text_fields is None else others, text_fields, path)
    return ids.tolist(), _compose_texts([frame[field].tolist() for field in fields], len(ids))


def read_canonical(
    interactions_path: Path,
    items_path: Path | None = None,
    text_fields: list[str] | None = None,
    min_rating: float | None = None,
    name: str | None = None,
) -> SequenceDataset:
    """Read a canonical interaction log and an optional item catalogue.

    Args:
        interactions_path: CSV/TSV/Parquet with ``user_id, item_id``, optional ``timestamp``
            (numbers, datetimes or ISO-8601 strings; absent: file order) and ``rating``.
            Repeated (user, item) pairs are kept.
        items_path: CSV/TSV/Parquet/JSONL with ``item_id`` plus text fields; None: no item text.
        text_fields: catalogue fields for the text (module docstring).
        min_rating: keep interactions with ``rating >= min_rating``.
        name: dataset name; default: the interactions file's stem.

    Returns:
        The dataset; item rows are the catalogue in file order, then items outside it.
    """
    frame, where = _read_table(interactions_path)
    _require_columns(frame, interactions_path, ["user_id", "item_id"])
    frame, where = _keep_min_rating(frame, where, interactions_path, min_rating, "rating")
    users = _id_column(frame, "user_id", where, "user_id")
    items = _id_column(frame, "item_id", where, "item_id")
    order = np.arange(len(frame), dtype=np.int64)
    if "timestamp" in frame.columns:
        order = np.argsort(_timestamp_column(frame["timestamp"], where), kind="stable")
    catalogue = _table_catalogue(items_path, text_fields) if items_path is not None else None
    return _assemble(name or interactions_path.stem, users, items, order, catalogue)
