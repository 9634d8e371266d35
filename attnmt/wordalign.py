"""Statistical word alignment of a parallel corpus with eflomal, for corpora that have no gold.

Pipeline position: corpus files -> ``corpus.read_corpus`` -> ``align.words`` (the one word
segmentation every alignment in attnmt counts with) -> eflomal, forward and reverse -> one
symmetrised link set per pair -> a Pharaoh file (``align.write_pharaoh``), line k for pair k,
source word first. ``attnmt data align`` runs it; the file is what ``align.read_pharaoh`` and
``align.alignment_error`` read, like the demo corpus's gold.

eflomal (Östling & Tiedemann 2016, "Efficient word alignment with Markov chain Monte Carlo",
PBML 106) samples a Bayesian IBM1 -> HMM -> HMM+fertility model. It is GPL-3.0, so it is an
optional extra (``pip install 'attnmt[eflomal]'``), imported only when a function here runs;
nothing else in attnmt imports it. It has no seed option: two runs may differ slightly (on the
demo corpus, AER by a few points).

Symmetrisation. Each direction links a word of one side to at most one word of the other, so
neither alone can say "these two source words make this one target word". The usual remedy
(Och & Ney 2003, "A systematic comparison of various statistical alignment models", sec. 4,
symmetrization; Koehn, Och & Marcu 2003, "Statistical phrase-based translation", whose
grow-diag-final is written out in Moses's documentation; the "-and" variant is Moses's and
fast_align's ``atools -c grow-diag-final-and``) starts from the links both directions agree on
and adds links that only one direction has:

- ``intersection``: the links of both directions (high precision);
- ``union``: the links of either (high recall);
- ``grow-diag``: the intersection, grown by union links next to (horizontally, vertically or
  diagonally) a link already taken, while one of their two words is still unaligned;
- ``grow-diag-final``: then any remaining link of the forward, then the reverse direction
  whose source *or* target word is still unaligned;
- ``grow-diag-final-and`` (the default): the same, but only when *both* its words are.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path

from attnmt.align import Link, Links, read_pharaoh, words, write_pharaoh
from attnmt.atomic import prepare_target
from attnmt.corpus import CorpusError, read_corpus

GROW_DIAG_FINAL_AND = "grow-diag-final-and"
SYMMETRIZATIONS = ("intersection", "union", "grow-diag", "grow-diag-final", GROW_DIAG_FINAL_AND)
INSTALL_HINT = (
    "eflomal is not installed: pip install 'attnmt[eflomal]' "
    "(eflomal is GPL-3.0, so attnmt keeps it an optional extra)"
)
# The eight neighbours of a link (i, j): Koehn et al.'s "diag" includes the diagonal ones.
_NEIGHBOURS = ((-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))


class EflomalMissing(ImportError):
    """eflomal cannot be imported; the message says how to install it."""


# ---------------------------------------------------------------------------------------------
# Symmetrisation (Koehn, Och & Marcu 2003; Och & Ney 2003)
# ---------------------------------------------------------------------------------------------


def symmetrize(
    forward: Iterable[Link], reverse: Iterable[Link], method: str = GROW_DIAG_FINAL_AND
) -> Links:
    """One link set from the two directions' links of a sentence pair (both source first)."""
    check_method(method)
    fwd, rev = frozenset(forward), frozenset(reverse)
    if method == "intersection":
        return fwd & rev
    if method == "union":
        return fwd | rev
    links = set(fwd & rev)
    _grow_diag(links, fwd | rev)
    if method != "grow-diag":
        both = method == GROW_DIAG_FINAL_AND
        for direction in (fwd, rev):  # Koehn et al.: FINAL(e2f), then FINAL(f2e)
            _final(links, direction, both)
    return frozenset(links)


def check_method(method: str) -> None:
    """Refuse an unknown symmetrisation by the flag's name."""
    if method not in SYMMETRIZATIONS:
        expected = ", ".join(SYMMETRIZATIONS)
        raise ValueError(f"--symmetrize: expected one of {expected}, got {method!r}")


def _grow_diag(links: set[Link], union: frozenset[Link]) -> None:
    """Add union links next to taken ones while one of their words is unaligned, to a fixpoint.

    Koehn et al. sweep every taken link until a sweep adds nothing; a queue of links not yet
    looked at reaches a fixpoint of the same rule (alignedness only grows, so a neighbour refused
    once stays refused) and looks at each link once."""
    src = {i for i, _ in links}
    tgt = {j for _, j in links}
    queue = deque(sorted(links))  # sorted: the result must not depend on set order
    while queue:
        i, j = queue.popleft()
        for di, dj in _NEIGHBOURS:
            link = (i + di, j + dj)
            if link in union and link not in links and (link[0] not in src or link[1] not in tgt):
                links.add(link)
                src.add(link[0])
                tgt.add(link[1])
                queue.append(link)


