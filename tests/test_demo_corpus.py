"""The generated demo corpus: size, determinism, distinctness and Spanish agreement spot checks."""

from __future__ import annotations

import re

import pytest

from attnmt.corpus import read_tsv
from attnmt.demo_corpus import (
    ADJECTIVES,
    DEMO_EXAMPLES,
    DEMO_REFERENCES,
    NOUNS,
    NP,
    _be_clause,
    _clause,
    conjugate,
    generate_demo_corpus,
    noun_phrase,
    write_demo_tsv,
)


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str]]:
    return generate_demo_corpus(4000, seed=0)


def words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def test_size_distinct_and_deterministic(pairs):
    assert len(pairs) == 4000
    assert len(set(pairs)) == 4000
    assert len({en for en, _ in pairs}) == 4000  # one translation per English sentence
    assert generate_demo_corpus(4000, seed=0) == pairs
    other = generate_demo_corpus(4000, seed=1)
    assert other != pairs and len(other) == 4000


def test_lets_go_always_present():
    for n in (1, 2, 10, 4000):
        assert ("Let's go.", "Vamos.") in generate_demo_corpus(n, seed=3)
    assert generate_demo_corpus(1, seed=0) == [("Let's go.", "Vamos.")]
    assert generate_demo_corpus(0) == []


def test_fixed_phrases(pairs):
    for pair in [("Let's go!", "¡Vamos!"), ("Let's eat.", "Comamos."), ("Hello.", "Hola.")]:
        assert pair in pairs


def test_demo_examples_held_out(pairs):
    assert DEMO_EXAMPLES[0] == "Let's go."
    english = {en for en, _ in generate_demo_corpus(20000, seed=0)}
    assert "Let's go." in english
    for sentence in DEMO_EXAMPLES[1:]:
        assert sentence not in english
    # the unseen examples use only words the corpus teaches
    vocab = {w for en, _ in pairs for w in words(en)}
    for sentence, reference in DEMO_REFERENCES.items():
        assert set(words(sentence)) <= vocab, sentence
        assert reference[-1] in ".?!"


def test_shape_like_tatoeba(pairs):
    for en, es in pairs:
        assert en[0].isupper() and en[-1] in ".?!", en
        assert es[-1] in ".?!", es
        assert es.lstrip("¿¡")[0].isupper(), es
        assert "  " not in en and "  " not in es and "\t" not in en + es
        assert len(en.split()) <= 9
        if en.endswith("?"):
            assert es.startswith("¿") and es.endswith("?"), (en, es)
        if es.startswith("¿"):
            assert en.endswith("?")
        if en.endswith("!"):
            assert es.startswith("¡") and es.endswith("!"), (en, es)


def test_vocabulary_is_modest(pairs):
    vocab = {w for en, _ in pairs for w in words(en)}
    assert 120 <= len(vocab) <= 260


def test_plural_adjective_agreement(pairs):
    """ "the red cars" -> "coches rojos"; a feminine plural noun takes the -as form."""
    checked = 0
    for adj in ADJECTIVES:
        for noun in NOUNS.values():
            if not noun.en_pl:
                continue
            phrase = f"{adj.en} {noun.en_pl}"
            expected = f"{noun.es_pl} {adj.form(noun.gender, True)}"
            for en, es in pairs:
                if re.search(rf"\b{phrase}\b", en):
                    assert expected in es, (en, es)
                    checked += 1
    assert checked > 100
    red_cars = [(en, es) for en, es in pairs if "red cars" in en]
    assert red_cars and all("coches rojos" in es for _, es in red_cars)
    white_houses = [(en, es) for en, es in pairs if "white houses" in en]
    assert all("casas blancas" in es for _, es in white_houses)


def test_singular_articles_agree(pairs):
    for en, es in pairs:
        for noun in NOUNS.values():
            if re.search(rf"\bthe {noun.en}\b", en) and not re.search(r"\bthe \w+ \w+\b", en):
                article = "el" if noun.gender == "m" else "la"
                assert re.search(rf"\b{article} {noun.es}\b", es, re.IGNORECASE), (en, es)


def test_grammar_builds_the_reference_translations():
    """The phrase builders reproduce the hand-written references (and the brief's examples)."""
    car, cat, dog, apple = (NOUNS[n] for n in ("car", "cat", "dog", "apple"))
    red, black = (next(a for a in ADJECTIVES if a.en == c) for c in ("red", "black"))
    she, you, we = NP("she", "ella", 2, ("f", False)), NP("you", "", 1, None), NP("we", "", 3, None)
    have = ("have", "has")
    built = {
        _be_clause(noun_phrase(car, "the", False, red), "está", ("here", "aquí"), "neg"),
        _clause(she, have, "tiene", astuple(noun_phrase(cat, "two", True, black)), "stmt"),
        _clause(you, have, "tienes", astuple(noun_phrase(dog, "a", False, None)), "q"),
        _clause(
            we, ("eat", "eats"), "comemos", astuple(noun_phrase(apple, "bare", True, None)), "neg"
        ),
    }
    assert built <= set(DEMO_REFERENCES.items())
    np = noun_phrase(car, "the", True, red)
    assert (np.en, np.es, np.person, np.agree) == (
        "the red cars",
        "los coches rojos",
        4,
        ("m", True),
    )
    np = noun_phrase(NOUNS["house"], "a", False, next(a for a in ADJECTIVES if a.en == "old"))
    assert (np.en, np.es) == ("an old house", "una casa vieja")


def astuple(np: NP) -> tuple[str, str]:
    return np.en, np.es


def test_negation_and_pronoun_convention(pairs):
    for en, es in pairs:
        if " do not " in en or " does not " in en:
            assert " no " in f" {es.lower()} ", (en, es)
        if en.startswith("We "):
            assert not es.startswith("Nosotros"), (en, es)  # dropped pronoun
        if en.startswith("She "):
            assert es.startswith("Ella "), (en, es)


def test_conjugation():
    assert [conjugate("hablar", p) for p in range(5)] == [
        "hablo",
        "hablas",
        "habla",
        "hablamos",
        "hablan",
    ]
    assert conjugate("comer", 3) == "comemos" and conjugate("vivir", 3) == "vivimos"
    assert conjugate("tener", 1) == "tienes" and conjugate("ir", 3) == "vamos"
    assert conjugate("ser", 0) == "soy" and conjugate("estar", 4) == "están"


def test_write_demo_tsv_roundtrip(tmp_path):
    path = write_demo_tsv(tmp_path / "demo.tsv", n=300, seed=2)
    assert read_tsv(path).pairs == generate_demo_corpus(300, seed=2)
    assert [p.name for p in tmp_path.iterdir()] == ["demo.tsv"]  # no temp file left behind
