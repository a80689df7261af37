"""Readers: every supported input format -> one `SequenceDataset`.

Formats (pick one with `DataSource.format`; `load_dataset` dispatches):

- ``canonical``: an interaction log (CSV/TSV/Parquet: ``user_id, item_id``, optional ``timestamp``
  and ``rating``) plus an optional item catalogue (CSV/TSV/Parquet/JSONL: ``item_id`` + text).
- ``recbole``: RecBole atomic files ``<name>.inter`` and ``<name>.item`` (``field:type`` header).
- ``p5``: ``sequential.txt`` or ``sequential_data.txt`` + ``datamaps.json`` + item text.
- ``dreamrec_df``: the AlphaFuse/DreamRec pickles ``train/val/test_data.df`` + ``data_statis.df``.

Conventions shared by all readers:

- Item text is the non-empty values of the chosen catalogue fields joined with ``"; "`` (values
  only, no field names; list values joined with ``", "``). Default fields: ``title, name, brand,
  categories, category, genres, description`` when present, then every other text column (one
  with a non-numeric value; prices and numeric codes are left out) in file order;
  ``DataSource.text_fields`` picks and orders them explicitly.
- Catalogue items nobody interacted with are kept as items (valid cold-start items). Interactions
  whose item is not in the catalogue are kept, with empty text. Both counts are logged, and so is
  the number of items without text (a warning); nothing is dropped silently.
- Each user's events are sorted by timestamp, stably (ties, or no timestamp column: file order).
  Users, and items outside the catalogue, get rows in order of first appearance.
- Malformed input raises ``ValueError`` naming the file, the line (Parquet: row) and the field.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from training.data.dataset import SequenceDataset
from training.data.readers.canonical import read_canonical
from training.data.readers.dreamrec import DREAMREC_PARTS, read_dreamrec_df, write_dreamrec_df
from training.data.readers.fields import item_fields
from training.data.readers.p5 import read_p5
from training.data.readers.recbole import RECBOLE_TYPES, read_recbole
from training.data.readers.tables import DEFAULT_TEXT_FIELDS, Catalogue, Where

__all__ = [
    "DEFAULT_TEXT_FIELDS",
    "DREAMREC_PARTS",
    "RECBOLE_TYPES",
    "Catalogue",
    "DataSource",
    "Where",
    "load_dataset",
    "load_item_fields",
    "read_canonical",
    "read_dreamrec_df",
    "read_p5",
    "read_recbole",
    "write_dreamrec_df",
]

logger = logging.getLogger(__name__)


class DataSource(BaseModel):
    """Where a dataset comes from and how to read it (a section of the experiment TOML).

    Attributes:
        format: input format, see the module docstring.
        path: the folder (recbole, p5, dreamrec_df) or the interactions file (canonical).
        items_path: the item catalogue (canonical), or another text source for p5: a canonical
            catalogue keyed by ``item_id``, an ``<item_id> <phrase>`` .txt, or a Yelp-style .json.
        text_fields: catalogue fields that make the item text, in order (module docstring).
        min_rating: keep only interactions with ``rating >= min_rating`` (canonical, recbole).
        name: dataset name; default: the folder name (canonical: the interactions file's stem).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["canonical", "recbole", "p5", "dreamrec_df"]
    path: Path
    items_path: Path | None = None
    text_fields: list[str] | None = None
    min_rating: float | None = None
    name: str | None = None


def load_dataset(source: DataSource) -> SequenceDataset:
    """Read ``source`` with the reader of its format; options a format cannot use are an error."""
    unsupported = {
        "canonical": (),
        "recbole": ("items_path",),
        "p5": ("min_rating",),
        "dreamrec_df": ("items_path", "text_fields", "min_rating"),
    }[source.format]
    for option in unsupported:
        if getattr(source, option) is not None:
            value = getattr(source, option)
            raise ValueError(f"format {source.format!r} does not support {option}={value!r}")
    if source.format == "canonical":
        return read_canonical(
            source.path, source.items_path, source.text_fields, source.min_rating, source.name
        )
    if source.format == "recbole":
        return read_recbole(source.path, source.text_fields, source.min_rating, source.name)
    if source.format == "p5":
        return read_p5(source.path, source.items_path, source.text_fields, source.name)
    return read_dreamrec_df(source.path, source.name)


def load_item_fields(source: DataSource, names: list[str] | None) -> dict[str, dict[str, Any]]:
    """The catalogue fields ``names`` of ``source`` (None: all but free text), each as item id -> raw value
    (``training.data.readers.fields``)."""
    return item_fields(source.format, source.path, source.items_path, names)
