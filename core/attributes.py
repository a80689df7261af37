"""Item attributes (catalogue fields such as category, brand, price) as columns: the exporter writes them into the
artifact, the service filters recommendations by them.

Each field has a kind, read from its values:

- ``number``: every value is a number (or a numeric string); one float64 ``.npy``, NaN where an item has none.
- ``bool``: every value is a JSON boolean (or ``"true"``/``"false"``); one int8 ``.npy``: 1, 0, -1 for none.
- ``text``: anything else. An item's value is a tuple of strings: a list gives its elements, a string its
  ``" | "``-separated parts (several category paths), stripped, empty ones dropped. One int32 ``.npy`` of codes
  (-1: none) and a JSON vocabulary (``<name>.vocab.json``: a list of those tuples, code = position).

No pickle anywhere: plain arrays and JSON, listed in the manifest (``FieldSpec``) with their checksums.

    >>> column, _ = build_column("text", ["Beauty > Makeup | Beauty > Nails", None, "Beauty > Makeup"])
    >>> column.values.tolist(), column.vocabulary
    ([0, -1, 1], [('Beauty > Makeup', 'Beauty > Nails'), ('Beauty > Makeup',)])
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "FIELDS_DIR",
    "FIELD_NAME",
    "MULTI_SEPARATOR",
    "Column",
    "FieldSpec",
    "Kind",
    "build_column",
    "infer_kind",
    "normalize",
    "read_columns",
    "write_columns",
]

Kind = Literal["text", "number", "bool"]
FIELDS_DIR = "fields"
FIELD_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"  # also a file name inside the artifact
MULTI_SEPARATOR = " | "
Value = (
    tuple[str, ...] | float | bool | None
)  # a normalized value: what a column holds for one item
_DTYPES = {"text": np.int32, "number": np.float64, "bool": np.int8}
_BOOLS = {"true": True, "false": False}


class FieldSpec(BaseModel):
    """One attribute field of an artifact: its kind and files (relative to the artifact directory)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=FIELD_NAME)
    kind: Kind
    file: str = Field(description="text: int32 codes; number: float64; bool: int8 (-1: none)")
    vocabulary_file: str | None = Field(default=None, description="text only: JSON list of values")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    return _BOOLS.get(str(value).strip().lower()) if isinstance(value, str) else None


def infer_kind(values: Sequence[Any], tolerance: float = 0.01) -> Kind:
    """``bool`` if every present value reads as a boolean, else ``number`` if all but ``tolerance`` of them read
    as numbers (catalogues carry the odd ``"unknown"`` year), else ``text``."""
    present = [v for v in values if not _missing(v)]
    if present and all(_bool(v) is not None for v in present):
        return "bool"
    numbers = sum(_number(v) is not None for v in present if not isinstance(v, list | tuple))
    if present and numbers >= (1 - tolerance) * len(present):
        return "number"
    return "text"


def normalize(kind: Kind, value: Any) -> Value:
    """One raw value as the column of ``kind`` holds it (None: absent); ValueError if it does not fit."""
    if _missing(value) or (isinstance(value, list | tuple) and not value):
        return None
    if kind == "bool":
        flag = _bool(value)
        if flag is None:
            raise ValueError(f"expected a boolean, got {value!r}")
        return flag
    if kind == "number":
        number = None if isinstance(value, list | tuple) else _number(value)
        if number is None or not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {value!r}")
        return number
    items = (
        value if isinstance(value, list | tuple | np.ndarray) else str(value).split(MULTI_SEPARATOR)
    )
    parts = tuple(dict.fromkeys(p for p in (str(i).strip() for i in items) if p))
    return parts or None


