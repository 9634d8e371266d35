"""Prepare: a corpus of any size -> validated, split, tokenized token ids in memory-mapped shards.

Pipeline position: between the corpus files and training. ``attnmt prepare CONFIG`` (or training,
on first use) runs :func:`prepare` once; training then opens the directory with
:func:`open_prepared` and batches from it with ``data.ShardBatcher``, holding only index arrays
in memory. The small-corpus path (``train.load_splits``, everything in memory) is unchanged.

Stages, each with a progress bar, in bounded memory:

1. **read + split**: the corpus is read once, in blocks of lines handed to worker processes,
   which validate them with ``corpus.read_tsv``/``read_aligned`` (the same FILE:LINE errors,
   strict UTF-8, NFC, blank lines) and split each pair by a keyed hash of its normalised source
   sentence, so every translation of a sentence lands on the same side with no table of
   sentences. Dev and test are capped (``dev_max``/``test_max`` pairs): they keep the sources with
   the smallest hashes; a source pushed out over the cap goes to training with all its pairs.
2. **sample**: a uniform random sample of at most ``sp_sample`` training pairs for the tokenizer.
   Once stage 1 has counted the training pairs, the sample's positions are drawn up front and the
   workers read back only those lines: the memory bound of a reservoir, without sending every
   pair through one process.
3. **tokenizer**: trained on the sample (SentencePiece then applies its own
   ``input_sentence_size`` and shuffling on top).
4. **encode**: workers (all cores) encode the training text and apply ``data.max_len``.
5. **write**: blocks are joined into shards of at most ``SHARD_PAIRS`` pairs.

Format: NumPy ``.npy`` files read with ``np.load(mmap_mode="r")``, chosen over Arrow through
Hugging Face ``datasets`` because what is stored is two flat integer arrays and their offsets,
which ``.npy`` holds with no conversion, is read by slicing a memory map, and needs no new
dependency (``datasets`` would bring pyarrow, pandas, fsspec and the Hub client for a feature we
do not use). Layout of a prepared directory::

    manifest.json      what was read (content hashes), the data config, counts, parts; written last
    tokenizers.json    the source and target tokenizers
    dev.tsv, test.tsv  the held-out pairs, normalised (for BLEU and the run directory)
    PART/lengths.npy   (N, 2) source and target lengths; PART is train, mix1, mix2... or dev
    PART/KKK.{src,tgt}.npy  token ids of shard KKK, concatenated
    PART/KKK.off.npy   (n+1, 2) where each pair's source and target start in those arrays

A prepared directory is reused while its key (the inputs' sizes and SHA-256, the data config)
matches, and rebuilt otherwise. A build happens in a hidden temp directory beside it that is
renamed into place when complete; a process killed at any moment leaves the old directory or
none, and the next run removes the leftovers.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import heapq
import json
import math
import multiprocessing
import os
import secrets
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from attnmt.atomic import write_atomic, write_text_atomic
from attnmt.corpus import CorpusError, Pair, read_aligned, read_corpus, read_tsv
from attnmt.tokenizer import Tokenizer, tokenizer_from_dict, train_tokenizer

if TYPE_CHECKING:
    from multiprocessing.pool import Pool

    from attnmt.config import Config

Example = tuple[list[int], list[int]]
Log = Callable[[str], None]

FORMAT = 1  # bump when the layout changes: old directories are then rebuilt, never misread
BLOCK_LINES = 50_000  # lines per worker task: seconds of work, a few MB in flight
SHARD_PAIRS = 1 << 22  # pairs per shard: few files (each memory map holds a descriptor)
SPILL_PAIRS = 50_000  # pairs pushed out of dev/test are written to train text this many at once
_SPLIT_KEY = b"attnmt-split-1"  # the hash key of the split: fixed, so a corpus splits one way
_SAMPLE_SEED = 20_240_601  # the tokenizer sample: fixed, like the split


# --------------------------------------------------------------------------------------------
# Settings: the data config keys prepare reads (defaults here until config.py has them)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrepareSettings:
    out: str  # data.prepared: the prepared directory ("" = not configured)
    dev_max: int  # data.dev_max: most dev pairs (0 = no cap)
    test_max: int  # data.test_max: most test pairs (0 = no cap)
    sp_sample: int  # data.sp_sample: training pairs sampled for the tokenizer
    mix: tuple[tuple[str, float], ...]  # data.mix: more training corpora and their weights
    weight: float  # data.weight: data.corpus's weight against data.mix
    workers: int  # data.workers: processes for reading and encoding (0 = one per core)


def prepare_settings(cfg: Config) -> PrepareSettings:
    """The prepare keys of ``cfg.data``."""
    d = cfg.data
    mix = []
    for item in filter(None, (x.strip() for x in d.mix.split(";"))):
        spec, _, weight = item.rpartition(":")
        try:
            mix.append((spec, float(weight)) if spec else (item, 1.0))
        except ValueError:
            mix.append((item, 1.0))  # a ':' that is part of a path, not a weight
    s = PrepareSettings(
        out=d.prepared,
        dev_max=d.dev_max,
        test_max=d.test_max,
        sp_sample=d.sp_sample,
        mix=tuple(mix),
        weight=d.weight,
        workers=d.workers,
    )
    if s.sp_sample < 1 or s.dev_max < 0 or s.test_max < 0 or s.workers < 0:
        raise ValueError("data.sp_sample must be >= 1; data.dev_max, test_max, workers >= 0")
    if any(w < 0 for _, w in s.mix) or s.weight < 0:
        raise ValueError("data.mix / data.weight: corpus weights must be >= 0")
    return s


# --------------------------------------------------------------------------------------------
# Reading a corpus in blocks of lines (validation stays in corpus.py)
# --------------------------------------------------------------------------------------------


def corpus_paths(spec: str) -> list[Path]:
    """The file(s) of a corpus spec (a TSV file, or ``SRC_FILE,TGT_FILE``), checked by
    ``corpus.read_corpus`` itself: a missing file or a bad first line fails here, its way."""
    read_corpus(spec, limit=1)
    if "," in spec and not Path(spec).exists():  # the rule of read_corpus, which just passed
        return [Path(p.strip()) for p in spec.split(",")]
    return [Path(spec)]


class LineBlocks:
    """A corpus's raw lines in file order, as blocks of at most ``BLOCK_LINES`` lines (one per
    file of the spec), and the check that aligned files have as many lines as each other."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self.files = [open(p, "rb") for p in paths]  # noqa: SIM115 -- closed in close()
        self.next_line = 1
        self.done = False

    def close(self) -> None:
        for f in self.files:
            f.close()

    def blocks(self, room: float = math.inf) -> Iterator[tuple[int, tuple[bytes, ...]]]:
        """(first line number, raw bytes per file) until EOF or ``room`` lines were read."""
        while room > 0 and not self.done:
            n = int(min(BLOCK_LINES, room))
            lines = [list(islice(self.files[0], n))]
            lines += [list(islice(f, len(lines[0]))) for f in self.files[1:]]
            self.done = len(lines[0]) < n
            self._check_aligned(lines)
            if not lines[0]:
                return
            first, self.next_line = self.next_line, self.next_line + len(lines[0])
            room -= len(lines[0])
            yield first, tuple(b"".join(x) for x in lines)

    def _check_aligned(self, lines: list[list[bytes]]) -> None:
        if len(lines) < 2:
            return
        extra = 1 if self.done and self.files[1].readline() else 0
        if len(lines[1]) == len(lines[0]) and not extra:
            return
        before = self.next_line - 1
        n_src = before + len(lines[0]) + sum(1 for _ in self.files[0])
        n_tgt = before + len(lines[1]) + extra + sum(1 for _ in self.files[1])
        a, b = self.paths
        raise CorpusError(
            f"{a},{b}", None, f"different line counts: {a} has {n_src} lines, {b} has {n_tgt} lines"
        )


