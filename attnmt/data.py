"""Token ids -> padded batches, bucketed by length so little compute is spent on padding.

Pipeline position: corpus pairs -> tokenizer ids -> **Batch** -> model.

A source is ``ids + [<eos>]``; a target becomes ``tgt_in = [<bos>] + ids`` (what the decoder reads)
and ``tgt_out = ids + [<eos>]`` (what it must predict). Masks are bool, True = real token.

Two batchers with one interface (``batches(epoch, rank, world)`` -> index lists, ``batch``):
:class:`BucketBatcher` over examples in memory, and :class:`ShardBatcher` over examples that stay
on disk (``prepare.Part``: memory-mapped shards), mixed from several corpora by weight. Batch
order is a pure function of (seed, epoch): an interrupted run that knows its epoch and how many
batches it consumed rebuilds exactly the same remaining batches on resume.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from attnmt.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer

Example = tuple[list[int], list[int]]  # (source ids, target ids), specials not yet added
PieceLink = tuple[int, int]  # (source piece, target piece) of one example, 0-based


@dataclass
class Batch:
    src: Tensor  # (B, S) source ids + <eos>, padded
    src_mask: Tensor  # (B, S) bool
    tgt_in: Tensor  # (B, T) <bos> + target ids
    tgt_out: Tensor  # (B, T) target ids + <eos>; PAD where there is nothing to predict
    n_tokens: int  # real (non-pad) target tokens: the unit of throughput and loss averaging
    # (B, T, S) 0/1 gold links, row t = the step predicting tgt_out[:, t], column s = src[:, s];
    # only when training with guided alignment (align.gold_batch)
    gold: Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.src.to(device),
            self.src_mask.to(device),
            self.tgt_in.to(device),
            self.tgt_out.to(device),
            self.n_tokens,
            None if self.gold is None else self.gold.to(device),
        )


def pad(seqs: list[list[int]]) -> Tensor:
    """Right-pad id lists to one (N, max_len) tensor."""
    width = max(len(s) for s in seqs)
    # Pad the lists, then make one tensor: a tensor per row plus a slice copy each cost 9x more
    # (11 ms for a 4k-token batch), time a GPU would otherwise wait for every step.
    return torch.tensor([s + [PAD_ID] * (width - len(s)) for s in seqs], dtype=torch.long)


def source_tensor(sources: list[list[int]]) -> tuple[Tensor, Tensor]:
    """Source id lists -> (src (B,S), src_mask (B,S)), each source ending in <eos>."""
    src = pad([s + [EOS_ID] for s in sources])  # (B, S)
    return src, src != PAD_ID


def make_batch(examples: list[Example], links: list[list[PieceLink]] | None = None) -> Batch:
    """Padded tensors of ``examples``; with ``links`` (piece links per example) the gold too."""
    src, src_mask = source_tensor([s for s, _ in examples])
    tgt_in = pad([[BOS_ID] + t for _, t in examples])  # (B, T)
    tgt_out = pad([t + [EOS_ID] for _, t in examples])  # (B, T)
    gold = None if links is None else gold_batch(links, src.size(1), tgt_out.size(1))
    return Batch(src, src_mask, tgt_in, tgt_out, int((tgt_out != PAD_ID).sum()), gold)


def gold_batch(links: list[list[PieceLink]], S: int, T: int) -> Tensor:
    """Piece links per pair -> (B, T, S) 0/1 gold matrix; row t is the decoder step predicting
    target piece t (``tgt_out[:, t]``), column s source piece s. The <eos> row and column, and
    padding, stay 0."""
    gold = torch.zeros(len(links), T, S)  # (B, T, S)
    for b, pair in enumerate(links):
        for s, t in pair:
            if s >= S or t >= T:
                raise ValueError(f"pair {b}: piece link {s}-{t} outside a ({T}, {S}) batch")
            gold[b, t, s] = 1.0
    return gold


def encode_kept(
    pairs: Sequence[tuple[str, str]], src_tok: Tokenizer, tgt_tok: Tokenizer, max_len: int = 0
) -> tuple[list[Example], list[int]]:
    """Tokenize pairs, dropping those longer than ``max_len`` tokens on either side (0 = keep
    all). Returns the examples and the index of the pair each came from."""
    examples, kept = [], []
    for i, (src, tgt) in enumerate(pairs):
        s, t = src_tok.encode(src), tgt_tok.encode(tgt)
        if not max_len or (len(s) <= max_len and len(t) <= max_len):
            examples.append((s, t))
            kept.append(i)
    return examples, kept


def encode_pairs(
    pairs: Sequence[tuple[str, str]], src_tok: Tokenizer, tgt_tok: Tokenizer, max_len: int = 0
) -> tuple[list[Example], int]:
    """:func:`encode_kept`, with how many pairs were dropped instead of which were kept."""
    examples, kept = encode_kept(pairs, src_tok, tgt_tok, max_len)
    return examples, len(pairs) - len(kept)


class BucketBatcher:
    """Groups examples of similar length into batches of about ``batch_tokens`` target tokens."""

    def __init__(self, examples: list[Example], batch_tokens: int, seed: int, shuffle: bool = True,
                 links: list[list[PieceLink]] | None = None):  # fmt: skip
        """``links``: gold piece links per example, for guided alignment (batches carry gold)."""
        if not examples:
            raise ValueError("no training examples left (empty corpus, or all over data.max_len)")
        if links is not None and len(links) != len(examples):
            raise ValueError(f"{len(links)} alignments for {len(examples)} examples")
        self.examples, self.links = examples, links
        self.batch_tokens = batch_tokens
        self.seed = seed
        self.shuffle = shuffle

    def __len__(self) -> int:
        return len(self.examples)

    def batches(self, epoch: int, rank: int = 0, world: int = 1) -> list[list[int]]:
        """Example indices of every batch of ``epoch`` that belongs to ``rank`` of ``world``.

        Sort by length (random tie-break), cut into batches whose padded size
        ``rows * (longest side + 1)`` stays within batch_tokens, then shuffle the batch order.
        """
        rng = random.Random(self.seed * 100_003 + epoch)
        order = list(range(len(self.examples)))
        if self.shuffle:
            rng.shuffle(order)
        order.sort(key=lambda i: (len(self.examples[i][1]), len(self.examples[i][0])))
        batches, current, width = [], [], 0
        for i in order:
            s, t = self.examples[i]
            w = max(width, len(t) + 1, len(s) + 1)
            if current and w * (len(current) + 1) > self.batch_tokens:
                batches.append(current)
                current, w = [], max(len(t), len(s)) + 1
            current.append(i)
            width = w
        if current:
            batches.append(current)
        if self.shuffle:
            rng.shuffle(batches)
        if world > 1:
            # Interleaved shards: step i of rank r trains on batch i*world + r, so the ranks
            # together see what one process with accum=world would. Every rank must take the
            # same number of steps, or DDP's all-reduce would hang: the remainder is dropped.
            usable = len(batches) - len(batches) % world
            batches = batches[rank:usable:world]
        return batches

    def batch(self, indices: list[int]) -> Batch:
        links = None if self.links is None else [self.links[i] for i in indices]
        return make_batch([self.examples[i] for i in indices], links)


# --------------------------------------------------------------------------------------------
# Examples on disk: ShardBatcher
# --------------------------------------------------------------------------------------------

WINDOW = 1 << 16  # examples sorted by length together: the bound of the shuffle window


class ExampleSource(Protocol):
    """Examples read by index (``prepare.Part``); ``lengths`` is (N, 2) source, target."""

    lengths: np.ndarray

    def examples(self, indices: np.ndarray) -> list[Example]: ...


class EpochBatches(Sequence):
    """One epoch's batches of one rank: a flat index array and each batch's (start, end) in it,
    a few bytes per example where a list per batch would cost a Python int per example.
    Items are ``list[int]``, as BucketBatcher's are."""

    def __init__(self, flat: np.ndarray, starts: np.ndarray, ends: np.ndarray):
        self.flat, self.starts, self.ends = flat, starts, ends

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int | slice):  # an int gives a batch, a slice a list of them
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.flat[self.starts[i] : self.ends[i]].tolist()


