"""TransformerSeq2Seq: shapes, incremental decoding == teacher forcing, masking, ties, overfit."""

from __future__ import annotations

import pytest
import torch

from attnmt.interface import select_batch
from attnmt.tokenizer import BOS_ID, EOS_ID, PAD_ID
from attnmt.transformer import TransformerSeq2Seq
from tests.conftest import stepwise

V = 20


def make_model(seed: int = 0, **kw) -> TransformerSeq2Seq:
    torch.manual_seed(seed)
    args = dict(src_vocab=V, tgt_vocab=V, d_model=32, layers=2, heads=4, ff_dim=64, dropout=0.1)
    args.update(kw)
    return TransformerSeq2Seq(**args).eval()


def batch(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, S) ids and mask, each sequence + <eos> like the batcher makes them."""
    seqs = [s + [EOS_ID] for s in seqs]
    out = torch.full((len(seqs), max(map(len, seqs))), PAD_ID)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s)
    return out, out != PAD_ID


SRC = [[5, 6, 7, 8, 9], [10, 11, 4]]
TGT_IN = torch.tensor([[BOS_ID, 4, 5, 6, 7, 8], [BOS_ID, 9, 10, 11, 12, 13]])


@torch.no_grad()
def test_shapes():
    model = make_model()
    src, mask = batch(SRC)
    assert model(src, mask, TGT_IN).shape == (2, 6, V)
    enc = model.encode(src, mask)
    assert enc.memory.shape == (2, 6, 32)
    state = model.init_state(enc)
    logp, state, attn = model.decode_step(TGT_IN[:, 0], state, enc)
    assert logp.shape == (2, V)
    assert attn.weights.shape == attn.scores.shape == (2, 2, 4, 6)  # (B, L, nh, S)
    assert attn.headline().shape == (2, 6)
    assert state.self_k[0].shape == (2, 4, 1, 8)  # (B, nh, t, hs)
    assert enc.extra.k[1].shape == enc.extra.v[1].shape == (2, 4, 6, 8)  # (B, nh, S, hs)
    assert torch.allclose(logp.exp().sum(-1), torch.ones(2))


@torch.no_grad()
def test_incremental_decode_equals_uncached_and_teacher_forcing():
    model = make_model()
    src, mask = batch(SRC)
    forced = model(src, mask, TGT_IN).log_softmax(-1)  # (B, T, V)
    cached, _, state = stepwise(model, src, mask, TGT_IN)
    assert state.step == TGT_IN.size(1) and state.self_k[0].size(2) == TGT_IN.size(1)
    # Uncached: re-run the full model on the growing prefix, keep only its last position.
    uncached = torch.stack(
        [model(src, mask, TGT_IN[:, : t + 1])[:, -1].log_softmax(-1) for t in range(6)], 1
    )
    torch.testing.assert_close(cached, uncached, atol=1e-5, rtol=0)
    torch.testing.assert_close(cached, forced, atol=1e-5, rtol=0)


@torch.no_grad()
def test_decoder_layer_step_equals_forward():
    """One layer on its own: T calls of ``step`` against a growing cache give ``forward``'s
    outputs, the cache holds the prefix's keys/values, and padded memory gets no attention."""
    layer = make_model().dec_layers[0]
    src, mask = batch(SRC)
    memory = torch.randn(2, src.size(1), 32)  # (B, S, H)
    mem_mask = mask[:, None, None, :]  # (B, 1, 1, S)
    x = torch.randn(2, 6, 32)  # (B, T, H)
    whole, _ = layer(x, memory, mem_mask)  # (B, T, H)
    cross = layer.cross_attn.keys_values(memory)
    cache = (torch.zeros(2, 4, 0, 8), torch.zeros(2, 4, 0, 8))  # (B, nh, 0, hs)
    for t in range(x.size(1)):
        out, cache, (w, s) = layer.step(x[:, t : t + 1], cache, cross, mem_mask)
        torch.testing.assert_close(out[:, 0], whole[:, t], atol=1e-5, rtol=0)
        assert cache[0].shape == cache[1].shape == (2, 4, t + 1, 8)
        assert w.shape == s.shape == (2, 4, src.size(1))  # (B, nh, S)
        torch.testing.assert_close(s.softmax(-1), w)
        assert (w[1, :, ~mask[1]] == 0).all()
    k, v = layer.self_attn.keys_values(layer.ln1(x))  # (B, nh, T, hs): the prefix's own
    torch.testing.assert_close(cache[0], k, atol=1e-6, rtol=0)
    torch.testing.assert_close(cache[1], v, atol=1e-6, rtol=0)


@torch.no_grad()
def test_padding_invariance():
    model = make_model()
    short = [[10, 11, 4]]
    alone_src, alone_mask = batch(short)
    padded_src, padded_mask = batch(short + [[5, 6, 7, 8, 9, 12, 13, 14]])  # extra padding
    tgt = torch.tensor([[BOS_ID, 9, 10, 11]])
    tgt2 = torch.cat([tgt, torch.tensor([[BOS_ID, 4, 5, 6]])])
    alone = model(alone_src, alone_mask, tgt)[0]
    padded = model(padded_src, padded_mask, tgt2)[0]
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=0)
    step_alone, attn_alone, _ = stepwise(model, alone_src, alone_mask, tgt)
    step_padded, attn_padded, _ = stepwise(model, padded_src, padded_mask, tgt2)
    torch.testing.assert_close(step_alone[0], step_padded[0], atol=1e-5, rtol=0)
    S = alone_src.size(1)
    for a, p in zip(attn_alone, attn_padded):
        torch.testing.assert_close(a.weights[0], p.weights[0, :, :, :S], atol=1e-6, rtol=0)