def parse_block(
    paths: tuple[str, ...], first_line: int, data: tuple[bytes, ...], reverse: bool,
    lowercase: bool, scratch: Path,
) -> tuple[list[Pair], int]:  # fmt: skip
    """Validate and normalise one block with the corpus readers; returns (pairs, blank lines).

    The block goes through a scratch copy because corpus.py reads files; errors are moved back
    to the real file and line. Blocks after the first get a leading empty line, so a BOM in the
    middle of a file is not taken for the file's own BOM (corpus.py strips it on line 1 only).
    """
    pad = b"" if first_line == 1 else b"\n"
    copies = [scratch / f".block-{os.getpid()}-{i}" for i in range(len(data))]
    try:
        for copy, raw in zip(copies, data):
            # A scratch file read once and removed below: plain writes, no fsync (atomic.py's
            # writer is for files that outlive the call).
            with open(copy, "wb") as f:
                f.write(pad + raw)
        corpus = (
            read_tsv(copies[0], reverse, lowercase)
            if len(copies) == 1
            else read_aligned(copies[0], copies[1], reverse, lowercase)
        )
    except CorpusError as e:
        raise _relocate(e, paths, copies, first_line - 1 - len(pad)) from None
    finally:
        for copy in copies:
            copy.unlink(missing_ok=True)
    return corpus.pairs, corpus.blank_lines - len(pad)


def _relocate(
    e: CorpusError, paths: tuple[str, ...], copies: list[Path], shift: int
) -> CorpusError:
    """``e`` about a scratch copy -> the same error about the real file and line."""
    path, reason = e.path, e.reason
    for copy, real in zip(copies, paths):
        path = path.replace(str(copy), real)
        reason = reason.replace(str(copy), real)
    if e.line is None:
        return CorpusError(path, None, reason)
    # read_aligned names the other file's line too ("blank line, but line N of OTHER is not").
    reason = reason.replace(f"line {e.line} of", f"line {e.line + shift} of")
    return CorpusError(path, e.line + shift, reason)


