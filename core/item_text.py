"""How an item's catalogue fields become the one text string its language embedding is computed from.

The trainer's readers and the service's ``POST /items`` both call ``compose_item_text``, so an item added after
training is embedded from exactly the string it would have had in the training catalogue: the non-empty field
values in field order, joined with ``"; "``; a list value is joined with ``", "``; no field names.

    >>> compose_item_text(["Lip Gloss", ["Beauty", "Makeup"], None, "  "])
    'Lip Gloss; Beauty, Makeup'
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["cell_text", "compose_item_text"]


def cell_text(value: Any) -> str:
    """One field value as text: lists (and arrays) joined with ``", "``; None and NaN are empty."""
    if isinstance(value, list | tuple | np.ndarray):
        return ", ".join(text for text in map(cell_text, value) if text)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def compose_item_text(values: Iterable[Any]) -> str:
    """The ``"; "``-join of the non-empty ``cell_text`` of each value, in order."""
    return "; ".join(text for text in map(cell_text, values) if text)
