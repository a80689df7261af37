"""The SASRec user encoder in ONNX: parity with torch at several batch sizes and lengths, with padding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from exporter.onnx_encoder import encoder_parity, export_user_encoder, ort_session
from training.models.sasrec import SASRec, SASRecConfig

MAX_LEN = 20


@pytest.fixture(scope="module")
def encoder() -> SASRec:
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(dim=32, max_len=MAX_LEN, num_blocks=2, num_heads=2, dropout=0.2))
    with torch.no_grad():  # non-trivial norms, so a wrongly wired LayerNorm cannot hide
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    return model.train()  # the exporter must switch dropout off itself


@pytest.fixture(scope="module")
def onnx_path(encoder: SASRec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "encoder.onnx"
    export_user_encoder(encoder, path)
    return path


def _histories(batch: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, length + 1, size=batch)  # (B,), some rows padded
    lengths[0] = length  # and one full row
    mask = np.arange(length)[None, :] >= (length - lengths)[:, None]  # (B, L) left-padded
    item_emb = rng.normal(size=(batch, length, 32)).astype(np.float32) * mask[..., None]
    return item_emb, mask


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("length", [1, 7, MAX_LEN])
def test_onnx_matches_torch_at_every_batch_and_length(
    encoder: SASRec, onnx_path: Path, batch: int, length: int
) -> None:
    item_emb, mask = _histories(batch, length, seed=batch * 100 + length)
    assert encoder_parity(encoder, onnx_path, item_emb, mask) <= 1e-5
    assert encoder.training, "encoder_parity must restore the module's mode"


def test_length_is_dynamic_not_frozen_to_the_trace(encoder: SASRec, onnx_path: Path) -> None:
    """A history of 7 items gives the same user vector whether sent at L=7 or left-padded to max_len."""
    item_emb, mask = _histories(3, 7, seed=1)
    padded = np.zeros((3, MAX_LEN, 32), dtype=np.float32)
    padded[:, -7:] = item_emb
    padded_mask = np.zeros((3, MAX_LEN), dtype=bool)
    padded_mask[:, -7:] = mask
    session = ort_session(onnx_path)
    (short,) = session.run(None, {"item_emb": item_emb, "mask": mask})
    (full,) = session.run(None, {"item_emb": padded, "mask": padded_mask})
    np.testing.assert_allclose(short, full, atol=1e-5)
    # and a different history really gives a different vector (the check above can fail)
    (other,) = session.run(None, {"item_emb": item_emb[::-1].copy(), "mask": mask[::-1].copy()})
    assert np.abs(other - short).max() > 1e-3


def test_graph_signature(onnx_path: Path) -> None:
    graph = onnx.load(str(onnx_path)).graph
    dims = {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        for i in graph.input
    }
    assert dims == {"item_emb": ["batch", "length", 32], "mask": ["batch", "length"]}
    assert [o.name for o in graph.output] == ["user"]
    assert onnx.load(str(onnx_path)).opset_import[0].version == 17


def test_parity_rejects_mismatched_shapes(encoder: SASRec, onnx_path: Path) -> None:
    item_emb, mask = _histories(2, 5, seed=0)
    with pytest.raises(ValueError, match="mask"):
        encoder_parity(encoder, onnx_path, item_emb, mask[:, 1:])
