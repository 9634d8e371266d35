"""Corpus layer: parallel text files -> validated, normalised (source, target) pairs -> splits.

Pipeline position: the first step of training (``train.load_splits``) and of evaluation. It reads
either an Anki/Tatoeba TSV file (``src<TAB>tgt[<TAB>attribution...]``) or two line-aligned files,
rejects malformed input with a ``FILE:LINE:`` message, and splits pairs into train/dev/test by
*source sentence*, so that no sentence the model is tested on was seen in training (Tatoeba has
many English sentences with several Spanish translations; a pair-level split would leak them).
Tokenization and length filtering happen later, on token ids (``data.py``).
"""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import BinaryIO

Pair = tuple[str, str]

_BOM = b"\xef\xbb\xbf"


class CorpusError(ValueError):
    """A corpus file that cannot be used. ``str()`` is ``FILE:LINE: reason`` (or ``FILE: reason``).

    The parts stay available as ``path``, ``line`` (1-based, or None) and ``reason`` so a caller
    that read a temporary copy (the downloader) can re-raise naming the original.
    """

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        self.path, self.line, self.reason = str(path), line, reason
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):  # keep the exception picklable despite the custom __init__
        return (type(self), (self.path, self.line, self.reason))


@dataclass
class Corpus:
    pairs: list[Pair]  # normalised (source, target) pairs in file order
    blank_lines: int  # lines skipped because they were empty (or blank on both sides)
    source: str  # what was read: a path, or "SRC_FILE,TGT_FILE"


def normalize(text: str, lowercase: bool = False) -> str:
    """NFC, whitespace runs collapsed to one space, trimmed; training data and inference inputs
    both pass through here, so a model sees text at translation time as it saw it in training.

    NFC matters because the same visible "é" may arrive composed or decomposed, and subword
    vocabularies would otherwise learn two spellings of one word.
    """
    text = " ".join(unicodedata.normalize("NFC", text).split())
    return text.lower() if lowercase else text


def _split_lines(f: BinaryIO) -> Iterator[bytes]:
    """Lines as bytes without the line ending, LF or CRLF: a line ends at ``\\n`` and nowhere
    else (not at U+2028, form feed, ... as ``str.splitlines`` would). A final newline adds no
    empty line; a UTF-8 byte-order mark opening the file is dropped."""
    for lineno, raw in enumerate(f, start=1):  # a binary file splits at b"\n" only
        if lineno == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
            if not raw:
                return  # a file that is only a byte-order mark holds no lines
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        yield raw


def _raw_lines(path: Path) -> Iterator[bytes]:
    try:
        f = open(path, "rb")  # opened outside `with` so only open() errors are translated
    except FileNotFoundError:
        raise CorpusError(str(path), None, "file not found") from None
    except IsADirectoryError:
        raise CorpusError(str(path), None, "is a directory, expected a file") from None
    except OSError as e:
        raise CorpusError(str(path), None, f"cannot read ({e.strerror or e})") from None
    with f:
        yield from _split_lines(f)


def _decode(raw: bytes, path: str | Path, lineno: int) -> str:
    if b"\r" in raw:
        # Old Mac files end lines with a bare CR: read as one line, a 400-line corpus would be
        # one pair. A CR inside a line is refused rather than guessed at.
        raise CorpusError(
            str(path),
            lineno,
            "carriage return (\\r) inside the line: lines must end with \\n "
            "or \\r\\n (a file with old Mac line endings needs them converted to \\n)",
        )
    try:
        return raw.decode("utf-8")  # strict: a wrong encoding must not turn into silent garbage
    except UnicodeDecodeError as e:
        bad = raw[e.start : e.start + 4].hex(" ")
        raise CorpusError(
            str(path), lineno, f"invalid UTF-8 at byte {e.start} ({bad}); is the file UTF-8?"
        ) from None


def read_lines(source: str | Path | BinaryIO, name: str = "<stdin>") -> list[str]:
    """The text lines of a file, or of a binary stream called ``name`` (stdin), read as the corpus
    is: exactly one line per ``\\n`` (CRLF too), strict UTF-8 and a leading BOM dropped; a bad
    line is a :class:`CorpusError` naming the file (or ``name``) and line."""
    return list(iter_lines(source, name))


def iter_lines(source: str | Path | BinaryIO, name: str = "<stdin>") -> Iterator[str]:
    """:func:`read_lines` one line at a time, read as it is asked for (``attnmt translate``
    streams its input); an error (the file's opening included) comes when its line is reached."""
    if isinstance(source, (str, Path)):
        name, raws = str(source), _raw_lines(Path(source))
    else:
        raws = _split_lines(source)
    return (_decode(raw, name, lineno) for lineno, raw in enumerate(raws, start=1))


def read_tsv(path: str | Path, reverse: bool = False, lowercase: bool = False) -> Corpus:
    """Read ``src<TAB>tgt[<TAB>anything]`` lines; extra columns (attribution) are ignored."""
    return _read_tsv(Path(path), reverse, lowercase, limit=0)


def _read_tsv(path: Path, reverse: bool, lowercase: bool, limit: int) -> Corpus:
    pairs: list[Pair] = []
    blank = 0
    for lineno, raw in enumerate(_raw_lines(path), start=1):
        line = _decode(raw, path, lineno)
        if not line.strip():
            blank += 1
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise CorpusError(str(path), lineno, "no tab: expected SOURCE<TAB>TARGET")
        src, tgt = normalize(fields[0], lowercase), normalize(fields[1], lowercase)
        for side, text in (("source (column 1)", src), ("target (column 2)", tgt)):
            if not text:
                raise CorpusError(str(path), lineno, f"empty {side}")
        pairs.append((tgt, src) if reverse else (src, tgt))
        if limit and len(pairs) >= limit:
            break
    return Corpus(pairs, blank, str(path))


