"""Training throughput of SASRec-AlphaFuse at the reference settings, on the cold-start-user split of beauty.

    .venv/bin/python benchmarks/train_speed.py [--epochs 1] [--threads 1] [--repeats 2]

Reference settings (the AlphaFuse authors' SASRec setup): d=128, d_n=64, one block, L=10, batch 256, infoNCE
with 64 negatives, amazon14-beauty users split 8:1:1 with every prefix as a training row. The authors' trainer
measured 3,500-3,900 sequences/s on this kind of machine (2 vCPU); the target is 3x that. The three negative
samplers run interleaved in one process for ``--repeats`` rounds and each keeps its fastest round, so their ratios
hold on a shared machine.
Writes benchmarks/results/train_speed.json.
"""

from __future__ import annotations

import argparse
import logging
import platform
from pathlib import Path

import torch
from results_io import save_json

from training.config import load_config
from training.experiment import measure_throughput, prepare

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "training" / "configs" / "amazon14-beauty-coldstart.toml"
RESULTS = REPO / "benchmarks" / "results" / "train_speed.json"
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
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
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


if __name__ == "__main__":
    main()
