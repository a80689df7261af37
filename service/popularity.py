"""The popularity fallback: the answer for a history with no known item, from training counts blended with events.

Every ``POST /events`` call adds its events to a decayed count per item in the store, in the same transaction as the
events (``service.decay``). Each replica reads the top ``RECSYS_POPULARITY_ITEMS`` of it every
``RECSYS_COLD_SYNC_SECONDS`` (``sync``), never on the request path, and ranks every item of the runtime by

    score = (1 - w) * training_count / all_training_counts + w * decayed_events / all_decayed_events

with ``w = RECSYS_POPULARITY_BLEND``: a blend of two shares, so scores lie in [0, 1]. An item added after training
has no training count and rises through its events alone. When the store cannot be read the recent part is dropped
and the fallback ranks by the training counts, until a read succeeds.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from core.arrays import IntArray
from service.decay import PopularityUpdate, update_for
from service.errors import StoreUnavailableError
from service.filtered import allowed_rows
from service.filters import Tests
from service.runtime import ModelRuntime, Query
from service.schemas import RecommendResponse, ScoredItem
from service.settings import Settings
from service.store import Event, HistoryStore

__all__ = ["Popularity", "Ranking", "rank"]

logger = logging.getLogger(__name__)
# the store keeps this many times the items a replica reads, so an item just below the top keeps its count
KEPT_PER_READ = 10


@dataclass(frozen=True)
class Ranking:
    """Blended scores of a runtime's rows (at the size it had) from ``shares``, and the rows in descending order."""

    shares: dict[str, float]
    scores: NDArray[np.float64]  # (rows,)
    order: IntArray  # (rows,) stable: ties keep the training order, then row order


def rank(rt: ModelRuntime, shares: dict[str, float], blend: float) -> Ranking:
    """Every row of ``rt`` scored by the blend of its training count share and its recent events' share."""
    counts = rt.popularity_of(np.arange(rt.size, dtype=np.int64)).astype(np.float64)
    total = counts.sum()
    scores = (1.0 - blend) * counts / total if total > 0 else np.zeros(rt.size)
    for item, share in shares.items():
        row = rt.row_of.get(item)
        if row is not None and row < len(scores):
            scores[row] += blend * share
    # ties (every item without count or event) in training popularity order, then row order
    trained = np.full(len(scores), len(rt.popular_rows), dtype=np.int64)
    trained[rt.popular_rows] = np.arange(len(rt.popular_rows))
    order = np.lexsort((trained, -scores)).astype(np.int64)
    return Ranking(shares, scores, order)


class Popularity:
    """This replica's view of popularity: the shares last read from the store and the ranking they give."""

    def __init__(
        self, store: HistoryStore, settings: Settings, clock: Callable[[], float] = time.time
    ) -> None:
        self.store, self.clock = store, clock
        self.half_life = settings.popularity_half_life_seconds
        self.blend, self.items = settings.popularity_blend, settings.popularity_items
        # item id -> its share of the decayed events, for the top items last read
        self.shares: dict[str, float] = {}
        # per runtime: a version being loaded is ranked before it serves; the one it replaces keeps its own
        self._rankings: weakref.WeakKeyDictionary[ModelRuntime, Ranking] = (
            weakref.WeakKeyDictionary()
        )

    def update(self, events: Sequence[Event]) -> PopularityUpdate:
        """What ``events`` add to the store's decayed counts (written with them, in one transaction)."""
        pairs = ((e.item_id, e.timestamp) for e in events)
        return update_for(pairs, self.clock(), self.half_life, self.items * KEPT_PER_READ)

    async def sync(self, rt: ModelRuntime | None) -> None:
        """Read the top of the decayed counts and rank ``rt`` on its worker thread; never raises a store fault."""
        try:
            shares = (await self.store.read_popular(self.items)).shares()
        except StoreUnavailableError as exc:
            if self.shares:
                logger.warning("recent popularity unavailable, ranking by training counts: %s", exc)
            shares = {}
        self.shares = shares
        if rt is not None and not self._current(rt):
            self._rankings[rt] = await rt.run(rank, rt, shares, self.blend)

    def _current(self, rt: ModelRuntime) -> bool:
        """Whether ``rt``'s ranking is from the shares last read, at ``rt``'s present size."""
        r = self._rankings.get(rt)
        return r is not None and r.shares == self.shares and len(r.scores) == rt.size

    def ranking(self, rt: ModelRuntime) -> Ranking:
        """The ranking of ``rt`` as of the last sync (computed here if ``rt`` has none yet)."""
        current = self._rankings.get(rt)
        if current is None:
            current = self._rankings[rt] = rank(rt, self.shares, self.blend)
        return current

    def top(
        self,
        rt: ModelRuntime,
        k: int,
        exclude: frozenset[int],
        where: Mapping[str, Tests] | None = None,
    ) -> tuple[IntArray, list[float]]:
        """The k best-ranked rows that pass ``where``, neither excluded, hidden nor replaced, and their scores."""
        ranking = self.ranking(rt)
        if where is not None:
            allowed = allowed_rows(rt, where, exclude)
            order = ranking.order[ranking.order < len(allowed)]
            passing = order[allowed[order]][:k].tolist()
            return np.asarray(passing, dtype=np.int64), ranking.scores[passing].tolist()
        hidden, dead = rt.hidden_rows, rt.dead_rows
        head = ranking.order[: k + len(exclude) + len(hidden) + len(dead)].tolist()
        rows = [r for r in head if r not in exclude and r not in hidden and r not in dead][:k]
        return np.asarray(rows, dtype=np.int64), ranking.scores[rows].tolist()

    def scores_of(self, rt: ModelRuntime, rows: IntArray) -> NDArray[np.float64]:
        """Blended scores of rows (0 for rows < 0 and for rows added since the ranking)."""
        scores = self.ranking(rt).scores
        known = (rows >= 0) & (rows < len(scores))
        out = np.zeros(len(rows))
        out[known] = scores[rows[known]]
        return out

    def answer(
        self, rt: ModelRuntime, query: Query, unknown: list[str], degraded: bool
    ) -> RecommendResponse:
        """The /recommend answer for a query with no known history item."""
        rows, scores = self.top(rt, query.k, query.exclude, query.where)
        items = [
            ScoredItem(item_id=rt.item_id(r), score=v)
            for r, v in zip(rows.tolist(), scores, strict=True)
        ]
        return RecommendResponse(
            items=items,
            model_version=rt.version,
            source="popular",
            unknown_items=unknown,
            degraded=degraded,
            filtered_short=query.where is not None and len(items) < query.k,
        )