@torch.no_grad()
def test_causality():
    model = make_model()
    src, mask = batch(SRC)
    before = model(src, mask, TGT_IN)
    for t in range(TGT_IN.size(1) - 1):
        changed = TGT_IN.clone()
        changed[:, t + 1 :] = (changed[:, t + 1 :] + 3) % V
        after = model(src, mask, changed)
        torch.testing.assert_close(before[:, : t + 1], after[:, : t + 1], atol=1e-5, rtol=0)
        assert not torch.allclose(before[:, t + 1 :], after[:, t + 1 :])


@torch.no_grad()
def test_cross_attention_weights_and_scores():
    model = make_model()
    src, mask = batch(SRC)
    _, attns, _ = stepwise(model, src, mask, TGT_IN)
    pad = ~mask[:, None, None, :]  # (B, 1, 1, S)
    for a in attns:
        w = a.weights  # (B, L, nh, S)
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
        assert (w.masked_select(pad) == 0).all()
        assert torch.isneginf(a.scores.masked_select(pad)).all()
        assert torch.isfinite(a.scores.masked_select(~pad)).all()
        torch.testing.assert_close(a.scores.softmax(-1), w)


@torch.no_grad()
def test_select_batch_reorders_state():
    model = make_model()
    src, mask = batch(SRC + [[4, 4, 5]])
    tgt = torch.cat([TGT_IN, TGT_IN[:1]])
    enc = model.encode(src, mask)
    state = model.init_state(enc)
    for t in range(3):
        _, state, _ = model.decode_step(tgt[:, t], state, enc)
    idx = torch.tensor([2, 0, 0, 1])
    enc_r, state_r = select_batch(enc, idx), select_batch(state, idx)
    y = tgt[:, 3]
    logp, _, attn = model.decode_step(y, state, enc)
    logp_r, _, attn_r = model.decode_step(y[idx], state_r, enc_r)
    torch.testing.assert_close(logp_r, logp[idx], atol=1e-6, rtol=0)
    torch.testing.assert_close(attn_r.weights, attn.weights[idx], atol=1e-6, rtol=0)


def test_tie_options_share_parameters():
    m = make_model(tie_embeddings=True, tie_src_tgt=True)
    assert m.out.weight is m.tgt_emb.weight
    assert m.src_emb.weight is m.tgt_emb.weight
    untied = make_model()
    assert untied.out.weight is not untied.tgt_emb.weight
    assert untied.src_emb.weight is not untied.tgt_emb.weight
    # Tied weights survive a state_dict round trip still tied.
    m2 = make_model(seed=1, tie_embeddings=True, tie_src_tgt=True)
    m2.load_state_dict(m.state_dict())
    assert m2.out.weight is m2.src_emb.weight
    torch.testing.assert_close(m2.out.weight, m.out.weight)


def test_tie_src_tgt_needs_same_vocab():
    with pytest.raises(ValueError, match="tie_src_tgt"):
        TransformerSeq2Seq(
            src_vocab=20, tgt_vocab=21, d_model=32, layers=1, heads=4, tie_src_tgt=True
        )


def test_overfits_tiny_batch():
    model = make_model(dropout=0.0).train()
    src, mask = batch([[5, 6, 7, 8], [9, 10, 11], [12, 13, 14, 15, 16]])
    # Task: reverse the source.
    outs = [[8, 7, 6, 5], [11, 10, 9], [16, 15, 14, 13, 12]]
    tgt_in, _ = batch([[BOS_ID] + o for o in outs])
    tgt_out, _ = batch(outs)
    tgt_in = tgt_in[:, :-1].masked_fill(tgt_in[:, :-1] == EOS_ID, PAD_ID)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(100):
        logits = model(src, mask, tgt_in)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, V), tgt_out.reshape(-1), ignore_index=PAD_ID
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.02


def test_fused_attention_never_uses_cudnn_kernel(monkeypatch):
    """cuDNN's attention builds a graph per input shape (slow with bucketed batches): every
    fused attention call runs with that backend off, and the global setting is left as it was."""
    import attnmt.transformer as tr

    seen = []
    real = tr.F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append(
            (torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.math_sdp_enabled())
        )
        return real(*args, **kwargs)

    monkeypatch.setattr(tr.F, "scaled_dot_product_attention", spy)
    model = make_model().train()
    src, mask = batch(SRC)
    model(src, mask, TGT_IN).sum().backward()
    assert len(seen) == 2 * 3  # 2 layers: encoder self, decoder self and cross attention
    assert seen == [(False, True)] * len(seen)
    assert torch.backends.cuda.cudnn_sdp_enabled()
