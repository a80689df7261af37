"""Shared reader internals: tables, id/number/time columns, item text, errors, dataset assembly.

Every format module reads its files through these helpers, so all readers share one set of
conventions (see the package docstring): CSV/TSV/Parquet/JSONL tables with a locator that turns a
data row back into ``"<path> line <n>"`` (Parquet: ``row``) for error messages; id, float and
timestamp columns that raise ``ValueError`` naming the file, line and field; the ``"; "``-joined
item text of the chosen catalogue fields; and the final mapping of per-row user/item ids (plus an
optional catalogue) to a logged ``SequenceDataset``.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from core.item_text import cell_text, compose_item_text
from training.data.dataset import SequenceDataset

logger = logging.getLogger(__name__)

DEFAULT_TEXT_FIELDS = ("title", "name", "brand", "categories", "category", "genres", "description")

Where = Callable[[int], str]  # data row -> "path line n" (or "path row n" for Parquet)
Catalogue = tuple[list[str], list[str]]  # (item_ids, texts) in file order


def _locator(path: Path, lines: NDArray[np.int64] | None) -> Where:
    if lines is None:
        return lambda row: f"{path} row {row}"
    return lambda row: f"{path} line {lines[row]}"


def _read_table(path: Path, sep: str | None = None) -> tuple[pd.DataFrame, Where]:
    """A CSV/TSV/Parquet/JSONL file (or a tab-separated file when ``sep`` is given) + locator."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: file is empty")
    suffix = path.suffix.lower()
    if sep is None and suffix == ".parquet":
        return pd.read_parquet(path), _locator(path, None)
    if sep is None and suffix == ".jsonl":
        return _read_jsonl(path)
    if sep is None and suffix not in (".csv", ".tsv"):
        raise ValueError(f"{path}: unsupported suffix {suffix!r} (.csv, .tsv, .parquet, .jsonl)")
    sep = sep or ("\t" if suffix == ".tsv" else ",")
    quoting = csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
    try:
        frame = pd.read_csv(
            path, sep=sep, dtype=str, na_filter=False, skip_blank_lines=False, quoting=quoting
        )
    except pd.errors.ParserError as error:
        raise ValueError(f"{path}: {error}") from error
    lines = np.arange(len(frame), dtype=np.int64) + 2
    blank = (frame == "").all(axis=1).to_numpy()
    return frame.loc[~blank].reset_index(drop=True), _locator(path, lines[~blank])


def _read_jsonl(path: Path) -> tuple[pd.DataFrame, Where]:
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} line {number}: invalid JSON: {error.msg}") from error
            if not isinstance(record, dict):
                raise ValueError(f"{path} line {number}: expected a JSON object: {line[:80]!r}")
            records.append(record)
            lines.append(number)
    return pd.DataFrame.from_records(records), _locator(path, np.array(lines, dtype=np.int64))


def _require_columns(frame: pd.DataFrame, path: Path, required: list[str]) -> None:
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; columns found: {list(frame)}")
    if frame.empty:
        raise ValueError(f"{path}: no data rows (columns found: {list(frame.columns)})")


def _id_column(frame: pd.DataFrame, column: str, where: Where, label: str) -> pd.Series:
    """The column as stripped strings; an empty or missing value is an error."""
    missing = frame[column].isna().to_numpy()
    values = frame[column].astype(str).str.strip()
    bad = np.flatnonzero(missing | (values == "").to_numpy())
    if len(bad):
        raise ValueError(f"{where(int(bad[0]))}: field {label}: empty value")
    return values


def _float_column(values: pd.Series, where: Where, label: str) -> NDArray[np.float64]:
    numbers = pd.to_numeric(values, errors="coerce")
    bad = np.flatnonzero(numbers.isna().to_numpy())
    if len(bad):
        row = int(bad[0])
        raise ValueError(
            f"{where(row)}: field {label}: could not parse {values.iloc[row]!r} as float"
        )
    return np.asarray(numbers.to_numpy(dtype=np.float64), dtype=np.float64)


def _nanoseconds(dates: pd.Series) -> NDArray[np.int64]:
    naive = dates.dt.tz_convert(None) if dates.dt.tz is not None else dates
    return np.asarray(naive.to_numpy(dtype="datetime64[ns]")).view(np.int64)


