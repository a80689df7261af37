"""DreamRec sampler sweep: test NDCG@20 and ONNX encode latency for DDIM steps and the ancestral sampler.

    .venv/bin/python benchmarks/dreamrec_steps.py --runs RUN_DIR [RUN_DIR ...]

RUN_DIRs are finished DreamRec runs (``benchmarks/quality.py --keep-runs DIR`` keeps them), typically the seeds
of one config. For every DDIM step count (default 1 2 5 10 20 50) and the full ancestral sampler, each run's
test cases are ranked again with that sampler (full ranking, the run's history masking), and the encoder is
exported to ONNX with that step count and timed at batch 1 on one thread (median of ``--repeats`` calls on real
test histories, after a warm-up). The ancestral sampler (T network calls, stochastic) is not exported: its
latency is torch's on one thread. The serving choice is the fewest DDIM steps whose mean NDCG@20 is within
``--tolerance`` (2%) of 20-step DDIM and whose median encode time is under ``--budget-ms`` (2 ms).
Writes benchmarks/results/dreamrec_steps.json.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from results_io import save_json

from core.histories import embed_histories
from exporter.onnx_encoder import encoder_parity, export_user_encoder, ort_session
from training.evaluation import evaluate as ev
from training.experiment import prepare
from training.models.dreamrec import DreamRec
from training.models.recommender import table_scorer
from training.run.checkpoint import load_run
from training.run.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "dreamrec_steps.json"

logger = logging.getLogger("dreamrec_steps")


def main() -> None:
    args = _args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    torch.set_num_threads(1)
    settings: list[tuple[str, int]] = [("ddim", s) for s in args.steps] + [("ancestral", 0)]
    rows: list[dict[str, Any]] = []
    for run_dir in args.runs:
        while args.wait and not RunDir(run_dir).metrics.exists():
            time.sleep(10)  # the run is still training (benchmarks/quality.py --keep-runs)
        rows.extend(_sweep(run_dir, settings, args.repeats))
        save_json(args.out, _summary(rows, args))
    summary = _summary(rows, args)
    save_json(args.out, summary)
    print(format_table(summary))


def _sweep(run_dir: Path, settings: list[tuple[str, int]], repeats: int) -> list[dict[str, Any]]:
    run = load_run(run_dir)
    model = run.model
    if not isinstance(model, DreamRec):
        raise ValueError(f"{run_dir} is not a DreamRec run (model.name={run.config.model.name!r})")
    prepared = prepare(run.config, with_text=False)
    split = prepared.split
    table = model.items.table().detach()  # (N, d)
    enc = model.encoder
    # batch-1 latency inputs: real test histories, embedded as the service sends them
    histories = [
        h[h != split.num_items] for h in split.test.histories[:64]
    ]  # without the pad index
    width = split.test.histories.shape[1]
    item_emb, mask = embed_histories(table.numpy(), histories, width)  # (64, L, d), (64, L)
    rows = []
    for sampler, steps in settings:
        enc.sampler, enc.steps = "ddim" if sampler == "ddim" else "ancestral", max(steps, 1)
        began = time.perf_counter()
        with torch.no_grad():
            metrics = ev.evaluate_full(
                table_scorer(model, table),
                split.test,
                split.num_items,
                mask_history=run.config.eval.mask_history,
                batch_size=256,
            ).metrics
        eval_s = time.perf_counter() - began
        if sampler == "ddim":
            latency, parity = _onnx_latency(enc, item_emb, mask, repeats)
        else:
            latency, parity = _torch_latency(enc, item_emb, mask, max(3, repeats // 100)), None
        label = f"ddim-{steps}" if sampler == "ddim" else f"ancestral-{enc.schedule.timesteps}"
        rows.append(
            {
                "run": run_dir.name,
                "embedding": run.config.embedding.mode,
                "seed": run.config.train.seed,
                "setting": label,
                "sampler": sampler,
                "steps": steps if sampler == "ddim" else enc.schedule.timesteps,
                "metrics": metrics,
                "encode_ms_median": latency,
                "latency_backend": "onnxruntime" if sampler == "ddim" else "torch",
                "parity_max_abs_diff": parity,
                "eval_seconds": round(eval_s, 1),
            }
        )
        logger.info(
            "%s %s NDCG@20 %.4f encode %.3f ms", run_dir.name, label, metrics["NDCG@20"], latency
        )
    return rows


def _onnx_latency(
    enc: Any, item_emb: NDArray[np.float32], mask: NDArray[np.bool_], repeats: int
) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "encoder.onnx"
        export_user_encoder(enc, path)
        parity = encoder_parity(enc, path, item_emb, mask)
        session = ort_session(path, threads=1)
        times = []
        for i in range(repeats + 20):
            j = i % len(item_emb)
            feed = {"item_emb": item_emb[j : j + 1], "mask": mask[j : j + 1]}
            began = time.perf_counter()
            session.run(None, feed)
            if i >= 20:
                times.append(time.perf_counter() - began)
    return float(np.median(times) * 1e3), parity


@torch.no_grad()
def _torch_latency(
    enc: Any, item_emb: NDArray[np.float32], mask: NDArray[np.bool_], repeats: int
) -> float:
    times = []
    for i in range(repeats):
        began = time.perf_counter()
        enc.encode(torch.from_numpy(item_emb[i : i + 1]), torch.from_numpy(mask[i : i + 1]))
        times.append(time.perf_counter() - began)
    return float(np.median(times) * 1e3)


def _summary(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault((r["embedding"], r["setting"]), []).append(r)
    cells = []
    for (mode, setting), rs in by.items():
        nd = np.array([r["metrics"]["NDCG@20"] for r in rs])
        cells.append(
            {
                "embedding": mode,
                "setting": setting,
                "sampler": rs[0]["sampler"],
                "steps": rs[0]["steps"],
                "runs": len(rs),
                "NDCG@20_mean": float(nd.mean()),
                "NDCG@20_std": float(nd.std()),
                "HR@20_mean": float(np.mean([r["metrics"]["HR@20"] for r in rs])),
                "encode_ms_median": float(np.median([r["encode_ms_median"] for r in rs])),
                "latency_backend": rs[0]["latency_backend"],
            }
        )
    choice: dict[str, Any] = {}
    for mode in sorted({c["embedding"] for c in cells}):
        ref = next((c for c in cells if c["embedding"] == mode and c["setting"] == "ddim-20"), None)
        if ref is None:
            continue
        ok = [
            c
            for c in cells
            if c["embedding"] == mode
            and c["sampler"] == "ddim"
            and c["NDCG@20_mean"] >= (1 - args.tolerance) * ref["NDCG@20_mean"]
            and c["encode_ms_median"] < args.budget_ms
        ]
        best = min(ok, key=lambda c: c["steps"]) if ok else None
        choice[mode] = None if best is None else {"steps": best["steps"], **best}
    return {
        "tolerance": args.tolerance,
        "budget_ms": args.budget_ms,
        "repeats": args.repeats,
        "threads": 1,
        "batch": 1,
        "cells": cells,
        "choice": choice,
        "runs": rows,
    }


def format_table(summary: dict[str, Any]) -> str:
    header = f"{'embedding':<10} {'setting':<15} {'runs':>4} {'NDCG@20':>16} {'HR@20':>8} {'encode ms':>10} backend"
    lines = [header, "-" * len(header)]
    for c in summary["cells"]:
        lines.append(
            f"{c['embedding']:<10} {c['setting']:<15} {c['runs']:>4} "
            f"{c['NDCG@20_mean']:.4f}±{c['NDCG@20_std']:.4f} {c['HR@20_mean']:>8.4f} "
            f"{c['encode_ms_median']:>10.3f} {c['latency_backend']}"
        )
    for mode, c in summary["choice"].items():
        lines.append(
            f"serving choice ({mode}): "
            + (
                "none meets both bounds"
                if c is None
                else f"DDIM {c['steps']} steps, {c['encode_ms_median']:.3f} ms"
            )
        )
    return "\n".join(lines)


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runs", nargs="+", type=Path, required=True)
    p.add_argument("--steps", nargs="+", type=int, default=[1, 2, 5, 10, 20, 50])
    p.add_argument("--repeats", type=int, default=300)
    p.add_argument("--tolerance", type=float, default=0.02)
    p.add_argument("--budget-ms", type=float, default=2.0)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--wait", action="store_true", help="wait for each run's metrics.json")
    return p.parse_args()


if __name__ == "__main__":
    main()
