"""RNNSeq2Seq: teacher forcing == step-by-step decoding, padding invariance, ties, overfitting."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from attnmt.interface import StepAttention, select_batch
from attnmt.rnn import LSTMState, RNNSeq2Seq
from attnmt.search import greedy_search
from attnmt.tokenizer import BOS_ID, EOS_ID, PAD_ID
from tests.conftest import stepwise

V = 17
H = 16


def make_model(seed: int = 0, **kw) -> RNNSeq2Seq:
    torch.manual_seed(seed)
    args = dict(src_vocab=V, tgt_vocab=V, emb_dim=12, hidden=H, dropout=0.3)
    args.update(kw)
    return RNNSeq2Seq(**args).eval()  # eval: dropout off, so the two paths must agree


def pad(seqs: list[list[int]]) -> torch.Tensor:
    out = torch.full((len(seqs), max(map(len, seqs))), PAD_ID)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s)
    return out


def sources(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    src = pad([s + [EOS_ID] for s in seqs])  # (B, S), like data.source_tensor
    return src, src != PAD_ID


SRC = [[5, 6, 7, 8, 9, 10], [11, 12], [4, 13, 14]]
TGT = [[4, 5, 6], [7, 8, 9, 10, 11], [12]]
TGT_IN = pad([[BOS_ID] + t for t in TGT])  # (B, T)

CONFIGS = [
    dict(attention=a, input_feeding=f, bidirectional=b, layers=n)
    for a, f, b, n in itertools.product(
        ["dot", "general", "additive"], [True, False], [True, False], [1, 2]
    )
]


def cfg_id(c: dict) -> str:
    return (
        f"{c['attention']}-if{int(c['input_feeding'])}-bi{int(c['bidirectional'])}-L{c['layers']}"
    )


@pytest.mark.parametrize("cfg", CONFIGS, ids=cfg_id)
@torch.no_grad()
def test_forward_equals_stepwise(cfg):
    model = make_model(**cfg)
    src, src_mask = sources(SRC)
    logits = model(src, src_mask, TGT_IN)
    assert logits.shape == (3, TGT_IN.size(1), V)
    steps, attns, _ = stepwise(model, src, src_mask, TGT_IN)
    assert torch.allclose(torch.log_softmax(logits, -1), steps, atol=1e-5)
    for attn in attns:
        assert isinstance(attn, StepAttention)
        assert attn.weights.shape == attn.scores.shape == (3, 1, 1, src.size(1))  # (B,L,nh,S)
        assert torch.all(attn.weights[~src_mask.view(3, 1, 1, -1).expand_as(attn.weights)] == 0)
        assert torch.allclose(attn.headline().sum(-1), torch.ones(3), atol=1e-6)


@pytest.mark.parametrize("cfg", CONFIGS, ids=cfg_id)
@torch.no_grad()
def test_padding_invariance(cfg):
    """A sentence's logits do not change when it is batched with longer sentences."""
    model = make_model(**cfg)
    src, src_mask = sources(SRC)
    batched = model(src, src_mask, TGT_IN)
    for b in range(3):
        s, m = sources([SRC[b]])
        t_in = torch.tensor([[BOS_ID] + TGT[b]])
        alone = model(s, m, t_in)  # (1, T_b, V)
        assert torch.allclose(batched[b, : t_in.size(1)], alone[0], atol=1e-5)


def test_state_layout_and_select_batch():
    model = make_model(layers=2, bidirectional=True)
    src, src_mask = sources(SRC)
    enc = model.encode(src, src_mask)
    assert enc.memory.shape == (3, src.size(1), H)
    assert torch.all(enc.memory[~src_mask] == 0)  # packed LSTM leaves padding empty
    state = model.init_state(enc)
    assert isinstance(state, LSTMState)
    assert state.h.shape == state.c.shape == (3, 2, H)  # (B, L, H): batch first for search
    assert state.att.shape == (3, H)
    idx = torch.tensor([2, 0])
    sub_state, sub_enc = select_batch(state, idx), select_batch(enc, idx)
    y = torch.tensor([BOS_ID, BOS_ID, BOS_ID])
    with torch.no_grad():
        full, _, _ = model.decode_step(y, state, enc)
        part, _, _ = model.decode_step(y[idx], sub_state, sub_enc)
    assert torch.allclose(full[idx], part, atol=1e-6)


def test_bidirectional_final_state_joins_directions():
    """The decoder starts from [forward final; backward final] of the top encoder layer."""
    model = make_model(layers=1, bidirectional=True)
    src, src_mask = sources([[5, 6, 7]])
    with torch.no_grad():
        enc = model.encode(src, src_mask)
    h = enc.extra.h  # (B, L, H)
    assert torch.allclose(h[0, 0, : H // 2], enc.memory[0, -1, : H // 2], atol=1e-6)
    assert torch.allclose(h[0, 0, H // 2 :], enc.memory[0, 0, H // 2 :], atol=1e-6)


def test_tie_embeddings():
    model = make_model(emb_dim=H, tie_embeddings=True)
    assert model.decoder.out.weight is model.decoder.embed.weight
    n_tied = sum(p.numel() for p in model.parameters())
    n_free = sum(p.numel() for p in make_model(emb_dim=H).parameters())
    assert n_free - n_tied == V * H  # one matrix fewer
    with pytest.raises(ValueError, match="emb_dim == hidden"):
        make_model(emb_dim=8, tie_embeddings=True)


def test_odd_hidden_bidirectional():
    with pytest.raises(ValueError, match="even"):
        make_model(hidden=15, bidirectional=True)
    make_model(hidden=15, bidirectional=False, attention="general")  # fine one-directional


def test_dropout_active_only_in_training():
    model = make_model(dropout=0.5)
    src, src_mask = sources(SRC)
    model.train()
    a, b = model(src, src_mask, TGT_IN), model(src, src_mask, TGT_IN)
    assert not torch.allclose(a, b)
    model.eval()
    assert torch.equal(model(src, src_mask, TGT_IN), model(src, src_mask, TGT_IN))


@pytest.mark.parametrize(
    "cfg",
    [
        dict(attention="general", input_feeding=True, bidirectional=True),
        dict(attention="additive", input_feeding=False, bidirectional=False),
    ],
)
def test_overfits_tiny_reverse_task(cfg):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    seqs = [[4, 5, 6, 7], [8, 9, 10], [11, 12, 13, 14, 15], [16, 4, 9]]
    targets = [s[::-1] for s in seqs]
    model = RNNSeq2Seq(V, V, emb_dim=32, hidden=32, dropout=0.0, **cfg)
    src, src_mask = sources(seqs)
    tgt_in = pad([[BOS_ID] + t for t in targets])
    tgt_out = pad([t + [EOS_ID] for t in targets])
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    first = loss = None
    for _ in range(400):
        logits = model(src, src_mask, tgt_in)
        loss = F.cross_entropy(logits.reshape(-1, V), tgt_out.reshape(-1), ignore_index=PAD_ID)
        first = first if first is not None else loss.item()
        if loss.item() < 0.02:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 < first
    model.eval()
    found = greedy_search(model, src, src_mask, max_len_a=2.0, max_len_b=5)
    assert [c[0].ids for c in found] == targets
    assert all(c[0].finished for c in found)
