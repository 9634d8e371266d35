"""Word alignments: from attention, to and from Pharaoh files, scored by AER, and taught by a loss.

Pipeline position: ``Translator`` -> **align** (teacher-forced ``decode_step``) -> word links ->
Pharaoh text / AER against gold. Training reads :func:`guided_alignment_loss` and
:func:`training_links` from here (gold word links -> subword positions) and ``data.gold_batch``
puts them in batches.

Words. An alignment links *words*, whatever the model's subword pieces are. :func:`words` is the
one word segmentation (the word tokenizer's: ``\\w+('\\w+)?`` runs and each punctuation mark
alone, so "Let's go." -> Let's / go / .); gold files, the demo corpus's gold and the links read
off attention all count words with it. :func:`word_ids` says which word each subword piece
belongs to.

Links and files. A link ``(i, j)`` joins source word i and target word j, 0-based, source first,
as in the Pharaoh format of fast_align, Moses, OpenNMT-py ``-report_align``, fairseq
``--print-alignment`` and Marian ``--alignment``. Gold separates *sure* links (``i-j``) from
*possible* ones (``i?j``, as in the JHU/CMU alignment exercises; ``ipj``, as lilt's and
awesome-align's ``aer.py`` write it, is read too), with S a subset of P (Och & Ney 2003, sec. 5).

From attention to links (Luong et al. 2015; OpenNMT-py and fairseq do the same per piece):
a target word's attention row is the *mean* of its pieces' rows (each piece row is a distribution,
so the mean is one too), a source word's share is the *sum* of its pieces' columns (the share of
the input the word gets), the ``<eos>`` column is dropped, and each target word links to the
source word with the largest share: exactly one link per target word.

AER (Och & Ney 2003, sec. 5): precision |A∩P|/|A|, recall |A∩S|/|S|,
AER = 1 - (|A∩S| + |A∩P|) / (|A| + |S|), summed over the corpus before dividing.

Guided alignment (Chen et al. 2016; Garg et al. 2019, sec. 4.1; OpenNMT-py's ``lambda_align``,
Marian's ``--guided-alignment``): the cross-entropy between each target piece's attention and
its gold row (the linked source pieces, normalised to sum to 1), averaged over the target pieces
that have a gold link. Shapes: B batch, T target pieces, S source pieces (+ <eos>), L layers,
nh heads.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from attnmt.atomic import write_text_atomic
from attnmt.corpus import CorpusError, normalize
from attnmt.data import pad, source_tensor
from attnmt.interface import MEAN_HEADS
from attnmt.tokenizer import BOS_ID, WordTokenizer
from attnmt.translate import Hypothesis, Translator, eval_mode

Link = tuple[int, int]  # (source word, target word), 0-based
Links = frozenset[Link]
_LINK = re.compile(r"([0-9]+)([-?p])([0-9]+)")  # sure i-j; possible i?j (or ipj)


def words(text: str) -> list[str]:
    """The words an alignment counts: the word tokenizer's split of the normalised text."""
    return WordTokenizer.split(normalize(text))


# ---------------------------------------------------------------------------------------------
# Alignments and Pharaoh text
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alignment:
    """Gold links of one sentence pair: ``sure`` ones and ``possible`` ones (S ⊆ P)."""

    sure: Links = frozenset()
    possible: Links = frozenset()  # every link, the sure ones included

    @classmethod
    def of(cls, sure: Iterable[Link] = (), maybe: Iterable[Link] = ()) -> Alignment:
        """From sure links and possible-only links (``maybe``); a link in both is sure."""
        s = frozenset(sure)
        return cls(s, s | frozenset(maybe))

    def transposed(self) -> Alignment:
        """The same links seen from the other side (for a reversed corpus)."""
        return Alignment(_flip(self.sure), _flip(self.possible))

    def to_pharaoh(self) -> str:
        """``i-j`` for sure links and ``i?j`` for possible-only ones, sorted by (i, j)."""
        return " ".join(
            f"{i}{'-' if (i, j) in self.sure else '?'}{j}" for i, j in sorted(self.possible)
        )


def _flip(links: Links) -> Links:
    return frozenset((j, i) for i, j in links)