def iter_pairs(spec: str, reverse: bool = False, lowercase: bool = False) -> Iterator[Pair]:
    """The normalised pairs of a corpus, streamed: the validation of ``corpus.read_corpus``
    without holding the corpus."""
    paths = corpus_paths(spec)
    reader = LineBlocks(paths)
    names = tuple(str(p) for p in paths)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for first, data in reader.blocks():
                yield from parse_block(names, first, data, reverse, lowercase, Path(tmp))[0]
    finally:
        reader.close()


# --------------------------------------------------------------------------------------------
# The split: a hash of the source sentence, dev and test capped
# --------------------------------------------------------------------------------------------


def split_key(source: str) -> int:
    """A 64-bit keyed hash of a normalised source sentence; key / 2**64 is uniform in [0, 1)."""
    digest = hashlib.blake2b(source.encode("utf-8"), digest_size=8, key=_SPLIT_KEY).digest()
    return int.from_bytes(digest, "big")


class HeldOut:
    """Dev or test pairs: those whose source has the smallest keys, at most ``cap`` pairs.

    When the cap is passed, the pairs of the source with the largest key leave (to training),
    and every later pair whose key is not below that one goes to training too, so all
    translations of one source still stay together.
    """

    def __init__(self, cap: int):
        self.cap = cap
        self.heap: list[tuple[int, tuple[int, int], Pair]] = []  # (-key, corpus order, pair)
        self.limit: int | None = None  # keys from here on go to training
        self.offered = 0

    def offer(self, key: int, order: tuple[int, int], pair: Pair) -> list[Pair]:
        """Take ``pair`` or not; returns the pairs that go to training instead."""
        self.offered += 1
        if self.limit is not None and key >= self.limit:
            return [pair]
        heapq.heappush(self.heap, (-key, order, pair))
        out: list[Pair] = []
        while self.cap and len(self.heap) > self.cap:
            top = self.heap[0][0]
            while self.heap and self.heap[0][0] == top:
                out.append(heapq.heappop(self.heap)[2])
            self.limit = -top
        return out

    def pairs(self) -> list[Pair]:
        """The held-out pairs in corpus order."""
        return [p for _, _, p in sorted(self.heap, key=lambda x: x[1])]


@dataclass(frozen=True)
class _SplitTask:
    index: int  # block number: names the text file and orders held-out pairs
    paths: tuple[str, ...]
    first_line: int
    data: tuple[bytes, ...]
    reverse: bool
    lowercase: bool
    dev_cut: int  # keys below this are dev candidates
    test_cut: int  # keys in [dev_cut, test_cut) are test candidates
    out: str  # the block's training text
    scratch: str


@dataclass
class _SplitResult:
    index: int
    out: str
    pairs: int
    blank: int
    train: int
    nbytes: int
    held: list[tuple[int, int, int, Pair]]  # (0 = dev / 1 = test, key, index in block, pair)


def _split_block(task: _SplitTask) -> _SplitResult:
    """Worker: validate a block, write its training pairs, return the held-out candidates."""
    pairs, blank = parse_block(task.paths, task.first_line, task.data, task.reverse,
                               task.lowercase, Path(task.scratch))  # fmt: skip
    train, held = [], []
    for i, (src, tgt) in enumerate(pairs):
        if task.test_cut and (key := split_key(src)) < task.test_cut:
            held.append((0 if key < task.dev_cut else 1, key, i, (src, tgt)))
        else:
            train.append(f"{src}\t{tgt}\n")  # normalised text has no tab or newline left
    text = "".join(train)
    write_text_atomic(task.out, text)
    nbytes = sum(len(x) for x in task.data)
    return _SplitResult(task.index, task.out, len(pairs), blank, len(train), nbytes, held)


# --------------------------------------------------------------------------------------------
# Worker pool: tasks in order, with a bounded number in flight
# --------------------------------------------------------------------------------------------


def _ordered(pool: Pool | None, fn: Callable[[Any], Any], items: Iterable[Any], depth: int):
    """``fn`` over ``items``, results in order: in ``pool`` with at most ``depth`` tasks in
    flight (``Pool.imap`` would read every item ahead: the whole corpus), or here without one."""
    if pool is None:
        yield from map(fn, items)
        return
    pending: deque = deque()
    for item in items:
        pending.append(pool.apply_async(fn, (item,)))
        if len(pending) >= depth:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


