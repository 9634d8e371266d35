"""Attention scorers and the masked attention read: shares, padding, context, errors."""

from __future__ import annotations

import pytest
import torch

from attnmt.attention import (
    AdditiveScorer,
    DotScorer,
    GeneralScorer,
    attend,
    make_scorer,
)

KINDS = ["dot", "general", "additive"]
H = 16


def inputs(seed: int = 0, T: int = 3):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([5, 3, 1])
    memory = torch.randn(3, 5, H, generator=g)  # (B, S, H)
    src_mask = torch.arange(5).unsqueeze(0) < lengths.unsqueeze(1)  # (B, S)
    memory = memory * src_mask.unsqueeze(-1)  # encoders leave zeros on padding
    query = torch.randn(3, T, H, generator=g)  # (B, T, H)
    return query, memory, src_mask


@pytest.mark.parametrize("kind", KINDS)
def test_attend_masks_and_normalises(kind):
    torch.manual_seed(0)
    scorer = make_scorer(kind, H, H)
    query, memory, src_mask = inputs()
    context, weights, scores = attend(scorer, query, scorer.keys(memory), memory, src_mask)
    assert context.shape == (3, 3, H)
    assert weights.shape == scores.shape == (3, 3, 5)
    pad = ~src_mask.unsqueeze(1).expand_as(weights)
    assert torch.all(weights[pad] == 0)  # exactly zero, not merely small
    assert torch.all(scores[pad] == float("-inf"))
    assert torch.all(torch.isfinite(scores[~pad]))
    assert torch.all(weights[~pad] > 0)
    assert torch.allclose(weights.sum(-1), torch.ones(3, 3), atol=1e-6)
    assert torch.allclose(context, weights @ memory, atol=1e-6)
    assert torch.allclose(weights[2, :, 0], torch.ones(3))  # one real position takes all


@pytest.mark.parametrize("kind", KINDS)
def test_padding_content_is_ignored(kind):
    """Whatever sits in padded positions of memory cannot change the result."""
    torch.manual_seed(0)
    scorer = make_scorer(kind, H, H)
    query, memory, src_mask = inputs()
    noisy = memory + 100.0 * (~src_mask).unsqueeze(-1) * torch.randn_like(memory)
    a = attend(scorer, query, scorer.keys(memory), memory, src_mask)
    b = attend(scorer, query, scorer.keys(noisy), noisy, src_mask)
    for x, y in zip(a, b):
        assert torch.allclose(x[torch.isfinite(x)], y[torch.isfinite(y)], atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_queries_are_independent(kind):
    """Scoring T queries at once equals scoring them one at a time (what decoding does)."""
    torch.manual_seed(0)
    scorer = make_scorer(kind, H, H)
    query, memory, src_mask = inputs(T=4)
    keys = scorer.keys(memory)
    ctx, w, _ = attend(scorer, query, keys, memory, src_mask)
    for t in range(4):
        ctx_t, w_t, _ = attend(scorer, query[:, t : t + 1], keys, memory, src_mask)
        assert torch.allclose(ctx_t[:, 0], ctx[:, t], atol=1e-6)
        assert torch.allclose(w_t[:, 0], w[:, t], atol=1e-6)


def test_score_formulas():
    torch.manual_seed(0)
    q, k = torch.randn(2, 1, H), torch.randn(2, 4, H)
    assert torch.allclose(DotScorer().score(q, DotScorer().keys(k)), q @ k.transpose(1, 2))
    gen = GeneralScorer(H, 8)
    k8 = torch.randn(2, 4, 8)
    expected = q @ (k8 @ gen.w_a.weight.T).transpose(1, 2)  # h_t . (W_a h_s)
    assert torch.allclose(gen.score(q, gen.keys(k8)), expected, atol=1e-6)
    add = AdditiveScorer(H, 8)
    manual = torch.stack(
        [add.v(torch.tanh(add.w_q(q[:, 0]) + add.w_k(k8[:, s]))).squeeze(-1) for s in range(4)],
        -1,
    )  # v . tanh(W_q h_t + W_k h_s), one source position at a time
    assert torch.allclose(add.score(q, add.keys(k8))[:, 0], manual, atol=1e-6)


def test_general_and_additive_accept_different_sizes():
    torch.manual_seed(0)
    memory, query = torch.randn(2, 4, 8), torch.randn(2, 1, H)
    mask = torch.ones(2, 4, dtype=torch.bool)
    for kind in ("general", "additive"):
        scorer = make_scorer(kind, H, 8)
        context, weights, _ = attend(scorer, query, scorer.keys(memory), memory, mask)
        assert context.shape == (2, 1, 8) and weights.shape == (2, 1, 4)


def test_dot_needs_equal_sizes():
    with pytest.raises(ValueError, match="16 != 8"):
        make_scorer("dot", 16, 8)


def test_unknown_kind():
    with pytest.raises(ValueError, match="cosine"):
        make_scorer("cosine", H, H)


def test_no_state_cached_on_module():
    scorer = make_scorer("additive", H, H)
    before = set(vars(scorer))
    query, memory, src_mask = inputs()
    attend(scorer, query, scorer.keys(memory), memory, src_mask)
    assert set(vars(scorer)) == before
