"""A DreamRec run -> an artifact whose ONNX graph is the whole guided DDIM sampler, equal to torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.artifact import open_artifact
from exporter.export import MAX_PARITY_DIFF, export_run
from exporter.onnx_encoder import encoder_parity, export_user_encoder, ort_session
from training.config import load_config
from training.experiment import run_experiment
from training.models.dreamrec import DreamRecEncoder
from training.run.checkpoint import load_run

CONFIG = (
    Path(__file__).resolve().parents[2] / "training" / "configs" / "amazon14-beauty-dreamrec.toml"
)


@pytest.fixture(scope="module")
def dreamrec_run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ml-100k under the DreamRec x AlphaFuse config (d = d_l = 384, null space by threshold), one short epoch."""
    config = load_config(
        CONFIG,
        [
            'data.source={format="recbole", path="' + str(shared_data / "ml-100k") + '"}',
            "data.max_sequence_length=15",
            "train.max_epochs=1",
            "train.threads=1",
            "diffusion.steps=5",
        ],
    )
    run_dir = tmp_path_factory.mktemp("run-dreamrec")
    run_experiment(config, run_dir)
    return run_dir


def test_dreamrec_artifact_has_its_kind_and_torch_parity(
    dreamrec_run: Path, tmp_path: Path
) -> None:
    path = export_run(dreamrec_run, tmp_path / "artifacts", version="d1")
    manifest = open_artifact(path, verify=True)
    assert manifest.model_kind == "dreamrec"
    assert manifest.embedding_mode == "alphafuse"
    assert manifest.dims.d == manifest.dims.d_l == 384
    assert 0 < manifest.dims.d_n < 384
    assert manifest.encoder.parity_max_abs_diff <= MAX_PARITY_DIFF
    run = load_run(dreamrec_run)
    assert isinstance(run.model.encoder, DreamRecEncoder)
    table = run.model.items.table().detach().numpy()
    np.testing.assert_array_equal(np.load(path / "items.npy"), table)
    # the graph against torch on real item rows: batch 1 and a batch, short and full histories
    rng = np.random.default_rng(0)
    session = ort_session(path / manifest.encoder.file)
    for batch, length in ((1, 10), (7, 10), (3, 4)):
        rows = rng.integers(0, len(table), size=(batch, length))
        item_emb = table[rows].astype(np.float32)  # (B, L, d)
        mask = np.ones((batch, length), dtype=bool)
        mask[0, : length // 2] = False
        item_emb[~mask] = 0.0
        (got,) = session.run(None, {"item_emb": item_emb, "mask": mask})
        with torch.no_grad():
            want = run.model.encoder.encode(torch.from_numpy(item_emb), torch.from_numpy(mask))
        np.testing.assert_allclose(got, want.numpy(), atol=MAX_PARITY_DIFF, rtol=0)


def test_only_ddim_is_exported_and_steps_change_the_graph(
    dreamrec_run: Path, tmp_path: Path
) -> None:
    encoder = load_run(dreamrec_run).model.encoder
    assert isinstance(encoder, DreamRecEncoder)
    table = load_run(dreamrec_run).model.items.table().detach().numpy()
    item_emb = table[np.arange(20).reshape(2, 10)].astype(np.float32)
    mask = np.ones((2, 10), dtype=bool)
    outs = []
    for steps in (1, 5):
        encoder.steps = steps
        export_user_encoder(encoder, tmp_path / f"s{steps}.onnx")
        assert (
            encoder_parity(encoder, tmp_path / f"s{steps}.onnx", item_emb, mask) <= MAX_PARITY_DIFF
        )
        outs.append(
            ort_session(tmp_path / f"s{steps}.onnx").run(
                None, {"item_emb": item_emb, "mask": mask}
            )[0]
        )
    assert not np.allclose(outs[0], outs[1])
    encoder.sampler = "ancestral"
    with pytest.raises(ValueError, match="only the deterministic DDIM sampler"):
        export_user_encoder(encoder, tmp_path / "anc.onnx")


def test_ddim_steps_chosen_at_export_are_the_graph_and_the_manifest(
    dreamrec_run: Path, tmp_path: Path
) -> None:
    default = open_artifact(export_run(dreamrec_run, tmp_path / "a", version="cfg"), verify=True)
    assert default.encoder.ddim_steps == 5  # the run's diffusion.steps
    path = export_run(dreamrec_run, tmp_path / "a", version="one", ddim_steps=1)
    manifest = open_artifact(path, verify=True)
    assert manifest.encoder.ddim_steps == 1
    assert manifest.encoder.parity_max_abs_diff <= MAX_PARITY_DIFF
    encoder = load_run(dreamrec_run).model.encoder
    assert isinstance(encoder, DreamRecEncoder)
    table = np.load(path / "items.npy")
    item_emb = table[np.arange(30).reshape(3, 10)].astype(np.float32)
    mask = np.ones((3, 10), dtype=bool)
    (got,) = ort_session(path / "encoder.onnx").run(None, {"item_emb": item_emb, "mask": mask})
    with torch.no_grad():
        encoder.steps = 1
        one = encoder.encode(torch.from_numpy(item_emb), torch.from_numpy(mask)).numpy()
        encoder.steps = 5
        five = encoder.encode(torch.from_numpy(item_emb), torch.from_numpy(mask)).numpy()
    np.testing.assert_allclose(got, one, atol=MAX_PARITY_DIFF, rtol=0)
    assert not np.allclose(got, five, atol=1e-3)


def test_bad_ddim_steps_are_refused_and_leave_nothing(
    dreamrec_run: Path, alphafuse_run: Path, tmp_path: Path
) -> None:
    root = tmp_path / "artifacts"
    for steps in (0, 2001):
        with pytest.raises(
            ValueError, match=r"ddim_steps must be in \[1, diffusion.timesteps=2000\]"
        ):
            export_run(dreamrec_run, root, ddim_steps=steps)
    with pytest.raises(
        ValueError, match="applies to DreamRec's sampler; this run's model is 'sasrec'"
    ):
        export_run(alphafuse_run, root, ddim_steps=1)
    assert not root.exists()
    sasrec = open_artifact(export_run(alphafuse_run, root, version="s"), verify=True)
    assert sasrec.encoder.ddim_steps is None