@dataclass
class Counts:
    """What prepare read, kept and dropped: the summary and the manifest's ``counts``."""

    pairs: int = 0  # pairs read (all corpora, after data.limit)
    blank_lines: int = 0
    train: int = 0  # training pairs kept after data.max_len
    over_max_len: int = 0
    dev: int = 0
    test: int = 0
    held_out_moved: int = 0  # dev/test candidates over the caps, moved to training
    sampled: int = 0  # training pairs the tokenizer was trained on
    vocab: tuple[int, int] = (0, 0)
    seconds: float = 0.0
    stage_s: dict[str, float] = field(default_factory=dict)  # seconds per stage


@dataclass
class _Build:
    dir: Path
    cfg: Config
    s: PrepareSettings
    pool: Pool | None
    depth: int
    progress: bool
    counts: Counts = field(default_factory=Counts)

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        t0 = time.time()
        yield
        self.counts.stage_s[stage] = self.counts.stage_s.get(stage, 0.0) + time.time() - t0

    def bar(self, total: float, desc: str, unit: str = "pair", **kw: Any) -> tqdm:
        return tqdm(total=total, desc=desc, unit=unit, disable=not self.progress,
                    dynamic_ncols=True, **kw)  # fmt: skip


class _Spill:
    """Training text for pairs pushed out of dev/test, written in blocks of ``SPILL_PAIRS``."""

    def __init__(self, directory: Path):
        self.directory, self.lines, self.files = directory, [], []

    def add(self, pairs: list[Pair]) -> None:
        self.lines += [f"{s}\t{t}\n" for s, t in pairs]
        if len(self.lines) >= SPILL_PAIRS:
            self.flush()

    def flush(self) -> None:
        if self.lines:
            path = self.directory / f"e{len(self.files):06d}.tsv"
            write_text_atomic(path, "".join(self.lines))
            self.files.append((path, len(self.lines)))
            self.lines = []


def _split_corpus(
    b: _Build, spec: str, part: str, cuts: tuple[float, float], held: list[HeldOut]
) -> list[tuple[Path, int]]:
    """Stage 1 for one corpus: its training text files (with pair counts), in order."""
    d, paths = b.cfg.data, corpus_paths(spec)
    text_dir = b.dir / "text" / part
    text_dir.mkdir(parents=True)
    dev_cut, test_cut = (min(2**64, int(c * 2**64)) for c in cuts)
    reader, spill, files, pairs = LineBlocks(paths), _Spill(text_dir), [], 0
    bar = b.bar(sum(p.stat().st_size for p in paths), f"read {part}", "B", unit_scale=True)
    index = 0

    def tasks(room: float) -> Iterator[_SplitTask]:
        nonlocal index
        for first, data in reader.blocks(room):
            index += 1
            yield _SplitTask(index, tuple(map(str, paths)), first, data, d.reverse, d.lowercase,
                             dev_cut, test_cut, str(text_dir / f"b{index:06d}.tsv"),
                             str(b.dir))  # fmt: skip

    try:
        while not reader.done and not (d.limit and pairs >= d.limit):
            room = d.limit - pairs if d.limit else math.inf  # never a line past data.limit
            for r in _ordered(b.pool, _split_block, tasks(room), b.depth):
                files.append((Path(r.out), r.train))
                pairs += r.pairs
                b.counts.blank_lines += r.blank
                for which, key, i, pair in r.held:
                    spill.add(held[which].offer(key, (r.index, i), pair))
                bar.update(r.nbytes)
    finally:
        reader.close()
        bar.close()
    spill.flush()
    b.counts.pairs += pairs
    b.counts.held_out_moved += sum(n for _, n in spill.files)
    return files + spill.files


def _separate(b: _Build, spec: str, cap: int) -> list[Pair]:
    """A separately given dev or test corpus (data.valid / data.test): its first ``cap`` pairs."""
    d = b.cfg.data
    return list(islice(iter_pairs(spec, d.reverse, d.lowercase), cap or None))


# --------------------------------------------------------------------------------------------
# Sample and tokenizers
# --------------------------------------------------------------------------------------------


def sample_positions(counts: list[int], k: int, seed: int = _SAMPLE_SEED) -> list[np.ndarray]:
    """A uniform sample of ``min(k, sum(counts))`` positions without replacement, returned per
    file as sorted indices into that file's lines."""
    bounds = np.cumsum([0, *counts])
    total = int(bounds[-1])
    if k >= total:
        picked = np.arange(total)
    else:
        picked = np.sort(np.random.default_rng(seed).choice(total, size=k, replace=False))
    cuts = np.searchsorted(picked, bounds[1:-1])
    return [part - start for part, start in zip(np.split(picked, cuts), bounds[:-1])]


def _read_text(path: str) -> list[Pair]:
    lines = Path(path).read_text(encoding="utf-8").split("\n")[:-1]
    return [tuple(line.split("\t")) for line in lines]  # type: ignore[misc]


