"""Which FAISS index serves a 1e5-item AlphaFuse catalogue fastest at recall@10 >= 0.99, on one core?

The catalogue is the serving benchmark's: a trained run's item table grown to ``--items`` rows with new items that,
like the ones ``serve_load.py`` adds through ``POST /items`` (a trained item's text with a suffix), carry a trained
item's language part plus a small perturbation (``--noise`` per standardized coordinate) and an ID part of zero.
Queries are the model's user vectors for real histories (each user's last ``max_len`` items). For each index and
search setting: recall@10 against exact search (ties count, as in ``exporter.index``) and microseconds per query at
batch 1 and batch 8 (the service's micro-batches), FAISS on one thread.

    .venv/bin/python benchmarks/index_sweep.py --run-dir runs/serve-bench-amazon14-sports-e5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from results_io import save_json

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from exporter.index import build_index, recall_at_k  # noqa: E402

K = 10


def main() -> int:
    args = _args()
    faiss.omp_set_num_threads(1)
    items, queries = _catalogue(args)
    exact = faiss.IndexFlatIP(items.shape[1])
    exact.add(items)
    kth = exact.search(queries, K)[0][:, -1]  # (Q,)
    rows: list[dict[str, Any]] = []
    for name, index, settings in _candidates(items, queries, args):
        for setting in settings:
            for knob, value in setting.items():
                faiss.ParameterSpace().set_index_parameter(index, knob, value)
            row = _measure(name, setting, index, items, queries, kth, args.repeat)
            rows.append(row)
            print(_line(row), flush=True)
    result = {
        "run_dir": str(args.run_dir),
        "items": int(items.shape[0]),
        "dim": int(items.shape[1]),
        "queries": int(queries.shape[0]),
        "noise": args.noise,
        "threads": 1,
        "rows": rows,
    }
    save_json(args.out, result)
    _table(rows)
    return 0


def _catalogue(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """(N, d) grown item table and (Q, d) user vectors, float32."""
    import torch

    from training.experiment import prepare
    from training.run.checkpoint import load_run

    run = load_run(args.run_dir)
    with torch.no_grad():
        table = run.model.items.table().numpy().astype(np.float32)  # (N0, d)
        language = getattr(run.model.items, "language", None)
        if language is None:
            raise SystemExit(f"{args.run_dir}: not an AlphaFuse run (no language table)")
        lang = language[: table.shape[0]].numpy().astype(np.float32)  # (N0, d)
    rng = np.random.default_rng(0)
    extra = args.items - table.shape[0]
    source = rng.integers(0, table.shape[0], size=extra)
    grown = lang[source] + args.noise * rng.standard_normal(
        (extra, lang.shape[1]), dtype=np.float32
    )
    items = np.ascontiguousarray(np.concatenate([table, grown]), dtype=np.float32)

    test = prepare(run.config, with_text=False).split.test  # the run's own item rows
    users = rng.choice(len(test), size=min(args.queries, len(test)), replace=False)
    histories = test.histories[np.sort(users)]  # (Q, L), left-padded
    with torch.no_grad():
        queries = run.model.user_vectors(torch.from_numpy(histories)).numpy().astype(np.float32)
    return items, np.ascontiguousarray(queries)


def _candidates(
    items: np.ndarray, queries: np.ndarray, args: argparse.Namespace
) -> list[tuple[str, faiss.Index, list[dict[str, int]]]]:
    """(name, index, search settings to sweep) for every index under test."""
    d = items.shape[1]
    flat = faiss.IndexFlatIP(d)
    flat.add(items)
    out: list[tuple[str, faiss.Index, list[dict[str, int]]]] = [("Flat", flat, [{}])]
    hnsw, _ = build_index(items, kind="hnsw", queries=queries[:200], target_recall=0.5)
    out.append(("HNSW32", hnsw, [{"efSearch": ef} for ef in (64, 128, 256)]))
    for factory in args.factories:
        index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
        t0 = time.perf_counter()
        index.train(items)
        index.add(items)
        print(f"built {factory} in {time.perf_counter() - t0:.1f} s", flush=True)
        nprobes = [{"nprobe": p} for p in (8, 16, 32)] if "IVF" in factory else [{}]
        refine = [{"k_factor_rf": f} for f in (4, 8, 16, 32, 64)] if "RFlat" in factory else [{}]
        out.append((factory, index, [{**a, **b} for a in nprobes for b in refine]))
    return out


def _measure(
    name: str,
    setting: dict[str, int],
    index: faiss.Index,
    items: np.ndarray,
    queries: np.ndarray,
    kth: np.ndarray,
    repeat: int,
) -> dict[str, Any]:
    found = index.search(queries, K)[1]
    recall = recall_at_k(items, queries, found, kth)
    per_query = {}
    for batch in (1, 8):
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            for start in range(0, len(queries), batch):
                index.search(queries[start : start + batch], K)
            best = min(best, (time.perf_counter() - t0) / len(queries))
        per_query[f"us_per_query_b{batch}"] = best * 1e6
    return {"index": name, "setting": setting, "recall_at_10": recall, **per_query}


def _line(row: dict[str, Any]) -> str:
    setting = " ".join(f"{k}={v}" for k, v in row["setting"].items())
    return (
        f"{row['index']:<34} {setting:<14} recall@10 {row['recall_at_10']:.4f}  "
        f"b1 {row['us_per_query_b1']:8.1f} us  b8 {row['us_per_query_b8']:8.1f} us/query"
    )


def _table(rows: list[dict[str, Any]]) -> None:
    flat = next(r for r in rows if r["index"] == "Flat")
    print("\n| index | setting | recall@10 | µs/query b1 | µs/query b8 | speed-up vs Flat (b8) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        setting = " ".join(f"{k}={v}" for k, v in r["setting"].items())
        print(
            f"| {r['index']} | {setting} | {r['recall_at_10']:.4f} | {r['us_per_query_b1']:.0f} | "
            f"{r['us_per_query_b8']:.0f} | {flat['us_per_query_b8'] / r['us_per_query_b8']:.1f}x |"
        )


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--run-dir", type=Path, required=True, help="a trained AlphaFuse run")
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=1_000)
    p.add_argument(
        "--noise", type=float, default=0.1, help="perturbation of a new item's language part"
    )
    p.add_argument("--repeat", type=int, default=3, help="timing repeats (best is kept)")
    p.add_argument(
        "--factories",
        nargs="*",
        default=["PQ32x4fs,RFlat", "PQ64x4fs,RFlat", "IVF256,PQ32x4fs,RFlat", "SQ8"],
        help="extra FAISS index_factory strings",
    )
    p.add_argument("--out", type=Path, default=REPO / "benchmarks/results/index_sweep.json")
    return p.parse_args()


if __name__ == "__main__":
    sys.exit(main())
