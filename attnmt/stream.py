"""Translating a stream of lines in bounded memory: what ``attnmt translate`` runs (issue #14).

Pipeline position: input lines, read as they are needed (``corpus.iter_lines``) -> **windows**
of at most ``window`` lines -> ``Translator.translate`` (the one inference path: it sorts what
it is given by length and batches it) -> ``translate``'s output lines, in input order, handed
to the writer window by window.

A window of input lines and its hypotheses is all that is held at a time, so a 10M-line input
translates in the memory of ``window`` lines and the first output is ready once the first
window is translated. Sorting by length within a window rather than over the whole input
costs a little padding; a window of a few thousand lines holds enough lines of each length
to fill even batches.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from itertools import islice

from tqdm import tqdm

from attnmt.align import format_links, hypothesis_links
from attnmt.translate import Hypothesis, Translator

DEFAULT_WINDOW = 4096  # lines per window: even batches, and little memory even for long lines


def windows(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    """``lines`` in consecutive lists of ``size`` (the last may be shorter), each read from
    ``lines`` only when it is asked for."""
    if size < 1:
        raise ValueError(f"--window: must be >= 1, got {size}")
    it = iter(lines)
    while chunk := list(islice(it, size)):
        yield chunk


def translate_stream(
    translator: Translator,
    lines: Iterable[str],
    window: int = DEFAULT_WINDOW,
    with_attention: bool = False,
) -> Iterator[tuple[list[str], list[list[Hypothesis]]]]:
    """(the lines of a window, their n-best lists), window after window, in input order."""
    for chunk in windows(lines, window):
        yield chunk, translator.translate(chunk, with_attention=with_attention)


def output_lines(
    translator: Translator, source: str, hyps: list[Hypothesis], scores: bool, align: bool
) -> list[str]:
    """``translate``'s lines for one input line: its hypotheses, ``score<TAB>`` before each
    with ``scores``, `` ||| `` and Pharaoh word links after each with ``align`` (the hypotheses
    must then carry attention)."""
    # Exactly n_best lines per input keep the output aligned with the input, even when a search
    # found fewer distinct hypotheses (e.g. for an empty line): repeat the last one.
    hyps = hyps + hyps[-1:] * (translator.options.n_best - len(hyps))
    out = []
    for h in hyps:
        text = f"{h.score:.4f}\t{h.text}" if scores else h.text
        if align:
            links = hypothesis_links(h, source, translator.cfg.data.lowercase)
            text = f"{text} ||| {format_links(links)}"
        out.append(text)
    return out


def write_translations(
    translator: Translator,
    lines: Iterable[str],
    write: Callable[[str], object],
    window: int = DEFAULT_WINDOW,
    scores: bool = False,
    align: bool = False,
    progress: bool = False,
) -> int:
    """Translate ``lines`` window by window, calling ``write`` once per window with that
    window's output text (``\\n``-ended lines; the caller writes and flushes it). ``progress``
    shows a bar on stderr: lines done and lines per second. Returns the number of input lines."""
    done = 0
    with tqdm(desc="translate", unit=" lines", file=sys.stderr, disable=not progress) as bar:
        for sources, found in translate_stream(translator, lines, window, with_attention=align):
            outputs = (
                line
                for source, hyps in zip(sources, found)
                for line in output_lines(translator, source, hyps, scores, align)
            )
            write("".join(line + "\n" for line in outputs))
            bar.update(len(sources))
            done += len(sources)
    return done
