"""Which way of answering a filtered query is fastest at each share of the catalogue that passes the filter?

The strategies of ``service.filtered``, timed on one FAISS thread over a catalogue of ``--items`` random unit
vectors of ``--dim`` dimensions (the search cost depends on the sizes, not on the values): exact scoring of the
passing rows (``exact_top``), a flat index searched with a bitmap selector (``selector_search``), and the index's
own candidates over-fetched and kept where the filter holds (``overfetch_search``) on a flat and on the ``pq``
index the exporter builds for 1e5 items (PQ fast scan + exact re-scoring, which takes no selector). Each row is the
median over ``--queries`` queries of k=10; the passing rows are a random subset of the asked share.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/filter_strategies.py    # benchmarks/results/filter_strategies.json
    .venv/bin/python benchmarks/filter_strategies.py --out benchmarks/results/filter_strategies_blas_threads.json
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faiss
import numpy as np
from results_io import save_json

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.filtered import exact_top, overfetch_search, selector_search  # noqa: E402

K = 10
SHARES = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


def main() -> int:
    args = _args()
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    table = rng.standard_normal((args.items, args.dim)).astype(np.float32)
    table /= np.linalg.norm(table, axis=1, keepdims=True)
    users = table[rng.choice(args.items, args.queries)] + 0.1 * rng.standard_normal(
        (args.queries, args.dim)
    ).astype(np.float32)
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(table)
    pq = faiss.index_factory(args.dim, f"PQ{args.dim // 2}x4fs,RFlat", faiss.METRIC_INNER_PRODUCT)
    pq.train(table)
    pq.add(table)
    runtimes = {"flat": _runtime(flat, None), "pq": _runtime(pq, args.k_factor_rf)}
    rows = []
    for share in SHARES:
        allowed = rng.random(args.items) < share
        passing = np.flatnonzero(allowed)
        timings = _timings(table, runtimes, allowed, users)
        rows.append({"share": share, "passing": len(passing), "median_ms": timings})
        print(share, len(passing), {k: round(v, 3) for k, v in timings.items()}, flush=True)
    payload: dict[str, Any] = {
        "items": args.items,
        "dim": args.dim,
        "k": K,
        "pq_k_factor_rf": args.k_factor_rf,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, FAISS on one thread",
        "OMP_NUM_THREADS": os.environ.get(
            "OMP_NUM_THREADS"
        ),  # OpenBLAS's threads for exact scoring
        "rows": rows,
    }
    save_json(args.out, payload, indent=2)
    return 0


def _timings(
    table: np.ndarray, runtimes: dict[str, Any], allowed: np.ndarray, users: np.ndarray
) -> dict[str, float]:
    """Median ms per query of each strategy, for the rows in ``allowed``."""
    passing = np.flatnonzero(allowed)
    fraction = len(passing) / len(allowed)
    flat, pq = runtimes["flat"], runtimes["pq"]
    return {
        "exact": _time(lambda u: exact_top(table, u, passing, K), users),
        "flat_selector": _time(lambda u: selector_search(flat, u, K, allowed), users),
        "flat_overfetch": _time(lambda u: overfetch_search(flat, u, K, allowed, fraction), users),
        "pq_overfetch": _time(lambda u: overfetch_search(pq, u, K, allowed, fraction), users),
    }


def _runtime(index: faiss.Index, k_factor_rf: int | None) -> Any:
    """What the strategies read of a ``ModelRuntime``: its index and the refine parameters of a pq index."""

    def search_params(k: int, want: int) -> Any:
        if k_factor_rf is None:
            return None
        params = faiss.IndexRefineSearchParameters()
        params.k_factor = max(1.0, (k_factor_rf * k + want - k) / want)
        return params

    return SimpleNamespace(index=index, search_params=search_params)


def _time(fn: Any, users: np.ndarray) -> float:
    fn(users[0])  # warm
    ms = []
    for u in users:
        t0 = time.perf_counter()
        fn(u)
        ms.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(ms))


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--k-factor-rf", type=int, default=16, help="the pq index's refine factor")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks/results/filter_strategies.json")
    return p.parse_args()


if __name__ == "__main__":
    raise SystemExit(main())
