"""The run directory: every file a training run writes, named once.

A run directory holds::

    config.json              resolved experiment config
    semantic_basis.npz       AlphaFuse basis (alphafuse mode), for the exporter
    item_ids.json            external id of every item row
    popularity.npy           (N,) int64 training interaction counts, for the exporter
    held_out_items.json      ids of the items the protocol held out of training (cold_items); the exporter drops them
    model.safetensors        best model weights (by validation)
    last.safetensors, state.json   latest weights + optimiser + loop state, to resume an interrupted run
    history.json             one entry per evaluation: epoch, loss, validation metrics
    metrics.json             test metrics (full ranking with and without history masking, sampled, groups)
    plots/*.png              validation curve, metrics by head/tail group

The trainer (``training.experiment``, ``training.run.loop``), the checkpoint loader, the exporter and the
benchmarks reach these files through `RunDir` only. Every file is written to a temporary name and renamed, so a
crash never leaves a half-written file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from training.config import ExperimentConfig

__all__ = ["HELD_OUT_FILE", "RunDir"]

HELD_OUT_FILE = "held_out_items.json"


@dataclass(frozen=True)
class RunDir:
    """The files of one run directory.

    Example:
        >>> RunDir(Path("runs/beauty-id")).metrics
        PosixPath('runs/beauty-id/metrics.json')
    """

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def item_ids(self) -> Path:
        return self.path / "item_ids.json"

    @property
    def popularity(self) -> Path:
        return self.path / "popularity.npy"

    @property
    def basis(self) -> Path:
        return self.path / "semantic_basis.npz"

    @property
    def held_out(self) -> Path:
        return self.path / HELD_OUT_FILE

    @property
    def weights(self) -> Path:
        """The best model by validation."""
        return self.path / "model.safetensors"

    @property
    def last(self) -> Path:
        """The latest weights, optimiser state and RNG streams (resuming)."""
        return self.path / "last.safetensors"

    @property
    def state(self) -> Path:
        """The loop's counters and history that go with ``last`` (resuming)."""
        return self.path / "state.json"

    @property
    def history(self) -> Path:
        return self.path / "history.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    def read_json(self, path: Path) -> Any:
        """The JSON content of ``path`` (one of this run's files).

        Raises:
            ValueError: naming the file, when it is missing or unreadable.
        """
        if not path.is_file():
            raise ValueError(f"{path}: missing")
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: unreadable JSON: {exc}") from exc

    def read_config(self) -> ExperimentConfig:
        """The run's resolved experiment config.

        Raises:
            ValueError: naming ``config.json``, when it is missing, unreadable or not a valid config.
        """
        raw = self.read_json(self.config)
        try:
            return ExperimentConfig.model_validate(raw)
        except ValidationError as exc:
            raise ValueError(f"{self.config}: not a valid experiment config: {exc}") from exc
