"""Offline remedies for AlphaFuse's cold items under the ``cold_items`` protocol, and a trained model's cold metrics.

Every remedy keeps the rule "a new item's embedding comes from its text alone":

- ``remedy_expected_id`` (`expected_id_scorer`): each cold row gets the trained items' mean ID part.
- ``remedy_id_regression`` (`id_regression_scorer`): each cold row gets the ID part its text predicts (ridge map).
- ``remedy_semantic_query`` (`semantic_query_scorer`): no item changes; the *query* gains a content term from the
  history's language coordinates (`training.models.semantic_query`), so every item is still one inner product with
  its row.

`cold_item_metrics` reports them beside the plain figures. The semantic query (`training.models.semantic_query`) can be
served: ``recsys export --semantic-query-beta B`` folds it into the ONNX user encoder; the other two are offline only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from core.id_map import IdMap, fit_id_map, predict_id
from training.items.embeddings import (
    AlphaFuseEmbedding,
    alphafuse_with_null_space,
    has_null_space,
    has_semantic_query,
)
from training.models.recommender import Recommender, table_scorer
from training.models.semantic_query import LAST_N, semantic_query_scorer
from training.protocols.cold_items.metrics import ScoreFn, evaluate_cold_items
from training.protocols.cold_items.split import ColdItemSplit

__all__ = [
    "REMEDY_KEYS",
    "cold_item_metrics",
    "expected_id_scorer",
    "fit_item_id_map",
    "id_regression_scorer",
    "id_regression_table",
]


def expected_id_scorer(model: Recommender, split: ColdItemSplit) -> ScoreFn:
    """AlphaFuse with the remedy "expected ID part": each cold row gets the mean ID part of the trained items.

    A cold item's ID part is unknown, not zero; its expectation over the items that were trained (rows whose ID part
    received gradient) is the same for every new item, so the item-specific part still comes from its text alone.
    Under a dot-product ranker this restores the average offset (and norm) that trained items carry in the null
    space, which the zero ID part lacks. Offline only: the served artifact still adds cold items with ID part zero.

    Raises:
        ValueError: the model is not AlphaFuse with a null space.
    """
    items = alphafuse_with_null_space(model.items, "the expected-ID remedy")
    with torch.no_grad():
        trained = items.id_keep[: items.num_items].bool()  # (N,)
        ids = items.id_table()  # (N, d_n)
        mean_id = ids[trained].mean(0)  # (d_n,)
        table = items.table().detach().clone()  # (N, d)
        cold = torch.from_numpy(split.cold_mask()).to(table.device)  # (N,)
        table[cold, items.semantic_dim :] += mean_id
    return table_scorer(model, table)


def fit_item_id_map(items: AlphaFuseEmbedding, seed: int = 0) -> IdMap:
    """`core.id_map.fit_id_map` from the trained rows' language coordinates (all d) to their ID parts (d_n).

    Trained rows are those whose ID part may receive gradient (``id_keep``); held-out items never enter the fit.
    """
    with torch.no_grad():
        trained = items.id_keep[: items.num_items].bool().cpu().numpy()  # (N,)
        language = items.language_rows().double().cpu().numpy()  # (N, d)
        ids = items.id_table().double().cpu().numpy()  # (N, d_n)
    return fit_id_map(language[trained], ids[trained], seed=seed)


def id_regression_table(
    model: Recommender, split: ColdItemSplit, seed: int = 0
) -> tuple[torch.Tensor, IdMap]:
    """AlphaFuse's item table with the remedy "predicted ID part": each cold row gets the ID part its text predicts.

    A ridge regression (`fit_item_id_map`) maps a trained item's language coordinates to its learned ID part; a
    cold item's ID part is that map applied to its own language coordinates, so its embedding still comes from its
    text alone (`core.alphafuse.cold_start` with the map). Warm rows keep their trained ID parts bit for bit; only
    the cold rows change.

    Returns:
        The (N, d) table and the fitted map (its held-out R^2 says how much of the ID part text explains).

    Raises:
        ValueError: the model is not AlphaFuse with a null space.
    """
    items = alphafuse_with_null_space(model.items, "the ID-regression remedy")
    id_map = fit_item_id_map(items, seed)
    with torch.no_grad():
        table = items.table().detach().clone()  # (N, d)
        cold = torch.from_numpy(split.cold_items).to(table.device)  # (C,)
        language = items.language_rows(cold).double().cpu().numpy()  # (C, d)
        predicted = torch.from_numpy(predict_id(language, id_map)).to(table)  # (C, d_n)
        table[cold, items.semantic_dim :] += predicted
    return table, id_map


def id_regression_scorer(
    model: Recommender, split: ColdItemSplit, seed: int = 0
) -> tuple[ScoreFn, IdMap]:
    """Score with `id_regression_table` (offline form of serving cold items with the map)."""
    table, id_map = id_regression_table(model, split, seed)
    return table_scorer(model, table), id_map


REMEDY_KEYS = ("cold", "warm", "ratio", "surface_rate", "cold_slot_share", "target_score_z")


def cold_item_metrics(
    model: Recommender,
    split: ColdItemSplit,
    score_fn: ScoreFn,
    batch_size: int,
    *,
    betas: Sequence[float],
    remedies: bool = True,
) -> dict[str, Any]:
    """`evaluate_cold_items` of a trained model; AlphaFuse also gets the offline remedies (unless ``remedies``
    is False).

    ``remedy_expected_id`` (`expected_id_scorer`) and ``remedy_id_regression`` (`id_regression_scorer`, with the
    map's ``ridge``, ``heldout_r2`` and ``fit_items``): cold and warm figures, ratio, surface rate, cold slot share
    and the target-score quartiles of the model with cold rows changed by the remedy. ``remedy_semantic_query``
    (`semantic_query_scorer`): a list, one entry per ``beta`` in ``betas`` (with ``beta`` and
    ``last_n``), of the same figures with every row unchanged and the query given the content term.
    """
    result = evaluate_cold_items(score_fn, split, batch_size)
    items = model.items

    def figures(scorer: ScoreFn) -> dict[str, Any]:
        remedy = evaluate_cold_items(scorer, split, batch_size)
        return {k: remedy[k] for k in REMEDY_KEYS}

    if remedies and has_null_space(items):
        result["remedy_expected_id"] = figures(expected_id_scorer(model, split))
        scorer, id_map = id_regression_scorer(model, split)
        result["remedy_id_regression"] = {
            **figures(scorer),
            "id_map": {
                "ridge": id_map.ridge,
                "heldout_r2": id_map.heldout_r2,
                "fit_items": int(items.id_keep[: items.num_items].sum().item()),
            },
        }
    if remedies and has_semantic_query(items):
        result["remedy_semantic_query"] = [
            {"beta": beta, "last_n": LAST_N, **figures(semantic_query_scorer(model, beta))}
            for beta in betas
        ]
    return result
