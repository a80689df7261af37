"""Catalogue control: hidden items (``POST /items/hide`` and ``/items/restore``) and ``POST /similar``.

The hidden set is persisted in the store (``<prefix>:hidden``, item id -> unix seconds hidden until) before it is
applied; every pod reads it when it loads a version and on the added items' sync interval. It is applied as the
runtime's ``hidden_rows``, which its search and popularity fallback leave out.
"""

from __future__ import annotations

import logging
import time

from service.errors import RequestError, StoreUnavailableError, check_limit
from service.metrics import ServiceMetrics
from service.runtime import ModelRuntime
from service.schemas import Filter, HiddenResponse, ScoredItem, SimilarResponse
from service.store import HistoryStore

__all__ = ["HiddenItems", "hidden_among", "similar"]

logger = logging.getLogger(__name__)
NEVER = float("inf")


class HiddenItems:
    """The hidden set as last read or written by this pod, and its application to a runtime."""

    def __init__(self, store: HistoryStore, metrics: ServiceMetrics, max_ids: int) -> None:
        self.store, self.metrics, self.max_ids = store, metrics, max_ids
        self.until: dict[
            str, float
        ] = {}  # item_id -> unix seconds hidden until (NEVER: until restored)
        self._expiry = NEVER  # the next time an entry of ``until`` stops hiding its item

    async def hide(self, rt: ModelRuntime, ids: list[str], until: float | None) -> HiddenResponse:
        """Persist, then apply to ``rt``; unknown ids answer 404 and change nothing."""
        check_limit("item_ids", len(ids), self.max_ids)
        unknown = [i for i in ids if i not in rt.row_of]
        if unknown:
            raise RequestError(404, f"unknown item ids: {unknown[:10]}")
        ids = list(dict.fromkeys(ids))
        entries = dict.fromkeys(ids, NEVER if until is None else float(until))
        await self.store.hide_items(entries)
        self.until.update(entries)
        return HiddenResponse(item_ids=ids, hidden_items=self.apply(rt))

    async def restore(self, rt: ModelRuntime, ids: list[str]) -> HiddenResponse:
        """Persist, then apply; ids that are not hidden are accepted and left as they are."""
        check_limit("item_ids", len(ids), self.max_ids)
        unknown = [i for i in ids if i not in rt.row_of and i not in self.until]
        if unknown:
            raise RequestError(404, f"unknown item ids: {unknown[:10]}")
        ids = list(dict.fromkeys(ids))
        await self.store.restore_items(ids)
        for i in ids:
            self.until.pop(i, None)
        return HiddenResponse(item_ids=ids, hidden_items=self.apply(rt))

    async def sync(self, rt: ModelRuntime | None) -> None:
        """Read the set other pods wrote (``StoreUnavailableError`` if the store fails), and apply it."""
        self.until = await self.store.load_hidden()
        self.apply(rt)

    async def load_into(self, rt: ModelRuntime) -> None:
        """The set, into a runtime being loaded; if the store fails, the last one read (synced later)."""
        try:
            self.until = await self.store.load_hidden()
        except StoreUnavailableError as exc:
            logger.warning("%s starts with the last hidden set read: %s", rt.version, exc)
        self.apply(rt)

    def apply(self, rt: ModelRuntime | None) -> int:
        """Set ``rt.hidden_rows`` from the set as of now; the number of items hidden now."""
        now = time.time()
        active = [i for i, until in self.until.items() if until > now]
        self._expiry = min((u for u in self.until.values() if u > now), default=NEVER)
        if rt is not None:
            rows = (rt.row_of.get(i) for i in active)
            rt.hidden_rows = frozenset(r for r in rows if r is not None)
        self.metrics.hidden_items.set(len(active))
        return len(active)

    def expire(self, rt: ModelRuntime) -> None:
        """Items whose ``hidden_until`` has passed are recommended again from the first request after it."""
        if time.time() >= self._expiry:
            self.apply(rt)


def hidden_among(rt: ModelRuntime, item_ids: list[str], rows: list[int]) -> list[str]:
    """The ids of ``item_ids`` (at ``rows``, -1 for unknown) that are hidden now."""
    hidden = rt.hidden_rows
    return [i for i, r in zip(item_ids, rows, strict=True) if r in hidden]


async def similar(
    rt: ModelRuntime, item_id: str, k: int, where: Filter | None = None
) -> SimilarResponse:
    """The k items nearest to ``item_id``'s fused embedding that pass ``where``; 404 for an id ``rt`` does not
    know, 422 for a filter that names an unknown field or misfits one."""
    row = rt.row_of.get(item_id)
    if row is None:
        raise RequestError(404, f"unknown item_id: {item_id!r}")
    checked = None if where is None else rt.fields.check(where)
    found, scores = await rt.run(rt.similar, row, k, checked)
    items = [
        ScoredItem(item_id=rt.item_id(r), score=v)
        for r, v in zip(found.tolist(), scores.tolist(), strict=True)
    ]
    short = checked is not None and len(items) < k
    return SimilarResponse(items=items, model_version=rt.version, filtered_short=short)
