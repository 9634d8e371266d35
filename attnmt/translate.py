"""The single inference path: text -> tokenizer -> engine (search) -> Hypothesis.

``Translator`` serves ``attnmt translate``, ``evaluate``, ``explain`` and ``serve`` alike, so every
command decodes the same way. It owns what every engine shares: lines cut into sentences and
joined back (``attnmt.sentences``; ``DecodeOptions.split_sentences``), source encoding
(normalisation and tokenizer), empty lines, sorting by length and batching, and turning
candidates into ``Hypothesis`` objects. An ``Engine`` only searches: ``TorchEngine`` runs
attnmt's own greedy and beam search (``attnmt.search``) on a PyTorch model;
``attnmt.ct2.CT2Engine`` runs CTranslate2.

How to decode is one immutable ``DecodeOptions``, resolved once from the config's defaults and
the caller's overrides (CLI flags, request fields) and passed in; nothing sets ``cfg.decode``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from attnmt.checkpoint import Checkpoint
from attnmt.config import Config, DecodeConfig, check_decode
from attnmt.corpus import normalize
from attnmt.data import source_tensor
from attnmt.interface import Seq2Seq
from attnmt.search import Candidate, beam_search, greedy_search
from attnmt.sentences import Split, split_sentences
from attnmt.tokenizer import Tokenizer


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode, resolved once; the meaning and default of each field is in
    ``config.DecodeConfig``. Build one with :meth:`resolve`; every instance is valid."""

    beam: int
    n_best: int
    length_penalty: float
    early_stop: bool
    min_len: int
    no_repeat_ngram: int
    repetition_penalty: float
    max_len_a: float
    max_len_b: int
    batch_size: int
    split_sentences: bool

    def __post_init__(self) -> None:
        # The same check as a config file's decode section; each message names the option, so a
        # CLI user or an HTTP client knows what to change.
        check_decode(self)  # type: ignore[arg-type]  # a DecodeOptions has every field it reads

    @classmethod
    def resolve(cls, base: DecodeConfig | DecodeOptions, **overrides: Any) -> DecodeOptions:
        """``base`` (config defaults or options) with the overrides that are not None applied.

        The one place beam and n_best meet: a beam left to its default widens to give the n_best
        asked for, and an n_best left to its default narrows to fit the beam asked for.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise TypeError(f"unknown decode options: {', '.join(unknown)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        values = {name: given.get(name, getattr(base, name)) for name in names}
        if "n_best" not in given and "beam" in given:
            values["n_best"] = min(values["n_best"], max(1, given["beam"]))
        if "beam" not in given:
            values["beam"] = max(values["beam"], values["n_best"])
        return cls(**values)


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


class Engine(Protocol):
    """What ``Translator`` needs from a decoder: encoded sources in, ranked candidates out."""

    device: torch.device  # where ``Translator.encode_sources`` puts its tensors

    @property
    def model(self) -> Seq2Seq:
        """The PyTorch model (explain, perplexity); a ValueError for an engine without one."""
        ...

    def check(self, options: DecodeOptions) -> None:
        """Raise a ValueError naming any option this engine cannot honour."""
        ...

    def search(
        self, sources: list[list[int]], options: DecodeOptions, with_attention: bool
    ) -> list[list[Candidate]]:
        """The n-best candidates per source (source ids without <eos>), best first.

        ``Candidate.attention`` has a row per output step and a column per source id plus <eos>;
        it is only read when ``with_attention``."""
        ...


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Dropout off inside the block; the model's previous mode (training or not) after it."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class TorchEngine:
    """attnmt's own search (``attnmt.search``) on a PyTorch model; honours every option."""

    def __init__(self, model: Seq2Seq, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        # No .eval() here: training hands in the model it is training, and search switches to
        # eval mode only while it runs (eval_mode), so training's mode survives a translation.
        self.model = model.to(self.device)

    def check(self, options: DecodeOptions) -> None:
        pass  # search implements every option

    def search(
        self, sources: list[list[int]], options: DecodeOptions, with_attention: bool
    ) -> list[list[Candidate]]:
        src, src_mask = source_tensor(sources)  # (B, S), (B, S)
        src, src_mask = src.to(self.device), src_mask.to(self.device)
        o = options
        with eval_mode(self.model):
            if o.beam == 1:
                return greedy_search(
                    self.model, src, src_mask, o.max_len_a, o.max_len_b, o.min_len,
                    o.no_repeat_ngram, o.repetition_penalty,
                )  # fmt: skip
            return beam_search(
                self.model, src, src_mask, o.beam, o.n_best, o.length_penalty,
                o.max_len_a, o.max_len_b, o.early_stop, o.min_len,
                o.no_repeat_ngram, o.repetition_penalty,
            )  # fmt: skip


def quantize_int8(model: Seq2Seq) -> Seq2Seq:
    """An eval-mode copy of ``model`` with int8 dynamic quantization of every Linear and LSTM.

    CPU only. Weights are stored as int8 and activations are quantized per batch on the fly, so
    the big vocabulary projection runs about 3x faster on CPU. The rest (embeddings, attention
    softmax, LayerNorm) stays float32. ``model`` itself is left as it was.
    """
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which is not a dependency;
        # the eager-mode API still works in torch 2.13 and its warnings would only confuse.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        # quantize_dynamic converts a copy, and puts that copy (not the caller's) in eval mode.
        return quantize_dynamic(model, {nn.Linear, nn.LSTM}, dtype=torch.qint8)


class Translator:
    """Texts in, n-best ``Hypothesis`` lists out, through one ``Engine``.

    ``options`` are the defaults ``translate`` uses when it is given none: the config's
    ``decode`` section unless the caller resolved others (``with_options``). ``src_lang`` (an
    ISO 639 code; a checkpoint does not record it) picks the sentence splitter's rules; ""
    means sentencex's generic ones.
    """

    def __init__(
        self,
        engine: Engine,
        src_tok: Tokenizer,
        tgt_tok: Tokenizer,
        cfg: Config,
        options: DecodeOptions | None = None,
        src_lang: str = "",
    ):
        self.engine = engine
        self.src_tok = src_tok
        self.tgt_tok = tgt_tok
        self.cfg = cfg
        self.options = options if options is not None else DecodeOptions.resolve(cfg.decode)
        self.src_lang = src_lang

    @property
    def model(self) -> Seq2Seq:
        return self.engine.model

    @property
    def device(self) -> torch.device:
        return self.engine.device

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "cpu", quantize: bool = False
    ) -> Translator:
        """Load a checkpoint (file or run dir); ``quantize`` applies :func:`quantize_int8`."""
        if quantize and torch.device(device).type != "cpu":
            raise ValueError(f"--quantize is for CPU translation, not device {device!s}")
        ckpt = Checkpoint.load(path)
        model = ckpt.build_model().eval()  # our own model: it is only ever used for inference
        if quantize:
            model = quantize_int8(model)
        return cls(TorchEngine(model, device), ckpt.src_tokenizer, ckpt.tgt_tokenizer, ckpt.config)

    def with_options(self, **overrides: Any) -> Translator:
        """A Translator on the same engine whose defaults are these options with ``overrides``
        (None = keep) applied; refuses options the engine cannot honour."""
        options = DecodeOptions.resolve(self.options, **overrides)
        self.engine.check(options)
        return Translator(self.engine, self.src_tok, self.tgt_tok, self.cfg, options, self.src_lang)

    def with_src_lang(self, src_lang: str) -> Translator:
        """A Translator on the same engine that splits sentences by ``src_lang``'s rules."""
        return Translator(self.engine, self.src_tok, self.tgt_tok, self.cfg, self.options, src_lang)

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Texts -> source ids (normalised as in training; no <eos>)."""
        return [self.src_tok.encode(normalize(t, self.cfg.data.lowercase)) for t in texts]

    def encode_sources(self, texts: list[str]) -> tuple[Tensor, Tensor, list[list[str]]]:
        """Texts -> (src (B,S), src_mask (B,S), source pieces + '<eos>' per text)."""
        ids = self.encode(texts)
        src, src_mask = source_tensor(ids)  # (B, S), (B, S)
        return src.to(self.device), src_mask.to(self.device), [self._pieces(s) for s in ids]

    def translate(
        self,
        texts: list[str],
        options: DecodeOptions | None = None,
        with_attention: bool = False,
    ) -> list[list[Hypothesis]]:
        """Translate ``texts``; returns the n-best hypotheses per text, best first.

        With ``options.split_sentences`` a text of several sentences is cut into them, the
        sentences of all ``texts`` are decoded together (sorted and batched as texts are), and
        each text gets its sentences' hypotheses joined back (:func:`join_hypotheses`)."""
        options = options if options is not None else self.options
        self.engine.check(options)
        if not options.split_sentences:
            return self._translate(texts, options, with_attention)
        splits = [self._split(t) for t in texts]
        units = [list(sp.sentences) if sp else [t] for t, sp in zip(texts, splits)]
        found = self._translate([u for us in units for u in us], options, with_attention)
        results, start = [], 0
        for us, sp in zip(units, splits):
            part = found[start : start + len(us)]
            results.append(join_hypotheses(sp, part, with_attention) if sp else part[0])
            start += len(us)
        return results

    def _split(self, text: str) -> Split | None:
        """``text`` cut into its sentences; None when it holds fewer than two, so that it is
        decoded as it is, exactly as with splitting off. The whitespace around the sentences
        is dropped, as normalisation drops it from a text translated whole; the gaps between
        them are kept."""
        split = split_sentences(text, self.src_lang)
        if len(split.sentences) < 2:
            return None
        return Split(split.sentences, ("", *split.gaps[1:-1], ""))

    def _translate(
        self, texts: list[str], options: DecodeOptions, with_attention: bool
    ) -> list[list[Hypothesis]]:
        """Each text decoded whole: sorted by length, batched, back in input order."""
        ids = self.encode(texts)
        results: list[list[Hypothesis]] = [[] for _ in texts]
        for i in (i for i, s in enumerate(ids) if not s):
            # Nothing to translate gives nothing: no engine call, certainty 1 (logprob 0).
            attention = [[1.0]] if with_attention else None
            results[i] = [Hypothesis("", [], [], 0.0, 0.0, ["<eos>"], attention, True)]
        # Sort by length so each batch pads little; results go back to input order.
        order = sorted((i for i, s in enumerate(ids) if s), key=lambda i: len(ids[i]))
        for start in range(0, len(order), options.batch_size):
            chunk = order[start : start + options.batch_size]
            found = self.engine.search([ids[i] for i in chunk], options, with_attention)
            for i, cands in zip(chunk, found):
                pieces = self._pieces(ids[i])
                results[i] = [self._hypothesis(c, pieces, with_attention) for c in cands]
        return results

    def _pieces(self, ids: list[int]) -> list[str]:
        return [self.src_tok.id_to_piece(i) for i in ids] + ["<eos>"]

    def _hypothesis(self, c: Candidate, src_pieces: list[str], with_attention: bool) -> Hypothesis:
        return Hypothesis(
            text=self.tgt_tok.decode(c.ids),
            tokens=[self.tgt_tok.id_to_piece(t) for t in c.ids],
            ids=c.ids,
            score=c.score,
            logprob=c.logprob,
            src_tokens=src_pieces,
            attention=c.attention.tolist() if with_attention else None,
            finished=c.finished,
        )