def format_links(links: Iterable[Link]) -> str:
    """Hypothesis links (no sure/possible distinction) as Pharaoh ``i-j``, sorted by (i, j)."""
    return " ".join(f"{i}-{j}" for i, j in sorted(links))


def parse_pharaoh(line: str) -> Alignment:
    """``"0-0 2?1 1p2"`` -> Alignment. A ValueError names the bad token."""
    sure: set[Link] = set()
    maybe: set[Link] = set()
    for token in line.split():
        m = _LINK.fullmatch(token)
        if not m:
            raise ValueError(f"bad link {token!r} (expected i-j, or i?j for a possible link)")
        (sure if m[2] == "-" else maybe).add((int(m[1]), int(m[3])))
    return Alignment.of(sure, maybe)


def read_pharaoh(
    path: str | Path, lengths: Sequence[tuple[int, int]] | None = None, prefix: bool = False
) -> list[Alignment]:
    """One Alignment per line of ``path``. With ``lengths`` ((source words, target words) per
    sentence pair) the file must have one line per pair (at least, with ``prefix``: the pairs
    are the file's first ones) and every link must fall inside its sentences. Errors are
    CorpusErrors: ``FILE:LINE: reason``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CorpusError(str(path), None, "file not found") from None
    except UnicodeDecodeError as e:
        raise CorpusError(str(path), None, f"not UTF-8 text ({e.reason})") from None
    lines = text.removeprefix("\ufeff").split("\n")
    if lines[-1] == "":  # a final newline ends the last line; it does not add an empty one
        lines.pop()
    lines = [line.removesuffix("\r") for line in lines]
    if lengths is not None and (
        len(lines) < len(lengths) if prefix else len(lines) != len(lengths)
    ):
        raise CorpusError(
            str(path), None, f"{len(lines)} alignment lines for {len(lengths)} sentence pairs"
        )
    out = []
    for n, line in enumerate(lines, 1):
        try:
            gold = parse_pharaoh(line)
        except ValueError as e:
            raise CorpusError(str(path), n, str(e)) from None
        if lengths is not None and n <= len(lengths):
            n_src, n_tgt = lengths[n - 1]
            bad = sorted((i, j) for i, j in gold.possible if i >= n_src or j >= n_tgt)
            if bad:
                i, j = bad[0]
                reason = f"link {i}-{j} is outside the pair ({n_src} source, {n_tgt} target words)"
                raise CorpusError(str(path), n, reason)
        out.append(gold)
    return out


def write_pharaoh(path: str | Path, alignments: Iterable[Alignment | Iterable[Link]]) -> Path:
    """One line per sentence pair, atomically; gold keeps its ``?`` links, others are ``i-j``."""
    lines = [a.to_pharaoh() if isinstance(a, Alignment) else format_links(a) for a in alignments]
    return write_text_atomic(path, "".join(line + "\n" for line in lines))


# ---------------------------------------------------------------------------------------------
# AER, precision, recall
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlignmentScore:
    aer: float  # in [0, 1]; lower is better
    precision: float  # |A∩P| / |A| (1 when there are no hypothesis links)
    recall: float  # |A∩S| / |S| (1 when there are no sure links)
    links: int  # |A|
    sure: int  # |S|

    def report(self) -> str:
        return (
            f"AER {100 * self.aer:.2f}  (precision {100 * self.precision:.2f}, "
            f"recall {100 * self.recall:.2f}; {self.links} links, {self.sure} sure gold links)"
        )


def alignment_error(hyps: Sequence[Iterable[Link]], golds: Sequence[Alignment]) -> AlignmentScore:
    """Corpus-level AER of hypothesis links against gold (Och & Ney 2003, sec. 5)."""
    if len(hyps) != len(golds):
        raise ValueError(f"{len(hyps)} hypothesis alignments for {len(golds)} gold ones")
    a = s = a_s = a_p = 0
    for hyp, gold in zip(hyps, golds):
        links = frozenset(hyp)
        a, s = a + len(links), s + len(gold.sure)
        a_s, a_p = a_s + len(links & gold.sure), a_p + len(links & gold.possible)
    aer = 1.0 - (a_s + a_p) / (a + s) if a + s else 0.0
    return AlignmentScore(aer, a_p / a if a else 1.0, a_s / s if s else 1.0, a, s)


# ---------------------------------------------------------------------------------------------
# Subword pieces -> words; attention -> links
# ---------------------------------------------------------------------------------------------


def _surface(piece: str) -> str:
    # SentencePiece marks a word start with U+2581 and NFKC-normalises its pieces; the word
    # tokenizer's pieces are the words themselves.
    return unicodedata.normalize("NFKC", piece.replace("\u2581", ""))


def word_ids(text: str, pieces: Sequence[str]) -> list[int]:
    """The word of ``words(text)`` each piece of ``text`` belongs to (the word of its first
    character). A piece that is not the next stretch of text (``<unk>``) takes the word where it
    stands and covers the text up to where the next piece matches."""
    ws = words(text)
    if not ws:
        raise ValueError(f"no words to align in {text!r}")
    owner = [k for k, w in enumerate(ws) for _ in _surface(w)]  # the word of each character
    chars = "".join(_surface(w) for w in ws)
    out: list[int] = []
    pos = 0
    for n, piece in enumerate(pieces):
        out.append(owner[min(pos, len(owner) - 1)])
        s = _surface(piece)
        if chars.startswith(s, pos):
            pos += len(s)  # a bare "▁" (s == "") stays put: it belongs to the next word
            continue
        following = next((t for t in map(_surface, pieces[n + 1 :]) if t), "")
        found = chars.find(following, pos + 1) if following else -1
        pos = found if found > pos else len(chars)
    return out


def word_attention(attn: Tensor, src_words: Sequence[int], tgt_words: Sequence[int]) -> Tensor:
    """attn (T, S) over pieces (extra rows/columns beyond the pieces, such as <eos>, are cut)
    -> (Tw, Sw): target word rows are the mean of their pieces' rows, source word columns the
    sum of their pieces' columns."""
    T, S = len(tgt_words), len(src_words)
    a = attn[:T, :S].float()  # (T, S) pieces only: the <eos> row and column dropped
    cols = torch.zeros(S, max(src_words) + 1)  # (S, Sw) piece -> word, one-hot
    cols[torch.arange(S), torch.tensor(src_words)] = 1.0
    rows = torch.zeros(max(tgt_words) + 1, T)  # (Tw, T)
    rows[torch.tensor(tgt_words), torch.arange(T)] = 1.0
    rows = rows / rows.sum(1, keepdim=True).clamp_min(1.0)  # mean over a word's pieces
    return rows @ a @ cols  # (Tw, Sw)


