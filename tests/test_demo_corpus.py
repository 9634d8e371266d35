"""The generated demo corpus: size, determinism, distinctness, Spanish agreement spot checks, and
its gold word alignments on the tricky constructions."""

from __future__ import annotations

import re

import pytest

from attnmt.align import Alignment, parse_pharaoh, read_pharaoh
from attnmt.align import words as align_words
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
    demo_gold,
    generate_demo_aligned,
    generate_demo_corpus,
    gold_path,
    noun_phrase,
    part,
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


SHE, YOU, WE = (
    NP(part("she", "ella"), 2, ("f", False)),
    NP(part("you", ""), 1, None),
    NP(part("we", ""), 3, None),
)
HAVE = ("have", "has")


def built_references():
    """The DEMO_REFERENCES sentences (but "Let's go.") as the phrase builders make them."""
    car, cat, dog, apple = (NOUNS[n] for n in ("car", "cat", "dog", "apple"))
    red, black, white = (
        next(a for a in ADJECTIVES if a.en == c) for c in ("red", "black", "white")
    )
    houses = noun_phrase(NOUNS["house"], "the", True, white)
    big = part("big", "grandes")
    return [
        _be_clause(noun_phrase(car, "the", False, red), "está", part("here", "aquí"), "neg"),
        _clause(SHE, HAVE, "tiene", noun_phrase(cat, "two", True, black).phrase, "stmt"),
        _clause(YOU, HAVE, "tienes", noun_phrase(dog, "a", False, None).phrase, "q"),
        _clause(
            WE, ("eat", "eats"), "comemos", noun_phrase(apple, "bare", True, None).phrase, "neg"
        ),
        _be_clause(houses, "son", big, "stmt"),
    ]


def test_grammar_builds_the_reference_translations():
    """The phrase builders reproduce the hand-written references (and the brief's examples)."""
    assert {(p.en, p.es) for p in built_references()} == set(DEMO_REFERENCES.items()) - {
        ("Let's go.", "Vamos.")
    }
    np = noun_phrase(NOUNS["car"], "the", True, next(a for a in ADJECTIVES if a.en == "red"))
    assert (np.en, np.es, np.person, np.agree) == (
        "the red cars",
        "los coches rojos",
        4,
        ("m", True),
    )
    np = noun_phrase(NOUNS["house"], "a", False, next(a for a in ADJECTIVES if a.en == "old"))
    assert (np.en, np.es) == ("an old house", "una casa vieja")


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


# ---------------------------------------------------------------------------------------------
# Gold alignments
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aligned():
    return generate_demo_aligned(4000, seed=0)


def test_generate_demo_corpus_is_the_aligned_pairs(aligned, pairs):
    assert [(p.en, p.es) for p in aligned] == pairs


@pytest.mark.parametrize(
    "en, es, gold",
    [
        # adjective reordering: red-rojo and car-coche cross; not-no precedes the verb in Spanish
        ("The red car is not here.", "El coche rojo no está aquí.", "0-0 1-2 2-1 3-4 4-3 5-5 6-6"),
        ("She has two black cats.", "Ella tiene dos gatos negros.", "0-0 1-1 2-2 3-4 4-3 5-5"),
        # a question: "Do" and the dropped "you" are possible links to the verb; ? also to ¿
        ("Do you have a dog?", "¿Tienes un perro?", "0?1 1?1 2-1 3-2 4-3 5?0 5-4"),
        # "do not": not-no sure, do and the dropped "we" possible links to comemos
        ("We do not eat apples.", "No comemos manzanas.", "0?1 1?1 2-0 3-1 4-2 5-3"),
        ("The white houses are big.", "Las casas blancas son grandes.", "0-0 1-2 2-1 3-3 4-4 5-5"),
    ],
)
def test_gold_of_the_reference_sentences(en, es, gold):
    built = {p.en: p for p in built_references()}[en]
    assert (built.es, built.gold) == (es, parse_pharaoh(gold))


