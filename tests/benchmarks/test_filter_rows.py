"""The serving benchmark's filtered rows: their filters pass the asked share of the catalogue and are valid bodies."""

from __future__ import annotations

import pytest

from benchmarks.filter_rows import SHARDS, filtered_rows, new_item_attributes, shard_bound
from service.schemas import RecommendRequest, SimilarRequest


@pytest.mark.parametrize(("trained", "added"), [(18_357, 81_643), (1_682, 8_318)])
def test_rows_pass_the_asked_share_of_the_catalogue(trained: int, added: int) -> None:
    total = trained + added
    rows = filtered_rows(["u1", "u2"], ["i1"], total, added)
    labels = [r["label"] for r in rows]
    assert labels == [
        "recommend filter 1%",
        "recommend filter 10%",
        "recommend filter 50%",
        "similar",
        "similar filter 10%",
    ]
    shards = [new_item_attributes(i)["shard"] for i in range(added)]
    for row, asked in zip(rows, [0.01, 0.10, 0.50, 1.0, 0.10], strict=True):
        model = RecommendRequest if row["path"] == "/recommend" else SimilarRequest
        bodies = [model.model_validate(b) for b in row["bodies"]]
        if asked == 1.0:
            assert all(b.filter is None for b in bodies)
            continue
        bound = row["bodies"][0]["filter"]["shard"]["lt"]
        passing = sum(s < bound for s in shards) / total  # counted from the items' own attributes
        assert row["selectivity"] == pytest.approx(passing)
        assert passing == pytest.approx(asked, rel=0.1)  # whole shards: the share rounds


def test_a_share_the_added_items_cannot_make_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot make"):
        shard_bound(0.5, 100_000, 10_000)
    assert shard_bound(0.01, 100_000, 100_000) == SHARDS // 100