def attention_links(
    attn: Tensor, src_text: str, src_pieces: Sequence[str], tgt_text: str, tgt_pieces: Sequence[str]
) -> Links:
    """Word links from piece attention (T, S): each target word to its most attended source
    word. Pieces as the tokenizers wrote them (without <eos>); texts as they were encoded."""
    if not src_pieces or not tgt_pieces:
        return frozenset()
    src_words, tgt_words = word_ids(src_text, src_pieces), word_ids(tgt_text, tgt_pieces)
    best = word_attention(attn, src_words, tgt_words).argmax(1)  # (Tw,)
    present = set(tgt_words)  # a word no piece starts in (after an <unk>) gets no link
    return frozenset((i, j) for j, i in enumerate(best.tolist()) if j in present)


def hypothesis_links(hyp: Hypothesis, src_text: str, lowercase: bool = False) -> Links:
    """Word links of a translation made ``with_attention=True`` (its headline attention)."""
    if hyp.attention is None:
        raise ValueError("hypothesis_links: translate with with_attention=True")
    attn = torch.tensor(hyp.attention) if hyp.attention else torch.zeros(0, 0)  # (T+1, S+1)
    src = normalize(src_text, lowercase)
    return attention_links(attn, src, hyp.src_tokens[:-1], hyp.text, hyp.tokens)


# ---------------------------------------------------------------------------------------------
# Forced alignment: the model reads the given translation (teacher forcing)
# ---------------------------------------------------------------------------------------------


def pick_head(weights: Tensor, layer: int = -1, head: int = MEAN_HEADS) -> Tensor:
    """(B, L, nh, S) -> (B, S): one layer's given head, or its heads averaged (``head=-1``;
    with the last layer, ``StepAttention.headline``)."""
    L, nh = weights.size(1), weights.size(2)
    if not -L <= layer < L:
        raise ValueError(f"align layer {layer}: the model has {L} attention layer(s)")
    if head == MEAN_HEADS:
        return weights[:, layer].mean(1)  # (B, S)
    if not 0 <= head < nh:
        raise ValueError(f"align head {head}: the model has {nh} head(s) per layer")
    return weights[:, layer, head]  # (B, S)


