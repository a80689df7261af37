"""Training throughput of SASRec-AlphaFuse at the reference settings, on the cold-start-user split of beauty.

    .venv/bin/python benchmarks/train_speed.py [--epochs 1] [--threads 1] [--repeats 2]
    .venv/bin/python benchmarks/train_speed.py --workers 1 2 [--epochs 1] [--repeats 2]

Reference settings (the AlphaFuse authors' SASRec setup): d=128, d_n=64, one block, L=10, batch 256, infoNCE
with 64 negatives, amazon14-beauty users split 8:1:1 with every prefix as a training row. The authors' trainer
measured 3,500-3,900 sequences/s on this kind of machine (2 vCPU); the target is 3x that. The three negative
samplers run interleaved in one process for ``--repeats`` rounds and each keeps its fastest round, so their ratios
hold on a shared machine.
Writes benchmarks/results/train_speed.json.

``--workers 1 2`` measures multi-worker training instead (the default pooled sampler): one process, then 2 workers
under torchrun (DDP, gloo on the CPU) with one thread each, and one process with as many threads as the largest
worker count, side by side in interleaved rounds; each variant runs in its own processes and keeps its fastest
round. The global batch stays 256 rows, so every variant trains the same steps. Writes
benchmarks/results/train_speed_workers.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from results_io import save_json

from training.config import load_config
from training.experiment import measure_throughput, prepare

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "training" / "configs" / "amazon14-beauty-coldstart.toml"
RESULTS = REPO / "benchmarks" / "results" / "train_speed.json"
WORKER_RESULTS = REPO / "benchmarks" / "results" / "train_speed_workers.json"
REFERENCE = (3500.0, 3900.0)  # authors' train.py, same settings and machine kind


SAMPLERS = ["pooled", "per_example", "shared"]


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="rounds over the samplers; each keeps its fastest round",
    )
    p.add_argument("--out", type=Path, help=f"default: {RESULTS} ({WORKER_RESULTS} with --workers)")
    p.add_argument(
        "--workers", type=int, nargs="+", help="worker counts to compare, e.g. 1 2 (pooled sampler)"
    )
    p.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # one variant, in this process
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.measure is not None:
        _measure_here(args)
        return
    if args.workers:
        _compare_workers(args)
        return
    args.out = args.out or RESULTS
    threads = [f"train.threads={args.threads}"] if args.threads else []
    prepared = prepare(load_config(CONFIG, threads), with_text=True)
    rounds: dict[str, list[float]] = {negatives: [] for negatives in SAMPLERS}
    for _ in range(
        args.repeats
    ):  # interleaved, so a slow spell of a shared machine hits every sampler
        for negatives in SAMPLERS:
            config = load_config(CONFIG, [*threads, f'train.negatives="{negatives}"'])
            rounds[negatives].append(measure_throughput(config, prepared, args.epochs))
    rows = [_row(negatives, sps, max(rounds["per_example"])) for negatives, sps in rounds.items()]
    print(f"{'variant':<36} {'seq/s':>8} {'x per_example':>14} {'x reference':>14}")
    for r in rows:
        print(
            f"{r['variant']:<36} {r['sequences_per_second']:>8} {r['vs_per_example']:>14} "
            f"{r['vs_reference_low']:>6}-{r['vs_reference_high']:<6}"
        )
    payload = {
        "settings": "d=128, d_n=64, 1 block, L=10, batch 256, infoNCE 64 negatives, beauty cold-start users",
        "train_rows": len(prepared.split.train.targets),
        "epochs": args.epochs,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "reference_sequences_per_second": list(REFERENCE),
        "results": rows,
    }
    save_json(args.out, payload)


def _row(negatives: str, rounds: list[float], per_example: float) -> dict[str, object]:
    best = max(rounds)
    return {
        "variant": f"alphafuse, {negatives} negatives",
        "sequences_per_second": round(best),
        "rounds": [round(r) for r in rounds],
        "vs_per_example": round(best / per_example, 2),
        "vs_reference_low": round(best / REFERENCE[1], 2),
        "vs_reference_high": round(best / REFERENCE[0], 2),
    }


def _measure_here(args: argparse.Namespace) -> None:
    """One variant (this process, or each torchrun worker): rank 0 writes its sequences/s to ``--measure``."""
    config = load_config(CONFIG, [f"train.threads={args.threads}"])
    sps = measure_throughput(config, prepare(config, with_text=True), args.epochs)
    if os.environ.get("RANK", "0") == "0":
        args.measure.write_text(json.dumps({"sequences_per_second": sps}))


def _run_variant(workers: int, threads: int, epochs: int) -> float:
    """Sequences/s of ``workers`` processes with ``threads`` threads each, in fresh processes."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sps.json"
        own = [__file__, "--measure", str(out), "--threads", str(threads), "--epochs", str(epochs)]
        launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={workers}"]
        argv = [sys.executable, *(launch if workers > 1 else []), *own]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run(argv, cwd=REPO, env=env, check=True)
        return float(json.loads(out.read_text())["sequences_per_second"])


def _compare_workers(args: argparse.Namespace) -> None:
    prepare(
        load_config(CONFIG), with_text=True
    )  # the text embeddings, cached once before the workers start
    most = max(args.workers)
    variants = [(w, 1) for w in args.workers] + ([(1, most)] if most > 1 else [])
    rounds: dict[tuple[int, int], list[float]] = {v: [] for v in variants}
    for _ in range(
        args.repeats
    ):  # interleaved, so a slow spell of a shared machine hits every variant
        for workers, threads in variants:
            rounds[(workers, threads)].append(_run_variant(workers, threads, args.epochs))
    base = max(rounds[(1, 1)]) if (1, 1) in rounds else None
    rows = [
        {
            "workers": w,
            "threads_per_worker": t,
            "sequences_per_second": round(max(r)),
            "rounds": [round(x) for x in r],
            "vs_one_worker_one_thread": None if base is None else round(max(r) / base, 2),
        }
        for (w, t), r in rounds.items()
    ]
    print(f"{'workers':>7} {'threads':>7} {'seq/s':>8} {'x 1 worker':>11}")
    for r in rows:
        print(
            f"{r['workers']:>7} {r['threads_per_worker']:>7} {r['sequences_per_second']:>8} "
            f"{r['vs_one_worker_one_thread']!s:>11}"
        )
    payload = {
        "settings": "d=128, d_n=64, 1 block, L=10, global batch 256, infoNCE 64 pooled negatives, "
        "beauty cold-start users; DDP over gloo on the CPU",
        "epochs": args.epochs,
        "repeats": args.repeats,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "results": rows,
    }
    save_json(args.out or WORKER_RESULTS, payload)


if __name__ == "__main__":
    main()
