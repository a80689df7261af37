"""Cold-start items, measured (issue 7): SASRec x {id, llminit, alphafuse} + popularity + text kNN (raw and centred),
cold vs warm.

    .venv/bin/python benchmarks/cold_items.py                                  # every dataset, 3 seeds
    .venv/bin/python benchmarks/cold_items.py --datasets ml-100k:newest --seeds 0 1 2
    .venv/bin/python benchmarks/cold_items.py --online --datasets ml-100k:newest --seeds 0
    .venv/bin/python benchmarks/cold_items.py --report                         # table + plot of the results

A dataset is ``<name>:<random|newest>`` (the ``cold_items`` pick). Seed s sets both ``data.split_seed`` (which
items are cold, for ``random``) and ``train.seed``. Each finished run is appended to
benchmarks/results/cold_items.json at once (one JSON object per run: ``dataset``, ``cold_items``, ``model``,
``embedding``, ``seed``, ``metrics`` {``cold``, ``warm``}, ``surface_rate``, plus the diagnostics of
``training.protocols.cold_items.evaluate_cold_items`` and the settings); runs already there are skipped, so an
interrupted benchmark continues where it stopped. ``--online`` trains (or reuses) the AlphaFuse run, replays its
cold test cases through the served artifact (``benchmarks/cold_replay.py``) and writes
benchmarks/results/cold_items_online.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from results_io import load_records, save_json

from training.config import ExperimentConfig, TrainConfig, add_override_option, load_config
from training.experiment import Prepared, prepare, run_experiment
from training.protocols.cold_items import ColdItemSplit, evaluate_cold_items
from training.protocols.cold_items.baselines import BASELINES, popularity_scorer, text_knn_scorer

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "training" / "configs"
RESULTS = REPO / "benchmarks" / "results" / "cold_items.json"
ONLINE = REPO / "benchmarks" / "results" / "cold_items_online.json"
DATASETS = [
    "ml-100k:newest",
    "amazon14-beauty:random",
    "amazon14-sports:random",
    "yelp:random",
    "ml-100k:random",
]
EMBEDDINGS = ("id", "llminit", "alphafuse")  # SASRec with each item-embedding mode
MODELS = [*BASELINES, *EMBEDDINGS]  # the no-training baselines, then the trained models
# text nearest neighbours on raw and on centred embeddings; the paired tables compare with both
TEXT_BASELINES = ("text_knn", "text_knn_centred")
# compute is scarce (2 shared CPU cores): capped epochs, L=20; stated in every record
SETTINGS = ["train.max_epochs=6", "train.patience=3", "data.max_len=20", "train.threads=1"]
KEYS = ["HR@10", "NDCG@10", "HR@20", "NDCG@20"]
# the README recipe's --semantic-query-beta: plotted beside each variant's own figures
SERVED_BETA = 0.5
DEFAULT_NEGATIVES = TrainConfig.model_fields["negatives"].default  # "pooled"
EMBEDDING = "embedding."
# the overrides that make a model variant (baselines ignore them)
VARIANT = (EMBEDDING, "model.semantic_query_beta")


def main() -> None:
    args = _args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    torch.set_num_threads(1)
    results = load_records(args.out)
    if args.report:
        print(format_table(results))
        for baseline in TEXT_BASELINES:
            print()
            print(format_paired(results, baseline))
        plot(results, args.out.with_suffix(".png"))
        return
    if args.online:
        _online(args)
        return
    done = {  # records without "negatives" were trained with "shared"
        (
            *(r["dataset"], r["cold_items"], r["model"], r["embedding"], r["seed"]),
            *(r.get("variant", ""), r.get("negatives", "shared")),
        )
        for r in results
    }
    variant = _variant(args.overrides)
    for spec in args.datasets:
        dataset, pick = _parse(spec)
        for seed in args.seeds:
            prepared: Prepared | None = None
            for model in args.models:
                embedding = model if model in EMBEDDINGS else None
                name = "sasrec" if embedding else model
                key = (dataset, pick, name, embedding, seed)
                # the baselines have no embedding options: they ignore the embedding.* overrides
                run_variant = variant if embedding else ""
                overrides = args.overrides if embedding else _without_embedding(args.overrides)
                config = _config(dataset, pick, seed, embedding or "id", overrides)
                if (*key, run_variant, config.train.negatives) in done:
                    continue
                prepared = prepared or prepare(config, with_text=True)
                cold = _measure(config, prepared, model)
                record = {
                    **_record(key, cold, [*SETTINGS, *overrides]),
                    "negatives": config.train.negatives,
                }
                results.append({**record, "variant": run_variant} if run_variant else record)
                save_json(args.out, results)
    print(format_table(results))
    plot(results, args.out.with_suffix(".png"))


def _config(
    dataset: str, pick: str, seed: int, mode: str, overrides: list[str]
) -> ExperimentConfig:
    return load_config(
        CONFIGS / f"{dataset}.toml",
        [
            'data.protocol="cold_items"',
            f'data.cold_pick="{pick}"',
            f"data.split_seed={seed}",
            f"train.seed={seed}",
            f'embedding.mode="{mode}"',
            *SETTINGS,
            *overrides,
        ],
    )


def _measure(config: ExperimentConfig, prepared: Prepared, model: str) -> dict[str, Any]:
    split = prepared.split
    assert isinstance(split, ColdItemSplit)
    if model == "popularity":
        return evaluate_cold_items(popularity_scorer(split), split, config.eval.batch_size)
    if model in TEXT_BASELINES:
        assert prepared.text_embeddings is not None
        centre_on = split.rules.fit_rows if model == "text_knn_centred" else None
        return evaluate_cold_items(
            text_knn_scorer(prepared.text_embeddings, centre_on=centre_on),
            split,
            config.eval.batch_size,
        )
    with tempfile.TemporaryDirectory() as tmp:
        metrics = run_experiment(config, Path(tmp), prepared=prepared).metrics
    cold: dict[str, Any] = metrics["cold_items"]
    cold["train"] = {
        k: metrics[k]
        for k in ("best_epoch", "epochs", "valid_best", "train_seconds", "train_cpu_seconds")
    }
    return cold


def _record(
    key: tuple[str, str, str, str | None, int], cold: dict[str, Any], settings: list[str]
) -> dict[str, Any]:
    dataset, pick, model, embedding, seed = key
    rest = {k: v for k, v in cold.items() if k not in ("cold", "warm", "surface_rate")}
    return {
        "dataset": dataset,
        "cold_items": pick,
        "model": model,
        "embedding": embedding,
        "seed": seed,
        "metrics": {"cold": cold["cold"], "warm": cold["warm"]},
        "surface_rate": cold["surface_rate"],
        **rest,
        "settings": settings,
    }


def _variant(overrides: list[str]) -> str:
    """The ``embedding.*`` overrides of a run, e.g. ``id_dropout=0.3``, and a trained semantic query: they make a
    model variant of its own (a separate key and table row); other overrides (epochs, evaluation options) do not."""
    return " ".join(o.removeprefix(EMBEDDING) for o in overrides if o.startswith(VARIANT))


def _without_embedding(overrides: list[str]) -> list[str]:
    return [o for o in overrides if not o.startswith(VARIANT)]


def _label(r: dict[str, Any]) -> str:
    """``<embedding> <variant>``, marked ``(shared)`` for a trained model from before ``pooled`` was the default
    sampler (records without ``negatives``), so runs of both samplers never share a row."""
    base = r["embedding"] or r["model"]
    label = f"{base} {r['variant']}" if r.get("variant") else base
    sampler = r.get("negatives", "shared")
    return (
        label if r["model"] in BASELINES or sampler == DEFAULT_NEGATIVES else f"{label} ({sampler})"
    )


REMEDIES = {"remedy_expected_id": "+mean ID", "remedy_id_regression": "+ID map"}  # offline only


def _rows(r: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A run's own figures and, for AlphaFuse, each offline remedy's, as (label, figures).

    The item-side remedies (cold rows changed) get ``+mean ID`` / ``+ID map``; the semantic query (rows unchanged,
    query given a content term) one row per ``beta``: ``+semq b=<beta>``.
    """
    own = {"cold": r["metrics"]["cold"], "warm": r["metrics"]["warm"], **r}
    return (
        [(_label(r), own)]
        + [(_label(r) + suffix, r[key]) for key, suffix in REMEDIES.items() if key in r]
        + [(f"{_label(r)}+semq b={e['beta']:g}", e) for e in r.get("remedy_semantic_query", [])]
    )


