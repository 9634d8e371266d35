"""Attention for the LSTM decoder: similarity scores, masked softmax, weighted sum.

Pipeline position: inside ``rnn.AttentionLSTMDecoder``; each decoding step asks "how similar is my
output to each source word's encoding?", turns the scores into shares with a softmax, and mixes
the encodings by those shares (the *attention values*, or context vector).

Scoring functions (Luong, Pham & Manning 2015, section 3.1; Bahdanau, Cho & Bengio 2015, A.1.2):

    dot:       score(h_t, h_s) = h_t . h_s
    general:   score(h_t, h_s) = h_t . (W_a h_s)
    additive:  score(h_t, h_s) = v_a . tanh(W_q h_t + W_k h_s)

Every scorer splits into ``keys(memory)``, computed once per sentence, and ``score(query, keys)``,
computed every step: the part that depends only on the source should not be redone T times.
Shapes: B batch, T query steps (1 while decoding), S source length, H hidden.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class DotScorer(nn.Module):
    """score = h_t . h_s -- no parameters; needs decoder and encoder sizes to match."""

    def keys(self, memory: Tensor) -> Tensor:
        return memory  # (B, S, H)

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        return torch.bmm(query, keys.transpose(1, 2))  # (B, T, H) x (B, H, S) -> (B, T, S)


class GeneralScorer(nn.Module):
    """score = h_t . (W_a h_s): a learned bilinear similarity."""

    def __init__(self, query_dim: int, key_dim: int):
        super().__init__()
        self.w_a = nn.Linear(key_dim, query_dim, bias=False)

    def keys(self, memory: Tensor) -> Tensor:
        return self.w_a(memory)  # (B, S, H)

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        return torch.bmm(query, keys.transpose(1, 2))  # (B, T, S)


class AdditiveScorer(nn.Module):
    """score = v . tanh(W_q h_t + W_k h_s): a one-hidden-layer network over both vectors."""

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int | None = None):
        super().__init__()
        attn_dim = attn_dim or query_dim
        self.w_q = nn.Linear(query_dim, attn_dim, bias=False)
        self.w_k = nn.Linear(key_dim, attn_dim, bias=True)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def keys(self, memory: Tensor) -> Tensor:
        return self.w_k(memory)  # (B, S, A)

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        q = self.w_q(query).unsqueeze(2)  # (B, T, 1, A)
        hidden = torch.tanh(q + keys.unsqueeze(1))  # (B, T, S, A)
        return self.v(hidden).squeeze(-1)  # (B, T, S)


def make_scorer(kind: str, query_dim: int, key_dim: int) -> nn.Module:
    """The scorer named by ``model.attention``."""
    if kind == "dot":
        if query_dim != key_dim:
            raise ValueError(
                "model.attention=dot needs equal decoder and encoder sizes "
                f"({query_dim} != {key_dim})"
            )
        return DotScorer()
    if kind == "general":
        return GeneralScorer(query_dim, key_dim)
    if kind == "additive":
        return AdditiveScorer(query_dim, key_dim)
    raise ValueError(f"model.attention: unknown scoring {kind!r} (use dot, general or additive)")


def attend(
    scorer: nn.Module, query: Tensor, keys: Tensor, memory: Tensor, src_mask: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """One attention read: (context (B,T,H), weights (B,T,S), scores (B,T,S)).

    context_t = sum_s softmax(score(h_t, h_s)) * h_s -- the "attention values".
    """
    scores = scorer.score(query, keys)  # (B, T, S)
    scores = scores.masked_fill(~src_mask.unsqueeze(1), float("-inf"))  # padding gets no share
    weights = torch.softmax(scores, dim=-1)  # (B, T, S)
    context = torch.bmm(weights, memory)  # (B, T, S) x (B, S, H) -> (B, T, H)
    return context, weights, scores