def _pick_lines(task: tuple[str, np.ndarray]) -> list[Pair]:
    """Worker: the sampled lines of one training text file."""
    pairs = _read_text(task[0])
    return [pairs[i] for i in task[1].tolist()]


def build_tokenizers(cfg: Config, train: list[Pair]) -> tuple[Tokenizer, Tokenizer]:
    """Train tokenizers on training pairs only (dev/test text never shapes the vocabulary)."""
    d = cfg.data
    srcs, tgts = [s for s, _ in train], [t for _, t in train]
    if d.shared_vocab:
        tok = train_tokenizer(d.tokenizer, srcs + tgts, d.vocab_size, d.sp_model_type)
        return tok, tok
    return (
        train_tokenizer(d.tokenizer, srcs, d.vocab_size, d.sp_model_type),
        train_tokenizer(d.tokenizer, tgts, d.vocab_size, d.sp_model_type),
    )


def _sample_tokenizers(b: _Build, files: list[tuple[Path, int]]) -> tuple[Tokenizer, Tokenizer]:
    """Stages 2 and 3: sample the training text, train the tokenizers on the sample."""
    positions = sample_positions([n for _, n in files], b.s.sp_sample)
    tasks = [(str(f), idx) for (f, _), idx in zip(files, positions) if len(idx)]
    sample: list[Pair] = []
    bar = b.bar(sum(len(idx) for _, idx in tasks), "sample")
    for pairs in _ordered(b.pool, _pick_lines, tasks, b.depth):
        sample += pairs
        bar.update(len(pairs))
    bar.close()
    if not sample:
        raise ValueError("no training pairs: the corpus is empty, or all of it is dev/test")
    b.counts.sampled = len(sample)
    t0 = time.time()
    toks = build_tokenizers(b.cfg, sample)
    if b.progress:
        tqdm.write(f"tokenizer: trained on {len(sample)} pairs in {time.time() - t0:.1f} s")
    return toks


def _tokenizer_json(tok: Tokenizer) -> dict[str, Any]:
    return {k: {"base64": base64.b64encode(v).decode()} if isinstance(v, bytes) else v
            for k, v in tok.to_dict().items()}  # fmt: skip


def _tokenizer_from_json(d: dict[str, Any]) -> Tokenizer:
    plain = {k: base64.b64decode(v["base64"]) if isinstance(v, dict) else v for k, v in d.items()}
    return tokenizer_from_dict(plain)


def load_tokenizers(path: Path) -> tuple[Tokenizer, Tokenizer]:
    d = json.loads(path.read_text(encoding="utf-8"))
    return _tokenizer_from_json(d["src"]), _tokenizer_from_json(d["tgt"])


# --------------------------------------------------------------------------------------------
# Encoding and shards
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _EncodeTask:
    text: str  # training text of one block
    out: str  # prefix of the block's .src.npy / .tgt.npy / .len.npy
    tokenizers: str  # tokenizers.json
    max_len: int
    dtype: str  # token dtype


_TOKENIZERS: dict[str, tuple[Tokenizer, Tokenizer]] = {}  # per worker process: loaded once


def _save_npy(path: Path | str, array: np.ndarray) -> None:
    write_atomic(path, lambda f: np.save(f, array))


def _encode_block(task: _EncodeTask) -> tuple[str, int, int, int]:
    """Worker: encode one block, drop pairs over max_len; returns (out, kept, dropped, longest)."""
    if task.tokenizers not in _TOKENIZERS:
        _TOKENIZERS[task.tokenizers] = load_tokenizers(Path(task.tokenizers))
    src_tok, tgt_tok = _TOKENIZERS[task.tokenizers]
    srcs, tgts, dropped = [], [], 0
    for src, tgt in _read_text(task.text):
        s, t = src_tok.encode(src), tgt_tok.encode(tgt)
        if task.max_len and (len(s) > task.max_len or len(t) > task.max_len):
            dropped += 1
            continue
        srcs.append(s)
        tgts.append(t)
    lengths = np.array([[len(s), len(t)] for s, t in zip(srcs, tgts)], np.int64).reshape(-1, 2)
    for side, seqs in (("src", srcs), ("tgt", tgts)):
        count = sum(map(len, seqs))
        flat = np.fromiter(chain.from_iterable(seqs), dtype=task.dtype, count=count)
        _save_npy(f"{task.out}.{side}.npy", flat)
    _save_npy(f"{task.out}.len.npy", lengths)
    return task.out, len(srcs), dropped, int(lengths.max(initial=0))


def _write_concat(path: Path, arrays: Iterable[np.ndarray], shape: tuple[int, ...], dtype) -> None:
    """One .npy of ``shape`` from ``arrays`` written one after another (streamed, not joined)."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": shape}  # fmt: skip

    def write(f) -> None:
        np.lib.format.write_array_header_1_0(f, header)
        for a in arrays:
            f.write(np.ascontiguousarray(a, dtype=dtype).tobytes())

    write_atomic(path, write)


def _offsets(lengths: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """(n+1, 2) start offsets of each pair's source and target, block by block."""
    carry = np.zeros((1, 2), np.int64)
    yield carry
    for lens in lengths:
        if len(lens):
            block = np.cumsum(lens, axis=0) + carry
            carry = block[-1:]
            yield block


