"""Property-based tests (hypothesis) of what users feed attnmt: input lines for ``translate``
(arbitrary Unicode and bytes, both engines, both tokenizers), corpus files with mixed line endings,
decode option values and config values. Each says: the right number of output lines (or pairs),
or one clear error naming the line or the option; never a traceback.

Seeds are fixed (``derandomize``) and example counts small, so a run is repeatable and short.
"""

from __future__ import annotations

import contextlib
import math
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnmt.config import AT_LEAST, FRACTIONS, ConfigError, load_config
from attnmt.corpus import CorpusError, normalize, read_aligned, read_tsv
from tests.test_cli import one_error_line, run_main, untrained_models

FIXED = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Text as a user might type or paste it: any code point UTF-8 can carry (no surrogates), but no
# line ends; \r is tested on its own below.
LINE_TEXT = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\n\r"), max_size=12
)
ENDING = st.sampled_from([b"\n", b"\r\n"])


@pytest.fixture(scope="module")
def all_models(tmp_path_factory) -> dict[tuple[str, str], str]:
    """(engine, tokenizer) -> model path, for every engine that is installed."""
    found = {}
    for tokenizer in ("word", "sentencepiece"):
        paths = untrained_models(tmp_path_factory.mktemp(tokenizer), tokenizer)
        found.update({(engine, tokenizer): str(p) for engine, p in paths.items()})
    return found


def model_for(all_models, engine: str, tokenizer: str) -> str:
    if (engine, tokenizer) not in all_models:
        pytest.skip("needs ctranslate2")
    return all_models[engine, tokenizer]


def join_lines(lines: list[bytes], endings: list[bytes], final: bool, bom: bool) -> bytes:
    """The lines with their endings; the last one may go without (unless that line is empty,
    where dropping it would drop the line)."""
    data = b"".join(line + end for line, end in zip(lines, endings))
    if lines and not final and lines[-1]:
        data = data[: -len(endings[len(lines) - 1])]
    return (b"\xef\xbb\xbf" if bom else b"") + data


@st.composite
def line_file(draw, line: st.SearchStrategy[bytes]) -> tuple[bytes, list[bytes]]:
    lines = draw(st.lists(line, max_size=5))
    endings = draw(st.lists(ENDING, min_size=len(lines), max_size=len(lines)))
    return join_lines(lines, endings, draw(st.booleans()), draw(st.booleans())), lines


def output_lines(out: str) -> list[str]:
    assert out == "" or out.endswith("\n")
    return out.split("\n")[:-1]


ENGINES = [("torch", "word"), ("torch", "sentencepiece"), ("ctranslate2", "word"),
           ("ctranslate2", "sentencepiece")]  # fmt: skip


@pytest.mark.parametrize("engine, tokenizer", ENGINES)
@FIXED
@given(data=line_file(LINE_TEXT.map(lambda s: s.encode("utf-8"))))
def test_any_unicode_gives_one_output_line_per_input_line(all_models, engine, tokenizer, data):
    raw, lines = data
    model = model_for(all_models, engine, tokenizer)
    rc, out, err = run_main(["translate", "--model", model, "--engine", engine], stdin=raw)
    assert rc == 0, err
    assert len(output_lines(out)) == len(lines)


