"""Losses and scoring of SequentialRecommender."""

from __future__ import annotations

import pytest
import torch

from training.items.embeddings import IDEmbedding
from training.models.recommender import LossConfig, SequentialRecommender, sample_negatives
from training.models.sasrec import SASRec, SASRecConfig


def _model(loss: str, n: int = 30) -> SequentialRecommender:
    torch.manual_seed(0)
    return SequentialRecommender(
        IDEmbedding(n, 8),
        SASRec(SASRecConfig(dim=8, max_len=6, dropout=0.0)),
        LossConfig(loss, 5),  # type: ignore[arg-type]
    )


def test_sample_negatives_never_hit_the_target() -> None:
    targets = torch.randint(0, 3, (500,))
    neg = sample_negatives(targets, 3, 10, torch.Generator().manual_seed(0))
    assert neg.shape == (500, 10)
    assert not (neg == targets[:, None]).any()


def test_scores_are_dot_products_and_leading_padding_is_trimmed() -> None:
    model = _model("infonce").eval()
    hist = torch.tensor([[30, 30, 30, 1, 2, 3], [30, 30, 4, 5, 6, 7]])
    with torch.no_grad():
        scores = model.scores(hist)
        user = model.user_vectors(hist)
        torch.testing.assert_close(scores, user @ model.items.table().T)
        torch.testing.assert_close(model.user_vectors(hist[:1, 3:]), user[:1])


@pytest.mark.parametrize("loss", ["infonce", "bce", "ce"])
@pytest.mark.parametrize("shared", [True, False])
def test_losses_decrease_on_a_learnable_pattern(loss: str, shared: bool) -> None:
    model = _model(loss)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    hist = torch.randint(0, 30, (64, 6))
    target = (hist[:, -1] + 1) % 30  # next item = last item + 1
    losses = []
    for _ in range(60):
        neg = torch.randint(0, 30, (5,)) if shared else sample_negatives(target, 30, 5)
        value = model.loss(hist, target, neg)
        opt.zero_grad()
        value.backward()
        opt.step()
        losses.append(value.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.7 * losses[0]


def test_shared_negative_equal_to_target_is_masked() -> None:
    model = _model("infonce").eval()
    hist = torch.tensor([[1, 2, 3, 4, 5, 6]])
    target = torch.tensor([7])
    with torch.no_grad():
        clean = model.loss(hist, target, torch.tensor([8, 9]))
        clashing = model.loss(hist, target, torch.tensor([8, 9, 7]))
    torch.testing.assert_close(clean, clashing)


def test_loss_config_errors() -> None:
    with pytest.raises(ValueError, match="temperature"):
        LossConfig("infonce", 5, 0.0)
    with pytest.raises(ValueError, match="needs sampled negatives"):
        _model("bce").loss(torch.tensor([[1, 2, 3, 4, 5, 6]]), torch.tensor([1]), None)
