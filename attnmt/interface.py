"""The model contract both architectures implement, and the one layer they share.

Pipeline position: ``Batch`` ids -> **model** -> logits (training) or step log-probs (search).
Models see only integer ids and ``pad_id``; never strings, vocabularies or YAML. ``rnn.py`` and
``transformer.py`` import this module and nothing of each other; search (and explain, through
search's step loop) sees a model only through what is defined here, so it never asks which model
it holds.

Interface (shapes: B batch, S source len, T target len, V vocab, L layers, nh heads)::

    encode(src (B,S), src_mask (B,S)) -> EncoderOut
    init_state(enc) -> state
    decode_step(y_prev (B,), state, enc) -> logp (B,V), state, StepAttention
    forward(src, src_mask, tgt_in (B,T)) -> logits (B,T,V)      # teacher forcing
    forward(src, src_mask, tgt_in, align=(layer, head))
        -> logits (B,T,V), log attention (B,T,S) of that layer and head   # guided alignment

``StepAttention`` always has layer and head dims: the LSTM returns (B,1,1,S); the Transformer its
cross-attention for every layer and head. The "headline" map is ``weights[:, -1].mean(1)`` (last
layer, heads averaged).

Every tensor inside an encoder output or a decoder state has batch on dim 0, so beam search
reorders any state with :func:`select_batch` (one generic ``index_select(0, idx)``). What the
steps read but never change (the LSTM's attention keys, the Transformer's cross-attention
keys/values) goes in ``EncoderOut.extra``, which search reorders only when sentences leave the
batch; the state holds what changes per hypothesis and is reordered every beam step.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attnmt.tokenizer import BOS_ID, EOS_ID, PAD_ID


@dataclass
class EncoderOut:
    memory: Tensor  # (B, S, H) one encoding per source position
    src_mask: Tensor  # (B, S) bool, True = real token
    extra: Any = None  # model-specific, batch-first, fixed per sentence (e.g. attention keys)


@dataclass
class StepAttention:
    """What one decoding step attended to (returned, never cached on a module)."""

    weights: Tensor  # (B, L, nh, S) softmax shares over source positions; 0 on padding
    scores: Tensor  # (B, L, nh, S) similarity scores before the softmax; -inf on padding

    def headline(self) -> Tensor:
        """(B, S): last layer, heads averaged -- the map explain and n-best output show."""
        return self.weights[:, -1].mean(1)


# Which cross-attention an alignment reads: (layer, head), Python indexing over the model's
# attention layers; head -1 (MEAN_HEADS) is the mean of the layer's heads. The LSTM has one.
AlignWith = tuple[int, int]
MEAN_HEADS = -1


def log_shares(scores: Tensor, head: int) -> Tensor:
    """Log attention of one head, or of the heads' mean: scores (B, nh, T, S) -> (B, T, S).

    From the scores, not the log of the weights: a saturated softmax underflows to 0 in float32,
    and log 0 has no gradient, just where guided alignment must pull hardest. The mean of the
    heads' distributions is itself a distribution; its log is a logsumexp of the heads' logs.
    """
    logp = scores.float().log_softmax(-1)  # (B, nh, T, S); -inf on padding
    if head == MEAN_HEADS:
        # logsumexp's gradient at a column that is -inf in every head is exp(-inf - -inf) = NaN:
        # padding is taken out first and put back after (masked_fill passes it no gradient).
        pad = torch.isneginf(logp).all(1)  # (B, T, S)
        safe = logp.masked_fill(pad.unsqueeze(1), 0.0)  # (B, nh, T, S)
        mean = torch.logsumexp(safe, 1) - math.log(scores.size(1))  # (B, T, S)
        return mean.masked_fill(pad, float("-inf"))
    if not 0 <= head < scores.size(1):
        raise ValueError(f"align head {head}: the model has {scores.size(1)} head(s) per layer")
    return logp[:, head]  # (B, T, S)


def select_batch(x: Any, idx: Tensor) -> Any:
    """Pick rows ``idx`` along dim 0 of every tensor inside x (dataclass, tuple, list, dict)."""
    if isinstance(x, Tensor):
        return x.index_select(0, idx)
    if x is None or isinstance(x, (int, float, str, bool)):
        return x
    if dataclasses.is_dataclass(x):
        return dataclasses.replace(
            x, **{f.name: select_batch(getattr(x, f.name), idx) for f in dataclasses.fields(x)}
        )
    if isinstance(x, (list, tuple)):
        return type(x)(select_batch(v, idx) for v in x)
    if isinstance(x, dict):
        return {k: select_batch(v, idx) for k, v in x.items()}
    raise TypeError(f"select_batch: cannot reorder {type(x).__name__}")


class Seq2Seq(nn.Module):
    """Base class: holds the special ids and documents the interface search relies on."""

    pad_id: int = PAD_ID
    bos_id: int = BOS_ID
    eos_id: int = EOS_ID

    def encode(self, src: Tensor, src_mask: Tensor) -> EncoderOut:
        raise NotImplementedError

    def init_state(self, enc: EncoderOut) -> Any:
        raise NotImplementedError

    def decode_step(
        self, y_prev: Tensor, state: Any, enc: EncoderOut
    ) -> tuple[Tensor, Any, StepAttention]:
        raise NotImplementedError

    def forward(
        self, src: Tensor, src_mask: Tensor, tgt_in: Tensor, align: AlignWith | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Teacher forcing: logits (B, T, V); with ``align``, also the log attention (B, T, S)
        of that (layer, head), for guided alignment (through ``forward``, so DDP sees it)."""
        raise NotImplementedError


class Dropout(nn.Module):
    """Inverted dropout (kept elements scaled by 1/(1-p)) with a cheaper random mask on CPU.

    ``nn.Dropout`` draws one Bernoulli sample per element, and on CPU that costs more than the
    matrix multiply producing the activation (measured here: 17 ms to mask a (250, 11, 1024)
    tensor, against 7 ms for the feed-forward matmul that made it). Instead, one random 64-bit
    integer is read as four 16-bit lanes; the low 15 bits of each lane are uniform, and an element
    is kept when its lane is >= p * 2^15, so p is rounded to a multiple of 2^-15. That is 3x
    faster forward and backward. Other devices have fast Bernoulli kernels and use F.dropout.
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = p
        self.threshold = round(p * 2**15)  # drop lanes below it

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return nn.functional.dropout(x, self.p, True)
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_()
        lanes = words.view(torch.int16)[:n].view(x.shape) & 0x7FFF  # uniform in [0, 2^15)
        return torch.where(lanes >= self.threshold, x * (1.0 / (1.0 - self.p)), 0.0)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def pick_device(name: str) -> torch.device:
    """``auto`` -> the GPU when there is one, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: no CUDA device is available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r}: unknown (use auto, cpu or cuda)") from None
