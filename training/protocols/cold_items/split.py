"""The ``cold_items`` protocol: a share of the catalogue is held out of training and measured as new items.

Protocol (issue 7, ``data.protocol = "cold_items"``):

1. Cold items: ``round(cold_share * M)`` of the M items that have at least one interaction, chosen with
   ``np.random.default_rng(split_seed)``: ``random`` draws them uniformly; ``newest`` takes the items whose first
   interaction is latest (timestamps from the interaction file; ties broken by the seeded shuffle). Data without
   timestamps (P5, DreamRec layouts) cannot use ``newest``.
2. Every interaction with a cold item is deleted from every sequence; ordinary leave-one-out then runs on these warm
   sequences: training, validation and the *warm* test cases (each user's last warm item) never contain a cold item.
   The trainer gets the cold rows as `ColdItemSplit.cold_items`: they are left out of sampled negatives and of the
   full softmax (`negative_pool`, `loss_exclusion`), and the AlphaFuse basis / LLMInit projection is fitted on the
   warm items' text only (`warm_rows`). So a cold item receives no gradient at all.
3. *Cold* test cases: for every user whose full sequence has a cold item at position p >= 1 (p = the position of the
   user's first cold item), one case with history ``seq[:p]`` (the last L items as the window, all of them masked)
   and target ``seq[p]``.
4. Both case sets are ranked against the whole catalogue (warm + cold, N items), history masked (`evaluate_cold_items`).

The offline AlphaFuse remedies and a trained model's cold-item metrics (`cold_item_metrics`) are in
`training.protocols.cold_items.remedies`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray

from core.arrays import Float64Array, IntArray
from training.data.dataset import Examples, SequenceDataset, Split
from training.data.readers import DataSource
from training.data.splits import leave_one_out, window_examples
from training.evaluation import evaluate as ev

__all__ = [
    "COLD_KS",
    "HELD_OUT_FILE",
    "ColdItemSplit",
    "cold_item_split",
    "evaluate_cold_items",
    "first_interaction_times",
    "held_out_ids",
    "loss_exclusion",
    "make_cold_item_split",
    "negative_pool",
    "pick_cold_items",
    "warm_rows",
]

logger = logging.getLogger(__name__)

ColdPick = Literal["random", "newest"]
ScoreFn = Callable[[IntArray], torch.Tensor]  # (B, L) histories -> (B, N) scores

COLD_KS: tuple[int, ...] = (10, 20)
HELD_OUT_FILE = (
    "held_out_items.json"  # in a run directory: ids of the cold items (the exporter drops them)
)
SURFACE_K = 10


@dataclass(frozen=True, eq=False)
class ColdItemSplit(Split):
    """A leave-one-out split of the warm sequences plus the held-out items and their test cases.

    Attributes:
        cold_items: (C,) sorted item rows held out of training (never in ``train``/``valid``/``test``).
        cold_test: one case per user with a cold item at position >= 1 (module docstring, step 3).
    """

    cold_items: IntArray
    cold_test: Examples

    def cold_mask(self) -> NDArray[np.bool_]:
        """(N,) True for the held-out items."""
        mask = np.zeros(self.num_items, dtype=bool)
        mask[self.cold_items] = True
        return mask


def first_interaction_times(source: DataSource, ds: SequenceDataset) -> Float64Array:
    """(N,) earliest timestamp of each catalogue row of ``ds`` in the source's interaction file (NaN: none).

    Reads the interactions again (``SequenceDataset`` keeps only each user's order). Supported: ``recbole`` (a
    ``timestamp`` field in ``.inter``) and ``canonical`` (a ``timestamp`` column); ``min_rating`` is applied as
    the reader does.

    Raises:
        ValueError: the format or the file has no timestamps.
    """
    if source.format == "recbole":
        path = source.path
        inter = path if path.is_file() else path / f"{path.name}.inter"
        if not inter.is_file():
            found = sorted(path.glob("*.inter")) if path.is_dir() else []
            if len(found) != 1:
                raise ValueError(f"{path}: expected one <name>.inter file for the timestamps")
            inter = found[0]
        frame = pd.read_csv(inter, sep="\t", dtype=str)
        frame.columns = [str(c).partition(":")[0] for c in frame.columns]
    elif source.format == "canonical":
        suffix = source.path.suffix.lower()
        if suffix == ".parquet":
            frame = pd.read_parquet(source.path).astype(str)
        else:
            frame = pd.read_csv(source.path, sep="\t" if suffix == ".tsv" else ",", dtype=str)
        inter = source.path
    else:
        raise ValueError(
            f"cold_pick='newest' needs interaction timestamps; format {source.format!r} keeps only each "
            "user's order (use cold_pick='random')"
        )
    if "timestamp" not in frame.columns:
        raise ValueError(f"{inter}: no timestamp column, so cold_pick='newest' is impossible")
    if source.min_rating is not None and "rating" in frame.columns:
        frame = frame[frame["rating"].astype(float) >= source.min_rating]
    stamps = pd.to_numeric(frame["timestamp"], errors="raise").to_numpy(np.float64)
    row_of = {item: row for row, item in enumerate(ds.item_ids)}
    rows = frame["item_id"].map(row_of)
    known = rows.notna().to_numpy()
    times = np.full(ds.num_items, np.inf)
    np.minimum.at(times, rows[known].to_numpy(np.int64), stamps[known])
    times[np.isinf(times)] = np.nan
    return times


def pick_cold_items(
    ds: SequenceDataset,
    share: float,
    pick: ColdPick,
    seed: int,
    first_times: Float64Array | None = None,
) -> IntArray:
    """The held-out item rows: ``round(share * M)`` of the M items with at least one interaction.

    Args:
        ds: the (filtered) dataset.
        share: fraction in (0, 1).
        pick: ``random`` (uniform, seeded) or ``newest`` (latest first interaction; seeded tie-break).
        seed: the seed of the draw / the tie-break.
        first_times: (N,) first-interaction time per row; required for ``newest``.

    Returns:
        (C,) sorted item rows, C >= 1.
    """
    if not 0.0 < share < 1.0:
        raise ValueError(f"cold_share must be in (0, 1), got {share}")
    candidates = np.flatnonzero(ds.item_interaction_counts() > 0).astype(np.int64)  # (M,)
    count = round(share * len(candidates))
    if count < 1 or count >= len(candidates):
        raise ValueError(
            f"{ds.name}: cold_share={share} of {len(candidates)} interacted items leaves {count} cold items"
        )
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(candidates)  # (M,)
    if pick == "random":
        chosen = shuffled[:count]
    elif pick == "newest":
        if first_times is None or first_times.shape != (ds.num_items,):
            raise ValueError("cold_pick='newest' needs first_times of shape (N,)")
        times = first_times[shuffled]
        if np.isnan(times).any():
            raise ValueError(
                f"{ds.name}: {int(np.isnan(times).sum())} interacted items have no timestamp"
            )
        chosen = shuffled[
            np.argsort(-times, kind="stable")[:count]
        ]  # latest first, shuffle breaks ties
    else:
        raise ValueError(f"cold_pick must be 'random' or 'newest', got {pick!r}")
    return np.sort(chosen).astype(np.int64)


def cold_item_split(ds: SequenceDataset, cold_items: IntArray, max_len: int) -> ColdItemSplit:
    """Delete ``cold_items`` from every sequence, leave-one-out on the rest, and build the cold test cases.

    Args:
        ds: the dataset, (U,) users, N items (the catalogue stays whole: cold rows keep their index).
        cold_items: (C,) item rows to hold out.
        max_len: L, the history window.
    """
    is_cold = np.zeros(ds.num_items, dtype=bool)
    is_cold[cold_items] = True
    warm = ds.select_interactions(~is_cold[ds.items])
    base = leave_one_out(warm, max_len, train_seen=False)
    cold_positions = np.flatnonzero(is_cold[ds.items])  # (nnz_cold,) ascending
    users_of = ds.interaction_users()[cold_positions]
    users, first = np.unique(users_of, return_index=True)  # each user's first cold interaction
    positions = cold_positions[first]
    starts = ds.offsets[users]
    keep = positions > starts  # cold item at position >= 1
    cold_test = window_examples(
        ds.items, starts[keep], positions[keep], users[keep].astype(np.int64), max_len, ds.num_items
    )
    logger.info(
        "%s cold items: %d of %d items held out (%d interactions); %d cold / %d warm test cases",
        ds.name, len(cold_items), ds.num_items, len(cold_positions), len(cold_test), len(base.test),
    )  # fmt: skip
    return ColdItemSplit(
        "cold_items",
        ds.num_items,
        max_len,
        base.train,
        base.valid,
        base.test,
        base.train_sequences,
        np.sort(np.asarray(cold_items, dtype=np.int64)),
        cold_test,
    )


def make_cold_item_split(
    ds: SequenceDataset,
    source: DataSource,
    *,
    share: float,
    pick: ColdPick,
    seed: int,
    max_len: int,
    tuning: bool = False,
) -> tuple[SequenceDataset, ColdItemSplit]:
    """`pick_cold_items` (timestamps read once, for ``newest``) then `cold_item_split`.

    ``tuning`` (``data.cold_tuning``): first remove the items these settings would hold out, rows and
    interactions (the catalogue before they existed), then split what is left with the same settings
    (``newest``: the newest of what is left, a time-shifted split), so settings can be chosen without ever
    seeing the test's cold items.

    Returns:
        the dataset that was split (``tuning``: without the test's cold items) and its split.
    """
    times = first_interaction_times(source, ds) if pick == "newest" else None
    if tuning:
        keep = np.ones(ds.num_items, dtype=bool)
        keep[pick_cold_items(ds, share, pick, seed, times)] = False
        logger.info(
            "%s tuning split: %d test cold items removed from the catalogue", ds.name, (~keep).sum()
        )
        ds = ds.select_items(keep)
        times = None if times is None else times[keep]  # an item's first time is its own
    return ds, cold_item_split(ds, pick_cold_items(ds, share, pick, seed, times), max_len)


# ---- what the trainer may touch ----


def warm_rows(split: Split) -> IntArray | None:
    """Item rows whose text may be used to fit the basis / LLMInit projection; None = every row."""
    if not isinstance(split, ColdItemSplit):
        return None
    return np.flatnonzero(~split.cold_mask()).astype(np.int64)


def negative_pool(split: Split) -> torch.Tensor | None:
    """(P,) int64 items that sampled negatives are drawn from; None = all N items."""
    rows = warm_rows(split)
    return None if rows is None else torch.from_numpy(rows)


def loss_exclusion(split: Split) -> torch.Tensor | None:
    """(N,) bool items the full-softmax loss leaves out (the cold items); None = none."""
    if not isinstance(split, ColdItemSplit):
        return None
    return torch.from_numpy(split.cold_mask())


# ---- metrics ----


@dataclass(frozen=True)
class _CaseStats:
    ranks: IntArray  # (n,) rank among all non-masked items
    ranks_same_kind: (
        IntArray  # (n,) rank among non-masked items of the target's kind (cold or warm)
    )
    target_z: Float64Array  # (n,) (target score - mean) / std over the catalogue
    surfaced: NDArray[np.bool_]  # (n,) top-SURFACE_K list holds at least one cold item
    cold_slots: Float64Array  # (n,) share of the top-SURFACE_K slots taken by cold items


@torch.no_grad()
def _case_stats(
    score_fn: ScoreFn, examples: Examples, cold: torch.Tensor, batch_size: int
) -> _CaseStats:
    num_items = len(cold)
    parts: list[list[NDArray[Any]]] = []
    for start in range(0, len(examples), batch_size):
        rows = slice(start, min(start + batch_size, len(examples)))
        scores = score_fn(examples.histories[rows]).float()  # (B, N)
        targets = torch.from_numpy(examples.targets[rows]).to(scores.device)  # (B,)
        masked = ev.history_mask(
            examples.seen_offsets, examples.seen_items, rows, num_items, scores.device
        )  # (B, N)
        masked.scatter_(1, targets[:, None], False)  # the target always competes
        target_cold = cold.to(scores.device)[targets]  # (B,)
        other_kind = cold.to(scores.device)[None, :] != target_cold[:, None]  # (B, N)
        ranks = ev.target_ranks(scores, targets, masked)
        same_kind = ev.target_ranks(scores, targets, masked | other_kind)
        mean, std = scores.mean(dim=1), scores.std(dim=1).clamp_min(1e-12)  # (B,)
        z = (scores.gather(1, targets[:, None]).squeeze(1) - mean) / std
        top = scores.masked_fill(masked, -torch.inf).topk(SURFACE_K, dim=1).indices  # (B, K)
        top_cold = cold.to(scores.device)[top].float()  # (B, K)
        parts.append(
            [
                ranks.cpu().numpy(),
                same_kind.cpu().numpy(),
                z.double().cpu().numpy(),
                (top_cold.sum(1) > 0).cpu().numpy(),
                top_cold.mean(1).double().cpu().numpy(),
            ]
        )
    joined = [np.concatenate(p) for p in zip(*parts, strict=True)]
    return _CaseStats(
        joined[0].astype(np.int64), joined[1].astype(np.int64), joined[2], joined[3], joined[4]
    )


def evaluate_cold_items(
    score_fn: ScoreFn, split: ColdItemSplit, batch_size: int = 1024
) -> dict[str, Any]:
    """Cold and warm figures of one scorer under the ``cold_items`` protocol (full ranking, history masked).

    Args:
        score_fn: (B, L) left-padded histories -> (B, N) scores over the whole catalogue (warm + cold).
        split: the protocol's split.
        batch_size: cases per ``score_fn`` call.

    Returns:
        ``cold`` / ``warm``: HR@K and NDCG@K (K in 10, 20) over the cold / warm test cases;
        ``ratio``: cold / warm for each of those metrics;
        ``surface_rate``: the share of warm test cases (one per user with >= 3 warm items) whose top-10 list
        (the whole catalogue ranked, that user's history excluded) contains at least one cold item;
        ``cold_slot_share``: the mean share of those top-10 slots held by cold items, next to ``cold_catalogue_share``
        (C / N, what a ranking blind to coldness would give);
        ``cold_among_cold`` / ``warm_among_warm``: the same metrics with the target ranked only against items of its
        own kind (does the model order cold items well among themselves, even where warm items bury them?);
        ``target_score_z``: median and quartiles of the target's standardized score (score minus the mean over
        the catalogue, divided by its std) for cold and for warm cases: the score-distribution check;
        ``cases``: the number of cold and warm cases.
    """
    cold = torch.from_numpy(split.cold_mask())
    cold_stats = _case_stats(score_fn, split.cold_test, cold, batch_size)
    warm_stats = _case_stats(score_fn, split.test, cold, batch_size)
    cold_m = ev.metrics_from_ranks(cold_stats.ranks, COLD_KS)
    warm_m = ev.metrics_from_ranks(warm_stats.ranks, COLD_KS)

    def quartiles(z: Float64Array) -> dict[str, float]:
        q1, q2, q3 = np.quantile(z, [0.25, 0.5, 0.75])
        return {"q25": float(q1), "median": float(q2), "q75": float(q3)}

    return {
        "cold": cold_m,
        "warm": warm_m,
        "ratio": {k: cold_m[k] / warm_m[k] if warm_m[k] > 0 else float("nan") for k in cold_m},
        "surface_rate": float(warm_stats.surfaced.mean()),
        "cold_slot_share": float(warm_stats.cold_slots.mean()),
        "cold_catalogue_share": len(split.cold_items) / split.num_items,
        "cold_among_cold": ev.metrics_from_ranks(cold_stats.ranks_same_kind, COLD_KS),
        "warm_among_warm": ev.metrics_from_ranks(warm_stats.ranks_same_kind, COLD_KS),
        "target_score_z": {
            "cold": quartiles(cold_stats.target_z),
            "warm": quartiles(warm_stats.target_z),
        },
        "cases": {"cold": len(split.cold_test), "warm": len(split.test)},
    }


def held_out_ids(split: Split, item_ids: list[str]) -> list[str] | None:
    """External ids of the held-out items (for ``held_out_items.json``); None unless ``split`` is a `ColdItemSplit`."""
    if not isinstance(split, ColdItemSplit):
        return None
    return [item_ids[i] for i in split.cold_items.tolist()]
