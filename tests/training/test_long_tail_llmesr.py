"""The long-tail protocol and LLM-ESR on real data (ml-100k): thresholds, a few steps, a tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.test_evaluate import make_examples
from training.config import LLMESR_ARCHITECTURE, EvalConfig, load_config
from training.evaluation.groups import group_masks
from training.evaluation.sampled import SampledEvaluator
from training.experiment import prepare, run_experiment
from training.models.llmesr.model import LLMESR
from training.models.recommender import sample_negatives
from training.models.semantic_query import semantic_query_vectors
from training.protocols.long_tail import LLMESR_THRESHOLDS, resolve_thresholds
from training.run.builder import build_model
from training.run.checkpoint import load_run

CONFIG = Path(__file__).resolve().parents[2] / "training" / "configs" / "ml-100k.toml"
LLMESR_SETTINGS = [
    *LLMESR_ARCHITECTURE,
    "model.dropout=0.2",  # the ml-100k config's, as these tests were written with
    'train.loss="bce"',
    "train.num_negatives=1",
    'train.negatives="per_example"',
    "data.max_len=20",
    "train.threads=1",
]


def test_thresholds_pareto_llmesr_and_given_on_a_hand_built_example() -> None:
    examples = make_examples([[1], [1, 2, 3], [], [4, 5], [0, 1, 2, 3, 4]], [0, 1, 2, 3, 5], 6)
    popularity = np.array([10, 1, 5, 3, 2, 2])  # distinct users per item
    lengths = np.diff(examples.seen_offsets)  # [1, 3, 0, 2, 5]
    t = resolve_thresholds(EvalConfig(), "toy", popularity, lengths)
    assert t == {
        "item": 5.0,
        "user": 5.0,
        "source": "pareto",
    }  # top 20 %: ceil(1.2) = 2 of 6 items (10, 5), ceil(1.0) = 1 of 5 users (5)
    masks = group_masks(examples, popularity, lengths, t["item"], t["user"])  # type: ignore[arg-type]
    assert masks["tail_item"].tolist() == [False, True, False, True, True]
    assert masks["tail_user"].tolist() == [True, True, True, True, False]
    assert (masks["head_item"] == ~masks["tail_item"]).all()
    llmesr = resolve_thresholds(EvalConfig(group_thresholds="llmesr"), "yelp", popularity, lengths)
    assert (llmesr["item"], llmesr["user"]) == LLMESR_THRESHOLDS["yelp"] == (13.0, 12.0)
    given = resolve_thresholds(EvalConfig(tail_user_threshold=2), "toy", popularity, lengths)
    assert given == {"item": 5.0, "user": 2, "source": "given"}
    with pytest.raises(ValueError, match="no LLM-ESR group thresholds"):
        resolve_thresholds(EvalConfig(group_thresholds="llmesr"), "toy", popularity, lengths)


def test_llmesr_config_needs_llminit_embedding(shared_data: Path) -> None:
    with pytest.raises(ValueError, match="llminit"):
        load_config(
            CONFIG, [f'data.source.path="{shared_data / "ml-100k"}"', 'model.name="llmesr"']
        )


def test_a_few_training_steps_on_ml100k_reduce_the_loss(shared_data: Path) -> None:
    torch.manual_seed(0)
    config = load_config(
        CONFIG,
        [f'data.source.path="{shared_data / "ml-100k"}"', *LLMESR_SETTINGS, "model.dropout=0.0"],
    )
    prepared = prepare(config)
    model = build_model(config, prepared, None)
    assert isinstance(model, LLMESR)
    assert len(model.neighbours) == prepared.dataset.num_users
    train, n = prepared.split.train, prepared.split.num_items
    # a batch of every user's last training prefix (distillation active) plus random prefixes
    last = np.flatnonzero(np.r_[train.users[1:] != train.users[:-1], True])[:64]
    rand = np.random.default_rng(0).choice(len(train.targets), 64, replace=False)
    idx = np.concatenate([last, rand])
    hist, tgt = torch.from_numpy(train.histories[idx]), torch.from_numpy(train.targets[idx])
    users = torch.from_numpy(train.users[idx])
    neg = sample_negatives(tgt, n, 1, torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(10):
        loss = model.loss(hist, tgt, neg, users=users)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    with torch.no_grad():
        assert float(model.loss(hist, tgt, neg, users=users)) > float(model.loss(hist, tgt, neg))


def test_tiny_long_tail_run_records_the_protocol_and_reloads(
    shared_data: Path, tmp_path: Path
) -> None:
    config = load_config(
        CONFIG,
        [
            f'data.source.path="{shared_data / "ml-100k"}"',
            *LLMESR_SETTINGS,
            "data.max_sequence_length=6",
            "data.max_len=5",
            'model.llmesr.user_text="mean_items"',  # prompts of truncated histories: not cached
            "train.max_epochs=1",
            'eval.protocol="long_tail"',
        ],
    )
    result = run_experiment(config, tmp_path)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["eval_protocol"] == "long_tail"
    assert m["group_thresholds"]["source"] == "pareto"
    assert m["test"] == m["groups"]["overall"] == m["test_sampled"]
    assert set(m["groups"]) == {"overall", "tail_item", "head_item", "tail_user", "head_user"}
    counts = {g: m["groups"][g]["count"] for g in m["groups"]}
    assert counts["tail_item"] + counts["head_item"] == counts["overall"] == 943
    assert 0.0 < m["test"]["HR@10"] <= 1.0
    assert "valid_NDCG@10" in result.history[0]
    # the run reloads from its directory alone and reproduces its test metrics
    run = load_run(tmp_path)
    split = prepare(config).split
    evaluator = SampledEvaluator(split.test, split.num_items, 100, seed=config.data.split_seed)
    again = evaluator(run.model, torch.device("cpu")).metrics
    assert again["NDCG@10"] == pytest.approx(m["test"]["NDCG@10"], abs=1e-6)


def test_alphafuse_long_tail_run_chooses_its_semantic_query_beta_on_sampled_validation(
    shared_data: Path, tmp_path: Path
) -> None:
    config = load_config(
        CONFIG,
        [
            f'data.source.path="{shared_data / "ml-100k"}"',
            "data.max_len=20",
            "train.max_epochs=1",
            "train.threads=1",
            'eval.protocol="long_tail"',
            "eval.semantic_query_betas=[0.5, 2.0]",
        ],
    )
    m = run_experiment(config, tmp_path).metrics
    sq = m["semantic_query"]
    valid = {v["beta"]: v["NDCG@10"] for v in sq["valid"]}
    assert list(valid) == [0.0, 0.5, 2.0]
    # beta 0 is the checkpoint, selected on the same sampled validation candidates
    assert valid[0.0] == pytest.approx(m["valid_best"], abs=1e-9)
    assert sq["beta"] == max(valid, key=lambda b: valid[b])
    assert set(sq["groups"]) == set(m["groups"])  # the long tail's five groups, at its thresholds
    counts = {g: sq["groups"][g]["count"] for g in sq["groups"]}
    assert counts == {g: m["groups"][g]["count"] for g in m["groups"]}
    run = load_run(tmp_path)
    split = prepare(config).split
    evaluator = SampledEvaluator(split.test, split.num_items, 100, seed=config.data.split_seed)
    for beta in (0.5, 2.0):  # the test figures are the chosen beta's, ranked on the test candidates

        def queries(histories: torch.Tensor, beta: float = beta) -> torch.Tensor:
            return semantic_query_vectors(run.model, histories, beta)

        test = evaluator(run.model, torch.device("cpu"), user_vectors=queries).metrics
        assert (test == pytest.approx(sq["test"], abs=1e-9)) == (beta == sq["beta"])