def _plotted(r: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A run's own figures and, for a variant, its semantic-query figures at the served beta."""
    rows = _rows(r)
    if not r.get("variant"):
        return rows[:1]
    served = f"+semq b={SERVED_BETA:g}"
    return rows[:1] + [row for row in rows if row[0].endswith(served)]


def format_table(results: list[dict[str, Any]]) -> str:
    """Mean +- std over seeds per (dataset, pick, model): cold and warm NDCG@10/HR@10, ratio, surface rate.

    AlphaFuse runs add a row per offline remedy (``+mean ID``, ``+ID map``, ``+semq b=<beta>`` per semantic-query
    beta); the ID map's row also gives the held-out R^2 of its regression.
    """
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in results:
        for label, figures in _rows(r):
            groups.setdefault((r["dataset"], r["cold_items"], label), []).append(figures)
    cols = ["cold NDCG@10", "cold HR@10", "warm NDCG@10", "warm HR@10", "HR@10 c/w", "surface"]
    width = max([24, *(len(label) for _, _, label in groups)])
    header = f"{'dataset':<16} {'pick':<7} {'model':<{width}} {'seeds':>5} " + " ".join(
        f"{c:>15}" for c in [*cols, "ID-map R2"]
    )
    lines = [header, "-" * len(header)]
    for (dataset, pick, label), runs in groups.items():

        def cell(values: list[float]) -> str:
            v = np.array(values, dtype=np.float64)
            return f"{v.mean():.4f}±{v.std():.4f}"

        cells = [
            cell([r["cold"]["NDCG@10"] for r in runs]),
            cell([r["cold"]["HR@10"] for r in runs]),
            cell([r["warm"]["NDCG@10"] for r in runs]),
            cell([r["warm"]["HR@10"] for r in runs]),
            cell([r["ratio"]["HR@10"] for r in runs]),
            cell([r["surface_rate"] for r in runs]),
            cell([r["id_map"]["heldout_r2"] for r in runs]) if "id_map" in runs[0] else "",
        ]
        lines.append(
            f"{dataset:<16} {pick:<7} {label:<{width}} {len(runs):>5} "
            + " ".join(f"{c:>15}" for c in cells)
        )
    return "\n".join(lines)


def format_paired(results: list[dict[str, Any]], baseline: str = "text_knn") -> str:
    """Cold NDCG@10 minus ``baseline``'s on the same split, per seed, for every plotted row that shares seeds.

    Under ``random`` a seed is also the split seed, so both sides move with the split: the per-seed difference
    separates the models where the +- spreads of `format_table` (which hold the split's variation too) overlap.
    """
    base: dict[tuple[str, str], dict[int, float]] = {}
    rows: dict[tuple[str, str, str], dict[int, float]] = {}
    for r in results:
        split = (r["dataset"], r["cold_items"])
        if r["model"] == baseline:
            base.setdefault(split, {})[r["seed"]] = r["metrics"]["cold"]["NDCG@10"]
        if r["model"] in BASELINES:
            continue
        for label, figures in _plotted(r):
            rows.setdefault((*split, label), {})[r["seed"]] = figures["cold"]["NDCG@10"]
    width = max([24, *(len(label) for _, _, label in rows)])
    header = f"{'dataset':<16} {'pick':<7} {'model':<{width}} {'pairs':>5} " + " ".join(
        f"{c:>15}" for c in [f"- {baseline}", "min", "max"]
    )
    lines = [f"cold NDCG@10 minus {baseline}'s, paired by seed", header, "-" * len(header)]
    for (dataset, pick, label), by_seed in sorted(rows.items(), key=lambda row: row[0][:2]):
        ref = base.get((dataset, pick), {})
        diffs = np.array([v - ref[s] for s, v in sorted(by_seed.items()) if s in ref])
        if not len(diffs):
            continue
        cells = [
            f"{diffs.mean():+.4f}±{diffs.std():.4f}",
            f"{diffs.min():+.4f}",
            f"{diffs.max():+.4f}",
        ]
        lines.append(
            f"{dataset:<16} {pick:<7} {label:<{width}} {len(diffs):>5} "
            + " ".join(f"{c:>15}" for c in cells)
        )
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Cold vs warm NDCG@10 (mean over seeds, std as error bars) per model, one panel per dataset/pick; a
    variant also gets a bar pair for its semantic query at ``SERVED_BETA``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = sorted({(r["dataset"], r["cold_items"]) for r in results})
    if not panels:
        return
    n_cols = min(2, len(panels))
    n_rows = -(-len(panels) // n_cols)
    fig = Figure(figsize=(7.5 * n_cols, 3.6 * n_rows))
    FigureCanvasAgg(fig)
    for p, (dataset, pick) in enumerate(panels):
        ax = fig.add_subplot(n_rows, n_cols, p + 1)
        figures: dict[str, list[dict[str, Any]]] = {}
        for r in results:
            if (r["dataset"], r["cold_items"]) == (dataset, pick):
                for label, f in _plotted(r):
                    figures.setdefault(label, []).append(f)
        # the models in their order, then their variants
        labels = [m for m in MODELS if m in figures] + sorted(set(figures) - set(MODELS))
        x = np.arange(len(labels))
        for offset, part in ((-0.2, "cold"), (0.2, "warm")):
            values = [[f[part]["NDCG@10"] for f in figures[m]] for m in labels]
            ax.barh(
                x + offset,
                [np.mean(v) for v in values],
                0.4,
                xerr=[np.std(v) for v in values],
                label=part,
            )
        ax.set_yticks(x, labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"{dataset} ({pick})", fontsize=9)
        ax.set_xlabel("NDCG@10")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    tmp.replace(path)


def _online(args: argparse.Namespace) -> None:
    from cold_replay import replay_cold_items

    online = load_records(args.online_out)
    for spec in args.datasets:
        dataset, pick = _parse(spec)
        for seed in args.seeds:
            config = _config(dataset, pick, seed, "alphafuse", args.overrides)
            prepared = prepare(config, with_text=True)
            with tempfile.TemporaryDirectory() as tmp:
                run_dir = Path(tmp) / "run"
                run_experiment(config, run_dir, prepared=prepared)
                replay = replay_cold_items(
                    run_dir,
                    Path(tmp) / "artifacts",
                    prepared=prepared,
                    with_warm=True,
                    semantic_query_beta=args.semantic_query_beta,
                )
            online.append({**replay, "seed": seed, "settings": [*SETTINGS, *args.overrides]})
            save_json(args.online_out, online)
            print(json.dumps(replay, indent=1))


def _parse(spec: str) -> tuple[str, str]:
    dataset, _, pick = spec.partition(":")
    if pick not in ("random", "newest"):
        raise SystemExit(f"dataset {spec!r}: expected <name>:random or <name>:newest")
    return dataset, pick


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--datasets", nargs="+", default=DATASETS, help="<name>:<random|newest>")
    p.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    add_override_option(p)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument(
        "--online", action="store_true", help="the served replay (cold_items_online.json)"
    )
    p.add_argument("--online-out", type=Path, default=ONLINE)
    p.add_argument(
        "--semantic-query-beta",
        type=float,
        default=0.0,
        help="--online: serve (and compute offline) the semantic query with this beta",
    )
    p.add_argument("--report", action="store_true", help="only print the table and draw the plot")
    return p.parse_args()


if __name__ == "__main__":
    main()
