"""Online replay of the ``cold_items`` protocol through the real product path (issue 7; ``cold_items.py --online``).

A run trained under ``data.protocol = "cold_items"`` -> ``export_run`` (the held-out items are left out of the
artifact) -> the service on that artifact (in-process store, exact index by default) -> ``POST /items`` with every
held-out item's text only -> one ``POST /recommend`` per cold test case, ``history`` = the case's whole history
(oldest first; the service encodes its last ``max_len`` items and excludes them all, as the offline ranking masks
them) -> HR@10 / NDCG@10 from the answers, next to the offline figures of the same model on the same cases. A
``POST /score`` of every case's target also gives the largest score difference between the service and the trainer
(the direct check of the text path: a cold target's served vector comes from the ONNX text encoder).
With an exact index the two must agree (within 0.002); a difference means the serving path (ONNX text encoder,
row-space projection, history gathering) is not the trainer's.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from core.artifact import open_artifact
from exporter.export import export_run
from exporter.index import IndexKind
from exporter.quickstart import serving
from training.data.dataset import Examples
from training.evaluation import evaluate as ev
from training.experiment import Prepared, prepare
from training.models.recommender import Recommender
from training.models.semantic_query import semantic_query_vectors
from training.protocols.cold_items import ColdItemSplit
from training.run.checkpoint import load_run
from training.run.rundir import RunDir

__all__ = ["REPLAY_K", "replay_cold_items"]

logger = logging.getLogger(__name__)

REPLAY_K = 10
ITEMS_PER_REQUEST = 256
SCORE_BATCH = 256


def replay_cold_items(
    run_dir: Path,
    artifact_root: Path,
    *,
    prepared: Prepared | None = None,
    index_kind: IndexKind = "flat",
    with_warm: bool = False,
    semantic_query_beta: float = 0.0,
) -> dict[str, Any]:
    """Export ``run_dir``, serve it, add the cold items by text, replay the cold test cases; offline vs served.

    Args:
        run_dir: a finished run with ``data.protocol = "cold_items"``.
        artifact_root: where the artifact is written (must not hold a version named ``cold-replay``).
        prepared: the run's data (default: ``prepare`` from the run's config; the split is deterministic).
        index_kind: the artifact's index (``flat``: exact).
        with_warm: replay the warm test cases too.
        semantic_query_beta: export (and compute the offline figures) with the semantic query of this ``beta``
            (``training.models.semantic_query``; 0: the plain user vector).

    Returns:
        ``offline`` and ``served`` HR@10 / NDCG@10 per case set (``cold``, optionally ``warm``), their absolute
        differences, the case counts, how many history ids the service did not know, and the seconds taken.
    """
    config = RunDir(run_dir).read_config()
    prepared = prepared or prepare(config, with_text=False)
    split = prepared.split
    if not isinstance(split, ColdItemSplit):
        raise ValueError(
            f"{run_dir}: protocol {config.data.protocol!r}, the replay needs 'cold_items'"
        )
    cases = {"cold": split.cold_test, **({"warm": split.test} if with_warm else {})}
    model = load_run(run_dir, device="cpu").model
    offline, target_scores = {}, {}
    for name, ex in cases.items():
        offline[name], target_scores[name] = _offline(
            model, ex, split.num_items, semantic_query_beta
        )
    artifact = export_run(
        run_dir,
        artifact_root,
        index_kind=index_kind,
        version="cold-replay",
        semantic_query_beta=semantic_query_beta,
    )
    ds = prepared.dataset
    served: dict[str, dict[str, float]] = {}
    score_diff: dict[str, float] = {}
    unknown = 0
    t0 = time.perf_counter()
    with serving(artifact_root, 0, max_history=max(1000, int(ds.lengths().max()))) as (_, client):
        cold_ids = [ds.item_ids[i] for i in split.cold_items.tolist()]
        for start in range(0, len(cold_ids), ITEMS_PER_REQUEST):
            chunk = split.cold_items[start : start + ITEMS_PER_REQUEST].tolist()
            body = {"items": [{"item_id": ds.item_ids[i], "text": ds.item_texts[i]} for i in chunk]}
            answer = client.post("/items", json=body)
            if answer.status_code != 200:
                raise RuntimeError(
                    f"POST /items failed ({answer.status_code}): {answer.text[:500]}"
                )
        for name, ex in cases.items():
            ranks = []
            for i in range(len(ex)):
                history = [ds.item_ids[j] for j in ex.seen(i).tolist()]
                answer = client.post("/recommend", json={"history": history, "k": REPLAY_K})
                if answer.status_code != 200:
                    raise RuntimeError(
                        f"POST /recommend failed ({answer.status_code}): {answer.text[:500]}"
                    )
                body = answer.json()
                unknown += len(body["unknown_items"])
                found = [item["item_id"] for item in body["items"]]
                target = ds.item_ids[int(ex.targets[i])]
                ranks.append(found.index(target) if target in found else REPLAY_K)
            served[name] = _at_k(np.asarray(ranks, dtype=np.int64))
            score_diff[name] = _score_diff(client, ex, ds.item_ids, target_scores[name])
    seconds = time.perf_counter() - t0
    diff = {
        name: {k: abs(served[name][k] - offline[name][k]) for k in offline[name]} for name in cases
    }
    logger.info("cold replay of %s: offline %s, served %s", run_dir, offline, served)
    return {
        "dataset": ds.name,
        "cold_items": config.data.cold_pick,
        "embedding": config.embedding.mode,
        "index": index_kind,
        "semantic_query_beta": semantic_query_beta,
        "artifact_items": _artifact_items(artifact),
        "added_items": len(split.cold_items),
        "cases": {name: len(ex) for name, ex in cases.items()},
        "offline": offline,
        "served": served,
        "abs_diff": diff,
        "max_target_score_diff": score_diff,
        "unknown_history_items": unknown,
        "replay_seconds": round(seconds, 1),
    }


def _at_k(ranks: NDArray[np.int64]) -> dict[str, float]:
    metrics = ev.metrics_from_ranks(ranks, (REPLAY_K,))
    return {
        f"HR@{REPLAY_K}": metrics[f"HR@{REPLAY_K}"],
        f"NDCG@{REPLAY_K}": metrics[f"NDCG@{REPLAY_K}"],
    }


@torch.no_grad()
def _offline(
    model: Recommender, examples: Examples, num_items: int, beta: float
) -> tuple[dict[str, float], NDArray[np.float32]]:
    """The trainer's figures on ``examples`` (full ranking, history masked) and (n,) each target's score."""
    table = model.items.table().detach()  # (N, d)

    def queries(histories: NDArray[np.int64]) -> torch.Tensor:
        hist = torch.from_numpy(histories)
        return semantic_query_vectors(model, hist, beta) if beta else model.user_vectors(hist)

    def scores(histories: NDArray[np.int64]) -> torch.Tensor:
        return queries(histories) @ table.T  # (B, N)

    ranks = ev.evaluate_full(scores, examples, num_items, mask_history=True, ks=(REPLAY_K,)).ranks
    users = queries(examples.histories)  # (n, d)
    target = (users * table[torch.from_numpy(examples.targets)]).sum(1)  # (n,)
    return _at_k(ranks), target.numpy().astype(np.float32)


def _score_diff(
    client: Any, examples: Examples, item_ids: list[str], offline: NDArray[np.float32]
) -> float:
    """Largest |served - offline| score of the targets (``POST /score``, the case histories as given)."""
    served = []
    for start in range(0, len(examples), SCORE_BATCH):
        requests = [
            {
                "history": [item_ids[j] for j in examples.seen(i).tolist()],
                "item_ids": [item_ids[int(examples.targets[i])]],
            }
            for i in range(start, min(start + SCORE_BATCH, len(examples)))
        ]
        answer = client.post("/score", json={"requests": requests})
        if answer.status_code != 200:
            raise RuntimeError(f"POST /score failed ({answer.status_code}): {answer.text[:500]}")
        served += [r["scores"][0] for r in answer.json()["results"]]
    return float(np.max(np.abs(np.asarray(served, dtype=np.float64) - offline)))


def _artifact_items(artifact: Path) -> int:
    manifest = open_artifact(artifact, verify=False)
    return len(json.loads((artifact / manifest.item_ids_file).read_text()))
