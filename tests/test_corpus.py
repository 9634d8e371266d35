"""Corpus reading (TSV and aligned files), validation errors with file:line, and the split."""

from __future__ import annotations

import io
import pickle
import unicodedata
from pathlib import Path

import pytest

from attnmt.corpus import (
    Corpus,
    CorpusError,
    read_aligned,
    read_corpus,
    read_lines,
    read_tsv,
    split_indices,
    split_pairs,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


# ------------------------------------------------------------------------------------------
# read_tsv
# ------------------------------------------------------------------------------------------


def test_read_tsv_basic_extra_columns_and_blank_lines(tmp_path):
    f = write(
        tmp_path / "c.tsv",
        "Go.\tVe.\tCC-BY 2.0 (France) Attribution: tatoeba.org #2877272 (CM)\n"
        "\n"
        "Hi.\tHola.\n"
        "   \n"
        "Run!\t¡Corre!\textra\tmore\n",
    )
    corpus = read_tsv(f)
    assert isinstance(corpus, Corpus)
    assert corpus.pairs == [("Go.", "Ve."), ("Hi.", "Hola."), ("Run!", "¡Corre!")]
    assert corpus.blank_lines == 2
    assert corpus.source == str(f)


def test_read_tsv_final_newline_is_not_a_blank_line(tmp_path):
    assert read_tsv(write(tmp_path / "a.tsv", "a\tb\n")).blank_lines == 0
    assert read_tsv(write(tmp_path / "b.tsv", "a\tb")).pairs == [("a", "b")]


def test_read_tsv_bom_crlf_whitespace(tmp_path):
    f = write(tmp_path / "c.tsv", b"\xef\xbb\xbfHello  there.\t  Hola \xc2\xa0 ahi. \r\nA\tB\r\n")
    corpus = read_tsv(f)
    assert corpus.pairs == [("Hello there.", "Hola ahi."), ("A", "B")]
    assert corpus.blank_lines == 0


def test_read_tsv_nfc(tmp_path):
    decomposed = "cafe\u0301"  # "e" + combining acute accent
    assert unicodedata.normalize("NFC", decomposed) != decomposed
    corpus = read_tsv(write(tmp_path / "c.tsv", f"coffee\t{decomposed}\n"))
    assert corpus.pairs == [("coffee", "caf\u00e9")]


def test_read_tsv_reverse_and_lowercase(tmp_path):
    f = write(tmp_path / "c.tsv", "I See.\tYo Veo.\n")
    assert read_tsv(f, reverse=True).pairs == [("Yo Veo.", "I See.")]
    assert read_tsv(f, lowercase=True).pairs == [("i see.", "yo veo.")]
    assert read_tsv(f, reverse=True, lowercase=True).pairs == [("yo veo.", "i see.")]


def test_invalid_utf8_names_file_and_line(tmp_path):
    f = write(tmp_path / "bad.tsv", b"ok\tfine\n\nla\tcaf\xe9\n")  # latin-1 "é" on line 3
    with pytest.raises(CorpusError, match=r"bad\.tsv:3: invalid UTF-8") as info:
        read_tsv(f)
    assert info.value.path == str(f) and info.value.line == 3


def test_missing_tab_names_file_and_line(tmp_path):
    f = write(tmp_path / "c.tsv", "a\tb\nno tab here\n")
    with pytest.raises(CorpusError, match=r"c\.tsv:2: no tab"):
        read_tsv(f)


@pytest.mark.parametrize(
    ("line", "side"), [("\tHola.", "empty source"), ("Hello.\t  ", "empty target")]
)
def test_empty_side_names_file_and_line(tmp_path, line, side):
    f = write(tmp_path / "c.tsv", f"a\tb\nc\td\n{line}\n")
    with pytest.raises(CorpusError, match=rf"c\.tsv:3: {side}"):
        read_tsv(f)


def test_missing_file(tmp_path):
    with pytest.raises(CorpusError, match=r"nope\.tsv: file not found"):
        read_tsv(tmp_path / "nope.tsv")
    with pytest.raises(CorpusError, match=r"nope\.tsv: file not found"):
        read_corpus(str(tmp_path / "nope.tsv"))


def test_corpus_error_is_value_error_and_picklable():
    e = CorpusError("f.tsv", 7, "no tab")
    assert isinstance(e, ValueError)
    assert str(e) == "f.tsv:7: no tab"
    assert str(pickle.loads(pickle.dumps(e))) == "f.tsv:7: no tab"


def test_cr_only_line_endings_are_refused_naming_file_and_line(tmp_path):
    """Bug: a 400-line file with old Mac line ends (bare CR) trained on 1 pair, no warning."""
    lines = [f"sentence {i}\tfrase {i}" for i in range(400)]
    f = write(tmp_path / "mac.tsv", "\r".join(lines) + "\r")
    with pytest.raises(CorpusError, match=r"mac.tsv:1: carriage return .*old Mac line endings"):
        read_tsv(f)
    # A stray CR in a later line of an otherwise LF file names that line.
    g = write(tmp_path / "stray.tsv", "a\tb\nc\rd\te\n")
    with pytest.raises(CorpusError, match=r"stray.tsv:2: carriage return"):
        read_corpus(str(g))
    src = write(tmp_path / "s.txt", "one\rtwo\r")
    tgt = write(tmp_path / "t.txt", "uno\ndos\n")
    with pytest.raises(CorpusError, match=r"s.txt:1: carriage return"):
        read_aligned(src, tgt)


@pytest.mark.parametrize(
    "sep", ["\u2028", "\u2029", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85"]
)
def test_lines_end_at_newline_only(tmp_path, sep):
    """``str.splitlines`` also splits at these; a corpus or input line does not."""
    f = write(tmp_path / "c.tsv", f"a{sep}b\tc\nd\te{sep}f\r\n")
    assert read_tsv(f).pairs == [("a b", "c"), ("d", "e f")]
    assert read_lines(f) == [f"a{sep}b\tc", f"d\te{sep}f"]


def test_read_lines_of_a_file_and_of_stdin_alike(tmp_path, monkeypatch):
    data = b"\xef\xbb\xbfone\r\ntwo\n\nfour"
    f = write(tmp_path / "in.txt", data)
    assert read_lines(f) == read_lines(io.BytesIO(data)) == ["one", "two", "", "four"]
    assert read_lines(io.BytesIO(b"")) == [] and read_lines(io.BytesIO(b"\n")) == [""]
    # Found by test_properties: a file that is only a BOM had one empty line, so aligned files
    # (one saved with a BOM) had "different line counts".
    assert read_lines(io.BytesIO(b"\xef\xbb\xbf")) == []
    bom, empty = write(tmp_path / "bom.txt", b"\xef\xbb\xbf"), write(tmp_path / "e.txt", b"")
    assert read_aligned(bom, empty).pairs == [] and read_tsv(bom).blank_lines == 0
    with pytest.raises(CorpusError, match=r"^<stdin>:2: invalid UTF-8 at byte 1 \(ff\)"):
        read_lines(io.BytesIO(b"ok\nx\xff\n"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CorpusError, match=r"^in.txt:3: invalid UTF-8"):
        read_lines(write(Path("in.txt"), b"a\nb\n\xc3(\n").name)  # named as given
    with pytest.raises(CorpusError, match=r"is a directory"):
        read_lines(tmp_path)


# ------------------------------------------------------------------------------------------
# read_aligned
# ------------------------------------------------------------------------------------------


def test_read_aligned(tmp_path):
    src = write(tmp_path / "x.en", "A  dog.\n\nA cat.\r\n")
    tgt = write(tmp_path / "x.de", "Ein Hund.\n\nEine Katze.\r\n")
    corpus = read_aligned(src, tgt)
    assert corpus.pairs == [("A dog.", "Ein Hund."), ("A cat.", "Eine Katze.")]
    assert corpus.blank_lines == 1
    assert read_aligned(src, tgt, reverse=True, lowercase=True).pairs[0] == ("ein hund.", "a dog.")


def test_read_aligned_length_mismatch_names_both_files_and_counts(tmp_path):
    src = write(tmp_path / "x.en", "a\nb\nc\n")
    tgt = write(tmp_path / "x.de", "a\nb\n")
    with pytest.raises(CorpusError) as info:
        read_aligned(src, tgt)
    msg = str(info.value)
    assert f"{src} has 3 lines" in msg and f"{tgt} has 2 lines" in msg


def test_read_aligned_blank_on_one_side(tmp_path):
    src = write(tmp_path / "x.en", "a\nb\nc\n")
    tgt = write(tmp_path / "x.de", "a\n \nc\n")
    with pytest.raises(CorpusError, match=r"x\.de:2: blank line"):
        read_aligned(src, tgt)


def test_read_aligned_invalid_utf8(tmp_path):
    src = write(tmp_path / "x.en", "a\nb\n")
    tgt = write(tmp_path / "x.de", b"a\n\xff\xfe\n")
    with pytest.raises(CorpusError, match=r"x\.de:2: invalid UTF-8"):
        read_aligned(src, tgt)


def test_read_aligned_nfc(tmp_path):
    src = write(tmp_path / "x.en", "coffee\n")
    tgt = write(tmp_path / "x.es", "cafe\u0301\n")
    assert read_aligned(src, tgt).pairs == [("coffee", "caf\u00e9")]


# ------------------------------------------------------------------------------------------
# read_corpus
# ------------------------------------------------------------------------------------------


def test_read_corpus_dispatch_and_limit(tmp_path):
    tsv = write(tmp_path / "c.tsv", "".join(f"s{i}\tt{i}\n" for i in range(10)))
    assert len(read_corpus(str(tsv)).pairs) == 10
    assert read_corpus(str(tsv), limit=3).pairs == [("s0", "t0"), ("s1", "t1"), ("s2", "t2")]
    assert read_corpus(str(tsv), reverse=True, limit=1).pairs == [("t0", "s0")]

    src = write(tmp_path / "a.en", "One.\nTwo.\nThree.\n")
    tgt = write(tmp_path / "a.de", "Eins.\nZwei.\nDrei.\n")
    corpus = read_corpus(f"{src},{tgt}", lowercase=True, limit=2)
    assert corpus.pairs == [("one.", "eins."), ("two.", "zwei.")]
    assert corpus.source == f"{src},{tgt}"


def test_read_corpus_limit_stops_before_a_later_bad_line(tmp_path):
    tsv = write(tmp_path / "c.tsv", "a\tb\nc\td\nbroken line\n")
    assert read_corpus(str(tsv), limit=2).pairs == [("a", "b"), ("c", "d")]
    with pytest.raises(CorpusError, match=r"c\.tsv:3"):
        read_corpus(str(tsv))


def test_read_corpus_missing_aligned_file(tmp_path):
    src = write(tmp_path / "a.en", "One.\n")
    with pytest.raises(CorpusError, match=r"missing\.de: file not found"):
        read_corpus(f"{src},{tmp_path / 'missing.de'}")
    with pytest.raises(CorpusError, match=r"missing\.en: file not found"):
        read_corpus(f"{tmp_path / 'missing.en'},{src}")


def test_read_corpus_bad_spec(tmp_path):
    with pytest.raises(CorpusError, match="SRC_FILE,TGT_FILE"):
        read_corpus("a,b,c")
    with pytest.raises(ValueError, match="limit"):
        read_corpus("x.tsv", limit=-1)


def test_read_corpus_path_with_comma(tmp_path):
    tsv = write(tmp_path / "a,b.tsv", "x\ty\n")
    assert read_corpus(str(tsv)).pairs == [("x", "y")]


# ------------------------------------------------------------------------------------------
# split_pairs
# ------------------------------------------------------------------------------------------


def many_pairs(n_sources: int = 400) -> list[tuple[str, str]]:
    """Sources with 1-3 translations each, translations of one source not adjacent."""
    pairs = []
    for k in range(3):
        pairs += [(f"src {i}", f"tgt {i}.{k}") for i in range(n_sources) if i % 3 >= k]
    return pairs


def test_split_deterministic_and_seed_dependent():
    pairs = many_pairs()
    a = split_pairs(pairs, 0.1, 0.1, seed=1)
    assert split_pairs(pairs, 0.1, 0.1, seed=1) == a
    assert split_pairs(pairs, 0.1, 0.1, seed=2) != a


def test_split_groups_by_source_and_keeps_everything():
    pairs = many_pairs()
    train, dev, test = split_pairs(pairs, 0.1, 0.2, seed=0)
    assert sorted(train + dev + test) == sorted(pairs)
    sources = [{s for s, _ in split} for split in (train, dev, test)]
    assert not (sources[0] & sources[1] or sources[0] & sources[2] or sources[1] & sources[2])
    # every translation of a held-out sentence is held out with it
    for split, srcs in zip((train, dev, test), sources):
        assert len(split) == sum(1 for s, _ in pairs if s in srcs)


def test_split_groups_after_normalisation():
    pairs = [("caf\u00e9  ok", "a"), ("cafe\u0301 ok", "b")] + [(f"s{i}", "t") for i in range(50)]
    train, dev, test = split_pairs(pairs, 0.3, 0.3, seed=3)
    homes = [i for i, split in enumerate((train, dev, test)) for p in split if p[1] in "ab"]
    assert len(homes) == 2 and homes[0] == homes[1]


def test_split_fractions_count_distinct_sources():
    pairs = many_pairs(1000)
    train, dev, test = split_pairs(pairs, 0.05, 0.15, seed=0)
    n_dev, n_test = len({s for s, _ in dev}), len({s for s, _ in test})
    assert n_dev == 50 and n_test == 150
    assert len({s for s, _ in train}) == 800


def test_split_keeps_corpus_order():
    pairs = many_pairs()
    for split in split_pairs(pairs, 0.2, 0.2, seed=5):
        positions = [pairs.index(p) for p in split]
        assert positions == sorted(positions)


def test_split_zero_fractions_and_tiny_corpora():
    pairs = many_pairs(30)
    train, dev, test = split_pairs(pairs, 0.0, 0.0, seed=0)
    assert train == pairs and dev == [] and test == []
    train, dev, test = split_pairs(pairs, 0.1, 0.0, seed=0)
    assert dev and test == []
    # a small fraction still holds out one sentence; training is never emptied
    assert len({s for s, _ in split_pairs(pairs, 0.001, 0.0, seed=0)[1]}) == 1
    train, dev, test = split_pairs([("a", "b"), ("c", "d")], 0.4, 0.4, seed=0)
    assert len(train) == 1 and len(dev) + len(test) == 1
    assert split_pairs([], 0.1, 0.1, seed=0) == ([], [], [])


@pytest.mark.parametrize(("dev", "test"), [(-0.1, 0.1), (1.0, 0.0), (0.6, 0.4)])
def test_split_rejects_bad_fractions(dev, test):
    with pytest.raises(ValueError, match="fraction"):
        split_pairs(many_pairs(10), dev, test, seed=0)


# ------------------------------------------------------------------------------------------
# The real corpora in ../shared/data (skipped when absent)
# ------------------------------------------------------------------------------------------

TATOEBA = SHARED_DATA / "tatoeba-eng-spa" / "pairs.tsv"
MULTI30K = SHARED_DATA / "multi30k-en-de"


@pytest.mark.skipif(not TATOEBA.exists(), reason="../shared/data/tatoeba-eng-spa is absent")
def test_real_tatoeba_reads_and_splits_without_leaks():
    corpus = read_corpus(str(TATOEBA))
    assert len(corpus.pairs) == 118_964 and corpus.blank_lines == 0
    assert ("Let's go!", "Vamos.") in corpus.pairs  # this release has no "Let's go.\tVamos."
    train, dev, test = split_pairs(corpus.pairs, 0.05, 0.05, seed=1234)
    en = [{s for s, _ in split} for split in (train, dev, test)]
    assert not (en[0] & en[1] or en[0] & en[2] or en[1] & en[2])
    assert len(train) + len(dev) + len(test) == len(corpus.pairs)
    n_sources = len(en[0] | en[1] | en[2])
    assert abs(len(en[1]) - 0.05 * n_sources) <= 1


@pytest.mark.skipif(not MULTI30K.exists(), reason="../shared/data/multi30k-en-de is absent")
def test_real_multi30k_aligned():
    corpus = read_corpus(f"{MULTI30K / 'train.en'},{MULTI30K / 'train.de'}")
    assert len(corpus.pairs) == 29_000 and corpus.blank_lines == 0
    val = read_aligned(MULTI30K / "val.en", MULTI30K / "val.de", reverse=True)
    assert len(val.pairs) == 1_014


@pytest.mark.parametrize("seed", range(12))
def test_split_keeps_pinned_sources_in_training(seed):
    """The demo pins "Let's go." to training (the example explain shows): before, some seeds
    (train.seed=1 among them) put it in dev."""
    pairs = [("Let's go.", "Vamos."), ("Let's go.", "¡Vámonos!")] + many_pairs(30)
    train, dev, test = split_pairs(pairs, 0.3, 0.3, seed, keep_in_train=frozenset(["Let's go."]))
    assert pairs[:2] == train[:2] and dev and test
    # split_indices is the same split, by index
    idx = split_indices([s for s, _ in pairs], 0.3, 0.3, seed, frozenset(["Let's go."]))
    assert [[pairs[i] for i in part] for part in idx] == [train, dev, test]


def test_split_of_only_pinned_sources_holds_nothing_out():
    pairs = [("a", "x"), ("b", "y")]
    assert split_pairs(pairs, 0.4, 0.4, 0, keep_in_train=frozenset("ab")) == (pairs, [], [])
    # one pinned, one free: the free one may go, training still has the pinned one
    train, dev, test = split_pairs(pairs, 0.4, 0.4, 0, keep_in_train=frozenset("a"))
    assert train == [("a", "x")] and len(dev + test) == 1
