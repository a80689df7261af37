"""Recommendation quality: {SASRec, DreamRec} x {id, llminit, alphafuse} and LLM-ESR x seeds on the real datasets.

    .venv/bin/python benchmarks/quality.py                       # all datasets, 3 seeds
    .venv/bin/python benchmarks/quality.py --datasets ml-100k --seeds 0
    .venv/bin/python benchmarks/quality.py --report              # the table of the committed results
    .venv/bin/python benchmarks/quality.py --report --markdown --out benchmarks/results/quality_long_tail.json
    .venv/bin/python benchmarks/quality.py --protocol cold_start_users --models sasrec dreamrec \
        --datasets amazon14-beauty --modes id alphafuse --set dreamrec:train.max_epochs=2

Configs: ``<dataset>.toml`` (leave-one-out, SASRec); under ``--protocol cold_start_users``
``<dataset>-coldstart.toml`` (SASRec) and ``<dataset>-dreamrec.toml`` (DreamRec). ``--set KEY=VALUE`` applies
to every model, ``--set MODEL:KEY=VALUE`` to one. ``--keep-runs DIR`` keeps each run directory (for
benchmarks/dreamrec_steps.py).

    .venv/bin/python benchmarks/quality.py --long-tail --models sasrec llmesr --modes id llminit alphafuse \
        --datasets amazon14-beauty --set train.max_epochs=10 --out benchmarks/results/quality_long_tail.json

``--long-tail`` evaluates with LLM-ESR's protocol (sampled 1+100, HR/NDCG@10, four head/tail groups,
``eval.protocol = "long_tail"``) and its table shows every group. ``llmesr`` runs LLM-ESR (one run per seed,
``--modes`` does not apply) with the paper's architecture settings (``training.config.LLMESR_ARCHITECTURE``) on
the dataset's SASRec config; the training objective comes from that config unless ``--set`` overrides it.
AlphaFuse runs choose their semantic-query beta on the sampled validation candidates there (``alphafuse+semq``
rows).

Each finished run is appended to benchmarks/results/quality.json at once (one JSON object per run), and runs
already in the file are skipped, so an interrupted benchmark continues where it stopped. The table at the end
gives mean +- std over seeds of the test metrics (full ranking, the protocol's history masking). AlphaFuse runs
also record ``semantic_query`` (the model ranked with its semantic query, beta chosen on validation;
`training.evaluation.run_metrics.semantic_query_metrics`), shown as an ``alphafuse+semq`` row with the chosen betas.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from results_io import load_records, save_json

from training.config import LLMESR_ARCHITECTURE, add_override_option, load_config
from training.experiment import prepare, run_experiment

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "training" / "configs"
RESULTS = REPO / "benchmarks" / "results" / "quality.json"
DATASETS = ["ml-100k", "amazon14-beauty", "amazon14-sports", "yelp"]
MODES = ["id", "llminit", "alphafuse"]
MODELS = ["sasrec", "dreamrec", "llmesr"]
GROUPS = ["overall", "tail_item", "head_item", "tail_user", "head_user"]
# encoding one prompt per user costs ~4 min per 256 users on these CPUs: mean item vectors instead
LLMESR_USER_TEXT = 'model.llmesr.user_text="mean_items"'


def config_path(dataset: str, protocol: str, model: str) -> Path:
    """The config file of a (dataset, protocol, model) cell."""
    if model == "dreamrec":
        return (
            CONFIGS / f"{dataset}-dreamrec.toml"
        )  # llmesr: the SASRec config + LLMESR_ARCHITECTURE
    return CONFIGS / (
        f"{dataset}-coldstart.toml" if protocol == "cold_start_users" else f"{dataset}.toml"
    )


def model_overrides(overrides: list[str], model: str) -> list[str]:
    """``KEY=VALUE`` for every model plus ``<model>:KEY=VALUE`` for this one."""
    out = []
    for item in overrides:
        head, sep, rest = item.partition(":")
        if sep and head in MODELS and "=" not in head:
            if head == model:
                out.append(rest)
        else:
            out.append(item)
    return out


KEYS = ["HR@10", "NDCG@10", "HR@20", "NDCG@20"]


def main() -> None:
    args = _args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    results = load_records(args.out)
    if args.report:
        if args.llmesr_from:
            results = [r for r in results if r["model"] != "llmesr"] + [
                {**r, "source": args.llmesr_from.name}
                for r in load_records(args.llmesr_from)
                if r["model"] == "llmesr"
            ]
        print(format_long_tail_markdown(results) if args.markdown else format_table(results))
        return
    done = {_key(r) for r in results}
    long_tail = ['eval.protocol="long_tail"'] if args.long_tail else []
    for dataset in args.datasets:
        for model in args.models:
            path = config_path(dataset, args.protocol, model)
            overrides = [*model_overrides(args.overrides, model), *long_tail]
            if model == "llmesr":
                overrides = [*LLMESR_ARCHITECTURE, LLMESR_USER_TEXT, *overrides]
            base = load_config(path, overrides)
            if base.data.protocol != args.protocol or base.model.name != model:
                raise ValueError(f"{path}: not a {model} config under {args.protocol}")
            prepared = None
            for mode in ["llmesr"] if model == "llmesr" else args.modes:
                for seed in args.seeds:
                    key = (dataset, base.data.protocol, base.eval.protocol, model, mode, seed)
                    chosen = [] if model == "llmesr" else [f'embedding.mode="{mode}"']
                    config = load_config(path, [*overrides, *chosen, f"train.seed={seed}"])
                    if (*key, args.variant, config.train.negatives) in done:
                        continue
                    prepared = prepared or prepare(config, with_text=True)
                    with tempfile.TemporaryDirectory() as tmp:
                        run_dir = Path(tmp)
                        if args.keep_runs:
                            label = f"{mode}-{args.variant}" if args.variant else mode
                            run_dir = args.keep_runs / f"{dataset}-{model}-{label}-s{seed}"
                        m = run_experiment(config, run_dir, prepared=prepared).metrics
                    variant = {"variant": args.variant} if args.variant else {}
                    negatives = {"negatives": config.train.negatives}
                    results.append(
                        {
                            **_record(key, m),
                            **variant,
                            **negatives,
                            "overrides": [*overrides, *chosen],
                        }
                    )
                    save_json(args.out, results)
    print(format_table(results))


def _key(r: dict[str, Any]) -> tuple[str, str, str, str, str, int, str, str]:
    eval_protocol = r.get("eval_protocol", "standard")
    fields = (r["dataset"], r["protocol"], eval_protocol, r["model"], r["embedding"], r["seed"])
    return (*fields, r.get("variant", ""), negatives_of(r))


def negatives_of(r: dict[str, Any]) -> str:
    """The run's ``train.negatives``; records written before the field existed were trained with "shared"."""
    return str(r.get("negatives", "shared"))