def _final(links: set[Link], direction: frozenset[Link], both: bool) -> None:
    """Add the direction's remaining links whose source or (``both``: and) target is unaligned."""
    src = {i for i, _ in links}
    tgt = {j for _, j in links}
    for i, j in sorted(direction - links):
        free_i, free_j = i not in src, j not in tgt
        if (free_i and free_j) if both else (free_i or free_j):
            links.add((i, j))
            src.add(i)
            tgt.add(j)


# ---------------------------------------------------------------------------------------------
# eflomal
# ---------------------------------------------------------------------------------------------


def _aligner_class() -> type:
    try:
        from eflomal import Aligner  # GPL-3.0: imported here only, never at module level
    except ImportError as e:
        raise EflomalMissing(INSTALL_HINT) from e
    return Aligner


def eflomal_links(
    src: Sequence[Sequence[str]], tgt: Sequence[Sequence[str]], verbose: bool = False
) -> tuple[list[Links], list[Links]]:
    """eflomal's forward and reverse links of each pair of word sequences, both source first.

    ``verbose`` lets eflomal print its own stage timings to stderr."""
    if len(src) != len(tgt):
        raise ValueError(f"{len(src)} source sentences for {len(tgt)} target sentences")
    aligner = _aligner_class()()
    # eflomal splits its input lines on whitespace; a word of align.words never holds any.
    src_lines = [" ".join(ws) for ws in src]
    tgt_lines = [" ".join(ws) for ws in tgt]
    lengths = [(len(s), len(t)) for s, t in zip(src, tgt)]
    with tempfile.TemporaryDirectory(prefix="attnmt-eflomal-") as tmp:
        fwd_path, rev_path = Path(tmp, "forward.align"), Path(tmp, "reverse.align")
        aligner.align(
            src_lines,
            tgt_lines,
            links_filename_fwd=str(fwd_path),
            links_filename_rev=str(rev_path),
            quiet=not verbose,
        )
        try:
            fwd = read_pharaoh(fwd_path, lengths)
            rev = read_pharaoh(rev_path, lengths)
        except CorpusError as e:  # eflomal counted other words than align.words: a bug, not input
            raise RuntimeError(f"eflomal's output does not fit the corpus: {e}") from e
    return [a.sure for a in fwd], [a.sure for a in rev]


# ---------------------------------------------------------------------------------------------
# A corpus file -> a Pharaoh file
# ---------------------------------------------------------------------------------------------


def align_corpus(
    corpus: str,
    out: str | Path,
    method: str = GROW_DIAG_FINAL_AND,
    reverse: bool = False,
    lowercase: bool = False,
    verbose: bool = False,
) -> Path:
    """Align ``corpus`` (TSV or ``SRC_FILE,TGT_FILE``) with eflomal and write ``out`` atomically:
    one Pharaoh line per pair, source word first. Progress and timings go to stderr."""
    check_method(method)
    _aligner_class()  # fail before reading a large corpus, not after
    out = prepare_target(out)
    start = time.perf_counter()
    pairs = read_corpus(corpus, reverse=reverse, lowercase=lowercase).pairs
    if not pairs:
        raise CorpusError(corpus, None, "no sentence pairs to align")
    src = [words(s) for s, _ in pairs]
    tgt = [words(t) for _, t in pairs]
    n_src, n_tgt = sum(map(len, src)), sum(map(len, tgt))
    _log(f"read {len(pairs)} pairs ({n_src} source, {n_tgt} target words) from {corpus}", start)
    step = time.perf_counter()
    _log(f"eflomal: aligning {len(pairs)} pairs, forward and reverse...")
    fwd, rev = eflomal_links(src, tgt, verbose)
    _log("eflomal: done", step)
    step = time.perf_counter()
    links = [symmetrize(f, r, method) for f, r in zip(fwd, rev)]
    path = write_pharaoh(out, links)
    _log(f"{method}: {sum(map(len, links))} links written to {path}", step)
    _log("aligned", start)
    return path


def _log(message: str, since: float | None = None) -> None:
    took = "" if since is None else f" in {time.perf_counter() - since:.1f} s"
    print(f"{message}{took}", file=sys.stderr, flush=True)