def join_hypotheses(
    split: Split, parts: list[list[Hypothesis]], with_attention: bool
) -> list[Hypothesis]:
    """A text's n-best list from the n-best lists of its sentences (``parts``, in order).

    Hypothesis k joins every sentence's k-th (its last where it has fewer: ``Split.join_nbest``,
    the rule the LibreTranslate route's alternatives follow): the text with the gaps between
    the sentences, tokens and ids one sentence after another, score and logprob the sums of the
    sentences' (each was decoded on its own), finished when every sentence finished, the source
    pieces of every sentence then one ``<eos>``, and attention over them
    (:func:`_joined_attention`)."""
    texts = split.join_nbest([[h.text for h in p] for p in parts])
    out = []
    for k, text in enumerate(texts):
        hyps = [p[min(k, len(p) - 1)] for p in parts]
        out.append(
            Hypothesis(
                text=text,
                tokens=[t for h in hyps for t in h.tokens],
                ids=[i for h in hyps for i in h.ids],
                score=sum(h.score for h in hyps),
                logprob=sum(h.logprob for h in hyps),
                src_tokens=[t for h in hyps for t in h.src_tokens[:-1]] + ["<eos>"],
                attention=_joined_attention(hyps) if with_attention else None,
                finished=all(h.finished for h in hyps),
            )
        )
    return out


