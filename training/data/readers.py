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

import csv
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict

from training.data.dataset import SequenceDataset

logger = logging.getLogger(__name__)

DEFAULT_TEXT_FIELDS = ("title", "name", "brand", "categories", "category", "genres", "description")
RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")
DREAMREC_PARTS = (("train", "train_data.df"), ("valid", "val_data.df"), ("test", "test_data.df"))

Where = Callable[[int], str]  # data row -> "path line n" (or "path row n" for Parquet)
Catalogue = tuple[list[str], list[str]]  # (item_ids, texts) in file order


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


def _cell_text(value: Any) -> str:
    if isinstance(value, list | tuple | np.ndarray):
        return ", ".join(text for text in map(_cell_text, value) if text)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).strip()


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
    return ["; ".join(text for text in map(_cell_text, row) if text) for row in rows]


def _is_text(column: pd.Series) -> bool:
    """A string column with at least one value that is not a number (prices and ids are not)."""
    if column.dtype != object and not pd.api.types.is_string_dtype(column):
        return False
    values = column.map(_cell_text)
    return bool((pd.to_numeric(values, errors="coerce").isna() & (values != "")).any())


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
    inter_path = path if path.is_file() else path / f"{path.name}.inter"
    if not inter_path.is_file():
        found = sorted(path.glob("*.inter")) if path.is_dir() else []
        if len(found) != 1:
            raise ValueError(
                f"{path}: expected one <name>.inter file, found {[f.name for f in found]}"
            )
        inter_path = found[0]
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


def _parse_p5_line(tokens: list[str], where: str, num_items: int) -> list[int]:
    items: list[int] = []
    for position, token in enumerate(tokens, start=1):
        try:
            items.append(int(token))
        except ValueError:
            field = f"item_id (position {position})"
            raise ValueError(f"{where}: field {field}: could not parse {token!r} as int") from None
    if not items or min(items) < 1 or max(items) > num_items:
        raise ValueError(
            f"{where}: field item_id: ids must be in [1, {num_items}], got {tokens[:8]}"
        )
    return items


def _p5_sequences(
    path: Path, id2user: dict[str, str], num_items: int
) -> tuple[list[str], NDArray[np.int64], NDArray[np.int64]]:
    """``user item item ...`` lines (ids from 1, oldest first) -> (user_ids, lengths, item rows)."""
    user_ids: list[str] = []
    sequences: list[list[int]] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            user, *tokens = line.split()
            if user not in id2user or user in seen:
                problem = "appears twice" if user in seen else "is not in datamaps.json id2user"
                raise ValueError(f"{path} line {number}: field user_id: user {user!r} {problem}")
            sequences.append(_parse_p5_line(tokens, f"{path} line {number}", num_items))
            seen.add(user)
            user_ids.append(id2user[user])
    if not sequences:
        raise ValueError(f"{path}: file is empty")
    lengths = np.array([len(sequence) for sequence in sequences], dtype=np.int64)
    items = np.fromiter((i for s in sequences for i in s), np.int64, count=int(lengths.sum()))
    return user_ids, lengths, items - 1


def _p5_datamaps(path: Path) -> tuple[dict[str, str], list[str]]:
    """(id2user, item_ids) where ``item_ids[k]`` is the external id of P5 item k+1."""
    try:
        maps = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read datamaps JSON: {error}") from error
    if not isinstance(maps, dict) or not {"id2user", "id2item"} <= maps.keys():
        found = list(maps) if isinstance(maps, dict) else type(maps).__name__
        raise ValueError(f"{path}: needs keys 'id2user' and 'id2item'; found {found}")
    id2item = {str(k): str(v) for k, v in maps["id2item"].items()}
    keys = [str(k) for k in range(1, len(id2item) + 1)]
    missing = [k for k in keys if k not in id2item]
    if missing:
        raise ValueError(f"{path}: id2item keys must be 1..{len(id2item)}; missing {missing[:5]}")
    return {str(k): str(v) for k, v in maps["id2user"].items()}, [id2item[k] for k in keys]


