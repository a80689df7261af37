"""Exporter fixtures: one tiny real training run per embedding mode (ml-100k, one epoch, L=20), shared by the
package's tests, and the data they were trained on (for the round-trip checks)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.config import ExperimentConfig, load_config
from training.experiment import Prepared, prepare, run_experiment

CONFIG = Path(__file__).resolve().parents[2] / "training" / "configs" / "ml-100k.toml"
TINY = ["data.max_len=20", "train.max_epochs=1", "train.threads=1"]


def tiny_config(shared: Path, mode: str, *overrides: str) -> ExperimentConfig:
    path = f'data.source.path="{shared / "ml-100k"}"'
    return load_config(CONFIG, [path, *TINY, f'embedding.mode="{mode}"', *overrides])


@pytest.fixture(scope="package")
def prepared(shared_data: Path) -> Prepared:
    torch.set_num_threads(1)
    return prepare(tiny_config(shared_data, "alphafuse"), with_text=True)


def _trained(config: ExperimentConfig, prepared: Prepared, factory: pytest.TempPathFactory) -> Path:
    run_dir = factory.mktemp(f"run-{config.embedding.mode}")
    run_experiment(config, run_dir, prepared=prepared)
    return run_dir


@pytest.fixture(scope="package")
def alphafuse_run(
    shared_data: Path, prepared: Prepared, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return _trained(tiny_config(shared_data, "alphafuse"), prepared, tmp_path_factory)


@pytest.fixture(scope="package")
def id_run(shared_data: Path, prepared: Prepared, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _trained(tiny_config(shared_data, "id"), prepared, tmp_path_factory)


@pytest.fixture(scope="package")
def language_map_run(
    shared_data: Path, prepared: Prepared, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """AlphaFuse with a trained d x d language map shared by all items."""
    config = tiny_config(shared_data, "alphafuse", 'embedding.language_map="linear"')
    return _trained(config, prepared, tmp_path_factory)


@pytest.fixture(scope="package")
def trained_query_run(
    shared_data: Path, prepared: Prepared, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """SASRec-AlphaFuse trained with its semantic query (beta 0.5) as its user vector."""
    config = tiny_config(shared_data, "alphafuse", "model.semantic_query_beta=0.5")
    return _trained(config, prepared, tmp_path_factory)
