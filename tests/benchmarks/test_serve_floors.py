"""The floor-relative serving benchmark: its ratios, and its bare-HTTP floor app."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(
    0, str(Path(__file__).resolve().parents[2] / "benchmarks")
)  # the scripts' own imports

from benchmarks.bare_asgi import ANSWER, app
from benchmarks.serve_floors import ratios


def _row(c: int, rps: float, cpu_s: float = 1.0, drift: float = 1.0) -> dict[str, Any]:
    """A row measured in three rounds; the machine ran at ``drift`` times its pace in the third."""
    return {
        "concurrency": c,
        "rps": rps,
        "rps_rounds": [rps, rps, rps * drift],
        "cpu_us_rounds": [1e6 / rps] * 3,
        "seconds": 4.0,
        "cpu_s": cpu_s,
        "cpu_rps": rps * 4 / cpu_s,
    }


def test_each_row_is_a_share_of_its_floors_round_by_round() -> None:
    rows = {
        "bare": {1: _row(1, 4000, 2.0, drift=0.5), 32: _row(32, 10_000)},
        "inline": {1: _row(1, 2000, drift=0.5), 32: _row(32, 5000)},
        "redis": {1: _row(1, 1600, drift=0.5), 32: _row(32, 4500)},
        "inline@cache off": {1: _row(1, 2000), 32: _row(32, 5000)},
        "redis@cache off": {1: _row(1, 1400), 32: _row(32, 4000)},
    }
    compute = {1: _row(1, 8000), 32: _row(32, 20_000)}
    got = ratios(rows, compute)
    assert got["c=1"]["inline_over_bare"] == 0.5
    assert got["c=1"]["redis_over_inline"] == 0.8
    assert got["c=1"]["redis_cpu_over_inline"] == 1.25  # CPU per request, paired the same way
    assert got["c=1"]["redis_over_compute"] == 0.2  # c=1 against a batch of one
    assert got["c=32"]["inline_over_compute"] == 0.25  # c=32 against the largest batch
    assert got["c=1"]["bare_loadgen_busy"] == 0.5
    assert got["c=1"]["loadgen_ceiling_rps"] == 8000
    assert (
        got["c=1"]["redis_over_inline@cache off"] == 0.7
    )  # the second service's pair, each its own
    assert got["c=32"]["redis_over_inline@cache off"] == 0.8


def test_the_bare_app_answers_its_fixed_json_to_any_post() -> None:
    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post("/recommend", json={"user_id": "u", "k": 10})

    r = asyncio.run(main())
    assert r.status_code == 200
    assert r.content == ANSWER
    assert len(json.loads(r.content)["items"]) == 10
