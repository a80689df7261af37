"""The service serves a DreamRec artifact unchanged: /recommend ranks by the generated vector."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from core.artifact import open_artifact
from service.app import create_app
from service.settings import Settings
from tests.service.conftest import train_tiny
from training.run.checkpoint import load_run


@pytest.fixture(scope="module")
def dreamrec_run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(
        shared_data,
        tmp_path_factory.mktemp("run-dreamrec"),
        'model.name="dreamrec"',
        'embedding.mode="id"',
        "embedding.dim=32",
        "data.max_sequence_length=30",
        "diffusion.steps=10",
    )


def test_dreamrec_artifact_answers_recommend(
    dreamrec_run: Path, tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    from exporter.export import export_run

    root = tmp_path / "artifacts"
    path = export_run(dreamrec_run, root, version="dr1")
    assert open_artifact(path, verify=True).model_kind == "dreamrec"
    ids: list[str] = json.loads((path / "item_ids.json").read_text())
    settings = Settings(
        artifact=root, redis_url=redis_url, key_prefix=key_prefix, cold_sync_seconds=0
    )
    history = ids[20:27]
    with TestClient(create_app(settings)) as client:
        r = client.post("/recommend", json={"history": history, "k": 10})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source"] == "model"
    assert body["model_version"] == "dr1"
    got = [x["item_id"] for x in body["items"]]
    # brute force with the torch model: inner product of the generated vector with the item table
    model = load_run(dreamrec_run).model
    with torch.no_grad():
        scores = model.scores(torch.tensor([[ids.index(h) for h in history]]))[0].numpy()
    scores[[ids.index(h) for h in history]] = -np.inf
    expected = [ids[i] for i in np.argsort(-scores, kind="stable")[:10]]
    assert got == expected
