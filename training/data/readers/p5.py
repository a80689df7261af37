"""The P5 format: ``sequential.txt`` / ``sequential_data.txt``, ``datamaps.json`` and item text.

Owns ``read_p5``: the sequence-line and datamaps parsers and the P5 item-text sources (a canonical
catalogue, a Yelp-style ``*.item.json`` or ``<item_id> <phrase>`` lines).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from training.data.dataset import SequenceDataset
from training.data.readers.canonical import _table_catalogue
from training.data.readers.tables import Catalogue, _choose_fields, _compose_texts, _finish

logger = logging.getLogger(__name__)


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


def p5_item_source(path: Path, items_path: Path | None) -> Path | None:
    """The item file of a P5 folder: ``items_path`` if given, else the richest one present (``read_p5``)."""
    candidates = [
        path / "items.jsonl",
        *sorted(path.glob("*.item.json")),
        path / "item_text_idgenrec.txt",
    ]
    return items_path or next((c for c in candidates if c.is_file()), None)


def p5_datamaps(path: Path) -> tuple[dict[str, str], list[str]]:
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
    frame = yelp_frame(path, item_ids)
    fields = _choose_fields([str(c) for c in frame.columns if c != "item_id"], text_fields, path)
    texts = _compose_texts([frame[field].tolist() for field in fields], len(frame))
    return frame["item_id"].tolist(), texts


def yelp_frame(path: Path, item_ids: list[str]) -> pd.DataFrame:
    """A Yelp-style item JSON (key k is P5 item k+1) as a table with an ``item_id`` column first."""
    try:
        frame = pd.DataFrame.from_dict(json.loads(path.read_text(encoding="utf-8")), orient="index")
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read item JSON: {error}") from error
    keys = pd.to_numeric(frame.index.to_series(), errors="coerce")
    if frame.empty or keys.isna().any() or keys.min() < 0 or keys.max() >= len(item_ids):
        raise ValueError(f"{path}: keys must be integers 0..{len(item_ids) - 1} (P5 item id - 1)")
    frame.insert(0, "item_id", [item_ids[int(k)] for k in keys])
    return frame.reset_index(drop=True)


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
    id2user, item_ids = p5_datamaps(path / "datamaps.json")
    user_ids, lengths, item_idx = _p5_sequences(sequence_path, id2user, len(item_ids))
    text_path = p5_item_source(path, items_path)
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