def _phrase_catalogue(path: Path, text_fields: list[str] | None) -> Catalogue:
    """``<item_id> <phrase>`` lines; the single field is called ``text``."""
    if text_fields not in (None, ["text"]):
        raise ValueError(
            f"{path}: '<item_id> <phrase>' lines have one field 'text', not {text_fields}"
        )
    pairs = [line.strip().partition(" ") for line in path.read_text(encoding="utf-8").splitlines()]
    kept = [(item_id, text.strip()) for item_id, _, text in pairs if item_id]
    return [item_id for item_id, _ in kept], [text for _, text in kept]


def _yelp_catalogue(path: Path, text_fields: list[str] | None, item_ids: list[str]) -> Catalogue:
    """``{"k": {"title": ..., "description": ...}}`` where key k is P5 item k+1."""
    try:
        frame = pd.DataFrame.from_dict(json.loads(path.read_text(encoding="utf-8")), orient="index")
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read item JSON: {error}") from error
    keys = pd.to_numeric(frame.index.to_series(), errors="coerce")
    if frame.empty or keys.isna().any() or keys.min() < 0 or keys.max() >= len(item_ids):
        raise ValueError(f"{path}: keys must be integers 0..{len(item_ids) - 1} (P5 item id - 1)")
    fields = _choose_fields([str(c) for c in frame.columns], text_fields, path)
    texts = _compose_texts([frame[field].tolist() for field in fields], len(frame))
    return [item_ids[int(k)] for k in keys], texts


def read_p5(
    path: Path,
    items_path: Path | None = None,
    text_fields: list[str] | None = None,
    name: str | None = None,
) -> SequenceDataset:
    """Read P5 data: ``sequential.txt`` (or ``sequential_data.txt``), ``datamaps.json``, item text.

    P5 item k becomes item row k-1 (external id ``id2item[k]``); users keep the file's line order;
    repeated items on a line (Yelp re-visits) are kept. The item text is the richest source in the
    folder unless ``items_path`` names one: ``items.jsonl`` (canonical catalogue), then
    ``*.item.json`` (Yelp: key k is P5 item k+1), then ``item_text_idgenrec.txt``
    (``<item_id> <phrase>``). ``items_path`` is read by suffix: ``.txt`` phrase lines, ``.json``
    Yelp-style, anything else a canonical catalogue keyed by ``item_id``.
    """
    names = ("sequential.txt", "sequential_data.txt")
    sequence_path = next((path / f for f in names if (path / f).is_file()), None)
    if sequence_path is None:
        raise ValueError(f"{path}: no {' or '.join(names)}")
    id2user, item_ids = _p5_datamaps(path / "datamaps.json")
    user_ids, lengths, item_idx = _p5_sequences(sequence_path, id2user, len(item_ids))
    candidates = [
        path / "items.jsonl",
        *sorted(path.glob("*.item.json")),
        path / "item_text_idgenrec.txt",
    ]
    text_path = items_path or next((c for c in candidates if c.is_file()), None)
    texts = [""] * len(item_ids)
    if text_path is not None:
        suffix = text_path.suffix.lower()
        if suffix == ".txt":
            catalogue = _phrase_catalogue(text_path, text_fields)
        elif suffix == ".json":
            catalogue = _yelp_catalogue(text_path, text_fields, item_ids)
        else:
            catalogue = _table_catalogue(text_path, text_fields)
        lookup = dict(zip(*catalogue, strict=True))
        texts = [lookup.get(item_id, "") for item_id in item_ids]
        logger.info("%s: item text from %s (%d entries)", path.name, text_path, len(lookup))
    user_idx = np.repeat(np.arange(len(user_ids), dtype=np.int64), lengths)
    return _finish(name or path.name, item_ids, texts, user_ids, user_idx, item_idx)


