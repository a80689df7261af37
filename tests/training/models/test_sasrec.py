"""SASRec encoder: the last-position shortcut is exact, padding is inert, shapes and errors."""

from __future__ import annotations

import pytest
import torch

from training.models.sasrec import SASRec, SASRecConfig


def _full_reference(model: SASRec, emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Every block over every position (no shortcut), then the last position."""
    T = emb.shape[1]
    L = model.config.max_len
    keep = mask.unsqueeze(-1).float()
    x = (emb + model.positions.weight[L - T :]) * keep
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    full = ((causal & mask[:, None, :]) | torch.eye(T, dtype=torch.bool)).unsqueeze(1)
    for block in model.blocks:
        x = block(x, full, last_only=False) * keep
    return model.norm(x[:, -1])


@pytest.mark.parametrize("blocks", [1, 2])
@pytest.mark.parametrize("heads", [1, 2])
def test_last_position_shortcut_equals_full_computation(blocks: int, heads: int) -> None:
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(dim=16, max_len=7, num_blocks=blocks, num_heads=heads)).eval()
    emb = torch.randn(5, 7, 16)
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[0, :4] = False
    mask[1, :6] = False
    with torch.no_grad():
        torch.testing.assert_close(model.encode(emb, mask), _full_reference(model, emb, mask))


def test_padding_values_and_extra_padding_do_not_change_the_output() -> None:
    torch.manual_seed(1)
    model = SASRec(SASRecConfig(dim=8, max_len=6, num_blocks=2)).eval()
    real = torch.randn(1, 3, 8)
    mask3 = torch.ones(1, 3, dtype=torch.bool)
    padded = torch.cat([torch.randn(1, 3, 8) * 100, real], dim=1)  # garbage in padded slots
    mask6 = torch.cat([torch.zeros(1, 3, dtype=torch.bool), mask3], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model.encode(real, mask3), model.encode(padded, mask6))


def test_history_order_matters_and_output_is_finite() -> None:
    torch.manual_seed(2)
    model = SASRec(SASRecConfig(dim=8, max_len=4)).eval()
    emb = torch.randn(1, 4, 8)
    mask = torch.ones(1, 4, dtype=torch.bool)
    with torch.no_grad():
        a = model.encode(emb, mask)
        b = model.encode(emb.flip(1), mask)
    assert torch.isfinite(a).all()
    assert not torch.allclose(a, b)


def test_errors() -> None:
    with pytest.raises(ValueError, match="divisible"):
        SASRecConfig(dim=10, num_heads=3)
    with pytest.raises(ValueError, match="dropout"):
        SASRecConfig(dropout=1.0)
    model = SASRec(SASRecConfig(dim=8, max_len=3))
    with pytest.raises(ValueError, match="exceeds max_len=3"):
        model.encode(torch.randn(1, 4, 8), torch.ones(1, 4, dtype=torch.bool))