def _record(key: tuple[str, str, str, str, str, int], m: dict[str, Any]) -> dict[str, Any]:
    dataset, protocol, eval_protocol, model, mode, seed = key
    return {
        "dataset": dataset,
        "protocol": protocol,
        "eval_protocol": eval_protocol,
        "group_thresholds": m.get("group_thresholds"),
        "model": model,
        "embedding": mode,
        "seed": seed,
        "metrics": m["test"],
        "metrics_unmasked": m["test_unmasked"],
        "metrics_sampled": m["test_sampled"],
        "groups": m["groups"],
        "trainable_params": m["trainable_params"],
        "train_seconds": round(m["train_seconds"], 1),
        "train_cpu_seconds": round(m["train_cpu_seconds"], 1),
        "seconds_per_epoch": round(m["train_seconds"] / max(m["epochs"], 1), 1),
        "epochs": m["epochs"],
        "sequences_per_second": round(m["sequences_per_second"], 1),
        "best_epoch": m["best_epoch"],
        "valid_best": m["valid_best"],
        **({"semantic_query": m["semantic_query"]} if "semantic_query" in m else {}),
    }


def _rows(
    results: list[dict[str, Any]], long_tail: bool
) -> list[tuple[tuple[str, str, str, str], list[dict[str, Any]]]]:
    """Runs grouped by (dataset, protocol, model, embedding) in the usual order, of one evaluation protocol.

    An AlphaFuse run with a ``semantic_query`` also counts as a run of ``<embedding>+semq``: the model served
    with its semantic query, beta chosen on validation (its test metrics, groups and beta). A run made with
    ``--variant NAME`` counts as a run of ``<embedding>@NAME``.
    """
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    mixed = len({negatives_of(r) for r in results}) > 1  # then each row names its negative sampling
    for r in results:
        if (r.get("eval_protocol") == "long_tail") != long_tail:
            continue
        label = r["embedding"] + (f"@{r['variant']}" if r.get("variant") else "")
        label += f"~{negatives_of(r)}" if mixed else ""
        key = (r["dataset"], r.get("protocol", "leave_one_out"), r["model"], label)
        groups.setdefault(key, []).append(r)
        if "semantic_query" in r:
            sq = r["semantic_query"]
            semq = {**r, "metrics": sq["test"], "groups": sq["groups"], "beta": sq["beta"]}
            groups.setdefault((*key[:3], f"{label}+semq"), []).append(semq)
    return sorted(groups.items(), key=_row_order)


