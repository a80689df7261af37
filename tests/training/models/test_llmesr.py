"""LLM-ESR: cross-attention masks, the dual-view encoder, PCA init, similar users, self-distillation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.data.dataset import SequenceDataset
from training.data.splits import leave_one_out
from training.models.llmesr.model import (
    LLMESR,
    CrossAttention,
    DualViewEncoder,
    LLMESRConfig,
    build_llmesr,
    pca_init,
)
from training.models.llmesr.setup import (
    last_training_examples,
    mean_item_embeddings,
    similar_users,
    user_prompts,
)
from training.models.recommender import LossConfig

N, D_L, VIEW = 12, 16, 8


def _model(alpha: float = 0.1, dropout: float = 0.0) -> LLMESR:
    torch.manual_seed(0)
    text = np.random.default_rng(0).normal(size=(N, D_L)).astype(np.float32)
    config = LLMESRConfig(view_dim=VIEW, max_len=6, num_blocks=2, dropout=dropout)
    return build_llmesr(text, config, LossConfig("bce", 1), alpha=alpha)


def test_cross_attention_never_attends_padding() -> None:
    torch.manual_seed(0)
    attn = CrossAttention(VIEW, heads=2).eval()
    query, context = torch.randn(3, 5, VIEW), torch.randn(3, 5, VIEW)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    out = attn(query, context, mask)
    changed = context.clone()
    changed[~mask] = 1e3 * torch.randn(int((~mask).sum()), VIEW)  # only padded keys/values change
    out2 = attn(query, changed, mask)
    torch.testing.assert_close(out[mask], out2[mask])
    assert torch.isfinite(out).all(), "an all-padding row must not produce NaN"
    # a real query over its real keys equals plain softmax attention restricted to them
    q, k, v = attn.q(query[0]), attn.k(context[0, 2:]), attn.v(context[0, 2:])  # (5, d), (3, d)
    heads = [
        torch.softmax(q[:, h * 4 : h * 4 + 4] @ k[:, h * 4 : h * 4 + 4].T / 2.0, -1)
        @ v[:, h * 4 : h * 4 + 4]
        for h in range(2)
    ]
    torch.testing.assert_close(out[0, 2:], attn.out(torch.cat(heads, -1))[2:])


def test_encoder_output_ignores_padding_and_leading_pad_columns() -> None:
    torch.manual_seed(0)
    enc = DualViewEncoder(LLMESRConfig(view_dim=VIEW, max_len=6, dropout=0.3)).eval()
    emb = torch.randn(2, 6, 2 * VIEW)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1]], dtype=torch.bool)
    user = enc.encode(emb, mask)
    noisy = emb.clone()
    noisy[~mask] = torch.randn(int((~mask).sum()), 2 * VIEW)
    torch.testing.assert_close(enc.encode(noisy, mask), user)
    # positions count from the oldest kept item, so dropping all-padding columns changes nothing
    torch.testing.assert_close(enc.encode(emb[:, 2:], mask[:, 2:]), user)
    assert user.shape == (2, 2 * VIEW)


def test_items_fuse_views_and_id_view_starts_from_pca() -> None:
    model = _model()
    text = model.items.language[:N].numpy()  # type: ignore[operator]
    table = model.items.table()
    assert table.shape == (N, 2 * VIEW)
    torch.testing.assert_close(table[:, :VIEW], torch.from_numpy(pca_init(text, VIEW)))
    torch.testing.assert_close(table[:, VIEW:], model.items.adapter(model.items.language[:N]))  # type: ignore[operator]
    # gathered rows equal table rows; the pad row is all zeros
    idx = torch.tensor([[3, 0, N]])
    rows = model.items(idx)
    torch.testing.assert_close(rows[0, :2], table[[3, 0]])
    assert not rows[0, 2].any()
    # logit fusion: the score is the sum of the two views' dot products
    hist = torch.tensor([[N, 1, 2, 3]])
    user = model.eval().user_vectors(hist)
    by_view = user[:, :VIEW] @ table[:, :VIEW].T + user[:, VIEW:] @ table[:, VIEW:].T
    torch.testing.assert_close(model.scores(hist), by_view)


def test_pca_init_is_centred_unwhitened_principal_scores() -> None:
    E = np.random.default_rng(1).normal(size=(50, 10)) * np.arange(1, 11)
    scores = pca_init(E, 3)
    centred = E - E.mean(0)
    top = np.sort(np.linalg.eigvalsh(centred.T @ centred))[::-1][:3]
    np.testing.assert_allclose((scores.astype(np.float64) ** 2).sum(0), top, rtol=1e-4)
    np.testing.assert_allclose(scores.mean(0), 0, atol=1e-4)
    with pytest.raises(ValueError, match="PCA"):
        pca_init(E, 11)


def test_similar_users_exclude_the_user_even_among_identical_prompts() -> None:
    emb = np.array([[1, 0], [1, 0], [1, 0], [0.9, 0.1], [0, 1], [0.1, 1]], dtype=np.float32)
    nbr = similar_users(emb, k=2)
    assert nbr.shape == (6, 2)
    assert not (nbr == np.arange(6)[:, None]).any()
    assert set(nbr[0]) <= {1, 2}
    assert set(nbr[1]) <= {0, 2}
    assert nbr[4].tolist() == [5, 3]  # cosine, most similar first
    with pytest.raises(ValueError, match="U > k"):
        similar_users(emb, k=6)


def test_prompts_and_last_examples_use_training_items_only() -> None:
    ds = SequenceDataset.from_user_items(
        "toy",
        [str(i) for i in range(5)],
        ["ITA", "ITB", "ITC", "ITD", "ITE"],
        ["u0", "u1"],
        [np.array([0, 1, 2, 3, 4]), np.array([4, 3, 2])],
    )
    split = leave_one_out(ds, max_len=3)
    prompts = user_prompts(split.train_sequences)
    assert "ITA; ITB; ITC." in prompts[0]
    assert "ITD" not in prompts[0]
    assert "ITE" not in prompts[0]
    assert "ITE." in prompts[1]
    assert "ITD" not in prompts[1]
    text = np.arange(10, dtype=np.float32).reshape(5, 2)  # item i -> [2i, 2i+1]
    means = mean_item_embeddings(split.train_sequences, text)
    np.testing.assert_allclose(means, [[2, 3], [8, 9]])  # items 0-2, and item 4 alone
    hist, tgt = last_training_examples(split.train, 2, pad=5)
    assert hist.tolist() == [[5, 0, 1], [5, 5, 5]]
    assert tgt.tolist() == [2, -1]


def test_distillation_target_is_mean_of_detached_neighbour_representations() -> None:
    model = _model().eval()
    hist = torch.tensor([[N, 1, 2, 3], [4, 5, 6, 7], [N, N, 8, 9], [1, 1, 10, 11]])
    nbr = torch.tensor([[1, 2], [0, 2], [0, 3], [1, 2]])
    model.set_distillation(hist, torch.tensor([4, 8, 10, 0]), nbr)
    target = model.distillation_target(torch.tensor([0, 3]))
    reps = model.user_vectors(hist)  # (4, 2d)
    torch.testing.assert_close(target, torch.stack([reps[[1, 2]].mean(0), reps[[1, 2]].mean(0)]))
    assert not target.requires_grad
    target2 = model.distillation_target(torch.tensor([2]))
    torch.testing.assert_close(target2[0], reps[[0, 3]].mean(0))
    with pytest.raises(ValueError, match="own similar users"):
        model.set_distillation(hist, torch.tensor([4, 8, 10, 0]), torch.tensor([[0, 1]] * 4))


def test_loss_adds_alpha_mse_on_last_prefixes_only() -> None:
    model = _model(alpha=0.5).train()  # dropout 0: train mode is deterministic
    last = torch.tensor([[N, 1, 2, 3], [4, 5, 6, 7], [N, N, 8, 9]])
    model.set_distillation(last, torch.tensor([4, 8, 10]), torch.tensor([[1, 2], [0, 2], [0, 1]]))
    hist = torch.tensor([[N, 1, 2, 3], [N, N, 1, 2], [4, 5, 6, 7]])  # rows 0, 2 are last prefixes
    tgt, neg, users = (
        torch.tensor([4, 3, 8]),
        torch.tensor([[0], [0], [0]]),
        torch.tensor([0, 0, 1]),
    )
    rec = model.loss(hist, tgt, neg)
    total = model.loss(hist, tgt, neg, users=users)
    student = model.user_vectors(last[[0, 1]])
    expected = 0.5 * F.mse_loss(student, model.distillation_target(torch.tensor([0, 1])))
    torch.testing.assert_close(total - rec, expected)
    assert float(expected.detach()) > 0
    none_last = model.loss(hist[1:2], tgt[1:2], neg[1:2], users=users[1:2])
    torch.testing.assert_close(none_last, model.loss(hist[1:2], tgt[1:2], neg[1:2]))