def read_aligned(
    src_path: str | Path, tgt_path: str | Path, reverse: bool = False, lowercase: bool = False
) -> Corpus:
    """Read two line-aligned files: line i of ``src_path`` translates line i of ``tgt_path``."""
    return _read_aligned(Path(src_path), Path(tgt_path), reverse, lowercase, limit=0)


def _count_lines(path: Path) -> int:
    return sum(1 for _ in _raw_lines(path))


def _read_aligned(
    src_path: Path, tgt_path: Path, reverse: bool, lowercase: bool, limit: int
) -> Corpus:
    pairs: list[Pair] = []
    blank = 0
    lines = zip_longest(_raw_lines(src_path), _raw_lines(tgt_path))
    for lineno, (raw_src, raw_tgt) in enumerate(lines, start=1):
        if raw_src is None or raw_tgt is None:
            n_src, n_tgt = _count_lines(src_path), _count_lines(tgt_path)
            raise CorpusError(
                f"{src_path},{tgt_path}",
                None,
                f"different line counts: {src_path} has {n_src} lines, "
                f"{tgt_path} has {n_tgt} lines",
            )
        src = normalize(_decode(raw_src, src_path, lineno), lowercase)
        tgt = normalize(_decode(raw_tgt, tgt_path, lineno), lowercase)
        if not src and not tgt:
            blank += 1
            continue
        if not src or not tgt:
            empty = src_path if not src else tgt_path
            other = tgt_path if not src else src_path
            raise CorpusError(
                str(empty), lineno, f"blank line, but line {lineno} of {other} is not"
            )
        pairs.append((tgt, src) if reverse else (src, tgt))
        if limit and len(pairs) >= limit:
            break
    return Corpus(pairs, blank, f"{src_path},{tgt_path}")


def read_corpus(
    spec: str, reverse: bool = False, lowercase: bool = False, limit: int = 0
) -> Corpus:
    """Read a TSV file, or two aligned files given as ``"SRC_FILE,TGT_FILE"``.

    ``limit`` keeps the first N pairs (0 = all) and stops reading there, so a quick run on a
    huge corpus does not pay for the whole file.
    """
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if "," in spec and not Path(spec).exists():  # a path that itself contains a comma wins
        parts = spec.split(",")
        if len(parts) != 2 or not all(p.strip() for p in parts):
            raise CorpusError(spec, None, "expected a TSV file or SRC_FILE,TGT_FILE")
        src_path, tgt_path = (Path(p.strip()) for p in parts)
        return _read_aligned(src_path, tgt_path, reverse, lowercase, limit)
    return _read_tsv(Path(spec), reverse, lowercase, limit)


def _share(fraction: float, n: int) -> int:
    """How many of ``n`` groups a fraction gets: rounded, but at least one when fraction > 0."""
    if fraction <= 0 or n == 0:
        return 0
    return max(1, round(fraction * n))


def split_pairs(
    pairs: list[Pair],
    dev_fraction: float,
    test_fraction: float,
    seed: int,
    keep_in_train: frozenset[str] = frozenset(),
) -> tuple[list[Pair], list[Pair], list[Pair]]:
    """Split into (train, dev, test) by distinct source sentence, deterministically per seed.

    All translations of one source sentence land in the same split, so dev/test sources never
    occur in train. Fractions count distinct (normalised) source sentences, not pairs. Each
    split keeps corpus order. Training always keeps at least one source sentence, and every
    source in ``keep_in_train`` (normalised; the demo's explained example, say).
    """
    train, dev, test = split_indices(
        [normalize(src) for src, _ in pairs], dev_fraction, test_fraction, seed, keep_in_train
    )
    return [pairs[i] for i in train], [pairs[i] for i in dev], [pairs[i] for i in test]


def split_indices(
    keys: list[str],
    dev_fraction: float,
    test_fraction: float,
    seed: int,
    keep_in_train: frozenset[str] = frozenset(),
) -> tuple[list[int], list[int], list[int]]:
    """:func:`split_pairs` on the pairs' normalised sources ``keys``: the indices of each split,
    so what travels with a pair (its gold alignment) splits with it."""
    for name, frac in (("dev_fraction", dev_fraction), ("test_fraction", test_fraction)):
        if not 0 <= frac < 1:
            raise ValueError(f"{name} must be in [0, 1), got {frac}")
    if dev_fraction + test_fraction >= 1:
        raise ValueError(
            f"dev_fraction + test_fraction must be < 1, got {dev_fraction} + {test_fraction}"
        )
    distinct = list(dict.fromkeys(keys))  # first-appearance order: independent of hashing
    n = len(distinct)
    pool = [k for k in distinct if k not in keep_in_train]  # the sources that may be held out
    random.Random(seed).shuffle(pool)
    # Training keeps at least one source sentence: a kept one, or else one of the pool.
    room = len(pool) if len(pool) < n else max(n - 1, 0)
    n_dev, n_test = _share(dev_fraction, n), _share(test_fraction, n)
    while n_dev + n_test > room:  # tiny corpora
        if n_test >= n_dev and n_test > 0:
            n_test -= 1
        else:
            n_dev -= 1
    dev_keys = set(pool[:n_dev])
    test_keys = set(pool[n_dev : n_dev + n_test])
    train: list[int] = []
    dev: list[int] = []
    test: list[int] = []
    for i, key in enumerate(keys):
        (dev if key in dev_keys else test if key in test_keys else train).append(i)
    return train, dev, test