def _betas(runs: list[dict[str, Any]]) -> str:
    return "/".join(f"{r['beta']:g}" for r in runs if "beta" in r)


def format_long_tail_table(results: list[dict[str, Any]]) -> str:
    """Long-tail protocol: HR@10/NDCG@10 mean over seeds per group, the std over seeds of NDCG@10 overall and on tail
    items, params, seconds per epoch."""
    header = f"{'dataset':<16} {'model':<14} {'seeds':>5} " + " ".join(
        f"{g + ' H/N@10':>19}" for g in GROUPS
    )
    header += (
        f" {'N@10 std all/tail':>19} {'params':>9} {'s/epoch':>8} {'epochs':>6}  beta (per seed)"
    )
    lines = [header, "-" * len(header)]
    for (dataset, _, model, mode), runs in _rows(results, long_tail=True):
        cells = []
        for g in GROUPS:
            hr = np.mean([r["groups"][g]["HR@10"] for r in runs])
            nd = np.mean([r["groups"][g]["NDCG@10"] for r in runs])
            cells.append(f"{hr:.4f}/{nd:.4f}")
        spread = "/".join(
            f"{np.std([r['groups'][g]['NDCG@10'] for r in runs]):.4f}"
            for g in ("overall", "tail_item")
        )
        cells.append(spread)
        spe = np.mean([r["seconds_per_epoch"] for r in runs])
        epochs = np.mean([r["epochs"] for r in runs])
        label = model if model == "llmesr" else mode
        lines.append(
            f"{dataset:<16} {label:<14} {len(runs):>5} "
            + " ".join(f"{c:>19}" for c in cells)
            + f" {runs[0]['trainable_params']:>9} {spe:>8.0f} {epochs:>6.1f}  {_betas(runs)}".rstrip()
        )
    return "\n".join(lines)