def _write_part(b: _Build, part: str, blocks: list[tuple[str, int, int]], dtype: str) -> dict:
    """Stage 5 for one part: blocks (prefix, kept, longest) -> shards, lengths.npy; its info."""
    directory = b.dir / part
    directory.mkdir()
    blocks = [x for x in blocks if x[1]]
    groups: list[list[tuple[str, int, int]]] = []
    for x in blocks:  # consecutive blocks, at most SHARD_PAIRS pairs per shard
        if not groups or sum(y[1] for y in groups[-1]) + x[1] > SHARD_PAIRS:
            groups.append([])
        groups[-1].append(x)

    def load(prefix: str, what: str) -> np.ndarray:
        return np.load(f"{prefix}.{what}.npy", mmap_mode="r")

    shards = []
    for k, group in enumerate(groups):
        n = sum(x[1] for x in group)
        for side in ("src", "tgt"):
            arrays = [load(p, side) for p, _, _ in group]
            _write_concat(directory / f"{k:03d}.{side}.npy", arrays,
                          (sum(len(a) for a in arrays),), dtype)  # fmt: skip
        offsets = _offsets(load(p, "len") for p, _, _ in group)
        _write_concat(directory / f"{k:03d}.off.npy", offsets, (n + 1, 2), np.int64)
        shards.append({"name": f"{k:03d}", "n": n})
    n_all, longest = sum(x[1] for x in blocks), max((x[2] for x in blocks), default=0)
    len_dtype = np.uint16 if longest < 2**16 else np.int32
    lengths = (load(p, "len") for p, _, _ in blocks)
    _write_concat(directory / "lengths.npy", lengths, (n_all, 2), len_dtype)
    return {"n": n_all, "shards": shards}


def _encode_part(
    b: _Build, part: str, files: list[tuple[Path, int]], max_len: int, dtype: str
) -> tuple[dict, int, int]:
    """Stages 4 and 5 for one part; returns (part info, kept, dropped)."""
    work = b.dir / "blocks" / part
    work.mkdir(parents=True)
    toks = str(b.dir / "tokenizers.json")
    tasks = [_EncodeTask(str(f), str(work / f.stem), toks, max_len, dtype) for f, n in files if n]
    bar = b.bar(sum(n for _, n in files), f"encode {part}")
    blocks, dropped = [], 0
    for out, kept, drop, longest in _ordered(b.pool, _encode_block, tasks, b.depth):
        blocks.append((out, kept, longest))
        dropped += drop
        bar.update(kept + drop)
    bar.close()
    info = _write_part(b, part, blocks, dtype)
    shutil.rmtree(work)  # the blocks are in the shards now: free the disk before the next part
    return info, info["n"], dropped


# --------------------------------------------------------------------------------------------
# The build, the key, the directory swap
# --------------------------------------------------------------------------------------------


def _corpora(cfg: Config, s: PrepareSettings, build: Path) -> list[tuple[str, str, float]]:
    """(part, spec, weight) of every training corpus; the demo corpus is written to ``build``."""
    spec = cfg.data.corpus
    if spec == "demo":
        spec = str(build / "demo.tsv")
        write_text_atomic(spec, _demo_text(cfg))
    parts = [("train", spec, s.weight)]
    return parts + [(f"mix{i}", m, w) for i, (m, w) in enumerate(s.mix, start=1)]


def _demo_text(cfg: Config) -> str:
    from attnmt.demo_corpus import generate_demo_corpus

    pairs = generate_demo_corpus(cfg.data.demo_size, seed=cfg.train.seed)
    return "".join(f"{s}\t{t}\n" for s, t in pairs)