@dataclass
class Column:
    """One field's values for item rows ``0..len-1``; text values coded against ``vocabulary``."""

    kind: Kind
    values: NDArray[Any]
    vocabulary: list[tuple[str, ...]] = field(default_factory=list)
    codes: dict[tuple[str, ...], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.codes = {entry: code for code, entry in enumerate(self.vocabulary)}

    def __len__(self) -> int:
        return len(self.values)

    def encode(self, value: Value) -> float | int:
        """The array entry of a normalized value (a new text value is added to the vocabulary)."""
        if value is None:
            return math.nan if self.kind == "number" else -1
        if not isinstance(value, tuple):
            return float(value) if self.kind == "number" else int(value)
        code = self.codes.get(value)
        if code is None:
            code = self.codes[value] = len(self.vocabulary)
            self.vocabulary.append(value)
        return code

    def decode(self, row: int) -> Value:
        """The normalized value of ``row`` (None: absent)."""
        entry = self.values[row].item()
        if self.kind == "number":
            return None if math.isnan(entry) else float(entry)
        if entry < 0:
            return None
        return self.vocabulary[entry] if self.kind == "text" else bool(entry)

    def extend(self, values: Sequence[Value], length: int) -> None:
        """Grow to ``length`` rows (absent values), the last ``len(values)`` of them set from ``values``."""
        fill = math.nan if self.kind == "number" else -1
        grown = np.full(length, fill, dtype=_DTYPES[self.kind])
        grown[: len(self.values)] = self.values[:length]
        grown[length - len(values) :] = [self.encode(v) for v in values]
        self.values = grown  # one reference swap: a reader sees the old array or the new one


def build_column(kind: Kind, raw: Sequence[Any]) -> tuple[Column, list[int]]:
    """A column of ``kind`` from raw values, and the rows whose value does not fit the kind (left absent)."""
    column = Column(kind, np.zeros(0, dtype=_DTYPES[kind]))
    normalized: list[Value] = []
    unfit = []
    for row, value in enumerate(raw):
        try:
            normalized.append(normalize(kind, value))
        except ValueError:
            normalized.append(None)
            unfit.append(row)
    column.extend(normalized, len(normalized))
    return column, unfit


def write_columns(directory: Path, columns: dict[str, Column]) -> tuple[FieldSpec, ...]:
    """Write each column under ``directory/fields/``; the specs name the files relative to ``directory``."""
    (directory / FIELDS_DIR).mkdir(exist_ok=True)
    specs = []
    for name, column in columns.items():
        spec = FieldSpec(
            name=name,
            kind=column.kind,
            file=f"{FIELDS_DIR}/{name}.npy",
            vocabulary_file=f"{FIELDS_DIR}/{name}.vocab.json" if column.kind == "text" else None,
        )
        np.save(directory / spec.file, column.values, allow_pickle=False)
        if spec.vocabulary_file is not None:
            vocabulary = [list(entry) for entry in column.vocabulary]
            (directory / spec.vocabulary_file).write_text(json.dumps(vocabulary) + "\n")
        specs.append(spec)
    return tuple(specs)


def read_columns(directory: Path, specs: Sequence[FieldSpec], rows: int) -> dict[str, Column]:
    """The columns of ``specs``, each checked to have ``rows`` entries of its kind's dtype (ValueError if not)."""
    columns = {}
    for spec in specs:
        values = np.load(directory / spec.file, allow_pickle=False)
        if values.shape != (rows,) or values.dtype != _DTYPES[spec.kind]:
            raise ValueError(
                f"{directory / spec.file}: {values.shape} {values.dtype}, expected ({rows},) "
                f"{np.dtype(_DTYPES[spec.kind])}"
            )
        vocabulary: list[tuple[str, ...]] = []
        if spec.vocabulary_file is not None:
            raw = json.loads((directory / spec.vocabulary_file).read_text())
            vocabulary = [tuple(str(v) for v in entry) for entry in raw]
            if len(values) and int(values.max(initial=-1)) >= len(vocabulary):
                raise ValueError(f"{directory / spec.file}: a code outside its vocabulary")
        columns[spec.name] = Column(spec.kind, values, vocabulary)
    return columns
