"""exporter.index: exact search equals numpy, tuned HNSW/IVF reach recall@10 >= 0.99 on structured data."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from exporter.index import build_index, recall_at_k


def _structured(n: int, d: int, seed: int) -> np.ndarray:
    """Clustered low-rank vectors plus noise, like item tables (iid Gaussians are the worst case)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(200, 16))
    latent = centres[rng.integers(0, 200, size=n)] + 0.3 * rng.normal(size=(n, 16))  # (n, 16)
    return (latent @ rng.normal(size=(16, d)) + 0.1 * rng.normal(size=(n, d))).astype(np.float32)


def _numpy_top10(items: np.ndarray, queries: np.ndarray) -> np.ndarray:
    scores = queries @ items.T  # (Q, N)
    return np.argsort(-scores, axis=1, kind="stable")[:, :10]


@pytest.fixture(scope="module")
def items() -> np.ndarray:
    return _structured(6_000, 48, seed=0)


@pytest.fixture(scope="module")
def held_out(items: np.ndarray) -> np.ndarray:
    """Queries that are not item rows (different seed, same structure)."""
    return _structured(300, 48, seed=1)


def test_flat_top10_equals_numpy(items: np.ndarray, held_out: np.ndarray) -> None:
    index, spec = build_index(items)
    assert (spec.kind, spec.params, spec.recall_at_10) == ("flat", {}, 1.0)
    _, found = index.search(held_out, 10)
    np.testing.assert_array_equal(found, _numpy_top10(items, held_out))


@pytest.mark.parametrize(("kind", "knob"), [("hnsw", "ef_search"), ("ivf", "nprobe")])
def test_approximate_index_reaches_target_recall_and_survives_a_round_trip(
    items: np.ndarray, held_out: np.ndarray, tmp_path: Path, kind: str, knob: str
) -> None:
    index, spec = build_index(items, kind=kind, queries=held_out)  # type: ignore[arg-type]
    assert spec.kind == kind
    assert spec.recall_at_10 >= 0.99
    if kind == "hnsw":
        assert spec.params["M"] == 32
        assert spec.params["ef_construction"] == 200
        assert 64 <= spec.params["ef_search"] <= 1024
    else:
        assert 1 <= spec.params["nprobe"] <= spec.params["nlist"] <= round(4 * np.sqrt(len(items)))
    # the service's way: read the file, set the recorded search parameter, search
    faiss.write_index(index, str(tmp_path / "items.faiss"))
    loaded = faiss.read_index(str(tmp_path / "items.faiss"))
    key = "efSearch" if knob == "ef_search" else "nprobe"
    faiss.ParameterSpace().set_index_parameter(loaded, key, spec.params[knob])
    _, found = loaded.search(held_out, 10)
    truth = _numpy_top10(items, held_out)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.99


def test_auto_switches_to_hnsw_at_the_threshold(items: np.ndarray) -> None:
    small = items[:1_000]
    assert build_index(small, exact_threshold=1_001)[1].kind == "flat"
    index, spec = build_index(small, exact_threshold=1_000, num_queries=200)
    assert spec.kind == "hnsw"
    assert isinstance(index, faiss.IndexHNSWFlat)
    assert index.ntotal == 1_000


def test_recall_counts_tied_duplicates_as_hits() -> None:
    items = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)  # rows 0 and 1 tie
    queries = np.array([[1.0, 0.0]], dtype=np.float32)
    kth = np.array([1.0], dtype=np.float32)  # exact top-1 score
    assert recall_at_k(items, queries, np.array([[1]]), kth) == 1.0
    assert recall_at_k(items, queries, np.array([[2]]), kth) == 0.0
    assert recall_at_k(items, queries, np.array([[-1]]), kth) == 0.0


def test_bad_inputs_are_rejected(items: np.ndarray) -> None:
    with pytest.raises(ValueError, match="kind"):
        build_index(items, kind="lsh")  # type: ignore[arg-type]
    bad = items[:10].copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        build_index(bad)
    with pytest.raises(ValueError, match="dimension"):
        build_index(items, kind="hnsw", queries=items[:5, :10])
