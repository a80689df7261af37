"""A few epochs of real training on ml-100k through the CLI: run directory, metrics, resume, evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from core.alphafuse import load_basis
from exporter.cli import main
from training.config import load_config
from training.evaluation import evaluate as ev
from training.experiment import configure_torch, evaluate_run, prepare, run_experiment
from training.models.semantic_query import semantic_query_scorer
from training.run.builder import build_model

CONFIG = Path(__file__).resolve().parents[2] / "training" / "configs" / "ml-100k.toml"
TINY = ["train.max_epochs=2", "train.patience=1", "model.dropout=0.0", "data.max_len=20"]


def _config(shared: Path, *extra: str):  # type: ignore[no-untyped-def]
    return load_config(CONFIG, [f'data.source.path="{shared / "ml-100k"}"', *TINY, *extra])


@pytest.fixture(scope="module")
def prepared(shared_data: Path):  # type: ignore[no-untyped-def]
    return prepare(_config(shared_data), with_text=True)


@pytest.mark.parametrize("mode", ["id", "llminit", "alphafuse"])
def test_train_writes_a_complete_run_directory(
    shared_data: Path, prepared, tmp_path: Path, mode: str
) -> None:
    config = _config(shared_data, f'embedding.mode="{mode}"')
    result = run_experiment(config, tmp_path, prepared=prepared)
    for name in [
        "config.json",
        "history.json",
        "model.safetensors",
        "last.safetensors",
        "state.json",
        "metrics.json",
        "item_ids.json",
        "plots/validation_curve.png",
        "plots/groups.png",
    ]:
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "semantic_basis.npz").exists() == (mode == "alphafuse")
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m == json.loads(json.dumps(result.metrics))
    # a trained model is far better than chance (1682 items: random NDCG@10 ~ 0.003)
    assert m["test"]["NDCG@10"] > 0.01, m["test"]
    assert m["test_masked"]["HR@10"] >= m["test_unmasked"]["HR@10"] - 1e-9
    assert set(m["groups"]) >= {"tail_item", "head_item", "tail_user", "head_user"}
    assert m["trainable_params"] > 0
    assert ("semantic_query" in m) == (mode == "alphafuse")
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


def test_semantic_query_beta_is_chosen_on_validation_and_tested_once(
    shared_data: Path, prepared, tmp_path: Path
) -> None:
    config = _config(shared_data, "train.max_epochs=1", "eval.semantic_query_betas=[0.5, 2.0]")
    m = run_experiment(config, tmp_path, prepared=prepared).metrics
    sq = m["semantic_query"]
    valid = {v["beta"]: v["NDCG@10"] for v in sq["valid"]}
    assert list(valid) == [0.0, 0.5, 2.0]
    assert valid[0.0] == pytest.approx(
        m["valid_best"], abs=1e-9
    )  # beta 0 is the selected checkpoint itself
    assert sq["beta"] == max(valid, key=lambda b: valid[b])
    model = build_model(config, prepared, load_basis(tmp_path / "semantic_basis.npz"))
    model.load_state_dict(load_file(tmp_path / "model.safetensors"))
    model.eval()
    for beta in (0.5, 2.0):  # the test figures are those of the chosen beta, whichever it is
        scorer = semantic_query_scorer(model, beta)
        test = ev.evaluate_full(
            scorer, prepared.split.test, prepared.split.num_items, mask_history=True
        )
        assert (test.metrics == pytest.approx(sq["test"], abs=1e-9)) == (beta == sq["beta"])
    assert set(sq["groups"]) >= {"tail_item", "head_item"}
    off = _config(shared_data, "train.max_epochs=1", "eval.semantic_query_betas=[]")
    assert "semantic_query" not in run_experiment(off, tmp_path / "off", prepared=prepared).metrics
    with pytest.raises(ValueError, match="semantic_query_betas"):
        _config(shared_data, "eval.semantic_query_betas=[-1.0]")


def test_alphafuse_trains_fewer_parameters_than_id(
    shared_data: Path, prepared, tmp_path: Path
) -> None:
    counts = {}
    for mode in ["id", "alphafuse"]:
        config = _config(shared_data, f'embedding.mode="{mode}"', "train.max_epochs=1")
        counts[mode] = run_experiment(config, tmp_path / mode, prepared=prepared).metrics[
            "trainable_params"
        ]
    assert counts["alphafuse"] < counts["id"]


def test_resume_continues_and_evaluate_reproduces(
    shared_data: Path, prepared, tmp_path: Path
) -> None:
    dropout = "model.dropout=0.2"  # draws from the global RNG, which the checkpoint must carry
    config = _config(shared_data, "train.max_epochs=1", dropout)
    first = run_experiment(config, tmp_path, prepared=prepared)
    assert first.metrics["epochs"] == 1
    longer = _config(shared_data, "train.max_epochs=2", "train.patience=5", dropout)
    resumed = run_experiment(longer, tmp_path, prepared=prepared, resume=True)
    assert resumed.metrics["epochs"] == 2
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    # the timers carry over a resume: epoch 1's seconds are kept and epoch 2's (about as many) added
    assert 0 < first.metrics["train_seconds"] < resumed.metrics["train_seconds"]
    cpu = first.metrics["train_cpu_seconds"], resumed.metrics["train_cpu_seconds"]
    assert 0 < 1.5 * cpu[0] < cpu[1], cpu
    again = evaluate_run(tmp_path)
    assert again["test"] == pytest.approx(resumed.metrics["test"], abs=1e-6)
    # stopped after epoch 1 and resumed = two epochs in one go: same batches, negatives, dropout masks
    straight = run_experiment(longer, tmp_path / "straight", prepared=prepared)
    assert straight.history == resumed.history, "a resumed run must train as an uninterrupted one"
    assert straight.metrics["test"] == resumed.metrics["test"]


def test_cli_train_and_errors(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "train",
        str(CONFIG),
        "--run-dir",
        str(tmp_path / "run"),
        "--set",
        f'data.source.path="{shared_data / "ml-100k"}"',
        "--set",
        'embedding.mode="id"',
        "--set",
        "train.max_epochs=1",
        "--set",
        "data.max_len=10",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "NDCG@10" in out
    assert main(["train", str(CONFIG), "--set", "train.nope=1"]) == 2
    assert "nope" in capsys.readouterr().err
    assert (
        main(["data", str(CONFIG), "--set", f'data.source.path="{shared_data / "ml-100k"}"']) == 0
    )
    assert "943" in capsys.readouterr().out
    vectors = tmp_path / "vectors.npy"
    np.save(vectors, np.random.default_rng(0).normal(size=(1682, 8)).astype(np.float32))
    source = f'data.source.path="{shared_data / "ml-100k"}"'
    npy = f'text.npy_path="{vectors}"'
    df_args = ["data", str(CONFIG), "--set", source, "--set", npy, "--to-df", str(tmp_path / "df")]
    assert main([*df_args, "--embedding-name", "vec"]) == 0
    assert "vec_emb.pickle" in capsys.readouterr().out
    np.testing.assert_array_equal(
        np.load(tmp_path / "df" / "item_embeddings.npy"), np.load(vectors)
    )
    assert main(df_args) == 2  # the folder exists: refused, nothing replaced
    assert "already exists" in capsys.readouterr().err


def test_cold_start_user_protocol_trains_and_reports_unmasked_metrics(
    shared_data: Path, prepared, tmp_path: Path
) -> None:
    config = _config(
        shared_data,
        'data.protocol="cold_start_users"',
        "data.max_len=10",
        "eval.mask_history=false",
        "train.max_epochs=1",
        'train.select_metric="NDCG@20"',
    )
    result = run_experiment(config, tmp_path, prepared=prepare(config, with_text=True))
    assert result.metrics["protocol"] == "cold_start_users"
    assert result.metrics["test"] == result.metrics["test_unmasked"]
    assert set(result.metrics["test"]) >= {"HR@5", "NDCG@5", "HR@50", "NDCG@50"}


def test_training_flushes_subnormal_floats_to_zero() -> None:
    """A sharp softmax makes subnormal gradients, which x86 computes on many times slower (see configure_torch)."""
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU has no flush-to-zero mode")
    torch.set_flush_denormal(False)
    subnormal = torch.tensor([1e-39], dtype=torch.float32)
    assert (subnormal * 1.0).item() != 0.0  # kept as a subnormal
    try:
        configure_torch(None)
        assert (subnormal * 1.0).item() == 0.0
        assert (torch.tensor([1e-37]) * 1.0).item() != 0.0  # normal floats are untouched
    finally:
        torch.set_flush_denormal(False)
