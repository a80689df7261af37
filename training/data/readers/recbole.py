"""The RecBole format: atomic files ``<name>.inter`` and ``<name>.item`` with ``field:type`` headers.

Owns ``read_recbole``, the atomic-file header parser and the ``.item`` text rules (title-like
fields first, ``token_seq`` values joined with ``", "``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from training.data.dataset import SequenceDataset
from training.data.readers.tables import (
    Catalogue,
    Where,
    _assemble,
    _choose_fields,
    _compose_texts,
    _float_column,
    _id_column,
    _keep_min_rating,
    _read_table,
    _require_columns,
)

logger = logging.getLogger(__name__)

RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")


def _read_atomic(path: Path) -> tuple[pd.DataFrame, dict[str, str], Where]:
    """A RecBole atomic file -> (frame with bare field names, field -> type, locator)."""
    frame, where = _read_table(path, sep="\t")
    types: dict[str, str] = {}
    for column in frame.columns:
        field, _, kind = str(column).partition(":")
        if kind not in RECBOLE_TYPES:
            raise ValueError(
                f"{path} line 1: header {column!r} is not 'name:type', type in {RECBOLE_TYPES}"
            )
        types[field] = kind
    frame.columns = list(types)
    return frame, types, where


def _recbole_catalogue(path: Path, text_fields: list[str] | None) -> Catalogue:
    """``.item`` text: title-like fields, then other token fields; token_seq joined by ", "."""
    frame, types, where = _read_atomic(path)
    _require_columns(frame, path, ["item_id"])
    ids = _id_column(frame, "item_id", where, "item_id:token").tolist()
    tokens = [f for f, kind in types.items() if f != "item_id" and kind in ("token", "token_seq")]
    titles = [f for f in tokens if "title" in f or "name" in f]
    fields = titles + [f for f in tokens if f not in titles]
    if text_fields is not None:
        fields = _choose_fields(list(types), [f.partition(":")[0] for f in text_fields], path)
    columns = [
        frame[f].str.split().str.join(", ")
        if types[f] == "token_seq" and f not in titles
        else frame[f]
        for f in fields
    ]
    return ids, _compose_texts([column.tolist() for column in columns], len(ids))


def recbole_inter_path(path: Path) -> Path:
    """The ``.inter`` file: ``path`` itself, ``<path>/<folder name>.inter``, or the folder's only one."""
    inter_path = path if path.is_file() else path / f"{path.name}.inter"
    if not inter_path.is_file():
        found = sorted(path.glob("*.inter")) if path.is_dir() else []
        if len(found) != 1:
            raise ValueError(
                f"{path}: expected one <name>.inter file, found {[f.name for f in found]}"
            )
        inter_path = found[0]
    return inter_path


def read_recbole(
    path: Path,
    text_fields: list[str] | None = None,
    min_rating: float | None = None,
    name: str | None = None,
) -> SequenceDataset:
    """Read RecBole atomic files ``<name>.inter`` (required) and ``<name>.item`` (optional text).

    Args:
        path: the folder holding the atomic files, or the ``.inter`` file itself.
        text_fields: ``.item`` fields for the text (with or without ``:type``); default: title-like
            fields, then other token fields in file order (ml-100k: "Toy Story; 1995; Animation,
            Children's, Comedy").
        min_rating: keep interactions with ``rating >= min_rating``.
        name: dataset name; default: the ``.inter`` file's stem.
    """
    inter_path = recbole_inter_path(path)
    frame, types, where = _read_atomic(inter_path)
    _require_columns(frame, inter_path, ["user_id", "item_id"])
    rating_label = f"rating:{types.get('rating')}"
    frame, where = _keep_min_rating(frame, where, inter_path, min_rating, rating_label)
    users = _id_column(frame, "user_id", where, "user_id:token")
    items = _id_column(frame, "item_id", where, "item_id:token")
    order = np.arange(len(frame), dtype=np.int64)
    if "timestamp" in types:
        stamps = _float_column(frame["timestamp"], where, f"timestamp:{types['timestamp']}")
        order = np.argsort(stamps, kind="stable")
    item_path = inter_path.with_suffix(".item")
    catalogue = _recbole_catalogue(item_path, text_fields) if item_path.is_file() else None
    return _assemble(name or inter_path.stem, users, items, order, catalogue)
