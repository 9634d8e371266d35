"""attnmt/stream.py (issue #14): translation window by window. The output equals translating
the whole input at once for any window, input is read only as windows need it, at most one
window is held, every output line format keeps working, errors name their line."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from attnmt.corpus import CorpusError, iter_lines
from attnmt.stream import output_lines, translate_stream, windows, write_translations
from attnmt.translate import Translator
from tests.test_translate import TEXTS, make_translator

LINES = [TEXTS[0], "", "I see. We eat bread.", TEXTS[2], "   ", TEXTS[3], TEXTS[4], TEXTS[1]]


class Reader:
    """The input lines as a generator that counts how many lines have been taken from it."""

    def __init__(self, lines: list[str]):
        self.lines, self.taken, self.exhausted = lines, 0, False

    def __iter__(self) -> Iterator[str]:
        for line in self.lines:
            self.taken += 1
            yield line
        self.exhausted = True


def whole(tr: Translator, lines: list[str], scores: bool = False, align: bool = False) -> str:
    """The non-streaming result: every line translated in one call."""
    found = tr.translate(lines, with_attention=align)
    out = [x for s, h in zip(lines, found) for x in output_lines(tr, s, h, scores, align)]
    return "".join(x + "\n" for x in out)


def streamed(tr: Translator, lines, window: int, **kw) -> str:
    written: list[str] = []
    assert write_translations(tr, lines, written.append, window, **kw) == len(list(lines))
    return "".join(written)


@pytest.mark.parametrize("window", [1, 2, 3, 5, 100])
def test_the_output_is_the_whole_inputs_for_every_window(window):
    # make_translator's batch_size is 2: windows 1 and 3 are smaller than or not a multiple
    # of a batch; 100 holds the whole input.
    tr = make_translator()
    assert streamed(tr, LINES, window) == whole(tr, LINES)
    n_best = tr.with_options(beam=3, n_best=2)
    kw = dict(scores=True, align=True)
    assert streamed(n_best, LINES, window, **kw) == whole(n_best, LINES, **kw)


def test_output_lines_are_n_best_per_input_line_with_scores_and_links():
    tr = make_translator().with_options(beam=3, n_best=2)
    text = streamed(tr, LINES, 3, scores=True, align=True)
    lines = text.split("\n")
    assert lines.pop() == "" and len(lines) == 2 * len(LINES)
    for k, line in enumerate(lines):
        scored, links = line.split(" ||| ")
        score, _ = scored.split("\t")
        assert float(score) <= 0
        if LINES[k // 2].strip() == "":
            assert scored == "0.0000\t" and links == ""  # an empty line stays an empty output


def test_input_is_read_a_window_at_a_time_and_one_window_is_held():
    tr = make_translator()
    reader = Reader(LINES * 3)  # 24 lines, windows of 5
    seen: list[tuple[int, int]] = []  # per write: lines taken so far, lines written before it
    written = 0

    def write(text: str) -> None:
        nonlocal written
        seen.append((reader.taken, written))
        written += text.count("\n")

    real = tr.translate
    sizes: list[int] = []
    tr.translate = lambda texts, *a, **kw: sizes.append(len(texts)) or real(texts, *a, **kw)
    write_translations(tr, reader, write, window=5)
    assert seen[0] == (5, 0)  # the first window is written before more input is read
    assert all(taken - before <= 5 for taken, before in seen)  # never more than a window held
    assert sizes == [5, 5, 5, 5, 4] and written == 24 and reader.exhausted


def test_a_generator_is_consumed_lazily():
    tr = make_translator()
    reader = Reader(LINES)
    stream = translate_stream(tr, reader, window=3)
    sources, found = next(stream)
    assert sources == LINES[:3] and len(found) == 3
    assert reader.taken == 3 and not reader.exhausted
    assert sum(len(s) for s, _ in stream) == len(LINES) - 3 and reader.exhausted


def test_windows():
    assert list(windows(iter("abcdefg"), 3)) == [list("abc"), list("def"), ["g"]]
    assert list(windows([], 3)) == []
    with pytest.raises(ValueError, match="--window: must be >= 1, got 0"):
        list(windows(["a"], 0))


def test_a_bad_line_stops_the_stream_naming_it_after_the_windows_before(tmp_path):
    bad = tmp_path / "in.txt"
    bad.write_bytes(b"I see.\nWe eat bread.\nThey \xff eat.\nYou see.\n")
    written: list[str] = []
    with pytest.raises(CorpusError, match=rf"^{bad}:3: invalid UTF-8"):
        write_translations(make_translator(), iter_lines(bad), written.append, window=2)
    assert len(written) == 1 and written[0].count("\n") == 2  # the first window was out
    with pytest.raises(CorpusError, match="file not found"):
        write_translations(make_translator(), iter_lines(tmp_path / "none"), written.append)


def test_progress_bar_counts_lines_on_stderr_only_when_asked(capsys):
    tr = make_translator()
    streamed(tr, LINES, 3, progress=True)
    assert f"{len(LINES)} lines" in capsys.readouterr().err
    streamed(tr, LINES, 3)
    assert capsys.readouterr().err == ""
