"""Multi-worker training on real data (ml-100k): 2 gloo workers on the CPU against one process.

- one optimiser step of 2 workers on a global batch gives the parameters one process gets from it, for every
  negative sampler and the full-softmax loss (the shards are uneven: 51 and 50 rows);
- a short 2-worker run through ``recsys train --nproc 2`` reaches the single-process validation NDCG within the
  spread of two seeds (at least 0.002; measured: 0.0343 against 0.0345, seeds 0.0345 and 0.0301);
- a 2-worker run stopped after one epoch and resumed trains exactly as an uninterrupted 2-worker run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from training.config import ExperimentConfig, load_config
from training.experiment import prepare, run_experiment
from training.run.builder import Prepared, build_model, fit_basis
from training.run.distributed import Workers
from training.run.loop import TrainLoop

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "training" / "configs" / "ml-100k.toml"
# small and quick: each user's last 20 items, L=10, d=64 (d_n=32), one thread per process
SMALL = [
    "data.max_len=10",
    "data.max_sequence_length=20",
    "embedding.dim=64",
    "embedding.null_dim=32",
    "train.threads=1",
]
# (name, overrides): every sampler of the infoNCE loss, BCE, and the full softmax on an ID table
VARIANTS = [
    ("pooled", ['train.negatives="pooled"']),
    ("per_example", ['train.negatives="per_example"']),
    ("shared", ['train.negatives="shared"']),
    ("bce", ['train.loss="bce"']),
    ("ce-id", ['train.loss="ce"', 'embedding.mode="id"']),
]
BATCH = 101  # odd: the ranks' shards differ in size, so the loss scale matters


def _config(shared: Path, *extra: str) -> ExperimentConfig:
    return load_config(CONFIG, [f'data.source.path="{shared / "ml-100k"}"', *SMALL, *extra])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _steps(config: ExperimentConfig, prepared: Prepared, workers: Workers | None) -> dict[str, Any]:
    """Two optimiser steps on the first two global batches of the seeded shuffle; the model's tensors after."""
    torch.manual_seed(config.train.seed)
    basis = fit_basis(config, prepared) if config.embedding.mode == "alphafuse" else None
    model = build_model(config, prepared, basis)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    loop = TrainLoop(config, prepared.split, model, torch.device("cpu"), Path(os.devnull), workers)
    model.train()
    order = torch.randperm(len(loop.targets), generator=loop.generator)
    losses = [loop.train_step(order[i * BATCH : (i + 1) * BATCH]) for i in range(2)]
    if workers is not None:
        losses = [workers.sum(x) for x in losses]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    # the last step's gradient (all-reduced under DDP), kept by the optimiser step
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return {"losses": losses, "state": state, "initial": initial, "grads": grads}


def _worker(
    rank: int, port: int, jobs: list[tuple[str, ExperimentConfig]], prepared: Prepared, out: str
) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_RANK=str(rank),
    )
    workers = Workers.from_env("cpu")
    assert workers is not None
    try:
        results = {name: _steps(config, prepared, workers) for name, config in jobs}
    finally:
        workers.close()
    torch.save(results, Path(out) / f"rank{rank}.pt")


