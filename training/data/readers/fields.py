"""Item attributes from a dataset's catalogue: the fields the exporter keeps for the service's filters.

``item_fields`` reads the same catalogue file the format's reader takes the item text from (canonical:
``items_path``; recbole: ``<name>.item``; p5: ``items.jsonl`` or a Yelp-style ``*.item.json``) and returns each
chosen field's raw value per item id. RecBole ``token_seq`` values become lists (ml-100k genres). Without a
choice, every catalogue field is kept except free text: fields named like a title, name, description or text, and
text fields with more distinct values than half the items (ids, titles under another name).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from core.attributes import infer_kind
from core.item_text import cell_text
from training.data.readers.p5 import p5_datamaps, p5_item_source, yelp_frame
from training.data.readers.recbole import _read_atomic, recbole_inter_path
from training.data.readers.tables import _read_table

__all__ = ["FREE_TEXT_NAMES", "item_fields"]

logger = logging.getLogger(__name__)
FREE_TEXT_NAMES = ("title", "name", "description", "text")


def item_fields(
    fmt: str, path: Path, items_path: Path | None, names: list[str] | None
) -> dict[str, dict[str, Any]]:
    """field -> item id -> raw value, for ``names`` (None: the default choice above).

    Raises:
        ValueError: a named field is not in the catalogue, or fields are named and there is no catalogue.
    """
    frame = _catalogue_frame(fmt, path, items_path)
    if frame is None:
        if names:
            raise ValueError(f"{path}: no item catalogue with fields; cannot keep {names}")
        return {}
    available = [str(c) for c in frame.columns if c != "item_id"]
    missing = [n for n in names or [] if n not in available]
    if missing:
        raise ValueError(f"{path}: field(s) {missing} not in the catalogue; found {available}")
    chosen = names if names is not None else [c for c in available if _filterable(frame[c])]
    ids = frame["item_id"].astype(str).str.strip().tolist()
    logger.info("%s: item fields %s for %d catalogue items", path, chosen, len(ids))
    return {name: dict(zip(ids, frame[name].tolist(), strict=True)) for name in chosen}


def _filterable(column: pd.Series) -> bool:
    """Not free text: see the module docstring."""
    if any(word in str(column.name).lower() for word in FREE_TEXT_NAMES):
        return False
    if infer_kind(column.tolist()) != "text":
        return True
    return int(column.map(cell_text).nunique()) <= len(column) // 2


def _catalogue_frame(fmt: str, path: Path, items_path: Path | None) -> pd.DataFrame | None:
    """The format's item catalogue as a table with an ``item_id`` column; None where the format has none."""
    if fmt == "canonical":
        return None if items_path is None else _read_table(items_path)[0]
    if fmt == "recbole":
        item_path = recbole_inter_path(path).with_suffix(".item")
        if not item_path.is_file():
            return None
        frame, types, _ = _read_atomic(item_path)
        for name, kind in types.items():
            if kind == "token_seq" and name != "item_id":
                frame[name] = frame[name].str.split()
        return frame
    if fmt == "p5":
        source = p5_item_source(path, items_path)
        if source is None or source.suffix.lower() == ".txt":
            return None
        if source.suffix.lower() == ".json":
            return yelp_frame(source, p5_datamaps(path / "datamaps.json")[1])
        return _read_table(source)[0]
    return None
