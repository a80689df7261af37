"""Exponentially decayed event counts, kept in log space: what ``POST /events`` adds to the store's popularity set.

An event at unix time ``t`` adds the weight ``e^(t/tau)`` to its item (``tau = half-life / ln 2``), and the store keeps
the natural log of each item's sum, and of the sum over all items. Newer events weigh more, by a factor of 2 per
half-life, so the share of an item in the total, ``exp(log_count - log_total)``, is its share of the recent events
with older ones decayed; it does not depend on the time it is read, so nothing is ever rewritten to decay. The logs
grow by one per ``tau`` seconds and never overflow (a plain weight ``e^(t/tau)`` would, within a few years).

The Redis side is one Lua script (``INCREMENT_SCRIPT``) run in the MULTI/EXEC of the events it counts; the
in-process store applies the same arithmetic with ``log_add``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["INCREMENT_SCRIPT", "DecayedCounts", "PopularityUpdate", "log_add", "update_for"]


def log_add(log_a: float | None, log_b: float) -> float:
    """``log(e^a + e^b)`` without overflow (``log_a`` None: nothing yet, so ``log_b``)."""
    if log_a is None:
        return log_b
    return max(log_a, log_b) + math.log1p(math.exp(-abs(log_a - log_b)))


@dataclass(frozen=True)
class PopularityUpdate:
    """What one ``POST /events`` call adds: item id -> log of its events' summed weights; the set's size cap."""

    log_weights: dict[str, float]
    max_items: int


def update_for(
    events: Iterable[tuple[str, float | None]], now: float, half_life: float, max_items: int
) -> PopularityUpdate:
    """The update for ``(item_id, unix seconds or None)`` events; None and times after ``now`` count as ``now``."""
    tau = half_life / math.log(2)
    weights: dict[str, float] = {}
    for item, ts in events:
        weights[item] = log_add(weights.get(item), min(now if ts is None else ts, now) / tau)
    return PopularityUpdate(weights, max_items)


@dataclass(frozen=True)
class DecayedCounts:
    """The top of the popularity set as read: (item id, log decayed count), most popular first, and the log total."""

    items: list[tuple[str, float]]
    log_total: float | None

    def shares(self) -> dict[str, float]:
        """item id -> its share of all decayed event counts (empty before any event)."""
        if self.log_total is None:
            return {}
        return {item: math.exp(log_count - self.log_total) for item, log_count in self.items}


# KEYS[1]: sorted set item -> log decayed count; KEYS[2]: log decayed total; ARGV[1]: most items kept (the least
# popular are dropped), then item, log weight pairs. Scores are written with 17 significant digits (exact doubles).
INCREMENT_SCRIPT = """
local function add(old, w)
  if not old then return w end
  local a = tonumber(old)
  return math.max(a, w) + math.log(1 + math.exp(-math.abs(a - w)))
end
local total = redis.call('GET', KEYS[2])
for i = 2, #ARGV, 2 do
  local w = tonumber(ARGV[i + 1])
  local s = add(redis.call('ZSCORE', KEYS[1], ARGV[i]), w)
  redis.call('ZADD', KEYS[1], string.format('%.17g', s), ARGV[i])
  total = add(total, w)
end
redis.call('SET', KEYS[2], string.format('%.17g', total))
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[1])
if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1) end
return 0
"""