def format_long_tail_markdown(results: list[dict[str, Any]]) -> str:
    """The long-tail table as benchmarks/long_tail.md shows it: NDCG@10 per group (mean +- std over seeds overall
    and on tail items when there are two or more seeds, means elsewhere), trainable parameters, training seconds,
    best/last epoch per seed; semq rows name their betas (per seed)."""
    lines = [
        "| dataset | model | seeds | overall | tail item | head item | tail user | head user | params | train s "
        "| best/last epoch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (dataset, _, model, mode), runs in _rows(results, long_tail=True):
        ndcg = {g: np.array([r["groups"][g]["NDCG@10"] for r in runs]) for g in GROUPS}
        cells = [
            # one seed has no spread: a std of 0 would read as a measured one
            *(
                f"{ndcg[g].mean():.4f}" + (f" ± {ndcg[g].std():.4f}" if len(runs) > 1 else "")
                for g in ("overall", "tail_item")
            ),
            *(f"{ndcg[g].mean():.4f}" for g in ("head_item", "tail_user", "head_user")),
            f"{runs[0]['trainable_params']:,}",
            f"{np.mean([r['train_seconds'] for r in runs]):,.0f}",
            " ".join(f"{r['best_epoch']}/{r['epochs']}" for r in runs),
        ]
        label = "LLM-ESR" if model == "llmesr" else f"SASRec-{mode}"
        if "source" in runs[0]:
            label += f" ({max(r['epochs'] for r in runs)} epochs, {runs[0]['source']})"
        if mode.endswith("+semq"):
            label = f"{mode} (β {_betas(runs)})"
        name = dataset.removeprefix("amazon14-")
        lines.append(f"| {name} | {label} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_table(results: list[dict[str, Any]]) -> str:
    """Mean +- std over seeds per (dataset, protocol, model, embedding), plus tail-item NDCG@10."""
    if any(r.get("eval_protocol") == "long_tail" for r in results):
        return format_long_tail_table(results)
    rows = _rows(results, long_tail=False)
    width = max([14, *(len(mode) for (_, _, _, mode), _ in rows)])
    header = (
        f"{'dataset':<16} {'protocol':<16} {'model':<9} {'embedding':<{width}} {'seeds':>5} "
        + " ".join(f"{k:>15}" for k in [*KEYS, "tail NDCG@10"])
        + f" {'params':>9} {'seq/s':>7}  beta (per seed)"
    )
    lines = [header, "-" * len(header)]
    for (dataset, protocol, model, mode), runs in rows:
        cells = []
        for k in KEYS:
            v = np.array([r["metrics"][k] for r in runs])
            cells.append(f"{v.mean():.4f}±{v.std():.4f}")
        tail = np.array([r["groups"]["tail_item"]["NDCG@10"] for r in runs])
        cells.append(f"{tail.mean():.4f}±{tail.std():.4f}")
        sps = np.mean([r["sequences_per_second"] for r in runs])
        lines.append(
            f"{dataset:<16} {protocol:<16} {model:<9} {mode:<{width}} {len(runs):>5} "
            + " ".join(f"{c:>15}" for c in cells)
            + f" {runs[0]['trainable_params']:>9} {sps:>7.0f}  {_betas(runs)}".rstrip()
        )
    samplers = ", ".join(sorted({negatives_of(r) for r in results}))
    return "\n".join([*lines, f"negative sampling (train.negatives): {samplers}"])


SAMPLERS = ["pooled", "per_example", "shared"]  # train.negatives, in the order rows name them


def _row_order(item: tuple[tuple[str, str, str, str], Any]) -> tuple[int, str, int, str, int, int]:
    """Datasets, models and embeddings in their usual order (id, llminit, alphafuse, alphafuse+semq), each
    variant's rows after the default setting's; rows that name their sampler in SAMPLERS order."""
    (dataset, protocol, model, label), runs = item
    variant, negatives = runs[0].get("variant", ""), negatives_of(runs[0])
    mode = label.replace(f"@{variant}", "") if variant else label
    mode = mode.replace(f"~{negatives}", "")
    modes = [*MODES, *(f"{m}+semq" for m in MODES)]
    rank = DATASETS.index(dataset) if dataset in DATASETS else len(DATASETS)
    order = modes.index(mode) if mode in modes else len(modes)
    sampler = SAMPLERS.index(negatives) if negatives in SAMPLERS else len(SAMPLERS)
    return rank, protocol, MODELS.index(model), variant, order, sampler


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--datasets", nargs="+", default=DATASETS)
    p.add_argument("--modes", nargs="+", default=MODES)
    p.add_argument("--models", nargs="+", default=["sasrec"], choices=MODELS)
    p.add_argument(
        "--protocol", default="leave_one_out", choices=["leave_one_out", "cold_start_users"]
    )
    p.add_argument("--long-tail", action="store_true", help="LLM-ESR's long-tail protocol")
    p.add_argument("--keep-runs", type=Path, default=None, help="keep run directories here")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    add_override_option(
        p, "override a config value for every model (MODEL:KEY=VALUE: for one model)"
    )
    p.add_argument(
        "--variant",
        default="",
        metavar="NAME",
        help="name the setting that --set makes (e.g. d128): its runs are kept apart from the default "
        "setting's in the results file and shown as <embedding>@NAME",
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--report", action="store_true", help="only print the table of the results file")
    p.add_argument(
        "--markdown",
        action="store_true",
        help="with --report: the long-tail table as in benchmarks/long_tail.md",
    )
    p.add_argument(
        "--llmesr-from",
        type=Path,
        default=None,
        metavar="FILE",
        help="with --report: the LLM-ESR rows from this results file instead (the 40-epoch SASRec table is "
        "compared with the 10-epoch LLM-ESR runs)",
    )
    args = p.parse_args()
    if (args.markdown or args.llmesr_from) and not args.report:
        p.error("--markdown and --llmesr-from only shape the --report table")
    return args


if __name__ == "__main__":
    main()
