"""The filtered rows of the serving benchmark (``serve_load.py``): request bodies whose filter passes 1%, 10% and
50% of the grown catalogue, and ``/similar`` unfiltered and at 10%.

Every item the benchmark adds through ``POST /items`` gets a number attribute ``shard`` (item ``new-i``: ``i % 1000``);
a filter ``{"shard": {"lt": b}}`` passes the added items of the first ``b`` shards, which ``shard_bound`` picks so
that they make the asked share of the whole catalogue (trained items have no shard and never pass).
"""

from __future__ import annotations

from typing import Any

__all__ = ["SELECTIVITIES", "SHARDS", "filtered_rows", "new_item_attributes", "shard_bound"]

SHARDS = 1000
SELECTIVITIES = (0.01, 0.10, 0.50)


def new_item_attributes(i: int) -> dict[str, Any]:
    """The attributes of added item ``new-i``."""
    return {"shard": i % SHARDS}


def shard_bound(selectivity: float, total: int, added: int) -> int:
    """The number of shards whose added items make ``selectivity`` of ``total`` items (ValueError if they cannot)."""
    bound = round(selectivity * total * SHARDS / max(1, added))
    if not 1 <= bound <= SHARDS:
        raise ValueError(f"{added} added items cannot make {selectivity:.0%} of {total}")
    return bound


def _passing(bound: int, added: int) -> int:
    full, rest = divmod(added, SHARDS)
    return full * bound + min(rest, bound)


def filtered_rows(
    users: list[str], item_ids: list[str], total: int, added: int
) -> list[dict[str, Any]]:
    """One entry per row: ``label``, ``path``, ``selectivity`` (measured share that passes), ``bodies``."""
    rows = []
    for share in SELECTIVITIES:
        bound = shard_bound(share, total, added)
        where = {"shard": {"lt": bound}}
        rows.append(
            {
                "label": f"recommend filter {share:.0%}",
                "path": "/recommend",
                "selectivity": _passing(bound, added) / total,
                "bodies": [{"user_id": u, "k": 10, "filter": where} for u in users],
            }
        )
    bound = shard_bound(0.10, total, added)
    for label, extra in [
        ("similar", {}),
        ("similar filter 10%", {"filter": {"shard": {"lt": bound}}}),
    ]:
        rows.append(
            {
                "label": label,
                "path": "/similar",
                "selectivity": _passing(bound, added) / total if extra else 1.0,
                "bodies": [{"item_id": i, "k": 10, **extra} for i in item_ids],
            }
        )
    return rows