def _fingerprint(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return {"size": path.stat().st_size, "sha256": digest}


def prepared_key(cfg: Config) -> tuple[str, dict[str, Any]]:
    """The key a prepared directory must match to be reused, and what it was made from: every
    input file's size and SHA-256, and the data config (the output path and worker count
    aside: they do not change what is written)."""
    s = prepare_settings(cfg)
    data = {
        k: v for k, v in dataclasses.asdict(cfg.data).items() if k not in ("prepared", "workers")
    }
    data.update(dev_max=s.dev_max, test_max=s.test_max, sp_sample=s.sp_sample,
                mix=[list(m) for m in s.mix], weight=s.weight)  # fmt: skip
    inputs: dict[str, Any] = {}
    if cfg.data.corpus == "demo":
        demo = _demo_text(cfg).encode("utf-8")
        inputs["demo"] = {"size": len(demo), "sha256": hashlib.sha256(demo).hexdigest()}
    for spec in [cfg.data.corpus, cfg.data.valid, cfg.data.test, *(m for m, _ in s.mix)]:
        if spec and spec != "demo":
            for p in corpus_paths(spec):
                inputs[str(p)] = _fingerprint(p)
    made_from = {"format": FORMAT, "data": data, "inputs": inputs}
    key = hashlib.sha256(json.dumps(made_from, sort_keys=True).encode()).hexdigest()
    return key, made_from


def _build(b: _Build) -> dict[str, Any]:
    """Every stage, into ``b.dir``; returns the manifest (not yet written)."""
    d, s, c = b.cfg.data, b.s, b.counts
    held = [HeldOut(s.dev_max), HeldOut(s.test_max)]
    cuts = (0.0 if d.valid else d.dev_fraction, 0.0 if d.test else d.test_fraction)
    texts: dict[str, list[tuple[Path, int]]] = {}
    weights: dict[str, float] = {}
    with b.timed("read+split"):
        for part, spec, weight in _corpora(b.cfg, s, b.dir):
            main = part == "train"
            texts[part] = _split_corpus(b, spec, part, (cuts[0], sum(cuts)) if main else (0, 0),
                                        held if main else [])  # fmt: skip
            weights[part] = weight
        dev = _separate(b, d.valid, s.dev_max) if d.valid else held[0].pairs()
        test = _separate(b, d.test, s.test_max) if d.test else held[1].pairs()
    for name, pairs in (("dev", dev), ("test", test)):
        write_text_atomic(b.dir / f"{name}.tsv", "".join(f"{x}\t{y}\n" for x, y in pairs))
    c.dev, c.test = len(dev), len(test)
    with b.timed("sample+tokenizer"):
        src_tok, tgt_tok = _sample_tokenizers(b, [f for files in texts.values() for f in files])
    c.vocab = (src_tok.vocab_size, tgt_tok.vocab_size)
    write_text_atomic(b.dir / "tokenizers.json", json.dumps(
        {"src": _tokenizer_json(src_tok), "tgt": _tokenizer_json(tgt_tok)}))  # fmt: skip
    dtype = "uint16" if max(c.vocab) <= 2**16 else "int32"
    parts: dict[str, Any] = {}
    for part, files in texts.items():
        with b.timed("encode+write"):
            parts[part], kept, dropped = _encode_part(b, part, files, d.max_len, dtype)
        parts[part]["weight"] = weights[part] if s.mix else None
        c.train, c.over_max_len = c.train + kept, c.over_max_len + dropped
    if dev:  # validation loss reads dev like training data; never filtered by length
        parts["dev"] = _encode_part(b, "dev", [(b.dir / "dev.tsv", len(dev))], 0, dtype)[0]
    shutil.rmtree(b.dir / "text")
    shutil.rmtree(b.dir / "blocks")
    return {"parts": parts, "token_dtype": dtype, "counts": dataclasses.asdict(c)}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(build: Path, dest: Path) -> None:
    """Rename the finished build to ``dest``. A directory cannot be renamed over a non-empty
    one, so the old one moves aside first and is removed after: a crash in between leaves
    neither (and leftovers that the next prepare removes), never a mix of the two."""
    _fsync_dir(build)
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.rename(dest, old)
    os.rename(build, dest)
    _fsync_dir(dest.parent)
    if old is not None:
        shutil.rmtree(old)


def _remove_leftovers(dest: Path) -> None:
    """Builds and old directories of killed runs (called under the lock: none is live)."""
    for p in dest.parent.glob(f".{dest.name}.*"):
        if p.is_dir() and (".tmp-" in p.name or ".old-" in p.name):
            shutil.rmtree(p, ignore_errors=True)


def read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def _pool(workers: int) -> tuple[Pool | None, int]:
    """Worker processes (none for one worker: the stages then run in this process)."""
    n = workers or len(os.sched_getaffinity(0))
    if n <= 1:
        return None, 1
    # forkserver, not fork: the caller may hold torch threads or CUDA, which do not survive a
    # fork; the workers import only this module (numpy, sentencepiece, corpus.py).
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["attnmt.prepare"])
    return ctx.Pool(n), n


def summary(path: Path, m: dict[str, Any]) -> str:
    c = m["counts"]
    return (
        f"prepared {path}: {c['train']} train pairs kept ({c['over_max_len']} over max_len, "
        f"{c['blank_lines']} blank lines skipped, {c['pairs']} pairs read), {c['dev']} dev, "
        f"{c['test']} test ({c['held_out_moved']} held-out pairs over the caps moved to train); "
        f"tokenizer trained on {c['sampled']} sampled pairs, vocab {c['vocab'][0]}/"
        f"{c['vocab'][1]}; {c['seconds']:.1f} s"
    )