@torch.inference_mode()
def forced_attention(translator: Translator, pairs: Sequence[tuple[str, str]]) -> list[Tensor]:
    """Per pair, the cross-attention (T, L, nh, S) of the model reading the given translation:
    T target pieces (the step predicting <eos> dropped), S source pieces (<eos> dropped).

    Teacher forcing through ``decode_step``, one step at a time, as search decodes, so what is
    read is what translation attends to; ``forward`` returns no attention."""
    model, opts = translator.model, translator.options
    src_ids = translator.encode([s for s, _ in pairs])
    lowercase = translator.cfg.data.lowercase
    tgt_ids = [translator.tgt_tok.encode(normalize(t, lowercase)) for _, t in pairs]
    out: list[Tensor] = [torch.zeros(0, 1, 1, 0)] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: len(src_ids[i]))  # little padding per batch
    with eval_mode(model):
        for start in range(0, len(order), opts.batch_size):
            chunk = [i for i in order[start : start + opts.batch_size] if src_ids[i] and tgt_ids[i]]
            if not chunk:
                continue
            found = _force(translator, [src_ids[i] for i in chunk], [tgt_ids[i] for i in chunk])
            for i, attn in zip(chunk, found):
                out[i] = attn
    return out


def _force(translator: Translator, srcs: list[list[int]], tgts: list[list[int]]) -> list[Tensor]:
    """One batch of teacher-forced steps -> per pair (T_i, L, nh, S_i)."""
    model, device = translator.model, translator.device
    src, src_mask = (x.to(device) for x in source_tensor(srcs))  # (B, S), (B, S)
    tgt_in = pad([[BOS_ID] + t[:-1] for t in tgts]).to(device)  # (B, T): reads up to the last piece
    enc = model.encode(src, src_mask)
    state = model.init_state(enc)
    steps = []
    for t in range(tgt_in.size(1)):
        _, state, attn = model.decode_step(tgt_in[:, t], state, enc)
        steps.append(attn.weights.float().cpu())  # (B, L, nh, S)
    weights = torch.stack(steps, 1)  # (B, T, L, nh, S)
    return [weights[b, : len(t), :, :, : len(s)] for b, (s, t) in enumerate(zip(srcs, tgts))]


def align_pairs(
    translator: Translator,
    pairs: Sequence[tuple[str, str]],
    layer: int | None = None,
    head: int | None = None,
) -> list[Links]:
    """Word links for given (source, translation) pairs, from the attention of the model forced
    to read each translation. ``layer``/``head``: which cross-attention (head -1: the layer's
    mean); None takes the model's ``model.align_layer``/``align_head`` (by default the last
    layer, heads averaged, as explain shows; the LSTM has one)."""
    m = translator.cfg.model
    layer = m.align_layer if layer is None else layer
    head = m.align_head if head is None else head
    attention = forced_attention(translator, pairs)
    return [_links(translator, pair, a, layer, head) for pair, a in zip(pairs, attention)]


def _links(
    translator: Translator, pair: tuple[str, str], attn: Tensor, layer: int, head: int
) -> Links:
    if attn.numel() == 0:
        return frozenset()
    lowercase = translator.cfg.data.lowercase
    src, tgt = (normalize(text, lowercase) for text in pair)
    chosen = pick_head(attn, layer, head)  # (T, S): the T steps stand in for the batch dim
    src_pieces = translator.src_tok.pieces(src)
    return attention_links(chosen, src, src_pieces, tgt, translator.tgt_tok.pieces(tgt))


