"""Item attribute filters: the columns a runtime serves (``ItemFields``), checking a request's ``filter`` against
them, and the mask of the rows that pass it.

A filter (``service.schemas.Filter``) maps field names to conditions, all of which must hold. The columns are the
artifact's (``core.attributes``), grown with the fields of items added through ``POST /items``; a new item may
bring a field of its own, whose kind its first value sets. Text conditions are evaluated once per vocabulary
entry (cached per condition), then gathered by the items' codes, so a filter over 1e5 items costs a few array
operations, not a Python loop over items.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from core.arrays import BoolArray
from core.attributes import Column, Kind, Value, normalize
from service.errors import RequestError
from service.schemas import Condition, Filter

__all__ = ["PATH_SEPARATOR", "ItemFields", "Tests", "tests_of"]

PATH_SEPARATOR = ">"  # category path levels: "Beauty > Makeup > Nails"
CACHE_SIZE = 1024
Tests = tuple[
    tuple[str, Any], ...
]  # (test name, operand) pairs of one field's condition, e.g. (("lte", 20.0),)
_TEXT, _NUMBER = frozenset({"eq", "in", "prefix"}), frozenset({"eq", "gte", "gt", "lte", "lt"})
_ALLOWED: dict[Kind, frozenset[str]] = {"text": _TEXT, "number": _NUMBER, "bool": frozenset({"eq"})}


def tests_of(condition: bool | int | float | str | Condition) -> Tests:
    """A condition as ``(test, operand)`` pairs; a bare value is ``eq``."""
    if not isinstance(condition, Condition):
        return (("eq", condition),)
    given = condition.model_dump(by_alias=True, exclude_unset=True)
    return tuple((name, tuple(v) if isinstance(v, list) else v) for name, v in given.items())


def _kind_of(value: Any) -> Kind:
    if isinstance(value, bool):
        return "bool"
    return "number" if isinstance(value, int | float) else "text"


def _levels(path: str) -> tuple[str, ...]:
    return tuple(level.strip() for level in path.split(PATH_SEPARATOR))


def _text_test(test: str, operand: Any) -> Any:
    """A predicate on one vocabulary entry (a tuple of an item's values)."""
    if test == "eq":
        return lambda entry: operand in entry
    if test == "in":
        wanted = frozenset(operand)
        return lambda entry: not wanted.isdisjoint(entry)
    levels = _levels(operand)
    return lambda entry: any(_levels(v)[: len(levels)] == levels for v in entry)


class ItemFields:
    """The attribute columns of a runtime's rows ``0..rows-1``; grown by ``append`` as items are added."""

    def __init__(self, columns: dict[str, Column], rows: int) -> None:
        self.columns, self.rows = columns, rows
        self.added: dict[str, dict[str, Any]] = {}  # item id -> attributes it was added with
        self._vocab_cache: dict[tuple[str, Tests], BoolArray] = {}

    @property
    def kinds(self) -> dict[str, Kind]:
        return {name: column.kind for name, column in self.columns.items()}

    def check(self, where: Filter) -> dict[str, Tests]:
        """The filter as tests per field; ``RequestError`` 422 naming an unknown field or a misfit condition."""
        checked = {}
        for name, condition in where.items():
            column = self.columns.get(name)
            if column is None:
                known = ", ".join(sorted(self.columns)) or "none"
                raise RequestError(422, f"filter.{name}: unknown field {name!r} (fields: {known})")
            tests = tests_of(condition)
            for test, operand in tests:
                if test not in _ALLOWED[column.kind]:
                    raise RequestError(
                        422,
                        f"filter.{name}: {test!r} does not apply to {column.kind} field {name!r}",
                    )
                if test == "eq" and _kind_of(operand) != column.kind:
                    raise RequestError(
                        422,
                        f"filter.{name}: {column.kind} field {name!r} compared with {operand!r}",
                    )
            checked[name] = tests
        return checked

    def normalize_new(self, item_id: str, attributes: Mapping[str, Any]) -> dict[str, Any]:
        """An added item's attributes as its columns hold them, as JSON values (text: a list of strings, absent
        ones left out); 422 naming a value that does not fit its field. Names the columns lack are new fields, of
        the kind their value has."""
        out: dict[str, Any] = {}
        for name, raw in attributes.items():
            column = self.columns.get(name)
            kind = column.kind if column is not None else _kind_of_raw(raw)
            try:
                value = normalize(kind, raw)
            except ValueError as exc:
                raise RequestError(422, f"item {item_id!r} field {name!r} ({kind}): {exc}") from exc
            if value is not None:
                out[name] = list(value) if isinstance(value, tuple) else value
        return out

    def append(self, item_ids: Sequence[str], attributes: Sequence[Mapping[str, Any]]) -> None:
        """Rows for items added at the end (one per id, in order), with their normalized attributes.

        A value that does not fit its field (written by another pod that saw a different kind first) is
        left absent."""
        self.rows += len(item_ids)
        names = {name for attrs in attributes for name in attrs}
        columns = dict(self.columns)
        for name in sorted(names - columns.keys()):
            first = next(a[name] for a in attributes if name in a)
            columns[name] = Column(_kind_of_raw(first), np.zeros(0))
            columns[name].extend([], 0)  # the empty array of its kind
        self.columns = columns  # a new dict: ``check`` on the event loop never sees one change size
        for name, column in self.columns.items():
            column.extend([_fit(column.kind, a.get(name)) for a in attributes], self.rows)
        for item_id, attrs in zip(item_ids, attributes, strict=True):
            self.added[item_id] = dict(attrs)

    def mask(self, checked: Mapping[str, Tests], rows: int) -> BoolArray:
        """(rows,) True where an item passes every field's tests (rows past the columns' end: False)."""
        passing = np.zeros(rows, dtype=bool)
        passing[: min(rows, self.rows)] = True
        for name, tests in checked.items():
            column = self.columns[name]
            values = column.values[: min(rows, len(column))]
            passing[: len(values)] &= self._field_mask(name, column, values, tests)
            passing[len(values) :] = False
        return passing

    def _field_mask(self, name: str, column: Column, values: Any, tests: Tests) -> BoolArray:
        if column.kind == "bool":
            return np.asarray(values == int(tests[0][1]), dtype=bool)
        if column.kind == "number":
            out = np.ones(len(values), dtype=bool)
            for test, operand in tests:
                out &= _compare(values, test, float(operand))
            return out
        per_entry = self._vocabulary_mask(name, column, tests)
        passing: BoolArray = np.append(per_entry, False)[
            values
        ]  # code -1 (no value): the appended False
        return passing

    def _vocabulary_mask(self, name: str, column: Column, tests: Tests) -> BoolArray:
        """Which vocabulary entries pass (cached; extended when the vocabulary has grown)."""
        key = (name, tests)
        cached = self._vocab_cache.get(key, np.zeros(0, dtype=bool))
        vocabulary = column.vocabulary
        if len(cached) < len(vocabulary):
            predicates = [_text_test(test, operand) for test, operand in tests]
            fresh = [all(p(e) for p in predicates) for e in vocabulary[len(cached) :]]
            cached = np.concatenate([cached, np.asarray(fresh, dtype=bool)])
            if len(self._vocab_cache) >= CACHE_SIZE:
                self._vocab_cache.clear()
            self._vocab_cache[key] = cached
        return cached[: len(vocabulary)]


def _compare(values: Any, test: str, operand: float) -> BoolArray:
    """NaN (no value) fails every comparison."""
    ops = {"eq": np.equal, "gte": np.greater_equal, "gt": np.greater, "lte": np.less_equal}
    return np.asarray(ops.get(test, np.less)(values, operand))


def _kind_of_raw(value: Any) -> Kind:
    """The kind a new field's first value gives it (lists and strings: text)."""
    return "text" if isinstance(value, list | tuple) else _kind_of(value)


def _fit(kind: Kind, value: Any) -> Value:
    """``value`` (stored normalized: a JSON list for text) for a column of ``kind``; None if it does not fit."""
    try:
        return normalize(kind, value)
    except ValueError:
        return None