def test_two_workers_take_the_single_process_step(shared_data: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    jobs = [(name, _config(shared_data, "model.dropout=0.0", *extra)) for name, extra in VARIANTS]
    prepared = prepare(jobs[0][1], with_text=True)
    mp.spawn(_worker, args=(_free_port(), jobs, prepared, str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for name, config in jobs:
        one = _steps(config, prepared, None)
        for rank in ranks:
            two = rank[name]
            assert two["losses"] == pytest.approx(one["losses"], rel=1e-5), name
            # the gradient, tightly: Adam's update is blind to a gradient's scale, so a wrong loss scale
            # shows here and not in the weights
            assert two["grads"].keys() == one["grads"].keys(), name
            for key, value in one["grads"].items():
                torch.testing.assert_close(
                    two["grads"][key],
                    value,
                    rtol=1e-4,
                    atol=1e-7,
                    msg=lambda m, k=key, n=name: f"{n} {k}: {m}",
                )
            _assert_same_weights(name, two["state"], one)
        moved = [
            k
            for k, v in one["initial"].items()
            if not torch.allclose(v, one["state"][k], atol=1e-5)
        ]
        assert moved, f"{name}: the steps changed nothing, so the comparison would prove nothing"


def _assert_same_weights(name: str, two: dict[str, torch.Tensor], one: dict[str, Any]) -> None:
    """The weights after the steps, where the gradient is more than float rounding.

    A weight whose exact gradient is zero (the attention's key bias: softmax ignores a shift) has a gradient of
    rounding noise, which Adam turns into a step of about lr * sign(noise): such weights may move either way.
    The others agree to 1% of one step (lr 1e-3): Adam divides by the gradient's size, which magnifies the
    rounding of a small gradient.
    """
    for key, value in one["state"].items():
        grad = one["grads"].get(key)
        real = torch.ones_like(value, dtype=torch.bool) if grad is None else grad.abs() > 1e-6
        torch.testing.assert_close(
            two[key][real],
            value[real],
            rtol=1e-5,
            atol=1e-5,
            msg=lambda m, k=key: f"{name} {k}: {m}",
        )


def _train_two_workers(
    run_dir: Path, shared: Path, *extra: str, resume: bool = False
) -> dict[str, Any]:
    """``recsys train --nproc 2`` (through ``python -m training``): the metrics rank 0 wrote."""
    sets = [f'data.source.path="{shared / "ml-100k"}"', *SMALL, *extra]
    argv = [
        sys.executable,
        "-m",
        "training",
        "train",
        str(CONFIG),
        "--nproc",
        "2",
        "--run-dir",
        str(run_dir),
    ]
    for item in sets:
        argv += ["--set", item]
    argv += ["--resume"] if resume else []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def two_epoch_run(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    run_dir = tmp_path_factory.mktemp("ddp") / "straight"
    return run_dir, _train_two_workers(
        run_dir, shared_data, "train.max_epochs=3", "train.patience=5"
    )


def test_two_workers_reach_the_single_process_validation_score(
    shared_data: Path, two_epoch_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    run_dir, metrics = two_epoch_run
    assert metrics["workers"] == 2
    assert metrics["epochs"] == 3
    assert {p.name for p in run_dir.iterdir()} >= {
        "config.json",
        "last.safetensors",
        "model.safetensors",
        "metrics.json",
    }
    config = _config(shared_data, "train.max_epochs=3", "train.patience=5")
    prepared = prepare(config, with_text=True)
    single = [
        run_experiment(
            _config(shared_data, "train.max_epochs=3", "train.patience=5", f"train.seed={seed}"),
            tmp_path / f"s{seed}",
            prepared=prepared,
        ).metrics["valid_best"]
        for seed in (0, 1)
    ]
    spread = abs(single[0] - single[1])
    assert metrics["valid_best"] > 0.02  # far above chance (1682 items: ~0.003)
    assert abs(metrics["valid_best"] - single[0]) <= max(spread, 0.002), (
        metrics["valid_best"],
        single,
    )


def test_a_resumed_two_worker_run_trains_as_an_uninterrupted_one(
    shared_data: Path, two_epoch_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    straight_dir, straight = two_epoch_run
    first = _train_two_workers(tmp_path, shared_data, "train.max_epochs=1", "train.patience=5")
    assert first["epochs"] == 1
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["epoch"] == 1
    resumed = _train_two_workers(
        tmp_path, shared_data, "train.max_epochs=3", "train.patience=5", resume=True
    )
    assert resumed["epochs"] == 3
    history = json.loads((tmp_path / "history.json").read_text())
    assert history == json.loads((straight_dir / "history.json").read_text())
    assert resumed["test"] == straight["test"]
