"""The fast path's table is derived from the read routes' declarations, and refuses what it cannot serve alike."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, Depends

from service.hotpath import hot_table
from service.routes import READ_ROUTER, StateDep, require_key
from service.schemas import (
    RecommendBatchRequest,
    RecommendRequest,
    RecommendResponse,
    ScoreRequest,
)


def test_the_table_is_the_read_routes() -> None:
    table = hot_table(READ_ROUTER.routes)
    assert {path: (r.method, r.body) for path, r in table.items()} == {
        "/recommend": ("POST", RecommendRequest),
        "/recommend/batch": ("POST", RecommendBatchRequest),
        "/score": ("POST", ScoreRequest),
    }
    assert all(r.route.path == path for path, r in table.items())


def test_a_route_with_more_than_body_and_state_is_refused() -> None:
    router = APIRouter()

    @router.post("/keyed", dependencies=[Depends(require_key)])
    async def keyed(body: RecommendRequest, state: StateDep) -> RecommendResponse:
        return await state.recommend(body)

    @router.post("/two-bodies")
    async def two(a: RecommendRequest, b: ScoreRequest, state: StateDep) -> RecommendResponse:
        return await state.recommend(a)

    @router.api_route("/two-methods", methods=["GET", "POST"])
    async def both(body: RecommendRequest, state: StateDep) -> RecommendResponse:
        return await state.recommend(body)

    for route in router.routes:
        with pytest.raises(ValueError, match="fast-path"):
            hot_table([route])