def head_scores(
    translator: Translator, pairs: Sequence[tuple[str, str]], golds: Sequence[Alignment]
) -> dict[tuple[int, int], AlignmentScore]:
    """AER of every (layer, head) and every layer's head average (head -1) on ``pairs``: how
    to choose the Transformer head to align with on dev (Garg et al. 2019 take the best one)."""
    attention = forced_attention(translator, pairs)
    shapes = [(a.size(1), a.size(2)) for a in attention if a.numel()]
    if not shapes:
        raise ValueError("head_scores: no pair has both a source and a translation")
    L, nh = shapes[0]
    scores = {}
    for layer in range(L):
        for head in [*range(nh), MEAN_HEADS] if nh > 1 else [MEAN_HEADS]:
            hyps = [_links(translator, p, a, layer, head) for p, a in zip(pairs, attention)]
            scores[layer, head] = alignment_error(hyps, golds)
    return scores


# ---------------------------------------------------------------------------------------------
# Guided alignment: gold links on subword positions, and the loss
# ---------------------------------------------------------------------------------------------


def read_corpus_gold(
    path: str | Path, pairs: Sequence[tuple[str, str]], reverse: bool = False, prefix: bool = False
) -> list[Alignment]:
    """The gold links of a corpus's pairs: line k of ``path`` for pair k, source word first as
    the corpus's columns stand (transposed for ``reverse``, the pairs then being tgt, src).
    ``prefix``: the file may go on past the pairs (``data.limit`` read only the first ones).
    Every link must fall inside its pair's words; errors name the file and line."""
    lengths = [(len(words(s)), len(words(t))) for s, t in pairs]
    if reverse:
        lengths = [(t, s) for s, t in lengths]
    golds = read_pharaoh(path, lengths, prefix)[: len(pairs)]
    return [g.transposed() for g in golds] if reverse else golds


def training_links(
    pairs: Sequence[tuple[str, str]], golds: Sequence[Alignment], src_tok, tgt_tok
) -> list[list[Link]]:
    """Gold word links -> piece links, per training pair (texts as the tokenizers read them).
    Every gold link, possible ones included, is a target for guided alignment."""
    out = []
    for (src, tgt), gold in zip(pairs, golds, strict=True):
        src_words = word_ids(src, src_tok.pieces(src))
        tgt_words = word_ids(tgt, tgt_tok.pieces(tgt))
        out.append(piece_links(gold.possible, src_words, tgt_words))
    return out


def piece_links(
    links: Iterable[Link], src_words: Sequence[int], tgt_words: Sequence[int]
) -> list[Link]:
    """Word links -> (source piece, target piece) links: every piece of the source word with
    every piece of the target word. ``src_words``/``tgt_words`` from :func:`word_ids`."""
    src_pieces: dict[int, list[int]] = {}
    tgt_pieces: dict[int, list[int]] = {}
    for p, w in enumerate(src_words):
        src_pieces.setdefault(w, []).append(p)
    for p, w in enumerate(tgt_words):
        tgt_pieces.setdefault(w, []).append(p)
    return sorted(
        {(s, t) for i, j in links for s in src_pieces.get(i, []) for t in tgt_pieces.get(j, [])}
    )


def guided_alignment_loss(log_attn: Tensor, gold: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy of the attention against the gold alignment, mean over gold rows (or their
    sum, ``reduction="sum"``, which training divides by its target token count).

    log_attn (B, T, S): log attention probabilities (``log_softmax`` of the scores, -inf on
    padding), not the log of the weights: a saturated softmax underflows to 0 in float32, and
    log(0) gives neither a finite loss nor a gradient, just where the loss is most needed.
    gold (B, T, S) >= 0: links from ``data.gold_batch``; each row is normalised to sum to 1, and
    rows without a link (no gold for that piece, <eos>, padding) are left out. The loss equals
    the gold rows' entropy (0 for one link per row) exactly when the attention is the gold."""
    if log_attn.shape != gold.shape:
        raise ValueError(f"attention {tuple(log_attn.shape)} and gold {tuple(gold.shape)} differ")
    gold = gold.to(log_attn.dtype)
    mass = gold.sum(-1, keepdim=True)  # (B, T, 1)
    target = gold / mass.clamp_min(1e-12)  # (B, T, S) rows sum to 1 (or are all 0)
    # Zero the log where the gold is zero first: 0 * -inf (padding) would be NaN.
    terms = target * log_attn.masked_fill(target == 0, 0.0)  # (B, T, S)
    if reduction == "sum":
        return -terms.sum()
    rows = (mass > 0).sum().clamp_min(1)  # a tensor: no device sync in the training step
    return -terms.sum() / rows
