"""The Transformer encoder-decoder (Vaswani et al. 2017, "Attention Is All You Need"), one file.

Pipeline position: ``Batch`` ids -> **TransformerSeq2Seq** -> logits (training, ``forward``) or
step log-probs (search, ``encode`` / ``init_state`` / ``decode_step``), behind the interface of
:mod:`attnmt.interface`. Written to be read top to bottom, in the spirit of nanoGPT and the
Annotated Transformer.

Paper map:
  - section 3.1  encoder and decoder stacks (we use the *pre-norm* variant: LayerNorm before each
    sublayer, residual after, plus a final LayerNorm -- Xiong et al. 2020 show it trains without
    the delicate warmup the post-norm original needs; it is also what CTranslate2 calls pre_norm)
  - section 3.2  scaled dot-product attention and multi-head attention
  - section 3.3  position-wise feed-forward network (ReLU)
  - section 3.4  embeddings multiplied by sqrt(d_model); optional weight tying
  - section 3.5  sinusoidal positional encodings
  - section 5.4  dropout on embeddings + encodings and on every sublayer output

Shapes: B batch, S source length, T target length (t: steps decoded so far), H = d_model,
V vocabulary, L layers, nh heads, hs = H / nh head size.

Incremental decoding: ``decode_step`` feeds one token through ``DecoderLayer.step`` per layer,
the same sublayers in the same order as ``DecoderLayer.forward``. The state caches every
decoder layer's self-attention keys/values for the prefix, so a step costs O(t), not O(t^2). The
cross-attention keys/values of the encoder memory are projected once, in ``encode``, and travel
with the encoder output: they are the same for every hypothesis of a sentence, so beam search's
per-step reorder of the state never copies them. Every cached tensor has batch on dim 0 for
``select_batch``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from attnmt.interface import (
    AlignWith,
    Dropout,
    EncoderOut,
    Seq2Seq,
    StepAttention,
    log_shares,
)

# The fused attention kernels training may use (every one but cuDNN's; see Attention.forward).
SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def sinusoidal_encoding(positions: Tensor, d_model: int) -> Tensor:
    """Section 3.5: PE(pos, 2i) = sin(pos / 10000^(2i/H)), PE(pos, 2i+1) = cos(same angle).

    positions: (N,) integer positions starting at 0 -> (N, H) float32 encodings. Computed on the
    fly (no length limit, nothing stored in the state_dict); CTranslate2 export tabulates it.
    """
    i = torch.arange(0, d_model, 2, dtype=torch.float32, device=positions.device)  # (H/2,)
    inv_freq = torch.exp(-math.log(10000.0) * i / d_model)  # (H/2,) 1 / 10000^(2i/H)
    angle = positions.float()[:, None] * inv_freq[None, :]  # (N, H/2)
    pe = torch.zeros(positions.numel(), d_model, device=positions.device)  # (N, H)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return pe


class MultiHeadAttention(nn.Module):
    """Section 3.2.2: MultiHead(Q, K, V) = Concat(head_1..head_nh) W_O,
    head_i = Attention(Q W_Q_i, K W_K_i, V W_V_i). Returns values; caches nothing on self."""

    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model={d_model} must be divisible by heads={heads}")
        self.nh, self.hs = heads, d_model // heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.o = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def split(self, x: Tensor) -> Tensor:
        """(B, N, H) -> (B, nh, N, hs): one slice of the model dimension per head."""
        B, N, _ = x.shape
        return x.view(B, N, self.nh, self.hs).transpose(1, 2)  # (B, nh, N, hs)

    def merge(self, x: Tensor) -> Tensor:
        """(B, nh, N, hs) -> (B, N, H): concatenate the heads, then the output projection W_O."""
        B, _, N, _ = x.shape
        return self.o(x.transpose(1, 2).reshape(B, N, self.nh * self.hs))  # (B, N, H)

    def keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Project the attended sequence once: (B, N, H) -> K, V each (B, nh, N, hs)."""
        return self.split(self.k(x)), self.split(self.v(x))

    def forward(
        self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, causal: bool = False
    ) -> Tensor:
        """Attention(Q, K, V) = softmax(Q K^T / sqrt(hs)) V via PyTorch's fused kernel.

        x (B, Tq, H) queries; k, v (B, nh, Tk, hs); mask bool broadcastable to (B, nh, Tq, Tk),
        True = may attend. Returns (B, Tq, H).
        """
        q = self.split(self.q(x))  # (B, nh, Tq, hs)
        p = self.dropout if self.training else 0.0
        # Not cuDNN's kernel: PyTorch picks it first for fp16/bf16 on Hopper GPUs, and it builds a
        # cuDNN graph for every new (B, S, T). Length-bucketed batches bring a new shape almost
        # every step, so fp16 training on an H200 ran at 15k target tokens/s against 81k in fp32.
        with sdpa_kernel(SDPA_BACKENDS):
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal
            )  # (B, nh, Tq, hs)
        return self.merge(out)  # (B, Tq, H)

    def explicit(
        self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The same attention written out, where its weights must be returned (decode steps,
        guided alignment).

        x (B, Tq, H); k, v (B, nh, S, hs); mask (B, 1, 1, S). Returns out (B, Tq, H) and the
        weights and scores (B, nh, Tq, S). Equal to ``forward`` up to float rounding (tested).
        """
        q = self.split(self.q(x))  # (B, nh, Tq, hs)
        # Section 3.2.1: scores = q k^T / sqrt(hs); padding gets -inf so softmax gives it 0.
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.hs)  # (B, nh, Tq, S)
        scores = scores.masked_fill(~mask, float("-inf"))
        weights = scores.softmax(dim=-1)  # (B, nh, Tq, S)
        p = self.dropout if self.training else 0.0
        out = self.merge(F.dropout(weights, p, self.training) @ v)  # (B, Tq, H)
        return out, weights, scores


class FeedForward(nn.Module):
    """Section 3.3: FFN(x) = max(0, x W_1 + b_1) W_2 + b_2."""

    def __init__(self, d_model: int, ff_dim: int, dropout: float):
        super().__init__()
        self.w1 = nn.Linear(d_model, ff_dim)
        self.w2 = nn.Linear(ff_dim, d_model)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(self.drop(F.relu(self.w1(x))))  # (B, N, ff) -> (B, N, H)


class EncoderLayer(nn.Module):
    """Pre-norm: x = x + Dropout(SelfAttn(LN(x))); x = x + Dropout(FFN(LN(x)))."""

    def __init__(self, d_model: int, heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, ff_dim, dropout)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.ln1(x)
        x = x + self.drop(self.self_attn(h, *self.self_attn.keys_values(h), mask=mask))
        return x + self.drop(self.ff(self.ln2(x)))  # (B, S, H)


class DecoderLayer(nn.Module):
    """Pre-norm, three sublayers, each ``x = x + Dropout(sublayer(LN(x)))``, in this order:

    1. causal self-attention over the target prefix,
    2. cross-attention to the encoder memory,
    3. the position-wise FFN.

    ``forward`` runs them for all T positions at once (teacher forcing); ``step`` for one new
    position against the keys/values cached for the prefix (incremental decoding). The two read
    alike, sublayer for sublayer, and give the same outputs (tested per layer and per model).
    """

    def __init__(self, d_model: int, heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.cross_attn = MultiHeadAttention(d_model, heads, dropout)
        self.ln3 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, ff_dim, dropout)
        self.drop = Dropout(dropout)

    def forward(
        self, x: Tensor, memory: Tensor, mem_mask: Tensor, keep_scores: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Teacher forcing: x (B, T, H), memory (B, S, H), mem_mask (B, 1, 1, S) -> (B, T, H),
        and with ``keep_scores`` the cross-attention scores (B, nh, T, S) (else None)."""
        h = self.ln1(x)
        k, v = self.self_attn.keys_values(h)  # (B, nh, T, hs) each
        # Causal only: padding sits after <eos>, so real positions never see it.
        x = x + self.drop(self.self_attn(h, k, v, causal=True))
        k, v = self.cross_attn.keys_values(memory)  # (B, nh, S, hs) each
        scores = None
        if keep_scores:  # the fused kernel returns no weights: this layer's are written out
            out, _, scores = self.cross_attn.explicit(self.ln2(x), k, v, mem_mask)
        else:
            out = self.cross_attn(self.ln2(x), k, v, mask=mem_mask)
        x = x + self.drop(out)
        return x + self.drop(self.ff(self.ln3(x))), scores  # (B, T, H)

    def step(
        self,
        x: Tensor,
        cache: tuple[Tensor, Tensor],
        cross: tuple[Tensor, Tensor],
        mem_mask: Tensor,
    ) -> tuple[Tensor, tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """One new position: x (B, 1, H) after the t cached ones -> (B, 1, H).

        cache: the prefix's self-attention keys, values (B, nh, t, hs); cross: the memory's
        cross-attention keys, values (B, nh, S, hs), projected once per sentence in ``encode``.
        Returns the output, the cache grown to t+1, and the cross-attention weights and scores
        (B, nh, S) each, which the step must report (hence ``explicit``, not the fused kernel).
        """
        h = self.ln1(x)
        k, v = self.self_attn.keys_values(h)  # (B, nh, 1, hs) each
        k = torch.cat([cache[0], k], dim=2)  # (B, nh, t+1, hs)
        v = torch.cat([cache[1], v], dim=2)  # (B, nh, t+1, hs)
        # The newest token may see the whole prefix: causality needs no mask here.
        x = x + self.drop(self.self_attn(h, k, v))
        out, weights, scores = self.cross_attn.explicit(self.ln2(x), *cross, mem_mask)
        x = x + self.drop(out)  # (B, 1, H)
        # (B, nh, 1, S) -> (B, nh, S): the step's one query position
        return x + self.drop(self.ff(self.ln3(x))), (k, v), (weights[:, :, 0], scores[:, :, 0])


@dataclass
class TransformerState:
    """Decoder state between steps; every tensor is batch-first for ``select_batch``."""

    self_k: list[Tensor]  # per layer (B, nh, t, hs): keys of the t tokens decoded so far
    self_v: list[Tensor]  # per layer (B, nh, t, hs): their values
    step: int  # position of the next input token (= t)


@dataclass
class CrossKV:
    """``EncoderOut.extra``: each decoder layer's cross-attention keys/values of the memory."""

    k: list[Tensor]  # per layer (B, nh, S, hs)
    v: list[Tensor]  # per layer (B, nh, S, hs)


class TransformerSeq2Seq(Seq2Seq):
    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        d_model: int = 256,
        layers: int = 3,
        heads: int = 4,
        ff_dim: int = 1024,
        dropout: float = 0.1,
        tie_embeddings: bool = False,
        tie_src_tgt: bool = False,
    ):
        super().__init__()
        if tie_src_tgt and src_vocab != tgt_vocab:
            raise ValueError(
                f"model.tie_src_tgt needs one shared vocabulary, but the source has {src_vocab} "
                f"entries and the target {tgt_vocab} (set data.shared_vocab: true)"
            )
        self.d_model, self.heads = d_model, heads
        self.tie_embeddings, self.tie_src_tgt = tie_embeddings, tie_src_tgt
        self.src_emb = nn.Embedding(src_vocab, d_model)
        self.tgt_emb = nn.Embedding(tgt_vocab, d_model)
        self.drop = Dropout(dropout)
        self.enc_layers = nn.ModuleList(
            EncoderLayer(d_model, heads, ff_dim, dropout) for _ in range(layers)
        )
        self.enc_ln = nn.LayerNorm(d_model)  # pre-norm leaves the residual stream unnormalised
        self.dec_layers = nn.ModuleList(
            DecoderLayer(d_model, heads, ff_dim, dropout) for _ in range(layers)
        )
        self.dec_ln = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, tgt_vocab)
        self.reset_parameters()
        # Section 3.4: tying shares one Parameter (tied after init so both get the embedding init).
        if tie_src_tgt:
            self.src_emb = self.tgt_emb
        if tie_embeddings:
            self.out.weight = self.tgt_emb.weight

    def reset_parameters(self) -> None:
        # Xavier-uniform keeps activation variance roughly constant through each Linear
        # (Glorot & Bengio 2010). Embeddings get N(0, H^-0.5) because they are multiplied by
        # sqrt(H): the product has unit variance, the same scale as the sinusoids, and a tied
        # output layer then yields unit-variance logits from LayerNorm-ed inputs.
        for name, p in self.named_parameters():
            if name.endswith("emb.weight"):
                nn.init.normal_(p, 0.0, self.d_model**-0.5)
            elif p.dim() > 1:
                nn.init.xavier_uniform_(p)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def embed(self, emb: nn.Embedding, ids: Tensor, start: int = 0) -> Tensor:
        """Section 3.4/3.5: Dropout(Emb(ids) * sqrt(H) + PE(positions)); (B, N) -> (B, N, H)."""
        pos = torch.arange(start, start + ids.size(1), device=ids.device)  # (N,)
        pe = sinusoidal_encoding(pos, self.d_model).to(emb.weight.dtype)  # (N, H)
        return self.drop(emb(ids) * math.sqrt(self.d_model) + pe)  # (B, N, H)

    # ---- the model interface ----------------------------------------------------------------

    def encode_memory(self, src: Tensor, src_mask: Tensor) -> Tensor:
        """The encoder stack: source ids (B, S) -> memory (B, S, H)."""
        mask = src_mask[:, None, None, :]  # (B, 1, 1, S) key padding mask, True = real
        x = self.embed(self.src_emb, src)  # (B, S, H)
        for layer in self.enc_layers:
            x = layer(x, mask)  # (B, S, H)
        return self.enc_ln(x)

    def encode(self, src: Tensor, src_mask: Tensor) -> EncoderOut:
        memory = self.encode_memory(src, src_mask)  # (B, S, H)
        kv = [layer.cross_attn.keys_values(memory) for layer in self.dec_layers]
        cross = CrossKV(k=[k for k, _ in kv], v=[v for _, v in kv])  # (B, nh, S, hs) per layer
        return EncoderOut(memory=memory, src_mask=src_mask, extra=cross)

    def forward(
        self, src: Tensor, src_mask: Tensor, tgt_in: Tensor, align: AlignWith | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        # The decoder layers project the memory's cross keys/values themselves here (for all T
        # positions at once), so training runs the encoder stack only, not ``encode``, which
        # projects them for step-by-step decoding.
        memory = self.encode_memory(src, src_mask)  # (B, S, H)
        mem_mask = src_mask[:, None, None, :]  # (B, 1, 1, S)
        y = self.embed(self.tgt_emb, tgt_in)  # (B, T, H)
        n = len(self.dec_layers)
        if align is not None and not -n <= align[0] < n:
            raise ValueError(f"align layer {align[0]}: the model has {n} attention layer(s)")
        chosen, scores = None if align is None else align[0] % n, None
        for i, layer in enumerate(self.dec_layers):
            y, found = layer(y, memory, mem_mask, keep_scores=i == chosen)  # (B, T, H)
            scores = found if found is not None else scores  # (B, nh, T, S) of the chosen layer
        logits = self.out(self.dec_ln(y))  # (B, T, V)
        if align is None:
            return logits
        return logits, log_shares(scores, align[1])  # (B, nh, T, S) -> (B, T, S)

    def init_state(self, enc: EncoderOut) -> TransformerState:
        B = enc.memory.size(0)
        empty = enc.memory.new_zeros(B, self.heads, 0, self.d_model // self.heads)  # (B,nh,0,hs)
        n = len(self.dec_layers)
        return TransformerState(self_k=[empty] * n, self_v=[empty] * n, step=0)

    def decode_step(
        self, y_prev: Tensor, state: TransformerState, enc: EncoderOut
    ) -> tuple[Tensor, TransformerState, StepAttention]:
        mem_mask = enc.src_mask[:, None, None, :]  # (B, 1, 1, S)
        x = self.embed(self.tgt_emb, y_prev[:, None], start=state.step)  # (B, 1, H)
        self_k, self_v, weights, scores = [], [], [], []
        for i, layer in enumerate(self.dec_layers):
            cache, cross = (state.self_k[i], state.self_v[i]), (enc.extra.k[i], enc.extra.v[i])
            x, (k, v), (w, s) = layer.step(x, cache, cross, mem_mask)  # (B, 1, H)
            self_k.append(k)
            self_v.append(v)
            weights.append(w)
            scores.append(s)
        logits = self.out(self.dec_ln(x[:, 0]))  # (B, V)
        new_state = TransformerState(self_k, self_v, state.step + 1)
        attn = StepAttention(
            weights=torch.stack(weights, dim=1),  # (B, L, nh, S)
            scores=torch.stack(scores, dim=1),  # (B, L, nh, S)
        )
        return logits.log_softmax(dim=-1), new_state, attn
