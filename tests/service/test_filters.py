"""Attribute filters on /recommend and /similar through the real app, real Redis and the ml-100k artifact: answers
equal a brute-force filter-then-rank over every item (genres and release year read from the dataset here)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from core.artifact import open_artifact
from service.app import create_app
from service.metrics import ServiceMetrics
from service.runtime import ModelRuntime, Query
from service.schemas import RecommendRequest
from service.settings import Settings
from service.state import ServiceState

Item = dict[str, Any]
Predicate = Callable[[Item], bool]
GENRES = [
    "Action",
    "Comedy",
    "Drama",
    "Horror",
    "Documentary",
    "Film-Noir",
    "Western",
    "Children's",
]


@pytest.fixture(scope="module")
def catalogue(shared_data: Path) -> dict[str, Item]:
    """item id -> {"genres": set, "year": int | None}, straight from ml-100k.item."""
    lines = (shared_data / "ml-100k" / "ml-100k.item").read_text(encoding="latin-1").splitlines()
    out = {}
    for line in lines[1:]:
        item_id, _, year, genres = line.split("\t")
        out[item_id] = {
            "genres": set(genres.split()),
            "year": int(year) if year.isdigit() else None,
        }
    return out


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update={"max_k": 10_000}))) as c:
        yield c


def _runtime(client: TestClient) -> ModelRuntime:
    state = client.app.state.service  # type: ignore[attr-defined]
    assert isinstance(state, ServiceState)
    return state.require_runtime()


def _brute_force(
    rt: ModelRuntime, user: np.ndarray, passes: Callable[[str], bool], skip: set[str], k: int
) -> tuple[list[str], list[float]]:
    """Filter every live row, then rank by inner product with ``user``."""
    table = rt._table[: rt.size]
    rows = [
        r
        for r in range(rt.size)
        if r not in rt.dead_rows and rt.item_id(r) not in skip and passes(rt.item_id(r))
    ]
    scores = table[rows] @ user
    order = np.argsort(-scores, kind="stable")[:k]
    return [rt.item_id(rows[i]) for i in order], [float(scores[i]) for i in order]


def _check_exact(got: dict[str, Any], expected: tuple[list[str], list[float]], k: int) -> None:
    ids, scores = expected
    found = [x["item_id"] for x in got["items"]]
    assert len(found) == min(k, len(ids))
    assert got["filtered_short"] == (len(ids) < k)
    # the exact top-k: the same scores (order of near-ties may differ), and every item among the candidates
    assert [x["score"] for x in got["items"]] == pytest.approx(scores, rel=1e-4, abs=1e-4)
    assert set(found) <= set(_top_with_ties(ids, scores, scores[-1] if scores else 0.0))


def _top_with_ties(ids: list[str], scores: list[float], last: float) -> list[str]:
    return [i for i, s in zip(ids, scores, strict=True) if s >= last - 1e-4] + ids


CASES: list[tuple[dict[str, Any], Predicate]] = [
    ({"class": "Horror"}, lambda m: "Horror" in m["genres"]),
    ({"class": {"in": ["Documentary", "Film-Noir"]}}, lambda m: bool({"Documentary", "Film-Noir"} & m["genres"])),
    ({"release_year": {"gte": 1990, "lt": 1995}}, lambda m: m["year"] is not None and 1990 <= m["year"] < 1995),
    (
        {"class": {"prefix": "Comedy"}, "release_year": {"lte": 1980}},
        lambda m: "Comedy" in m["genres"] and m["year"] is not None and m["year"] <= 1980,
    ),
    ({"release_year": {"lt": 1931}}, lambda m: m["year"] is not None and m["year"] < 1931),  # fewer than k
    ({"release_year": 1995, "class": {"eq": "Drama"}}, lambda m: m["year"] == 1995 and "Drama" in m["genres"]),
]  # fmt: skip


@pytest.mark.parametrize("case", range(len(CASES)))
def test_filtered_recommend_and_similar_equal_brute_force(
    client: TestClient, artifact: Path, catalogue: dict[str, Item], case: int
) -> None:
    where, predicate = CASES[case]
    rt = _runtime(client)
    history = rt.item_ids[:8]
    k = 20
    r = client.post("/recommend", json={"history": history, "k": k, "filter": where})
    assert r.status_code == 200, r.text
    user = rt.encode([rt.lookup(history)[0]])[0]
    expected = _brute_force(rt, user, lambda i: predicate(catalogue[i]), set(history), k)
    _check_exact(r.json(), expected, k)
    r = client.post("/similar", json={"item_id": history[0], "k": k, "filter": where})
    assert r.status_code == 200, r.text
    vector = rt._table[rt.row_of[history[0]]]
    expected = _brute_force(rt, vector, lambda i: predicate(catalogue[i]), {history[0]}, k)
    _check_exact(r.json(), expected, k)


def test_the_popularity_fallback_honours_the_filter(
    client: TestClient, catalogue: dict[str, Item]
) -> None:
    rt = _runtime(client)
    r = client.post("/recommend", json={"history": [], "k": 10, "filter": {"class": "Western"}})
    assert r.status_code == 200, r.text
    got = [x["item_id"] for x in r.json()["items"]]
    westerns = [
        rt.item_id(r)
        for r in rt.popular_rows.tolist()
        if "Western" in catalogue[rt.item_id(r)]["genres"]
    ]
    assert got == westerns[:10]


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_property_filtered_answers_are_exact_and_pass_the_filter(
    client: TestClient, catalogue: dict[str, Item], data: st.DataObject
) -> None:
    rt = _runtime(client)
    ids = rt.item_ids[: rt.num_trained]
    genres = data.draw(
        st.lists(st.sampled_from(GENRES), min_size=1, max_size=3, unique=True), "genres"
    )
    low = data.draw(st.integers(1920, 2000), "low")
    where: dict[str, Any] = {"class": {"in": genres}, "release_year": {"gte": low}}
    hidden = data.draw(st.lists(st.sampled_from(ids), max_size=30, unique=True), "hidden")
    exclude = data.draw(st.lists(st.sampled_from(ids), max_size=30, unique=True), "exclude")
    history = data.draw(st.lists(st.sampled_from(ids), min_size=1, max_size=6), "history")
    k = data.draw(st.integers(1, 400), "k")
    if hidden:
        assert client.post("/items/hide", json={"item_ids": hidden}).status_code == 200
    try:
        body = {"history": history, "k": k, "exclude": exclude, "filter": where}
        r = client.post("/recommend", json=body)
        assert r.status_code == 200, r.text
        got = r.json()
        for x in got["items"]:
            item = catalogue[x["item_id"]]
            assert item["genres"] & set(genres)
            assert item["year"] is not None
            assert item["year"] >= low
        assert not {x["item_id"] for x in got["items"]} & (
            set(hidden) | set(exclude) | set(history)
        )

        def passes(i: str) -> bool:
            m = catalogue[i]
            return bool(m["genres"] & set(genres)) and m["year"] is not None and m["year"] >= low

        user = rt.encode([rt.lookup(history)[0]])[0]
        skip = set(hidden) | set(exclude) | set(history)
        _check_exact(got, _brute_force(rt, user, passes, skip, k), k)
    finally:
        if hidden:
            assert client.post("/items/restore", json={"item_ids": hidden}).status_code == 200


def test_new_items_with_fields_are_filterable_at_once_and_on_another_pod(
    settings: Settings,
) -> None:
    items = [
        {"item_id": "f-1", "fields": {"title": "Sunlit Harbour (2031)", "class": "Drama"},
         "attributes": {"price": 12.5, "available": True}},
        {"item_id": "f-2", "text": "Night Train (2031)",
         "attributes": {"class": ["Thriller", "Drama"], "release_year": 2031, "price": 30, "available": False}},
    ]  # fmt: skip
    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as two:
        r = one.post("/items", json={"items": items})
        assert r.status_code == 200, r.text
        for where, expected in [
            ({"available": True}, ["f-1"]),
            ({"price": {"lte": 20}}, ["f-1"]),
            ({"release_year": {"gte": 2030}}, ["f-2"]),
            ({"class": "Drama", "price": {"gt": 0}}, ["f-1", "f-2"]),
        ]:
            body = {"history": ["1", "2"], "k": 10, "filter": where}
            got = one.post("/recommend", json=body).json()
            assert sorted(x["item_id"] for x in got["items"]) == expected
            assert got["filtered_short"] is True
        state = two.app.state.service  # type: ignore[attr-defined]
        two.portal.call(state.sync_items)  # type: ignore[union-attr]
        body = {"history": ["1"], "k": 10, "filter": {"available": False}}
        got = two.post("/recommend", json=body).json()
        assert [x["item_id"] for x in got["items"]] == ["f-2"]


@pytest.mark.parametrize(
    ("where", "named"),
    [
        ({"colour": "red"}, "colour"),
        ({"release_year": {"prefix": "19"}}, "release_year"),
        ({"release_year": "1995"}, "release_year"),
        ({"class": {"gte": 3}}, "class"),
        ({"class": {}}, "class"),
        ({"class": 3}, "class"),
    ],
)
def test_bad_filters_answer_422_naming_the_field(
    client: TestClient, where: dict[str, Any], named: str
) -> None:
    for path, body in [("/recommend", {"history": ["1"]}), ("/similar", {"item_id": "1"})]:
        r = client.post(path, json={**body, "filter": where})
        assert r.status_code == 422, r.text
        assert named in json.dumps(r.json()["detail"])


def test_new_item_with_a_misfit_field_answers_422(client: TestClient) -> None:
    item = {"item_id": "bad-1", "text": "x", "attributes": {"release_year": "soon"}}
    r = client.post("/items", json={"items": [item]})
    assert r.status_code == 422
    assert "release_year" in r.json()["detail"]


def test_an_artifact_without_fields_loads_and_names_the_field_of_any_filter(
    trained_run: Path, tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    from exporter.export import export_run

    root = tmp_path / "plain"
    export_run(trained_run, root, version="plain", fields=[])
    assert open_artifact(root / "plain").fields == ()
    settings = Settings(
        artifact=root, redis_url=redis_url, key_prefix=key_prefix, cold_sync_seconds=0
    )
    with TestClient(create_app(settings)) as c:
        assert c.post("/recommend", json={"history": ["1"]}).status_code == 200
        r = c.post("/recommend", json={"history": ["1"], "filter": {"class": "Drama"}})
        assert r.status_code == 422
        assert "class" in r.json()["detail"]


def test_the_artifact_keeps_the_catalogue_fields(
    artifact: Path, catalogue: dict[str, Item]
) -> None:
    manifest = open_artifact(artifact)  # checksums verified, fields included
    assert {(f.name, f.kind) for f in manifest.fields} == {
        ("release_year", "number"),
        ("class", "text"),
    }
    rt = ModelRuntime.load(artifact, threads=1, metrics=ServiceMetrics(CollectorRegistry()))
    for row in range(0, rt.num_trained, 97):
        item = catalogue[rt.item_id(row)]
        assert set(rt.fields.columns["class"].decode(row) or ()) == item["genres"]
        year = rt.fields.columns["release_year"].decode(row)
        assert year == (None if item["year"] is None else float(item["year"]))


def test_a_pq_index_answers_filters_exactly(trained_run: Path, tmp_path: Path) -> None:
    from exporter.export import export_run

    path = export_run(trained_run, tmp_path / "pq", index_kind="pq", version="pq")
    rt = ModelRuntime.load(path, threads=1, metrics=ServiceMetrics(CollectorRegistry()))
    rng = np.random.default_rng(0)
    for where in [{"class": "Drama"}, {"release_year": {"gte": 1996}}, {"class": "Film-Noir"}]:
        parsed = RecommendRequest.model_validate({"history": ["1"], "filter": where}).filter
        assert parsed is not None
        checked = rt.fields.check(parsed)
        passing = rt.fields.mask(checked, rt.size)
        for _ in range(5):
            history = rng.choice(rt.num_trained, size=10, replace=False)
            query = Query(history, 10, frozenset(history.tolist()), checked)
            ((rows, scores),) = rt.recommend([query])
            assert passing[rows].all()
            user = rt.encode([history])[0]
            full = rt._table[: rt.size] @ user
            full[~passing] = -np.inf
            full[history] = -np.inf
            best = np.sort(full)[::-1][: len(rows)]
            assert scores == pytest.approx(best, rel=1e-4, abs=1e-4)


def test_openapi_documents_the_filter(client: TestClient) -> None:
    models = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("RecommendRequest", "SimilarRequest"):
        prop = models[name]["properties"]["filter"]
        assert "AND" in prop["description"]
        assert {
            "categories": {"prefix": "Beauty > Makeup"},
            "brand": {"in": ["OPI", "Essie"]},
        } in prop["examples"]
    condition = models["Condition"]
    assert {"eq", "in", "prefix", "gte", "gt", "lte", "lt"} <= set(condition["properties"])
    assert "whole levels" in condition["properties"]["prefix"]["description"]
    for name in ("RecommendResponse", "SimilarResponse"):
        assert "filtered_short" in models[name]["properties"]
    assert "attributes" in models["NewItem"]["properties"]


def test_category_prefix_and_brand_on_the_beauty_catalogue(shared_data: Path) -> None:
    """Amazon Beauty's real catalogue: default fields, and masks equal to a plain Python filter over items.jsonl."""
    from core.attributes import build_column, infer_kind
    from service.filters import ItemFields
    from training.data.readers import DataSource, load_item_fields

    path = shared_data / "amazon14-beauty"
    raw = load_item_fields(DataSource(format="p5", path=path), None)
    assert set(raw) == {"brand", "categories"}  # the title is free text
    ids = list(raw["brand"])
    columns = {
        n: build_column(infer_kind(list(v.values())), list(v.values()))[0] for n, v in raw.items()
    }
    fields = ItemFields(columns, len(ids))
    records = [json.loads(line) for line in (path / "items.jsonl").read_text().splitlines()]
    by_id = {r["item_id"]: r for r in records}
    where = RecommendRequest.model_validate(
        {
            "history": ["x"],
            "filter": {
                "categories": {"prefix": "Beauty > Makeup"},
                "brand": {"in": ["OPI", "Essie"]},
            },
        }
    ).filter
    assert where is not None
    mask = fields.mask(fields.check(where), len(ids))

    def passes(record: dict[str, Any]) -> bool:
        paths = [p.split(" > ") for p in record["categories"].split(" | ")]
        return any(p[:2] == ["Beauty", "Makeup"] for p in paths) and record["brand"] in (
            "OPI",
            "Essie",
        )

    expected = np.array([passes(by_id[i]) for i in ids])
    assert 0 < expected.sum() < len(ids)
    assert (mask == expected).all()
    # a prefix matches whole levels only
    partial = RecommendRequest.model_validate(
        {"history": ["x"], "filter": {"categories": {"prefix": "Beauty > Make"}}}
    )
    assert partial.filter is not None
    assert not fields.mask(fields.check(partial.filter), len(ids)).any()
