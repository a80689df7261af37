"""A pq (PQ fast scan + exact re-scoring) artifact serves the exact top-k, new items included."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.metrics import ServiceMetrics
from service.runtime import ModelRuntime, Query


@pytest.fixture(scope="module")
def pq_runtime(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelRuntime:
    from exporter.export import export_run

    path = export_run(trained_run, tmp_path_factory.mktemp("pq"), index_kind="pq", version="pq1")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["index"]["kind"] == "pq"
    assert manifest["index"]["recall_at_10"] >= 0.99
    return ModelRuntime.load(path, threads=1, metrics=ServiceMetrics(CollectorRegistry()))


def _exact_top(runtime: ModelRuntime, history: np.ndarray, k: int) -> list[int]:
    user = runtime.encode([history])[0]  # (d,)
    scores = runtime._table[: runtime.size] @ user  # (N,)
    scores[history] = -np.inf
    return np.argsort(-scores, kind="stable")[:k].tolist()


def test_pq_artifact_recommends_the_exact_top_k(pq_runtime: ModelRuntime) -> None:
    assert pq_runtime.refine_factor is not None
    rng = np.random.default_rng(0)
    hits = total = 0
    for _ in range(50):
        history = rng.choice(pq_runtime.num_trained, size=15, replace=False)
        query = Query(rows=history, k=10, exclude=frozenset(history.tolist()))
        ((rows, scores),) = pq_runtime.recommend([query])
        assert not set(rows.tolist()) & set(history.tolist())  # history excluded
        assert np.all(np.diff(scores) <= 1e-6)  # exact re-scored, best first
        hits += len(set(rows.tolist()) & set(_exact_top(pq_runtime, history, 10)))
        total += 10
    assert hits / total >= 0.98


def test_items_added_to_a_pq_index_are_recommended(
    pq_runtime: ModelRuntime, shared_data: Path
) -> None:
    """New items (text only) go into the live pq index and come back at their exact rank."""
    lines = (
        (shared_data / "ml-100k" / "ml-100k.item").read_text(encoding="latin-1").splitlines()[1:]
    )
    titles = [line.split("\t")[1] for line in lines[:300]]
    texts = [f"{title} (restored edition)" for title in titles]
    ids = [f"new-{i}" for i in range(len(texts))]
    first = pq_runtime.size
    pq_runtime.add_items(ids, texts, pq_runtime.embed_texts(texts))
    assert pq_runtime.size == first + len(texts)
    rng = np.random.default_rng(1)
    hits = total = new_expected = 0
    for _ in range(50):
        history = rng.choice(pq_runtime.num_trained, size=10, replace=False)
        ((rows, _),) = pq_runtime.recommend(
            [Query(rows=history, k=10, exclude=frozenset(history.tolist()))]
        )
        expected = _exact_top(pq_runtime, history, 10)
        new_expected += sum(r >= first for r in expected)
        hits += len(set(rows.tolist()) & set(expected))
        total += 10
    assert new_expected > 0, "no new item in any exact top 10: the check below would not cover them"
    assert hits / total >= 0.98