def _joined_attention(hyps: list[Hypothesis]) -> list[list[float]]:
    """The sentences' attention as one matrix over the joined source: a block per sentence (its
    output rows over its own source pieces) and zeros elsewhere, since each sentence was decoded
    without seeing the others; so word alignments (``align.hypothesis_links``) link within a
    sentence only. Every sentence's ``<eos>`` column goes into the one joined ``<eos>`` column,
    so each row still sums to 1, and only the last sentence's ``<eos>`` row is kept, when every
    sentence finished (rows are the output tokens, plus ``<eos>`` when finished)."""
    S = sum(len(h.src_tokens) - 1 for h in hyps)  # source pieces of the text, <eos>s apart
    blocks, col = [], 0
    for h in hyps:
        a = torch.tensor(h.attention).reshape(-1, len(h.src_tokens))  # (R, S_h + 1)
        w = a.size(1) - 1
        block = torch.zeros(a.size(0), S + 1)  # (R, S + 1)
        block[:, col : col + w] = a[:, :w]
        block[:, S] = a[:, w]
        blocks.append(block)
        col += w
    rows = [b[: len(h.tokens)] for b, h in zip(blocks, hyps)]  # the output tokens' rows
    if all(h.finished for h in hyps):
        rows.append(blocks[-1][len(hyps[-1].tokens) :])  # (1, S + 1) the last <eos> row
    return torch.cat(rows).tolist()  # (T [+ 1], S + 1)