@pytest.mark.parametrize(
    "en, es, gold",
    [
        ("Let's go.", "Vamos.", "0?0 1-0 2-1"),  # go-Vamos sure; "Let's" lives in the verb form
        ("Let's go!", "¡Vamos!", "0?1 1-1 2-2 2?0"),
        ("Let's go to the park.", "Vamos al parque.", "0?0 1-0 2-1 3-1 4-2 5-3"),  # al = to+the
        ("Let's eat the bread.", "Comamos el pan.", "0?0 1-0 2-1 3-2 4-3"),
        ("Where does she live?", "¿Dónde vive ella?", "0-1 1?2 2-3 3-2 4?0 4-4"),  # inverted
        ("Where do you live?", "¿Dónde vives?", "0-1 1?2 2?2 3-2 4?0 4-3"),
        ("Where am I?", "¿Dónde estoy?", "0-1 1-2 2?2 3?0 3-3"),
        ("She is a doctor.", "Ella es médica.", "0-0 1-1 2?2 3-2 4-3"),  # no article in Spanish
        ("We go to school.", "Vamos a la escuela.", "0?0 1-0 2-1 3?2 3-3 4-4"),
        ("I don't know.", "No sé.", "0?1 1-0 1?1 2-1 3-2"),
        ("Of course.", "Por supuesto.", "0?0 0?1 1?0 1?1 2-2"),  # an idiom: possible links only
    ],
)
def test_gold_of_generated_sentences(aligned, en, es, gold):
    found = {p.en: p for p in aligned}[en]
    assert (found.es, found.gold) == (es, parse_pharaoh(gold))


def test_gold_covers_every_word_within_bounds():
    for p in generate_demo_aligned(6000, seed=4):
        en, es = align_words(p.en), align_words(p.es)
        assert p.gold.sure <= p.gold.possible
        assert all(i < len(en) and j < len(es) for i, j in p.gold.possible), p
        assert {i for i, _ in p.gold.possible} == set(range(len(en))), p  # every word linked
        assert {j for _, j in p.gold.possible} == set(range(len(es))), p
        assert (len(en) - 1, len(es) - 1) in p.gold.sure  # the final marks
        if es[0] in "¿¡":
            assert (len(en) - 1, 0) in p.gold.possible - p.gold.sure


def test_function_words_without_a_counterpart_have_only_possible_links(aligned):
    checked = 0
    for p in aligned:
        en = align_words(p.en)
        for i, word in enumerate(en):
            dropped = i == 0 and word in ("I", "You", "We") and not p.es.startswith(("Yo", "Tú"))
            if word.lower() in ("do", "does", "let's") or dropped:
                assert not any(k == i for k, _ in p.gold.sure), (p, word)
                checked += 1
    assert checked > 1000


def test_adjectives_link_across_the_reordering(aligned):
    """Every "ADJ NOUN" in English links to "NOUN ADJ" in Spanish."""
    adjectives = {a.en for a in ADJECTIVES}
    nouns = {n.en for n in NOUNS.values()} | {n.en_pl for n in NOUNS.values() if n.en_pl}
    checked = 0
    for p in aligned:
        en, to = align_words(p.en), dict(p.gold.sure)  # one sure Spanish word per English word here
        for i in range(len(en) - 1):
            if en[i] in adjectives and en[i + 1] in nouns:
                assert to[i] == to[i + 1] + 1, p
                checked += 1
    assert checked > 500


def test_write_demo_tsv_with_gold_beside_it(tmp_path):
    path = write_demo_tsv(tmp_path / "demo.tsv", n=300, seed=2, gold=True)
    assert gold_path(path) == tmp_path / "demo.align"
    pairs = read_tsv(path).pairs
    lengths = [(len(align_words(s)), len(align_words(t))) for s, t in pairs]
    assert read_pharaoh(gold_path(path), lengths) == [p.gold for p in generate_demo_aligned(300, 2)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.align", "demo.tsv"]


def test_demo_gold_looks_up_pairs_as_a_run_made_them():
    aligned = generate_demo_aligned(300, seed=0)
    some = [(p.en, p.es) for p in aligned[100:105]]
    assert demo_gold(some, 300, 0) == [p.gold for p in aligned[100:105]]
    lowered = [(s.lower(), t.lower()) for s, t in some]
    assert demo_gold(lowered, 300, 0, lowercase=True) == [p.gold for p in aligned[100:105]]
    reversed_ = [(t, s) for s, t in some]
    flipped = demo_gold(reversed_, 300, 0, reverse=True)
    assert flipped == [p.gold.transposed() for p in aligned[100:105]]
    with pytest.raises(ValueError, match="pair 2 is not in the demo corpus"):
        demo_gold([some[0], ("Not a demo sentence.", "No.")], 300, 0)
    assert demo_gold([], 10, 0) == []
    assert Alignment() not in demo_gold(some, 300, 0)
