"""attnmt/sentences.py: text cut into sentences and put back together, spacing and line breaks
kept exactly (examples, then hypothesis over arbitrary text)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnmt.sentences import Split, split_sentences


@pytest.mark.parametrize(
    "text, lang, sentences",
    [
        ("Dr. Smith arrived at 5 p.m. on Monday. He left.", "en",
         ["Dr. Smith arrived at 5 p.m. on Monday.", "He left."]),  # abbreviations hold
        ("¿Qué tal? Yo como pan. El Sr. García llegó.", "es",
         ["¿Qué tal?", "Yo como pan.", "El Sr. García llegó."]),
        ("Wie geht's? Gut, z.B. heute.", "de", ["Wie geht's?", "Gut, z.B. heute."]),
        ("One. Two!\nThree?", "pt-BR", ["One.", "Two!", "Three?"]),  # a region: its language
        ("no end mark", "xx", ["no end mark"]),  # an unknown language: generic rules
        ("", "en", []),
        (" \n\t\n ", "en", []),
    ],
)  # fmt: skip
def test_sentences(text, lang, sentences):
    assert list(split_sentences(text, lang).sentences) == sentences


def test_spacing_and_line_breaks_go_into_the_gaps():
    split = split_sentences("  I eat.  You see!\n\nWe want.\r\nThey go  ", "en")
    assert split == Split(
        ("I eat.", "You see!", "We want.", "They go"),
        ("  ", "  ", "\n\n", "\r\n", "  "),
    )
    assert split.join(["A", "B", "C", "D"]) == "  A  B\n\nC\r\nD  "


def test_a_sentence_never_spans_a_line_break():
    # A line ending without punctuation still ends its sentence (lines are cut first).
    assert split_sentences("a title\nthe text.", "en").sentences == ("a title", "the text.")


def test_without_line_breaks_a_single_newline_is_a_space_in_a_sentence():
    # HTML source: a hard-wrapped sentence stays whole; a blank line still ends a paragraph.
    split = split_sentences("I eat\n  apples. You see.\n\nWe go.", "en", line_breaks=False)
    assert split.sentences == ("I eat\n  apples.", "You see.", "We go.")
    assert split.gaps == ("", " ", "\n\n", "")


def test_join_needs_one_translation_per_sentence():
    with pytest.raises(ValueError, match="1 translations for 2 sentences"):
        split_sentences("One. Two.", "en").join(["Uno."])


def test_join_nbest_joins_each_sentences_kth_translation_or_its_last():
    split = split_sentences("One. Two. Three.", "en")
    nbests = [["a1", "a2", "a3"], ["b1"], ["c1", "c2"]]
    assert split.join_nbest(nbests) == ["a1 b1 c1", "a2 b1 c2", "a3 b1 c2"]
    assert split.join_nbest([[s] for s in split.sentences]) == ["One. Two. Three."]
    assert split_sentences("  ", "en").join_nbest([]) == ["  "]  # no sentences: the gaps
    with pytest.raises(ValueError, match="without translations"):
        split.join_nbest([["a"], [], ["c"]])
    with pytest.raises(ValueError, match="2 translations for 3 sentences"):
        split.join_nbest([["a"], ["b"]])


TEXT_ATOMS = st.sampled_from(
    ["Dr.", "e.g.", "Mr. ", "...", "?!", ". ", "! ", "? ", " ", "  ", "\t", "\n", "\r\n",
     "\u2028", "\u00a0", "\u3000", "\u3002", "word", "Ünïcödé", "\U0001f600", "\x00", "\x85"]
)  # fmt: skip


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.one_of(st.text(max_size=120), st.lists(TEXT_ATOMS, max_size=40).map("".join)),
    st.sampled_from(["en", "es", "de", "fr", "ja", "zh", "xx"]),
    st.booleans(),
)
def test_any_text_is_rebuilt_exactly_from_its_sentences(text, lang, line_breaks):
    split = split_sentences(text, lang, line_breaks)
    assert split.join(split.sentences) == text
    assert len(split.gaps) == len(split.sentences) + 1
    for s in split.sentences:
        assert s and s == s.strip() and ("\n" not in s or not line_breaks)
    assert all(not g.strip() for g in split.gaps)  # gaps hold only whitespace
