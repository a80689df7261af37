"""The training side of the ``recsys`` command: ``data``, ``train``, ``evaluate``, and quickstart training.

The entry point itself is ``exporter.cli.main`` (it adds ``export``, ``serve`` and the end-to-end ``quickstart``);
this module registers the subcommands that need only the training packages.

recsys data  training/configs/amazon14-beauty.toml
recsys data  training/configs/amazon14-beauty-coldstart.toml --to-df parity/beauty   # the authors' .df layout
recsys train training/configs/amazon14-beauty.toml --set embedding.mode="id" --run-dir runs/beauty-id
recsys evaluate runs/beauty-id
recsys train training/configs/amazon14-beauty.toml --nproc 4          # 4 workers under torchrun (DDP)

``python -m training`` (``training/__main__.py``) runs these commands alone; it is what ``--nproc`` starts under
``torch.distributed.run``, and what ``torchrun --nproc-per-node N -m training train CONFIG`` runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from training.config import ExperimentConfig, add_override_option, load_config

if TYPE_CHECKING:
    from training.experiment import Prepared

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
logger = logging.getLogger(__name__)


def add_training_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``data``, ``train`` and ``evaluate`` on the ``recsys`` parser."""
    data = sub.add_parser("data", help="load a dataset, print its statistics and split sizes")
    data.add_argument("config", type=Path)
    data.add_argument(
        "--to-df",
        type=Path,
        metavar="DIR",
        help="also write the split and the item embeddings in the AlphaFuse authors' .df layout (a new folder)",
    )
    data.add_argument(
        "--embedding-name",
        default="text",
        help="with --to-df: the embeddings file is <name>_emb.pickle (their --language_model_type)",
    )
    add_override_option(data)
    data.set_defaults(func=_data)

    train = sub.add_parser("train", help="train one model and test it once")
    train.add_argument("config", type=Path)
    train.add_argument("--run-dir", type=Path, help="default: runs/<config name>-<mode>-s<seed>")
    add_override_option(train)
    train.add_argument(
        "--resume", action="store_true", help="continue from the run's last checkpoint"
    )
    train.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="train with N workers on this machine under torchrun (DDP; default 1: one process)",
    )
    train.set_defaults(func=_train)

    evaluate = sub.add_parser("evaluate", help="re-evaluate a finished run on its test cases")
    evaluate.add_argument("run_dir", type=Path)
    evaluate.set_defaults(func=_evaluate)


def _data(args: argparse.Namespace) -> int:
    from training.data.dataset import format_stats
    from training.experiment import prepare

    config = load_config(args.config, args.overrides)
    prepared = prepare(config, with_text=args.to_df is not None)
    print(format_stats(prepared.dataset.stats()))
    split = prepared.split
    print(
        f"split {split.protocol}: train rows {len(split.train.targets)}, valid "
        f"{len(split.valid.targets)}, test {len(split.test.targets)}, L={split.max_len}"
    )
    if args.to_df is not None:
        from training.data.readers import write_dreamrec_df

        ids = prepared.dataset.item_ids
        write_dreamrec_df(split, ids, args.to_df, prepared.text_embeddings, args.embedding_name)
        print(
            f"wrote {args.to_df}: train/val/test_data.df, data_statis.df, {args.embedding_name}_emb.pickle"
        )
    return 0


def _train(args: argparse.Namespace) -> int:
    from training.experiment import run_experiment

    config = load_config(args.config, args.overrides)
    run_dir = args.run_dir or Path("runs") / _run_name(config)
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return launch_workers(args.nproc, _worker_argv(args, run_dir))
    result = run_experiment(config, run_dir, resume=args.resume)
    if not result.metrics:  # a worker after rank 0: rank 0 reports
        return 0
    _print_summary({_run_name(config): result.metrics})
    print(f"run directory: {run_dir}")
    return 0


def _worker_argv(args: argparse.Namespace, run_dir: Path) -> list[str]:
    """The ``train`` command each worker runs: this one, with the run directory fixed and no ``--nproc``."""
    argv = ["train", str(args.config), "--run-dir", str(run_dir)]
    for override in args.overrides:
        argv += ["--set", override]
    return [*argv, "--resume"] if args.resume else argv


def launch_workers(nproc: int, argv: list[str]) -> int:
    """Run ``python -m training <argv>`` in ``nproc`` workers on this machine under torchrun; its exit status.

    ``torch.distributed.run`` (torchrun) with a standalone rendezvous: it picks a free local port, starts the
    workers with ``RANK``/``WORLD_SIZE`` set, and stops them all when one fails.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    launch = ["--standalone", f"--nproc-per-node={nproc}", "-m", "training", *argv]
    try:
        run(get_args_parser().parse_args(launch))  # type: ignore[no-untyped-call]
    except ChildFailedError as exc:
        print(f"error: a training worker failed: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training``: the ``data``, ``train`` and ``evaluate`` commands; ranks after 0 log warnings only."""
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    add_training_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    quiet = os.environ.get("RANK", "0") != "0"
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _evaluate(args: argparse.Namespace) -> int:
    from training.experiment import evaluate_run

    metrics = evaluate_run(args.run_dir)
    _print_summary({args.run_dir.name: metrics})
    return 0


def train_quickstart(
    run_dir: Path, modes: list[str], epochs: int, overrides: list[str]
) -> tuple[dict[str, Path], Prepared]:
    """Fetch ml-100k, train each mode for a few epochs, print the results table; return the run dirs."""
    from training.data.quickstart import ensure_ml100k
    from training.experiment import prepare, run_experiment

    folder = ensure_ml100k()
    overrides = [
        f'data.source.path="{folder}"',
        f"train.max_epochs={epochs}",
        "data.max_len=20",  # a short run; benchmarks/quality.py uses the config's L=50
        *overrides,
    ]
    base = load_config(CONFIG_DIR / "ml-100k.toml", overrides)
    prepared = prepare(base, with_text=True)
    results = {}
    for mode in modes:
        config = load_config(CONFIG_DIR / "ml-100k.toml", [*overrides, f'embedding.mode="{mode}"'])
        results[mode] = run_experiment(config, run_dir / mode, prepared=prepared).metrics
    _print_summary(results)
    print(f"run directories: {run_dir}/<mode>")
    return {mode: run_dir / mode for mode in modes}, prepared


def _run_name(config: ExperimentConfig) -> str:
    return f"{config.name}-{config.embedding.mode}-s{config.train.seed}"


def _print_summary(results: dict[str, dict[str, object]]) -> None:
    from training.evaluation.groups import format_metrics_table

    rows = {}
    for name, metrics in results.items():
        test = metrics["test"]
        assert isinstance(test, dict)
        rows[name] = {k: float(v) for k, v in test.items() if k.split("@")[-1] in {"10", "20"}}
        groups = metrics.get("groups")
        if isinstance(groups, dict) and "tail_item" in groups:
            rows[name]["tail_item NDCG@10"] = float(groups["tail_item"]["NDCG@10"])
    print()
    print(format_metrics_table(rows))
    print(
        json.dumps(
            {
                k: round(float(v["sequences_per_second"]), 1)  # type: ignore[arg-type]
                for k, v in results.items()
            },
            indent=None,
        ),
        "training sequences/s",
    )