def cut_sorted(widths: list[int], batch_tokens: int) -> list[int]:
    """End positions of consecutive batches over ``widths`` (ascending): each batch's rows times
    its widest row stay within ``batch_tokens``; a row wider than that goes alone."""
    ends, i, n = [], 0, len(widths)
    while i < n:
        # The most rows r with r * widths[i + r - 1] <= batch_tokens (rising in r: binary search).
        lo, hi = 1, max(1, min(n - i, batch_tokens // widths[i]))
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if mid * widths[i + mid - 1] <= batch_tokens else (lo, mid - 1)
        i += lo
        ends.append(i)
    return ends


class ShardBatcher:
    """Length-bucketed batches over examples on disk, mixed from one or more sources.

    An epoch: without ``weights`` every example once; with them, source k gives
    ``round(N * w_k / sum(w))`` examples of the N in all, drawn from an endless run of
    reshuffled passes over it (a 3:1 mix repeats a small in-domain corpus, samples a big web
    one). The epoch order is shuffled, cut into windows of ``window`` examples, each window
    sorted by length and cut into batches within ``batch_tokens`` (padded size: rows * (longest
    side + 1)), and the batches are shuffled. Only index and length arrays are in memory; a
    rank reads the tokens of its own batches only. ``shuffle=False`` (validation): file order,
    each window sorted.
    """

    def __init__(self, sources: Sequence[ExampleSource], batch_tokens: int, seed: int,
                 shuffle: bool = True, weights: Sequence[float] | None = None,
                 window: int = WINDOW):  # fmt: skip
        sizes = [len(s.lengths) for s in sources]
        if not sum(sizes):
            raise ValueError("no training examples left (empty corpus, or all over data.max_len)")
        if weights is not None and (len(weights) != len(sources) or min(weights) < 0
                                    or sum(weights) <= 0):  # fmt: skip
            raise ValueError(f"weights: one per corpus, >= 0, not all 0; got {list(weights)}")
        self.sources, self.batch_tokens, self.shuffle = list(sources), batch_tokens, shuffle
        self.seed, self.window = seed % 2**63, window
        self.bases = np.cumsum([0, *sizes])  # global index of each source's first example
        self.lengths = (
            sources[0].lengths
            if len(sources) == 1
            else np.concatenate([np.asarray(s.lengths) for s in sources])
        )  # (N, 2)
        total = sum(sizes)
        if weights is not None:  # an empty corpus gives nothing, whatever its weight
            weights = [w if n else 0.0 for n, w in zip(sizes, weights)]
        self.quotas = (
            sizes
            if weights is None or not sum(weights)
            else [round(total * w / sum(weights)) for w in weights]
        )
        self.dtype = np.int32 if total < 2**31 else np.int64

    def __len__(self) -> int:
        """Examples per epoch."""
        return sum(self.quotas)

    def _rng(self, *words: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, *words])

    def _passes(self, k: int, start: int, count: int) -> np.ndarray:
        """Positions [start, start + count) of source k's endless run of shuffled passes."""
        n, out = len(self.sources[k].lengths), []
        while count > 0:
            p, off = divmod(start, n)
            take = min(n - off, count)
            out.append(self._rng(1, k, p).permutation(n)[off : off + take].astype(self.dtype))
            start, count = start + take, count - take
        return np.concatenate(out) if out else np.zeros(0, self.dtype)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Every example index of ``epoch``, in the order windows are cut from."""
        if not self.shuffle:
            return np.arange(self.bases[-1], dtype=self.dtype)
        if self.quotas == [len(s.lengths) for s in self.sources]:
            order = np.arange(self.bases[-1], dtype=self.dtype)
        else:
            order = np.concatenate(
                [self._passes(k, epoch * q, q) + self.bases[k] for k, q in enumerate(self.quotas)]
            ).astype(self.dtype)
        self._rng(0, epoch).shuffle(order)
        return order

    def _cut(self, order: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Windows of ``order`` sorted by length and cut: (flat order, batch starts, ends)."""
        flat, starts, ends = np.empty_like(order), [], []
        for a in range(0, len(order), self.window):
            b = min(a + self.window, len(order))
            # One window's lengths at a time: memory stays O(window), not O(corpus).
            lengths = np.asarray(self.lengths[order[a:b]], dtype=np.int64)  # (W, 2)
            widths = lengths.max(axis=1) + 1  # (W,) padded width of a row: longest side + <eos>
            # Stable: equal lengths keep the (shuffled) epoch order, a random tie-break.
            idx = np.lexsort((lengths[:, 0], lengths[:, 1], widths))
            flat[a:b] = order[a:b][idx]
            cuts = cut_sorted(widths[idx].tolist(), self.batch_tokens)
            starts += [a, *(a + e for e in cuts[:-1])]
            ends += [a + e for e in cuts]
        return flat, np.array(starts, np.int64), np.array(ends, np.int64)

    def batches(self, epoch: int, rank: int = 0, world: int = 1) -> EpochBatches:
        """Example indices of every batch of ``epoch`` that belongs to ``rank`` of ``world``
        (interleaved, remainder dropped, as BucketBatcher does)."""
        flat, starts, ends = self._cut(self.epoch_order(epoch))
        if self.shuffle:
            perm = self._rng(2, epoch).permutation(len(starts))
            starts, ends = starts[perm], ends[perm]
        if world > 1:
            usable = len(starts) - len(starts) % world
            starts, ends = starts[rank:usable:world], ends[rank:usable:world]
        return EpochBatches(flat, starts, ends)

    def batch(self, indices: Sequence[int]) -> Batch:
        idx = np.asarray(indices, dtype=np.int64)
        if len(self.sources) == 1:
            return make_batch(self.sources[0].examples(idx))
        which = np.searchsorted(self.bases, idx, side="right") - 1
        examples: list[Example] = [([], [])] * len(idx)
        for k in np.unique(which).tolist():
            at = np.flatnonzero(which == k)
            for j, ex in zip(at.tolist(), self.sources[k].examples(idx[at] - self.bases[k])):
                examples[j] = ex
        return make_batch(examples)
