"""The cold_items protocol on real data (ml-100k): the split, what the trainer may touch, the metrics, baselines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from core.alphafuse import SemanticBasis, cold_start
from training.config import ExperimentConfig, load_config
from training.data.readers import DataSource
from training.evaluation import evaluate as ev
from training.experiment import Prepared, _seed_everything, prepare, run_experiment
from training.items.embeddings import AlphaFuseEmbedding, IDEmbedding
from training.models.recommender import (
    LossConfig,
    Recommender,
    SequentialRecommender,
    sample_negatives,
)
from training.models.sasrec import SASRec, SASRecConfig
from training.models.semantic_query import semantic_query_scorer, semantic_query_vectors
from training.protocols import cold_items as cold
from training.protocols.cold_items import remedies as remedies
from training.protocols.cold_items.baselines import popularity_scorer, text_knn_scorer
from training.run.builder import build_model, fit_basis
from training.run.rundir import HELD_OUT_FILE

CONFIG = Path(__file__).resolve().parents[2] / "training" / "configs" / "ml-100k.toml"
TINY = [
    "train.max_epochs=1",
    "data.max_len=10",
    "data.max_sequence_length=30",  # each user's last 30 items: fast, and still real data
    "train.threads=1",
    "model.dropout=0.0",
]


def _config(shared: Path, *extra: str) -> ExperimentConfig:
    return load_config(
        CONFIG,
        [
            f'data.source.path="{shared / "ml-100k"}"',
            'data.protocol="cold_items"',
            'data.cold_pick="newest"',
            *TINY,
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def prepared(shared_data: Path) -> Prepared:
    torch.set_num_threads(1)
    return prepare(_config(shared_data), with_text=True)


def _split(prepared: Prepared) -> cold.ColdItemSplit:
    assert isinstance(prepared.split, cold.ColdItemSplit)
    return prepared.split


def test_newest_holds_out_the_latest_items_and_nothing_trained_sees_them(
    shared_data: Path, prepared: Prepared
) -> None:
    split, ds = _split(prepared), prepared.dataset
    interacted = int((ds.item_interaction_counts() > 0).sum())
    assert len(split.cold_items) == round(0.1 * interacted)
    times = cold.first_interaction_times(_config(shared_data).data.source, ds)
    warm = ~split.cold_mask() & (ds.item_interaction_counts() > 0)
    assert times[split.cold_items].min() >= times[warm].max()  # the newest, as the protocol says
    is_cold = split.cold_mask()
    n = split.num_items
    assert not is_cold[split.train_sequences.items].any()
    for part in (split.train, split.valid, split.test):
        assert not is_cold[part.targets].any()
        assert not is_cold[part.histories[part.histories < n]].any()
    assert split.num_items == ds.num_items  # the catalogue stays whole: cold rows keep their index


def test_cold_and_warm_test_cases_are_exactly_the_issues(prepared: Prepared) -> None:
    split, ds = _split(prepared), prepared.dataset
    is_cold = split.cold_mask()
    expected_cold, expected_warm = [], []
    for u in range(ds.num_users):
        seq = ds.sequence(u)
        where = np.flatnonzero(is_cold[seq])
        if len(where) and where[0] >= 1:
            expected_cold.append((u, seq[: where[0]].tolist(), int(seq[where[0]])))
        warm_seq = seq[~is_cold[seq]]
        if len(warm_seq) >= 3:
            expected_warm.append((u, warm_seq[:-1].tolist(), int(warm_seq[-1])))
    for examples, expected in ((split.cold_test, expected_cold), (split.test, expected_warm)):
        assert len(examples) == len(expected) > 0
        for i, (user, seen, target) in enumerate(expected):
            assert examples.users[i] == user
            assert examples.targets[i] == target
            assert examples.seen(i).tolist() == seen
            window = examples.histories[i][examples.histories[i] < split.num_items]
            assert window.tolist() == seen[-split.max_len :]
    assert is_cold[split.cold_test.targets].all()


def test_random_pick_is_seeded_and_newest_needs_timestamps(prepared: Prepared) -> None:
    ds = prepared.dataset
    a = cold.pick_cold_items(ds, 0.2, "random", seed=3)
    assert np.array_equal(a, cold.pick_cold_items(ds, 0.2, "random", seed=3))
    assert not np.array_equal(a, cold.pick_cold_items(ds, 0.2, "random", seed=4))
    interacted = ds.item_interaction_counts() > 0
    assert len(a) == round(0.2 * interacted.sum())
    assert interacted[
        a
    ].all()  # only items with interactions can be cold (others give no test case)
    assert len(np.unique(a)) == len(a)
    p5 = DataSource(format="p5", path=Path("/nonexistent"))
    with pytest.raises(ValueError, match="timestamps"):
        cold.first_interaction_times(p5, ds)
    with pytest.raises(ValueError, match="cold_share"):
        cold.pick_cold_items(ds, 1.5, "random", seed=0)
    with pytest.raises(ValueError, match="weight_decay"):
        _config(Path("/nonexistent"), "train.weight_decay=0.01")


def test_the_tuning_split_never_sees_the_test_cold_items(
    shared_data: Path, prepared: Prepared
) -> None:
    tuning = prepare(_config(shared_data, "data.cold_tuning=true"), with_text=False)
    test_cold = {prepared.dataset.item_ids[i] for i in _split(prepared).cold_items}
    ds = tuning.dataset
    assert ds.num_items == prepared.dataset.num_items - len(test_cold)
    assert test_cold.isdisjoint(ds.item_ids)  # gone from the catalogue, not only from training
    split = _split(tuning)
    interacted = ds.item_interaction_counts() > 0
    assert len(split.cold_items) == round(0.1 * interacted.sum())
    times = cold.first_interaction_times(_config(shared_data).data.source, ds)
    warm = ~split.cold_mask() & interacted
    assert times[split.cold_items].min() >= times[warm].max()  # the newest of what is left
    assert times[split.cold_items].max() <= min(
        cold.first_interaction_times(_config(shared_data).data.source, prepared.dataset)[
            _split(prepared).cold_items
        ]
    )  # time-shifted: released before every test cold item
    with pytest.raises(ValueError, match="cold_tuning"):
        load_config(CONFIG, ["data.cold_tuning=true"])


def test_the_basis_is_fitted_on_warm_text_only(shared_data: Path, prepared: Prepared) -> None:
    config = _config(shared_data)
    basis = fit_basis(config, prepared)
    assert prepared.text_embeddings is not None
    warm = ~_split(prepared).cold_mask()
    scaled = prepared.text_embeddings.astype(np.float64) * config.embedding.scale
    np.testing.assert_allclose(basis.mean, scaled[warm].mean(0), rtol=1e-6, atol=1e-6)
    assert not np.allclose(basis.mean, scaled.mean(0), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("mode", "loss", "negatives", "extra"),
    [
        ("alphafuse", "infonce", "shared", ()),
        (
            "alphafuse",
            "ce",
            "per_example",
            ("embedding.id_dropout=0.5", "eval.cold_remedies=false"),
        ),
        ("llminit", "ce", "shared", ()),
        ("id", "bce", "per_example", ()),
    ],
)
def test_cold_items_get_no_gradient(
    shared_data: Path,
    prepared: Prepared,
    tmp_path: Path,
    mode: str,
    loss: str,
    negatives: str,
    extra: tuple[str, ...],
) -> None:
    config = _config(
        shared_data,
        f'embedding.mode="{mode}"',
        f'train.loss="{loss}"',
        f'train.negatives="{negatives}"',
        'embedding.id_init="normal"',
        "embedding.init_std=0.1",
        *extra,
    )
    _seed_everything(config.train.seed)  # as run_experiment does before it builds the model
    basis = fit_basis(config, prepared) if mode == "alphafuse" else None
    initial = build_model(config, prepared, basis).items.table().detach().clone()  # (N, d)
    run_experiment(config, tmp_path, prepared=prepared)
    trained = build_model(config, prepared, basis)
    trained.load_state_dict(load_file(tmp_path / "model.safetensors"))
    table = trained.items.table().detach()
    is_cold = torch.from_numpy(_split(prepared).cold_mask())
    assert torch.equal(table[is_cold], initial[is_cold])  # not one bit moved
    assert not torch.allclose(table[~is_cold], initial[~is_cold])  # while the warm rows trained
    if mode == "alphafuse":  # ID part exactly zero: the row is its text's projection alone
        assert torch.equal(
            trained.items.id_table()[is_cold], torch.zeros_like(trained.items.id_table()[is_cold])
        )  # type: ignore[operator]
    metrics = json.loads((tmp_path / "metrics.json").read_text())["cold_items"]
    assert set(metrics["cold"]) == {"HR@10", "HR@20", "NDCG@10", "NDCG@20"}
    with_remedies = mode == "alphafuse" and config.eval.cold_remedies
    assert ("remedy_expected_id" in metrics) == with_remedies
    if (
        with_remedies
    ):  # the remedy moves cold rows only, by one shared vector: the trained rows' mean ID
        split = _split(prepared)
        remedy = remedies.expected_id_scorer(trained, split)
        hist = split.cold_test.histories[:4]
        user = trained.user_vectors(torch.from_numpy(hist))  # (4, d)
        shift = trained.items.id_table()[trained.items.id_keep[:-1].bool()].mean(0)  # type: ignore[operator]
        expected = user @ table.T + (user[:, -shift.shape[0] :] @ shift)[:, None] * is_cold[None, :]
        torch.testing.assert_close(remedy(hist), expected.detach(), rtol=1e-4, atol=1e-4)
        _check_id_regression(trained, split, basis, prepared, metrics)
        entries = metrics["remedy_semantic_query"]
        assert [e["beta"] for e in entries] == config.eval.semantic_query_betas
        for entry in entries:
            assert set(entry) == {"beta", "last_n", *remedies.REMEDY_KEYS}
    elif mode != "alphafuse":
        with pytest.raises(ValueError, match="needs an alphafuse model"):
            remedies.expected_id_scorer(trained, _split(prepared))
        with pytest.raises(ValueError, match="needs an alphafuse model"):
            remedies.id_regression_table(trained, _split(prepared))
        assert "remedy_id_regression" not in metrics
        assert "remedy_semantic_query" not in metrics
        with pytest.raises(ValueError, match="needs an alphafuse model"):
            semantic_query_scorer(trained, 1.0)(_split(prepared).cold_test.histories[:2])
    assert (tmp_path / HELD_OUT_FILE).is_file()


def test_sample_negatives_stays_in_its_pool() -> None:
    pool = torch.tensor([3, 5, 8, 13])
    targets = torch.tensor([3, 5, 8, 13, 3])
    neg = sample_negatives(targets, 20, 50, torch.Generator().manual_seed(0), pool=pool)
    assert torch.isin(neg, pool).all()
    assert not (neg == targets[:, None]).any()


def test_metrics_popularity_and_text_knn(prepared: Prepared) -> None:
    split = _split(prepared)
    assert prepared.text_embeddings is not None
    pop = cold.evaluate_cold_items(popularity_scorer(split), split)
    assert pop["cold"]["HR@20"] == 0.0
    assert pop["surface_rate"] == 0.0
    plain = ev.evaluate_full(
        popularity_scorer(split), split.test, split.num_items, mask_history=True, ks=(10, 20)
    )
    assert pop["warm"] == plain.metrics  # the warm figures are ordinary masked full ranking
    knn = cold.evaluate_cold_items(text_knn_scorer(prepared.text_embeddings), split)
    assert knn["cold"]["NDCG@10"] > 0.0
    assert knn["surface_rate"] > 0.0
    assert knn["cases"] == {"cold": len(split.cold_test), "warm": len(split.test)}
    is_cold = torch.from_numpy(split.cold_mask()).float()

    def cold_first(histories: np.ndarray) -> torch.Tensor:  # type: ignore[type-arg]
        return is_cold.expand(len(histories), -1) + 1e-3 * torch.rand(len(histories), len(is_cold))

    boosted = cold.evaluate_cold_items(cold_first, split)
    assert boosted["surface_rate"] == 1.0
    assert boosted["cold_slot_share"] == 1.0
    assert boosted["cold"]["HR@20"] > pop["cold"]["HR@20"]


def test_centred_text_knn_ignores_a_shared_component(prepared: Prepared) -> None:
    split = _split(prepared)
    text = prepared.text_embeddings
    assert text is not None
    rows = split.rules.fit_rows
    assert rows is not None
    histories = split.cold_test.histories[:16]
    shifted = text + 3.0 * np.abs(text).max()  # every text gains the same large component
    centred = text_knn_scorer(text, centre_on=rows)(histories)
    torch.testing.assert_close(
        text_knn_scorer(shifted, centre_on=rows)(histories), centred, rtol=1e-4, atol=1e-4
    )
    raw = text_knn_scorer(shifted)(histories)  # the raw cosine is swamped by it

    def spread(scores: torch.Tensor) -> torch.Tensor:  # per user
        return scores.max(1).values - scores.min(1).values

    assert (spread(raw) < 0.1 * spread(centred)).all()
    with pytest.raises(ValueError, match="no rows"):
        text_knn_scorer(text, centre_on=rows[:0])


def _check_id_regression(
    trained: Recommender,
    split: cold.ColdItemSplit,
    basis: SemanticBasis | None,
    prepared: Prepared,
    metrics: dict[str, Any],
) -> None:
    """Warm rows keep their trained ID part bit for bit; cold rows are `cold_start` of their text with the map."""
    assert basis is not None
    assert prepared.text_embeddings is not None
    table, id_map = remedies.id_regression_table(trained, split)
    before = trained.items.table().detach()
    is_cold = torch.from_numpy(split.cold_mask())
    assert torch.equal(table[~is_cold], before[~is_cold])
    served = cold_start(prepared.text_embeddings[split.cold_items], basis, id_map)  # (C, d)
    torch.testing.assert_close(
        table[is_cold], torch.from_numpy(served).float(), rtol=1e-4, atol=1e-4
    )
    assert not torch.allclose(table[is_cold], before[is_cold])  # the predicted ID part is not zero
    entry = metrics["remedy_id_regression"]
    assert set(entry) >= {"cold", "warm", "ratio", "surface_rate", "target_score_z", "id_map"}
    trained_rows = split.train_sequences.item_interaction_counts() > 0  # (N,) never a cold row
    assert not trained_rows[split.cold_items].any()
    assert entry["id_map"]["fit_items"] == int(trained_rows.sum())
    assert entry["id_map"]["heldout_r2"] == pytest.approx(id_map.heldout_r2)
    assert entry["id_map"]["ridge"] == pytest.approx(id_map.ridge)


def _tiny_alphafuse(n: int, d: int, null_dim: int) -> SequentialRecommender:
    torch.manual_seed(0)
    items = AlphaFuseEmbedding(torch.randn(n, d), null_dim, id_init="normal", init_std=0.5)
    encoder = SASRec(SASRecConfig(dim=d, max_len=6, dropout=0.0))
    return SequentialRecommender(items, encoder, LossConfig("infonce", 5)).eval()


@torch.no_grad()
def test_semantic_query_adds_a_content_term_in_the_language_coordinates_only() -> None:
    n, d, null_dim, d_s = 12, 8, 3, 5
    model = _tiny_alphafuse(n, d, null_dim)
    hist = np.array(
        [[n, n, n, 1, 2, 3], [n, 4, 5, 6, 7, 8], [n, n, n, n, n, 9]], dtype=np.int64
    )  # left-padded with n
    last_two = [[2, 3], [7, 8], [9]]  # the last 2 real history items, by hand
    base = model.scores(torch.from_numpy(hist))  # (3, n)
    user = model.user_vectors(torch.from_numpy(hist))  # (3, d)
    torch.testing.assert_close(semantic_query_scorer(model, 0.0, last_n=2)(hist), base)
    table = model.items.table()  # (n, d)
    lang_s = model.items.language[:n, :d_s]  # type: ignore[index]
    assert torch.equal(table[:, :d_s], lang_s)  # every row's first d_s coordinates are its text's
    for beta in (0.5, 2.0):
        query = semantic_query_vectors(model, torch.from_numpy(hist), beta, last_n=2)
        assert torch.equal(query[:, d_s:], user[:, d_s:])  # the null coordinates are u's
        scores = semantic_query_scorer(model, beta, last_n=2)(hist)
        for b, recent in enumerate(last_two):
            m_s = lang_s[recent].mean(0)  # (d_s,)
            scale = user[b, :d_s].norm() / m_s.norm()
            change = beta * scale * (lang_s @ m_s)  # (n,) every item, whatever its ID part
            assert change.abs().max() > 1e-3
            torch.testing.assert_close(scores[b] - base[b], change, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(query[b] @ table.T, scores[b])  # one inner product per item
    with pytest.raises(ValueError, match="beta"):
        semantic_query_vectors(model, torch.from_numpy(hist), -1.0)
    id_model = SequentialRecommender(
        IDEmbedding(n, d), SASRec(SASRecConfig(dim=d, max_len=6)), LossConfig("infonce", 5)
    )
    with pytest.raises(ValueError, match="needs an alphafuse model"):
        semantic_query_vectors(id_model, torch.from_numpy(hist), 1.0)