def first_bad_line(lines: list[bytes]) -> int | None:
    """The 1-based number of the first line that is not UTF-8 (a BOM opens the first)."""
    for i, line in enumerate(lines, start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return i
    return None


@pytest.mark.parametrize("engine, tokenizer", ENGINES)
@FIXED
@given(
    data=line_file(st.binary(max_size=8).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")))
)
def test_any_bytes_give_one_line_per_line_or_an_error_naming_the_line(
    all_models, engine, tokenizer, data
):
    raw, lines = data
    model = model_for(all_models, engine, tokenizer)
    rc, out, err = run_main(["translate", "--model", model, "--engine", engine], stdin=raw)
    bad = first_bad_line(lines)
    if bad is None:
        assert rc == 0, err
        assert len(output_lines(out)) == len(lines)
    else:
        assert one_error_line(rc, err).startswith(f"<stdin>:{bad}: invalid UTF-8")
        assert out == ""


@FIXED
@given(lines=st.lists(LINE_TEXT, min_size=1, max_size=4), where=st.integers(0, 3))
def test_a_bare_carriage_return_is_refused_naming_its_line(all_models, lines, where):
    where = where % len(lines)
    lines[where] = lines[where] + "\rmore"
    raw = "".join(line + "\n" for line in lines).encode("utf-8")
    rc, out, err = run_main(["translate", "--model", all_models["torch", "word"]], stdin=raw)
    assert one_error_line(rc, err).startswith(f"<stdin>:{where + 1}: carriage return")


# ---------------------------------------------------------------------------------------------
# The corpus reader
# ---------------------------------------------------------------------------------------------

# A side of a pair: no tab, not blank, and not opening with U+FEFF (the reader takes that for
# a byte-order mark on line 1).
SIDE = LINE_TEXT.filter(lambda s: "\t" not in s and normalize(s) and not s.startswith("\ufeff"))


@st.composite
def tsv_corpus(draw) -> tuple[bytes, list[tuple[str, str]], int]:
    """A TSV file mixing LF and CRLF, blank lines and extra columns; its pairs and blanks."""
    rows = draw(st.lists(st.one_of(st.none(), st.tuples(SIDE, SIDE, st.booleans())), max_size=8))
    lines = [b"" if r is None else f"{r[0]}\t{r[1]}{chr(9) + 'extra' if r[2] else ''}".encode()
             for r in rows]  # fmt: skip
    endings = draw(st.lists(ENDING, min_size=len(lines), max_size=len(lines)))
    data = join_lines(lines, endings, draw(st.booleans()), draw(st.booleans()))
    pairs = [(normalize(r[0]), normalize(r[1])) for r in rows if r is not None]
    return data, pairs, sum(r is None for r in rows)


@FIXED
@given(corpus=tsv_corpus())
def test_tsv_lines_with_mixed_endings_read_as_written(tmp_path_factory, corpus):
    data, pairs, blanks = corpus
    path = tmp_path_factory.mktemp("tsv") / "c.tsv"
    path.write_bytes(data)
    read = read_tsv(path)
    assert read.pairs == pairs and read.blank_lines == blanks


@FIXED
@given(sides=st.lists(st.tuples(SIDE, SIDE), max_size=6), ends=st.data())
def test_aligned_files_with_different_endings_stay_aligned(tmp_path_factory, sides, ends):
    d = tmp_path_factory.mktemp("aligned")
    for i, name in enumerate(("src.txt", "tgt.txt")):
        lines = [s[i].encode() for s in sides]
        endings = ends.draw(st.lists(ENDING, min_size=len(lines), max_size=len(lines)))
        (d / name).write_bytes(join_lines(lines, endings, ends.draw(st.booleans()), i == 0))
    read = read_aligned(d / "src.txt", d / "tgt.txt")
    assert read.pairs == [(normalize(s), normalize(t)) for s, t in sides]


@FIXED
@given(data=line_file(st.binary(max_size=10).map(lambda b: b.replace(b"\n", b""))))
def test_any_bytes_are_pairs_or_a_corpus_error_naming_file_and_line(tmp_path_factory, data):
    raw, lines = data
    path = tmp_path_factory.mktemp("bytes") / "c.tsv"
    path.write_bytes(raw)
    try:
        read = read_tsv(path)
    except CorpusError as e:
        assert re.match(rf"{re.escape(str(path))}:\d+: ", str(e)), str(e)
        assert 1 <= e.line <= len(lines)
    else:
        assert len(read.pairs) + read.blank_lines == len(lines)


# ---------------------------------------------------------------------------------------------
# Option values and config values
# ---------------------------------------------------------------------------------------------

NUMBERS = st.one_of(
    st.integers(-3, 12).map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e309", "0.5", "-0.5", "2.5", "1e-9"]),
)
FLAGS = {  # flag -> the name its error carries
    "--beam": "decode.beam",
    "--n-best": "decode.n_best",
    "--batch-size": "decode.batch_size",
    "--min-len": "decode.min_len",
    "--max-len-a": "decode.max_len_a",
    "--max-len-b": "decode.max_len_b",
    "--length-penalty": "decode.length_penalty",
    "--no-repeat-ngram": "decode.no_repeat_ngram",
    "--repetition-penalty": "decode.repetition_penalty",
    "--threads": "--threads",
}


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # --threads sets this process's torch threads


@pytest.mark.parametrize("engine", ["torch", "ctranslate2"])
@FIXED
@given(flags=st.dictionaries(st.sampled_from(sorted(FLAGS)), NUMBERS, max_size=4))
def test_any_option_values_translate_every_line_or_name_an_option(
    all_models, keep_threads, engine, capsys, flags
):
    model = model_for(all_models, engine, "word")
    args = ["translate", "--model", model, "--engine", engine]
    args += [a for flag, value in flags.items() for a in (flag, value)]
    with pytest.raises(SystemExit) if _argparse_refuses(flags) else contextlib.nullcontext():
        rc, out, err = run_main(args, stdin=b"I eat bread.\n\nLet's go.\n")
        if rc == 0:
            n_best = int(flags.get("--n-best", 1))
            assert len(output_lines(out)) == 3 * n_best
        else:
            message = one_error_line(rc, err)
            names = [FLAGS[f] for f in flags] + ["decode.max_len_a/max_len_b", "early_stop"]
            assert any(message.startswith(n) for n in names), message
            assert out == ""
    capsys.readouterr()  # argparse's usage message, when it refused


def _argparse_refuses(flags: dict[str, str]) -> bool:
    """Values argparse itself refuses (its usage message, exit status 2): a non-integer for an
    int flag, or a value that looks like an option ("-inf")."""
    ints = {"--beam", "--n-best", "--batch-size", "--min-len", "--max-len-b", "--threads",
            "--no-repeat-ngram"}  # fmt: skip
    number = r"-\d+|-\d*\.\d+"  # what argparse takes for a negative number, not an option
    return any(
        (f in ints and not re.fullmatch(r"-?\d+", v))
        or (v.startswith("-") and not re.fullmatch(number, v))
        for f, v in flags.items()
    )


CONFIG_VALUES = st.one_of(
    st.integers(-5, 10 ** 6), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["true", "abc", "[1, 2]", "", "1e3", "-0"]),
)  # fmt: skip


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(key=st.sampled_from(sorted(AT_LEAST) + sorted(FRACTIONS)), value=CONFIG_VALUES)
def test_any_config_value_is_kept_in_range_or_refused_by_name(key, value):
    try:
        cfg = load_config(None, [f"{key}={value}"])
    except ConfigError as e:
        assert key in str(e), str(e)
        return
    section, name = key.split(".")
    got = getattr(getattr(cfg, section), name)
    assert math.isfinite(got)
    if key in AT_LEAST:
        assert got >= AT_LEAST[key]
    else:
        low, high = FRACTIONS[key]
        assert low <= got < high
