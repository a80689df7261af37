"""Study protocols beside the product path: held-out cold items and LLM-ESR's long tail.

The product path (``training.run``, ``training.models``, ``training.items``, ``training.data``) never imports this
package: a protocol reaches the trainer only through the `TrainingRules` its split carries. The experiment asks this
package for the split a config names (`make_split`) and for the figures the split's protocol adds to the test
metrics (`protocol_metrics`).
"""

from __future__ import annotations

from typing import Any

from training.config import DataConfig, ExperimentConfig
from training.data.dataset import SequenceDataset, Split
from training.data.splits import cold_start_users, given_split, leave_one_out
from training.models.recommender import Recommender, table_scorer
from training.protocols.cold_items.remedies import cold_item_metrics
from training.protocols.cold_items.split import ColdItemSplit, make_cold_item_split

__all__ = ["make_split", "protocol_metrics"]


def make_split(data: DataConfig, ds: SequenceDataset) -> tuple[SequenceDataset, Split]:
    """The split ``data.protocol`` names, and the dataset it was made from (``cold_items`` with
    ``data.cold_tuning`` removes the test's cold items from the catalogue first)."""
    if data.protocol == "leave_one_out":
        return ds, leave_one_out(ds, data.max_len, train_seen=False)
    if data.protocol == "given":
        return ds, given_split(ds, data.max_len)
    if data.protocol == "cold_items":
        return make_cold_item_split(
            ds,
            data.source,
            share=data.cold_share,
            pick=data.cold_pick,
            seed=data.split_seed,
            max_len=data.max_len,
            tuning=data.cold_tuning,
        )
    split = cold_start_users(ds, seed=data.split_seed, window=data.max_len, train_seen=False)
    return ds, split


def protocol_metrics(config: ExperimentConfig, split: Split, model: Recommender) -> dict[str, Any]:
    """The figures a split's protocol adds to metrics.json: ``cold_items`` (`cold_item_metrics`, with AlphaFuse's
    remedies) for a cold-item split; nothing for the others."""
    if not isinstance(split, ColdItemSplit):
        return {}
    cfg = config.eval
    figures = cold_item_metrics(
        model,
        split,
        table_scorer(model),
        cfg.batch_size,
        betas=cfg.semantic_query_betas,
        remedies=cfg.cold_remedies,
    )
    return {"cold_items": figures}