def _dreamrec_part(
    path: Path, seq_size: int, item_num: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """One ``.df`` file -> (lengths (n,), items (lengths.sum(),)): real items of seq, then next."""
    frame = pd.read_pickle(path)
    _require_columns(frame, path, ["seq", "len_seq", "next"])
    lengths = frame["seq"].map(len).to_numpy()
    if np.any(lengths != seq_size):
        row = int(np.flatnonzero(lengths != seq_size)[0])
        raise ValueError(
            f"{path} row {row}: field seq: length {lengths[row]} != seq_size {seq_size}"
        )
    seqs = np.array(frame["seq"].tolist(), dtype=np.int64).reshape(len(frame), seq_size)
    lens = frame["len_seq"].to_numpy(dtype=np.int64)
    nexts = frame["next"].to_numpy(dtype=np.int64)
    for label, bad in (
        ("len_seq", (lens < 0) | (lens > seq_size)),
        ("next", (nexts < 0) | (nexts >= item_num)),
        ("seq", ((seqs < 0) | (seqs > item_num)).any(axis=1)),
    ):
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            value = frame[label].iloc[row]
            raise ValueError(
                f"{path} row {row}: field {label}: bad value {value} (item_num {item_num})"
            )
    column = np.arange(seq_size)
    right = column[None, :] < lens[:, None]  # (n, S) real items first, pads after
    left = column[None, :] >= seq_size - lens[:, None]  # (n, S) pads first, real items last
    is_real = seqs != item_num
    real = right if np.array_equal(is_real, right) else left
    if not np.array_equal(is_real, real):
        row = int(np.flatnonzero((is_real != right).any(axis=1) & (is_real != left).any(axis=1))[0])
        raise ValueError(
            f"{path} row {row}: field seq: pad id {item_num} is neither left nor right padding "
            f"with len_seq={lens[row]}: {seqs[row].tolist()}"
        )
    with_next = np.concatenate([seqs, nexts[:, None]], axis=1)  # (n, S+1)
    keep = np.concatenate([real, np.ones((len(frame), 1), dtype=bool)], axis=1)
    return lens + 1, with_next[keep]


def read_dreamrec_df(path: Path, name: str | None = None) -> SequenceDataset:
    """Read the AlphaFuse/DreamRec pickles (``train/val/test_data.df``, ``data_statis.df``).

    Security: these are pandas pickles, and unpickling runs code stored in the file. They are read
    only when the user names this format and folder explicitly (never auto-detected); point it only
    at files you made or trust.

    Each row (``seq`` padded to ``seq_size`` with id ``item_num``, ``len_seq``, ``next``) becomes
    one user whose sequence is the real items of ``seq`` followed by ``next``; left or right
    padding is detected per file from where the pad id sits. User ids are ``"<part>:<row>"`` with
    part train, valid or test. Items are ``0..item_num-1`` (external id ``str(k)``) with empty
    text: pass the item embeddings as a ``.npy`` file.
    """
    parts = [("statis", "data_statis.df"), *DREAMREC_PARTS]
    missing = [file for _, file in parts if not (path / file).is_file()]
    if missing:
        found = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
        raise ValueError(f"{path}: missing {missing}; files found: {found}")
    statis = pd.read_pickle(path / "data_statis.df")
    _require_columns(statis, path / "data_statis.df", ["seq_size", "item_num"])
    seq_size, item_num = int(statis["seq_size"].iloc[0]), int(statis["item_num"].iloc[0])
    user_ids: list[str] = []
    lengths: list[NDArray[np.int64]] = []
    items: list[NDArray[np.int64]] = []
    for part, file in DREAMREC_PARTS:
        part_lengths, part_items = _dreamrec_part(path / file, seq_size, item_num)
        user_ids += [f"{part}:{row}" for row in range(len(part_lengths))]
        lengths.append(part_lengths)
        items.append(part_items)
    user_idx = np.repeat(np.arange(len(user_ids), dtype=np.int64), np.concatenate(lengths))
    item_ids = [str(k) for k in range(item_num)]
    return _finish(
        name or path.name, item_ids, [""] * item_num, user_ids, user_idx, np.concatenate(items)
    )
