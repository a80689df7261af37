"""Training throughput of SASRec-AlphaFuse at the reference settings, on the cold-start-user split of beauty.

    .venv/bin/python benchmarks/train_speed.py [--epochs 1]

Reference settings (the AlphaFuse authors' SASRec setup): d=128, d_n=64, one block, L=10, batch 256, infoNCE
with 64 negatives, amazon14-beauty users split 8:1:1 with every prefix as a training row. The authors' trainer
measured 3,500-3,900 sequences/s on this kind of machine (2 vCPU); the target is 3x that. The three negative-sampling
variants run in the same process, one after the other, so their ratios are robust to machine noise.
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


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    base = load_config(CONFIG)
    prepared = prepare(base, with_text=True)
    rows = []
    for negatives in ["pooled", "per_example", "shared"]:
        config = load_config(CONFIG, [f'train.negatives="{negatives}"'])
        sps = measure_throughput(config, prepared, args.epochs)
        rows.append(
            {
                "variant": f"alphafuse, {negatives} negatives",
                "sequences_per_second": round(sps),
                "vs_reference_low": round(sps / REFERENCE[1], 2),
                "vs_reference_high": round(sps / REFERENCE[0], 2),
            }
        )
    print(f"{'variant':<36} {'seq/s':>8} {'x reference':>14}")
    for r in rows:
        print(
            f"{r['variant']:<36} {r['sequences_per_second']:>8} "
            f"{r['vs_reference_low']:>6}-{r['vs_reference_high']:<6}"
        )
    payload = {
        "settings": "d=128, d_n=64, 1 block, L=10, batch 256, infoNCE 64 negatives, beauty cold-start users",
        "train_rows": len(prepared.split.train.targets),
        "epochs": args.epochs,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "reference_sequences_per_second": list(REFERENCE),
        "results": rows,
    }
    save_json(args.out, payload)


if __name__ == "__main__":
    main()
