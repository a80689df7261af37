"""Losses and scoring of SequentialRecommender."""

from __future__ import annotations

import pytest
import torch

from training.items.embeddings import IDEmbedding
from training.models.recommender import (
    LossConfig,
    SequentialRecommender,
    pooled_negatives,
    sample_negatives,
)
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


def test_pooled_negatives_come_from_one_small_pool_per_batch() -> None:
    g = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 1000, (256,))
    neg = pooled_negatives(targets, 1000, 64, 32, g)
    assert neg.shape == (256, 64)
    assert len(torch.unique(neg)) <= 32
    assert int(neg.min()) >= 0
    assert int(neg.max()) < 1000
    # every example's negatives are uniform over the items: pooled over many batches, each item is drawn
    counts = torch.bincount(
        torch.cat([pooled_negatives(targets, 1000, 64, 64, g).flatten() for _ in range(1000)]),
        minlength=1000,
    )
    assert int((counts == 0).sum()) == 0
    assert float(counts.float().std() / counts.float().mean()) < 0.25
    allowed = torch.tensor([3, 5, 9])
    assert set(pooled_negatives(targets, 1000, 8, 16, g, pool=allowed).unique().tolist()) <= {
        3,
        5,
        9,
    }


@pytest.mark.parametrize("loss", ["infonce", "bce"])
def test_repeated_per_example_negatives_give_the_same_loss_and_gradients(loss: str) -> None:
    """The gathered (B, U) product used for pooled negatives equals embedding every (B, K) row on its own."""
    hist = torch.randint(0, 30, (16, 6))
    target = torch.randint(0, 30, (16,))
    few = pooled_negatives(
        target, 30, 12, 4, torch.Generator().manual_seed(1)
    )  # <= 4 distinct of 192
    grads = []
    for compute in (model_loss, _einsum_loss):
        model = _model(loss)
        value = compute(model, hist, target, few, loss)
        value.backward()
        grads.append((value.detach(), model.items.weight.weight.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


def model_loss(
    model: SequentialRecommender,
    hist: torch.Tensor,
    target: torch.Tensor,
    neg: torch.Tensor,
    loss: str,
) -> torch.Tensor:
    return model.loss(hist, target, neg)


def _einsum_loss(
    model: SequentialRecommender,
    hist: torch.Tensor,
    target: torch.Tensor,
    neg: torch.Tensor,
    loss: str,
) -> torch.Tensor:
    """The loss with every (B, K) negative embedded on its own (the per-example formula, written out)."""
    user = model.user_vectors(hist)
    pos, rows = model.items(target), model.items(neg)
    if loss == "infonce":
        user, pos, rows = (torch.nn.functional.normalize(x, dim=-1) for x in (user, pos, rows))
    pos_logit = (user * pos).sum(-1, keepdim=True)
    neg_logits = torch.einsum("bd,bkd->bk", user, rows)
    clash = neg == target[:, None]
    neg_logits = neg_logits.masked_fill(clash, -torch.inf if loss == "infonce" else -1e4)
    if loss == "infonce":
        logits = torch.cat([pos_logit, neg_logits], 1) / model.loss_config.temperature
        return torch.nn.functional.cross_entropy(logits, torch.zeros(len(target), dtype=torch.long))
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    return bce(pos_logit, torch.ones_like(pos_logit)) + bce(
        neg_logits, torch.zeros_like(neg_logits)
    )


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
