"""The single inference path: text -> tokenizer -> batch -> model -> search -> text.

``Translator`` serves ``attnmt translate``, ``evaluate``, ``explain`` and ``serve`` alike, so every
command decodes the same way. Build one from a checkpoint path; it needs nothing else.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from attnmt.checkpoint import Checkpoint
from attnmt.config import Config, DecodeConfig
from attnmt.corpus import normalize
from attnmt.data import source_tensor
from attnmt.interface import Seq2Seq
from attnmt.search import beam_search, greedy_search
from attnmt.tokenizer import Tokenizer


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode, resolved once (config defaults, then CLI flags or request fields)."""

    beam: int = 5  # beam size (1 = greedy)
    n_best: int = 1  # hypotheses returned per sentence
    length_penalty: float = 1.0  # GNMT alpha
    early_stop: bool = False  # beam: end a sentence when its best candidate ends
    min_len: int = 0  # fewest output tokens before <eos>
    max_len_a: float = 1.5  # output length limit a * source_length + b
    max_len_b: int = 10
    batch_size: int = 64  # sentences per batch

    @classmethod
    def from_config(cls, dc: DecodeConfig) -> DecodeOptions:
        return cls(**{f.name: getattr(dc, f.name) for f in dataclasses.fields(cls)})


@dataclass
class Hypothesis:
    text: str  # detokenized translation
    tokens: list[str]  # target pieces, no specials
    ids: list[int]  # target ids, no specials
    score: float  # length-normalised log-probability (ranks the n-best list)
    logprob: float  # total log-probability, <eos> included
    src_tokens: list[str]  # source pieces + "<eos>" (the attention columns)
    attention: list[list[float]] | None  # rows: tokens (+ "<eos>" if finished); cols: src_tokens
    finished: bool  # False when the output length limit stopped decoding


def check_search_options(beam: int, n_best: int, min_len: int = 0) -> None:
    """The one validation of search options, shared by every engine."""
    if beam < 1 or not 1 <= n_best <= beam:
        raise ValueError(f"need beam >= 1 and 1 <= n_best <= beam (beam={beam}, n_best={n_best})")
    if min_len < 0:
        raise ValueError(f"decode.min_len must be >= 0, got {min_len}")


def quantize_int8(model: Seq2Seq) -> Seq2Seq:
    """A copy of ``model`` with int8 dynamic quantization of every Linear and LSTM (CPU only).

    Weights are stored as int8 and activations are quantized per batch on the fly, so the big
    vocabulary projection runs about 3x faster on CPU. The rest (embeddings, attention
    softmax, LayerNorm) stays float32.
    """
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which is not a dependency;
        # the eager-mode API still works in torch 2.13 and its warnings would only confuse.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(model.eval(), {nn.Linear, nn.LSTM}, dtype=torch.qint8)


class Translator:
    def __init__(
        self,
        model: Seq2Seq,
        src_tok: Tokenizer,
        tgt_tok: Tokenizer,
        cfg: Config,
        device: str | torch.device = "cpu",
    ):
        self.model = model.to(device).eval()
        self.src_tok = src_tok
        self.tgt_tok = tgt_tok
        self.cfg = cfg
        self.device = torch.device(device)

    @property
    def options(self) -> DecodeOptions:
        """The checkpoint's decode defaults."""
        return DecodeOptions.from_config(self.cfg.decode)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "cpu", quantize: bool = False
    ) -> Translator:
        """Load a checkpoint; ``quantize`` applies :func:`quantize_int8` (CPU only)."""
        if quantize and torch.device(device).type != "cpu":
            raise ValueError(f"--quantize is for CPU translation, not device {device!s}")
        ckpt = Checkpoint.load(path)
        model = ckpt.build_model()
        if quantize:
            model = quantize_int8(model)
        return cls(model, ckpt.src_tokenizer, ckpt.tgt_tokenizer, ckpt.config, device)

    def encode_sources(self, texts: list[str]) -> tuple[Tensor, Tensor, list[list[str]]]:
        """Texts -> (src (B,S), src_mask (B,S), source pieces + '<eos>' per text)."""
        ids = [self.src_tok.encode(normalize(t, self.cfg.data.lowercase)) for t in texts]
        src, src_mask = source_tensor(ids)
        pieces = [[self.src_tok.id_to_piece(i) for i in s] + ["<eos>"] for s in ids]
        return src.to(self.device), src_mask.to(self.device), pieces

    def translate(
        self,
        texts: list[str],
        beam: int | None = None,
        n_best: int | None = None,
        with_attention: bool = False,
    ) -> list[list[Hypothesis]]:
        """Translate ``texts``; returns the n-best hypotheses per text, best first."""
        dc = self.cfg.decode
        beam = dc.beam if beam is None else beam
        n_best = dc.n_best if n_best is None else n_best
        check_search_options(beam, n_best, dc.min_len)
        results: list[list[Hypothesis]] = [[] for _ in texts]
        for i, text in enumerate(texts):
            if not text.strip():
                # Nothing to translate gives nothing: no model call, certainty 1 (logprob 0).
                attention = [[1.0]] if with_attention else None
                results[i] = [Hypothesis("", [], [], 0.0, 0.0, ["<eos>"], attention, True)]
        # Sort by length so each batch pads little; results go back to input order.
        order = sorted(
            (i for i in range(len(texts)) if not results[i]), key=lambda i: len(texts[i])
        )
        for start in range(0, len(order), dc.batch_size):
            chunk = order[start : start + dc.batch_size]
            src, src_mask, pieces = self.encode_sources([texts[i] for i in chunk])
            if beam == 1:
                found = greedy_search(
                    self.model, src, src_mask, dc.max_len_a, dc.max_len_b, dc.min_len
                )
            else:
                found = beam_search(
                    self.model, src, src_mask, beam, n_best, dc.length_penalty,
                    dc.max_len_a, dc.max_len_b, dc.early_stop, dc.min_len,
                )  # fmt: skip
            for i, cands, src_pieces in zip(chunk, found, pieces):
                results[i] = [
                    Hypothesis(
                        text=self.tgt_tok.decode(c.ids),
                        tokens=[self.tgt_tok.id_to_piece(t) for t in c.ids],
                        ids=c.ids,
                        score=c.score,
                        logprob=c.logprob,
                        src_tokens=src_pieces,
                        attention=c.attention.tolist() if with_attention else None,
                        finished=c.finished,
                    )
                    for c in cands
                ]
        return results