def prepare(cfg: Config, log: Log = print, progress: bool = True) -> Path:
    """Make (or reuse) the prepared directory ``data.prepared`` for ``cfg``; returns its path."""
    from attnmt.checkpoint import RunDirBusy, RunLock  # here: checkpoint imports torch

    s = prepare_settings(cfg)
    if not s.out:
        raise ValueError("data.prepared: set the directory for the prepared data")
    dest = Path(s.out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    lock = RunLock(dest.parent)  # one prepare per directory; the kernel drops it on SIGKILL
    lock.path = dest.parent / f".{dest.name}.lock"
    try:
        with lock:
            key, made_from = prepared_key(cfg)
            current = read_manifest(dest)
            if current is not None and current.get("key") == key:
                log(f"prepared data up to date: {dest}")
                return dest
            _remove_leftovers(dest)
            return _make(cfg, dest, {"key": key, **made_from}, log, progress)
    except RunDirBusy:
        raise RunDirBusy(f"{dest}: another attnmt prepare is writing it; wait for it") from None


def _make(cfg: Config, dest: Path, head: dict[str, Any], log: Log, progress: bool) -> Path:
    """Build in a temp directory beside ``dest``, then swap it in."""
    t0 = time.time()
    # mkdir, not mkdtemp: the directory gets the umask's mode, as any directory attnmt makes.
    build = dest.with_name(f".{dest.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    build.mkdir()
    s = prepare_settings(cfg)
    try:
        pool, n = _pool(s.workers)
        try:
            manifest = {**head, **_build(_Build(build, cfg, s, pool, 2 * n, progress))}
        finally:  # stopped before the build is removed: no worker writes into it after
            if pool is not None:
                pool.terminate()
                pool.join()
        manifest["counts"]["seconds"] = time.time() - t0
        write_text_atomic(build / "manifest.json", json.dumps(manifest, indent=1))
        _publish(build, dest)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    log(summary(dest, manifest))
    return dest


# --------------------------------------------------------------------------------------------
# Reading a prepared directory
# --------------------------------------------------------------------------------------------


class Part:
    """One corpus of a prepared directory, memory-mapped: ``lengths`` (N, 2) and the token ids
    of any pair by index (``data.ExampleSource``). Nothing is read until it is used."""

    def __init__(self, directory: Path, info: dict[str, Any]):
        self.lengths = np.load(directory / "lengths.npy", mmap_mode="r")  # (N, 2)
        self.starts = np.cumsum([0, *(sh["n"] for sh in info["shards"])])
        self.shards = [
            tuple(np.load(directory / f"{sh['name']}.{x}.npy", mmap_mode="r")
                  for x in ("src", "tgt", "off"))
            for sh in info["shards"]
        ]  # fmt: skip
        self.weight: float | None = info.get("weight")

    def __len__(self) -> int:
        return len(self.lengths)

    def examples(self, indices: np.ndarray) -> list[Example]:
        """(source ids, target ids) of the pairs at ``indices``, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        shard_of = np.searchsorted(self.starts, indices, side="right") - 1
        out = []
        for i, k in zip(indices.tolist(), shard_of.tolist()):
            src, tgt, off = self.shards[k]
            j = i - int(self.starts[k])
            (s0, t0), (s1, t1) = off[j].tolist(), off[j + 1].tolist()
            out.append((src[s0:s1].tolist(), tgt[t0:t1].tolist()))
        return out


@dataclass
class Prepared:
    """An opened prepared directory: tokenizers, held-out text, training parts (lazy)."""

    path: Path
    manifest: dict[str, Any]
    src_tok: Tokenizer
    tgt_tok: Tokenizer
    train: list[Part]  # data.corpus first, then data.mix in order
    dev: Part | None

    @property
    def weights(self) -> list[float] | None:
        """Sampling weights of the training parts, or None: every pair once per epoch."""
        ws = [p.weight for p in self.train]
        return None if any(w is None for w in ws) else ws  # type: ignore[return-value]

    def held_out(self, name: str) -> list[Pair]:
        """The normalised dev or test pairs."""
        return read_tsv(self.path / f"{name}.tsv").pairs


def open_prepared(path: str | Path) -> Prepared:
    """Open a directory written by :func:`prepare`."""
    path = Path(path)
    m = read_manifest(path)
    if m is None:
        raise FileNotFoundError(f"{path}: not a prepared directory (run `attnmt prepare`)")
    if m.get("format") != FORMAT:
        raise ValueError(f"{path}: prepared with format {m.get('format')}, expected {FORMAT}")
    src_tok, tgt_tok = load_tokenizers(path / "tokenizers.json")
    parts = m["parts"]
    train = [Part(path / name, info) for name, info in parts.items() if name != "dev"]
    dev = Part(path / "dev", parts["dev"]) if "dev" in parts else None
    return Prepared(path, m, src_tok, tgt_tok, train, dev)
