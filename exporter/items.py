"""The per-item files of an artifact: the item table, ids, popularity, semantic basis, and the catalogue fields kept
as item attributes for the service's filters (``core.attributes``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from core.alphafuse import save_basis
from core.artifact import ITEM_IDS_FILE, ITEMS_FILE, POPULARITY_FILE, SEMANTIC_BASIS_FILE
from core.attributes import Column, FieldSpec, build_column, infer_kind, write_columns
from training.data.readers import load_item_fields
from training.run.checkpoint import LoadedRun

__all__ = ["item_columns", "write_items"]

logger = logging.getLogger(__name__)


def item_columns(run: LoadedRun, names: list[str] | None) -> dict[str, Column]:
    """The catalogue fields ``names`` of the run's dataset as columns in the run's item order.

    ``names`` None: every field but free text (``training.data.readers.fields``); a catalogue that cannot be read
    then gives none (logged). A named field the catalogue lacks, or an unreadable catalogue, is a ValueError.
    """
    if names == []:
        return {}
    try:
        raw = load_item_fields(run.config.data.source, names)
    except (ValueError, OSError) as exc:
        if names is not None:
            raise ValueError(f"item fields {names}: {exc}") from exc
        logger.warning("the artifact keeps no item fields: %s", exc)
        return {}
    columns = {}
    for name, by_id in raw.items():
        values = [by_id.get(item) for item in run.item_ids]
        column, unfit = build_column(infer_kind(values), values)
        if unfit:
            example = values[unfit[0]]
            logger.warning(
                "field %s (%s): %d values that do not fit the kind left absent, e.g. %r",
                name, column.kind, len(unfit), example,
            )  # fmt: skip
        columns[name] = column
    return columns


def write_items(
    run: LoadedRun, run_dir: Path, items_npy: bytes, columns: dict[str, Column], out: Path
) -> tuple[FieldSpec, ...]:
    """The item table, ids, popularity, semantic basis (if any) and attribute columns into ``out``."""
    (out / ITEMS_FILE).write_bytes(items_npy)
    (out / ITEM_IDS_FILE).write_text(json.dumps(run.item_ids) + "\n")
    np.save(out / POPULARITY_FILE, _popularity(run, run_dir), allow_pickle=False)
    if run.basis is not None:  # the loaded basis: the trained language map, if any, folded in
        save_basis(run.basis, out / SEMANTIC_BASIS_FILE)
    return write_columns(out, columns) if columns else ()


def _popularity(run: LoadedRun, run_dir: Path) -> NDArray[np.int64]:
    if run.popularity is not None:
        return run.popularity
    logger.warning(
        "%s has no popularity.npy: the artifact's popularity fallback is all zeros", run_dir
    )
    return np.zeros(len(run.item_ids), dtype=np.int64)
