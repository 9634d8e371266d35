"""The classic attention encoder-decoder: LSTM encoder, LSTM decoder unrolled one step at a time.

Pipeline position: ``Batch`` ids -> **RNNSeq2Seq** -> logits / step log-probs -> search.

Luong, Pham & Manning (2015), "Effective Approaches to Attention-based NMT", sections 3 and 3.3
(input feeding), with Bahdanau-style additive scoring available (see attention.py). One step:

    h_t       = LSTM([embed(y_{t-1}); att_{t-1}], state)        # decoder output
    a_t       = softmax(score(h_t, h_s) over real source s)       # share of each source word
    c_t       = sum_s a_t[s] * h_s                                # attention values (context)
    att_t     = tanh(W_c [c_t; h_t])                              # combine with decoder output
    p(y_t)    = softmax(W_out att_t)                              # fully connected + softmax

Shape legend: B batch, S source length, T target length, E embedding, H hidden, L layers,
V vocabulary. Batch-first everywhere; decoder state tensors are (B, L, H) so beam search can
reorder them with one index_select on dim 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attnmt.attention import attend, make_scorer
from attnmt.interface import (
    AlignWith,
    Dropout,
    EncoderOut,
    Seq2Seq,
    StepAttention,
    log_shares,
)


@dataclass
class LSTMState:
    """What changes from step to step, per hypothesis (beam search reorders it every step)."""

    h: Tensor  # (B, L, H) decoder hidden state per layer
    c: Tensor  # (B, L, H) decoder cell state per layer
    att: Tensor  # (B, H) previous attentional vector (input feeding)


@dataclass
class LSTMEncoding:
    """``EncoderOut.extra``: what decoding takes from the encoder, fixed per sentence."""

    h: Tensor  # (B, L, H) encoder final hidden state: the decoder's first state
    c: Tensor  # (B, L, H) encoder final cell state
    keys: Tensor  # (B, S, H') the scorer's keys of the memory, computed once per sentence


class LSTMEncoder(nn.Module):
    """Embedding -> (bi)LSTM; the output at each position is that word's encoding."""

    def __init__(
        self,
        vocab: int,
        emb_dim: int,
        hidden: int,
        layers: int,
        bidirectional: bool,
        dropout: float,
    ):
        super().__init__()
        if bidirectional and hidden % 2:
            raise ValueError(f"model.hidden must be even for a bidirectional encoder, got {hidden}")
        self.embed = nn.Embedding(vocab, emb_dim, padding_idx=0)
        self.drop = Dropout(dropout)
        self.bidirectional = bidirectional
        self.layers = layers
        # Each direction gets H/2 so the concatenated encoding is H wide, the decoder's size.
        self.rnn = nn.LSTM(
            emb_dim,
            hidden // 2 if bidirectional else hidden,
            num_layers=layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
        )

    def forward(self, src: Tensor, src_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Returns memory (B,S,H) and final (h, c), each (B, L, H)."""
        lengths = src_mask.sum(1).cpu()  # (B,)
        x = self.drop(self.embed(src))  # (B, S, E)
        # Packing makes the LSTM skip padding, so a sentence's encoding does not depend on how
        # long the other sentences in its batch are.
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, (h, c) = self.rnn(packed)  # h, c: (L * dirs, B, H/dirs)
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))  # (B,S,H)
        memory = self.drop(memory)
        dirs = 2 if self.bidirectional else 1
        B = src.size(0)
        # (L*dirs, B, H/dirs) -> (B, L, H): concatenate forward and backward final states per layer
        h = h.view(self.layers, dirs, B, -1).permute(2, 0, 1, 3).reshape(B, self.layers, -1)
        c = c.view(self.layers, dirs, B, -1).permute(2, 0, 1, 3).reshape(B, self.layers, -1)
        return memory, h, c


class AttentionLSTMDecoder(nn.Module):
    """LSTM decoder with attention over the encodings, one step at a time."""

    def __init__(
        self,
        vocab: int,
        emb_dim: int,
        hidden: int,
        layers: int,
        attention: str,
        input_feeding: bool,
        dropout: float,
        tie_embeddings: bool,
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab, emb_dim, padding_idx=0)
        self.drop = Dropout(dropout)
        self.input_feeding = input_feeding
        self.rnn = nn.LSTM(
            emb_dim + (hidden if input_feeding else 0),
            hidden,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.scorer = make_scorer(attention, hidden, hidden)
        self.combine = nn.Linear(2 * hidden, hidden, bias=False)  # W_c
        self.out = nn.Linear(hidden, vocab)  # W_out
        if tie_embeddings:
            if emb_dim != hidden:
                raise ValueError(
                    f"model.tie_embeddings needs emb_dim == hidden ({emb_dim} != {hidden})"
                )
            self.out.weight = self.embed.weight

    def embed_inputs(self, y: Tensor) -> Tensor:
        """Previous target tokens (B, T) -> dropped-out embeddings (B, T, E)."""
        return self.drop(self.embed(y))

    def run(
        self, x: Tensor, state: LSTMState, enc: EncoderOut
    ) -> tuple[Tensor, LSTMState, Tensor, Tensor]:
        """Decode T steps given embedded inputs x (B, T, E); T > 1 only without input feeding.

        Returns the attentional vectors att (B,T,H), the new state, attention weights and scores
        (B,T,S). The vocabulary projection is left to the caller: training applies it once to
        all T steps (one large matrix multiply instead of T small ones).
        """
        if self.input_feeding:
            x = torch.cat([x, state.att.unsqueeze(1)], dim=-1)  # (B, 1, E+H)
        hc = (state.h.transpose(0, 1).contiguous(), state.c.transpose(0, 1).contiguous())  # (L,B,H)
        out, (h, c) = self.rnn(x, hc)  # out: (B, T, H)
        keys = enc.extra.keys  # (B, S, H')
        context, weights, scores = attend(self.scorer, out, keys, enc.memory, enc.src_mask)
        att = self.drop(torch.tanh(self.combine(torch.cat([context, out], dim=-1))))  # (B, T, H)
        new = LSTMState(h=h.transpose(0, 1), c=c.transpose(0, 1), att=att[:, -1])
        return att, new, weights, scores


class RNNSeq2Seq(Seq2Seq):
    """Embedding -> LSTM encoder -> attention LSTM decoder -> fully connected -> softmax."""

    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        emb_dim: int = 256,
        hidden: int = 256,
        layers: int = 1,
        bidirectional: bool = True,
        attention: str = "general",
        input_feeding: bool = True,
        dropout: float = 0.2,
        tie_embeddings: bool = False,
    ):
        super().__init__()
        self.encoder = LSTMEncoder(src_vocab, emb_dim, hidden, layers, bidirectional, dropout)
        self.decoder = AttentionLSTMDecoder(
            tgt_vocab, emb_dim, hidden, layers, attention, input_feeding, dropout, tie_embeddings
        )

    def encode(self, src: Tensor, src_mask: Tensor) -> EncoderOut:
        memory, h, c = self.encoder(src, src_mask)
        keys = self.decoder.scorer.keys(memory)  # (B, S, H')
        return EncoderOut(memory=memory, src_mask=src_mask, extra=LSTMEncoding(h, c, keys))

    def init_state(self, enc: EncoderOut) -> LSTMState:
        # The decoder starts from the encoder's final state, (B, L, H) each.
        att = enc.memory.new_zeros(enc.memory.size(0), enc.memory.size(2))  # (B, H)
        return LSTMState(h=enc.extra.h, c=enc.extra.c, att=att)

    def decode_step(
        self, y_prev: Tensor, state: LSTMState, enc: EncoderOut
    ) -> tuple[Tensor, LSTMState, StepAttention]:
        x = self.decoder.embed_inputs(y_prev.unsqueeze(1))  # (B, 1, E)
        att, state, weights, scores = self.decoder.run(x, state, enc)
        logp = torch.log_softmax(self.decoder.out(att[:, 0]), dim=-1)  # (B, V)
        # (B, 1, S) -> (B, L=1, nh=1, S): the interface's layer and head dims
        attn = StepAttention(weights=weights.unsqueeze(1), scores=scores.unsqueeze(1))
        return logp, state, attn

    def forward(
        self, src: Tensor, src_mask: Tensor, tgt_in: Tensor, align: AlignWith | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        enc = self.encode(src, src_mask)
        state = self.init_state(enc)
        # All T inputs are embedded at once: one embedding backward (a dense V x E gradient)
        # per batch instead of one per step.
        x = self.decoder.embed_inputs(tgt_in)  # (B, T, E)
        if not self.decoder.input_feeding:
            # Without input feeding the steps do not depend on each other's attention, so the
            # LSTM and attention run over all T positions at once (same numbers, far fewer calls).
            att, _, _, scores = self.decoder.run(x, state, enc)  # (B, T, H), (B, T, S)
        else:
            steps, step_scores = [], []
            for t in range(tgt_in.size(1)):
                a, state, _, s = self.decoder.run(x[:, t : t + 1], state, enc)
                steps.append(a)  # (B, 1, H)
                step_scores.append(s)  # (B, 1, S)
            att, scores = torch.cat(steps, dim=1), torch.cat(step_scores, dim=1)
        # The steps depend on each other only through att; the vocabulary projection does not
        # feed back, so it runs once over all T steps.
        logits = self.decoder.out(att)  # (B, T, V)
        if align is None:
            return logits
        if align[0] not in (0, -1):
            raise ValueError(f"align layer {align[0]}: the LSTM has 1 attention layer")
        return logits, log_shares(scores.unsqueeze(1), align[1])  # (B, T, S) -> (B, nh=1, T, S)