def _timestamp_column(values: pd.Series, where: Where) -> NDArray[np.float64] | NDArray[np.int64]:
    """Numbers, datetimes or ISO-8601 strings -> a sortable (n,) array."""
    if pd.api.types.is_datetime64_any_dtype(values) and not values.isna().any():
        return _nanoseconds(values)
    numbers = pd.to_numeric(values, errors="coerce")
    if not numbers.isna().any():
        return np.asarray(numbers.to_numpy(dtype=np.float64), dtype=np.float64)
    dates = pd.to_datetime(values, errors="coerce", format="ISO8601", utc=True)
    if not dates.isna().any():
        return _nanoseconds(dates)
    failed = numbers.isna() if numbers.notna().sum() >= dates.notna().sum() else dates.isna()
    row = int(np.flatnonzero(failed.to_numpy())[0])
    raise ValueError(
        f"{where(row)}: field timestamp: could not parse {values.iloc[row]!r} as a number or an "
        "ISO-8601 date"
    )


def _keep_min_rating(
    frame: pd.DataFrame, where: Where, path: Path, min_rating: float | None, label: str
) -> tuple[pd.DataFrame, Where]:
    if min_rating is None:
        return frame, where
    if "rating" not in frame.columns:
        found = list(frame.columns)
        raise ValueError(f"{path}: min_rating={min_rating} needs a 'rating' column; found {found}")
    keep = _float_column(frame["rating"], where, label) >= min_rating
    logger.info(
        "%s: min_rating=%s removed %d of %d rows", path, min_rating, (~keep).sum(), len(keep)
    )
    if not keep.any():
        raise ValueError(f"{path}: no interactions have rating >= {min_rating}")
    kept_rows = np.flatnonzero(keep)
    return frame.loc[keep].reset_index(drop=True), lambda row: where(int(kept_rows[row]))


def _choose_fields(available: list[str], text_fields: list[str] | None, path: Path) -> list[str]:
    if text_fields is None:
        known = [field for field in DEFAULT_TEXT_FIELDS if field in available]
        return known + [field for field in available if field not in known]
    missing = [field for field in text_fields if field not in available]
    if missing:
        raise ValueError(f"{path}: text field(s) {missing} not found; fields found: {available}")
    return list(text_fields)


def _compose_texts(columns: list[list[Any]], count: int) -> list[str]:
    """Row-wise ``"; "``-join of the non-empty values of ``columns`` (each of length ``count``)."""
    rows = zip(*columns, strict=True) if columns else [()] * count
    return [compose_item_text(row) for row in rows]


def _is_text(column: pd.Series) -> bool:
    """A string column with at least one value that is not a number (prices and ids are not)."""
    if column.dtype != object and not pd.api.types.is_string_dtype(column):
        return False
    values = column.map(cell_text)
    return bool((pd.to_numeric(values, errors="coerce").isna() & (values != "")).any())


def _assemble(
    name: str,
    users: pd.Series,
    items: pd.Series,
    order: NDArray[np.int64],
    catalogue: Catalogue | None,
) -> SequenceDataset:
    """Dataset from per-row user/item ids (rows in ``order`` = time order) and a catalogue."""
    user_codes, user_ids = pd.factorize(users, sort=False)
    cat_ids, cat_texts = catalogue if catalogue is not None else ([], [])
    item_idx = pd.Index(cat_ids).get_indexer(items)
    outside = item_idx < 0
    extra_codes, extra_ids = pd.factorize(items[outside], sort=False)
    item_idx[outside] = len(cat_ids) + extra_codes
    if catalogue is not None and outside.any():
        logger.warning(
            "%s: %d interactions on %d items not in the catalogue (kept, with empty text)",
            name, outside.sum(), len(extra_ids),
        )  # fmt: skip
    cold = len(cat_ids) - len(np.unique(item_idx[~outside]))
    if cold:
        logger.info("%s: %d catalogue items have no interactions (kept as cold items)", name, cold)
    return _finish(
        name,
        list(cat_ids) + [str(item_id) for item_id in extra_ids],
        list(cat_texts) + [""] * len(extra_ids),
        [str(user_id) for user_id in user_ids],
        user_codes.astype(np.int64)[order],
        item_idx.astype(np.int64)[order],
    )


def _finish(
    name: str,
    item_ids: list[str],
    item_texts: list[str],
    user_ids: list[str],
    user_idx: NDArray[np.int64],
    item_idx: NDArray[np.int64],
) -> SequenceDataset:
    dataset = SequenceDataset.from_interactions(
        name, item_ids, item_texts, user_ids, user_idx, item_idx
    )
    without_text = sum(1 for text in item_texts if not text)
    if without_text:
        logger.warning("%s: %d of %d items have no text", name, without_text, len(item_texts))
    stats = (dataset.num_users, dataset.num_items, dataset.num_interactions)
    logger.info("%s: %d users, %d items, %d interactions", name, *stats)
    return dataset
