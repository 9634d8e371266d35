"""The embedded English->Spanish demo corpus: a small grammar that writes correct sentence pairs,
each with its gold word alignment.

Pipeline position: stands in for a corpus file when ``data.corpus = "demo"``
(``train.load_splits``), so ``attnmt demo`` needs no download. The pairs exercise what an
attention model has to learn (Bahdanau et al. 2015; Luong et al. 2015): reordering (adjectives
follow nouns: "the red cars" -> "los coches rojos"), agreement at a distance (gender/number of
articles, adjectives and predicates), verb conjugation by person (regular -ar/-er/-ir verbs and
ser/estar/tener/ir), dropped subject pronouns, negation, ¿...? questions and fixed phrases
("Let's go." -> "Vamos.").

Conventions (one per phenomenon, so every English sentence has exactly one translation):
"you" is informal singular (tú); "they" is masculine (ellos); Spanish drops the yo/tú/nosotros
pronouns and keeps él/ella/ellos; yes/no questions keep statement word order ("¿Ella tiene un
perro?"); negation is "do not" / "is not" in English and "no" before the verb in Spanish.
Nouns that take "el" although feminine (el agua) are avoided, and so are animate objects (which
would need the personal "a").

Gold alignments. The grammar builds every sentence from phrases (:class:`Part`) that carry their
word links, so it knows which English words each Spanish word comes from. Words are
:func:`attnmt.align.words` (punctuation marks are words); links are English word i - Spanish
word j, 0-based (Pharaoh; :class:`attnmt.align.Alignment`). A *sure* link joins words that
translate each other (red-rojo, the-el, is-está, not-no, ?-?). A *possible* link joins a word
with no counterpart of its own to the word that carries its meaning:

- a dropped subject pronoun to the verb whose ending expresses it (We? comemos);
- the auxiliary "do"/"does" of negations and questions to the main verb (do? comemos);
- "Let's" to the Spanish verb form that carries the "let us" (Let's? Vamos; go-Vamos is sure);
- an article Spanish lacks or adds ("a doctor" -> "médica": a? médica; "a la escuela": la? school);
- the opening "¿"/"¡" to the final "?"/"!";
- the words of an idiom with no word-for-word reading ("Of course." -> "Por supuesto.").

Every Spanish word has at least one link. A word that fuses two (al = to + the) has two sure
links, so an aligner that gives each target word one link cannot reach AER 0 on those pairs.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import NamedTuple

from attnmt.align import Alignment, parse_pharaoh, words, write_pharaoh
from attnmt.atomic import write_text_atomic

Pair = tuple[str, str]

# Sentences ``attnmt demo`` translates at the end. Apart from "Let's go." (always in the corpus,
# explained step by step) they are never generated, so the demo shows new combinations of
# known words; their correct translations are in DEMO_REFERENCES.
DEMO_REFERENCES: dict[str, str] = {
    "Let's go.": "Vamos.",
    "The red car is not here.": "El coche rojo no está aquí.",
    "She has two black cats.": "Ella tiene dos gatos negros.",
    "Do you have a dog?": "¿Tienes un perro?",
    "We do not eat apples.": "No comemos manzanas.",
    "The white houses are big.": "Las casas blancas son grandes.",
}
DEMO_EXAMPLES: list[str] = list(DEMO_REFERENCES)

_LETS = "0?0 1-0 2-1"  # Let's X . -> X' . : the Spanish verb form carries the "let us"
_LETS_EXCLAIM = "0?1 1-1 2-2 2?0"  # Let's X ! -> ¡ X' !
_SEE_YOU = "0?0 1?0 2-1 3-2"  # See you tomorrow . -> Hasta mañana .
_DONT = "0?1 1-0 1?1 2-1 3-2"  # I don't know . -> No sé .
_EXCLAIM_2 = "0-1 1-2 2-3 2?0"  # Good luck ! -> ¡ Buena suerte !
_EXCLAIM_1 = "0-1 1-2 1?0"  # Help ! -> ¡ Ayuda !

# Always in the corpus, "Let's go." first so that even a tiny corpus has it. The third field
# is the gold alignment (None: word k with word k).
FIXED_PHRASES: list[tuple[str, str, str | None]] = [
    ("Let's go.", "Vamos.", _LETS),
    ("Let's go!", "¡Vamos!", _LETS_EXCLAIM),
    ("Let's go home.", "Vamos a casa.", "0?0 1-0 2?1 2-2 3-3"),
    ("Let's eat.", "Comamos.", _LETS),
    ("Let's eat!", "¡Comamos!", _LETS_EXCLAIM),
    ("Let's drink.", "Bebamos.", _LETS),
    ("Let's dance.", "Bailemos.", _LETS),
    ("Let's dance!", "¡Bailemos!", _LETS_EXCLAIM),
    ("Let's sing.", "Cantemos.", _LETS),
    ("Let's read.", "Leamos.", _LETS),
    ("Let's work.", "Trabajemos.", _LETS),
    ("Let's run!", "¡Corramos!", _LETS_EXCLAIM),
    ("Let's swim.", "Nademos.", _LETS),
    ("Let's walk.", "Caminemos.", _LETS),
    ("Let's study.", "Estudiemos.", _LETS),
    ("Let's cook.", "Cocinemos.", _LETS),
    ("Let's sleep.", "Durmamos.", _LETS),
    ("Hello.", "Hola.", None),
    ("Thank you.", "Gracias.", "0-0 1?0 2-1"),
    ("Thank you very much.", "Muchas gracias.", "0-1 1?1 2?0 3-0 4-2"),
    ("Good morning.", "Buenos días.", None),
    ("Good afternoon.", "Buenas tardes.", None),
    ("Good night.", "Buenas noches.", None),
    ("Goodbye.", "Adiós.", None),
    ("See you tomorrow.", "Hasta mañana.", _SEE_YOU),
    ("See you later.", "Hasta luego.", _SEE_YOU),
    ("I'm sorry.", "Lo siento.", "0?1 1?0 1-1 2-2"),
    ("Excuse me.", "Perdón.", "0-0 1?0 2-1"),
    ("Please.", "Por favor.", "0-0 0-1 1-2"),
    ("Of course.", "Por supuesto.", "0?0 0?1 1?0 1?1 2-2"),
    ("Help!", "¡Ayuda!", _EXCLAIM_1),
    ("Watch out!", "¡Cuidado!", "0-1 1-1 2-2 2?0"),
    ("Good luck!", "¡Buena suerte!", _EXCLAIM_2),
    ("Cheers!", "¡Salud!", _EXCLAIM_1),
    ("Come here.", "Ven aquí.", None),
    ("Wait.", "Espera.", None),
    ("Be careful.", "Ten cuidado.", None),
    ("I understand.", "Entiendo.", "0?0 1-0 2-1"),
    ("I don't understand.", "No entiendo.", _DONT),
    ("I don't know.", "No sé.", _DONT),
    ("How are you?", "¿Cómo estás?", "0-1 1-2 2?2 3-3 3?0"),
    ("I am fine.", "Estoy bien.", "0?0 1-0 2-1 3-2"),
    ("What time is it?", "¿Qué hora es?", "0-1 1-2 2-3 3?3 4-4 4?0"),
    ("Nice to meet you.", "Mucho gusto.", "0?0 0?1 1?1 2?1 3?1 4-2"),
    ("Happy birthday!", "¡Feliz cumpleaños!", _EXCLAIM_2),
]

# ---------------------------------------------------------------------------------------------
# Phrases with their word links
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """A phrase in both languages and the gold links between its words (indices local to it)."""

    en: tuple[str, ...]
    es: tuple[str, ...]
    gold: Alignment = Alignment()


@cache  # the grammar builds the same few hundred phrases again and again
def part(en: str, es: str, links: str | None = None) -> Part:
    """A phrase from its two texts and its Pharaoh links; ``links=None`` links word k with word
    k (a phrase with words on one side only has nothing to link)."""
    en_words, es_words = tuple(words(en)), tuple(words(es))
    if links is not None:
        gold = parse_pharaoh(links)
    elif not en_words or not es_words:
        gold = Alignment()
    elif len(en_words) == len(es_words):
        gold = Alignment.of((k, k) for k in range(len(en_words)))
    else:
        raise ValueError(f"demo phrase {en!r} / {es!r}: spell out its links")
    return Part(en_words, es_words, gold)


def arrange(
    parts: dict[str, Part], en_order: str, es_order: str, maybe: Sequence[tuple[str, str]] = ()
) -> Part:
    """Put named parts in English order and in Spanish order (names separated by spaces; names
    not in ``parts`` are skipped), keeping each part's links. ``maybe`` (a, b) adds possible
    links from every English word of part a to every Spanish word of part b."""
    en_at, en = _place(parts, en_order, "en")
    es_at, es = _place(parts, es_order, "es")
    sure, possible = set(), set()
    for name, p in parts.items():
        i0, j0 = en_at.get(name, 0), es_at.get(name, 0)
        sure |= {(i0 + i, j0 + j) for i, j in p.gold.sure}
        possible |= {(i0 + i, j0 + j) for i, j in p.gold.possible}
    for a, b in maybe:
        n_en, n_es = len(parts[a].en), len(parts[b].es)
        possible |= {(en_at[a] + i, es_at[b] + j) for i in range(n_en) for j in range(n_es)}
    return Part(en, es, Alignment.of(sure, possible))


def _place(parts: dict[str, Part], order: str, side: str) -> tuple[dict[str, int], tuple]:
    """Where each part starts on one side, and that side's words."""
    names = [n for n in order.split() if n in parts]
    missing = [n for n, p in parts.items() if getattr(p, side) and n not in names]
    if missing:
        raise ValueError(f"demo grammar: parts {missing} have {side} words but no {side} place")
    at: dict[str, int] = {}
    out: list[str] = []
    for name in names:
        at[name] = len(out)
        out += getattr(parts[name], side)
    return at, tuple(out)


def join(*parts: Part) -> Part:
    """Parts one after the other, in the same order in both languages."""
    order = " ".join(str(k) for k in range(len(parts)))
    return arrange({str(k): p for k, p in enumerate(parts)}, order, order)


# ---------------------------------------------------------------------------------------------
# Lexicon
# ---------------------------------------------------------------------------------------------

# Subjects: English, Spanish ("" = dropped), person index into a conjugation (0 yo, 1 tú,
# 2 él/ella, 3 nosotros, 4 ellos), and (gender, plural) for predicate agreement, None when the
# speaker's gender is unknown (then only gender-invariant predicates are used).
PRONOUNS: list[tuple[str, str, int, tuple[str, bool] | None]] = [
    ("I", "", 0, None),
    ("you", "", 1, None),
    ("he", "él", 2, ("m", False)),
    ("she", "ella", 2, ("f", False)),
    ("we", "", 3, None),
    ("they", "ellos", 4, ("m", True)),
]

_ENDINGS = {
    "ar": ("o", "as", "a", "amos", "an"),
    "er": ("o", "es", "e", "emos", "en"),
    "ir": ("o", "es", "e", "imos", "en"),
}
_IRREGULAR = {
    "ser": ("soy", "eres", "es", "somos", "son"),
    "estar": ("estoy", "estás", "está", "estamos", "están"),
    "tener": ("tengo", "tienes", "tiene", "tenemos", "tienen"),
    "ir": ("voy", "vas", "va", "vamos", "van"),
    "querer": ("quiero", "quieres", "quiere", "queremos", "quieren"),
    "dormir": ("duermo", "duermes", "duerme", "dormimos", "duermen"),
    "ver": ("veo", "ves", "ve", "vemos", "ven"),
}


def conjugate(infinitive: str, person: int) -> str:
    """Present indicative of a Spanish verb for person 0..4 (yo, tú, él, nosotros, ellos)."""
    if infinitive in _IRREGULAR:
        return _IRREGULAR[infinitive][person]
    return infinitive[:-2] + _ENDINGS[infinitive[-2:]][person]


@dataclass(frozen=True)
class Noun:
    en: str
    en_pl: str  # "" for mass nouns (bread, milk): no plural, no "a"
    es: str
    es_pl: str
    gender: str  # "m" or "f"
    adjs: str  # adjective tags this noun combines with (space-separated)
    place: str  # where it can be: small, large (movable), vehicle, fixed, plant, animal, horse,
    # food (a horse is an animal that does not fit in a car)


def _n(en: str, en_pl: str, es: str, es_pl: str, g: str, adjs: str, place: str) -> Noun:
    return Noun(en, en_pl, es, es_pl, g, adjs, place)


_ART = "color size age price beauty"
_ANIMAL = "animalcolor size animalage beauty"
NOUNS: dict[str, Noun] = {
    n.en: n
    for n in [
        _n("car", "cars", "coche", "coches", "m", _ART, "vehicle"),
        _n("bicycle", "bicycles", "bicicleta", "bicicletas", "f", _ART, "large"),
        _n("boat", "boats", "barco", "barcos", "m", _ART, "vehicle"),
        _n("house", "houses", "casa", "casas", "f", _ART, "fixed"),
        _n("room", "rooms", "habitación", "habitaciones", "f", "color size beauty", "fixed"),
        _n("door", "doors", "puerta", "puertas", "f", "color size age beauty", "fixed"),
        _n("window", "windows", "ventana", "ventanas", "f", "color size age beauty", "fixed"),
        _n("table", "tables", "mesa", "mesas", "f", _ART, "large"),
        _n("chair", "chairs", "silla", "sillas", "f", _ART, "large"),
        _n("book", "books", "libro", "libros", "m", _ART, "small"),
        _n("letter", "letters", "carta", "cartas", "f", "age", "small"),
        _n("newspaper", "newspapers", "periódico", "periódicos", "m", "age", "small"),
        _n("key", "keys", "llave", "llaves", "f", "size age", "small"),
        _n("pencil", "pencils", "lápiz", "lápices", "m", "color size age", "small"),
        _n("cup", "cups", "taza", "tazas", "f", _ART, "small"),
        _n("box", "boxes", "caja", "cajas", "f", _ART, "small"),
        _n("bag", "bags", "bolsa", "bolsas", "f", _ART, "small"),
        _n("ball", "balls", "pelota", "pelotas", "f", "color size age", "small"),
        _n("hat", "hats", "sombrero", "sombreros", "m", _ART, "small"),
        _n("shirt", "shirts", "camisa", "camisas", "f", _ART, "small"),
        _n("dress", "dresses", "vestido", "vestidos", "m", _ART, "small"),
        _n("shoe", "shoes", "zapato", "zapatos", "m", _ART, "small"),
        _n("phone", "phones", "teléfono", "teléfonos", "m", _ART, "small"),
        _n("tree", "trees", "árbol", "árboles", "m", "size age beauty", "plant"),
        _n("flower", "flowers", "flor", "flores", "f", "flowercolor size beauty", "plant"),
        _n("dog", "dogs", "perro", "perros", "m", _ANIMAL, "animal"),
        _n("cat", "cats", "gato", "gatos", "m", _ANIMAL, "animal"),
        _n("bird", "birds", "pájaro", "pájaros", "m", "animalcolor size beauty", "animal"),
        _n("horse", "horses", "caballo", "caballos", "m", _ANIMAL, "horse"),
        _n("apple", "apples", "manzana", "manzanas", "f", "fruitcolor size", "food"),
        _n("orange", "oranges", "naranja", "naranjas", "f", "size", "food"),
        _n("cake", "cakes", "pastel", "pasteles", "m", "size", "food"),
        _n("bread", "", "pan", "", "m", "", "food"),
        _n("cheese", "", "queso", "", "m", "", "food"),
        _n("fish", "", "pescado", "", "m", "", "food"),
        _n("rice", "", "arroz", "", "m", "", "food"),
        _n("soup", "", "sopa", "", "f", "", "food"),
        _n("milk", "", "leche", "", "f", "", "food"),
        _n("coffee", "", "café", "", "m", "", "food"),
        _n("tea", "", "té", "", "m", "", "food"),
        _n("juice", "", "jugo", "", "m", "", "food"),
    ]
}


@dataclass(frozen=True)
class Adj:
    en: str
    forms: tuple[str, str, str, str]  # m sg, f sg, m pl, f pl
    tags: str

    def form(self, gender: str, plural: bool) -> str:
        return self.forms[(2 if plural else 0) + (gender == "f")]


def _adj(en: str, m: str, f: str, tags: str) -> Adj:
    plural = [w + "s" if w[-1] in "aeiouáéó" else w + "es" for w in (m, f)]
    return Adj(en, (m, f, plural[0], plural[1]), tags)


ADJECTIVES: list[Adj] = [
    _adj("red", "rojo", "roja", "color fruitcolor flowercolor"),
    _adj("white", "blanco", "blanca", "color animalcolor flowercolor"),
    _adj("black", "negro", "negra", "color animalcolor"),
    _adj("green", "verde", "verde", "color fruitcolor"),
    _adj("blue", "azul", "azul", "color flowercolor"),
    _adj("yellow", "amarillo", "amarilla", "color fruitcolor flowercolor"),
    _adj("big", "grande", "grande", "size"),
    _adj("small", "pequeño", "pequeña", "size"),
    _adj("new", "nuevo", "nueva", "age"),
    _adj("old", "viejo", "vieja", "age animalage"),
    _adj("cheap", "barato", "barata", "price"),
    _adj("expensive", "caro", "cara", "price"),
    _adj("beautiful", "bonito", "bonita", "beauty"),
]

# Predicates for people. Gender-invariant ones may describe I/you/we.
PERSON_ADJS: list[Adj] = [
    _adj("tall", "alto", "alta", "person"),
    _adj("short", "bajo", "baja", "person"),
    _adj("rich", "rico", "rica", "person"),
    Adj("young", ("joven", "joven", "jóvenes", "jóvenes"), "person invariant"),
    _adj("strong", "fuerte", "fuerte", "person invariant"),
    _adj("intelligent", "inteligente", "inteligente", "person invariant"),
    _adj("poor", "pobre", "pobre", "person invariant"),
    _adj("kind", "amable", "amable", "person invariant"),
    Adj("happy", ("feliz", "feliz", "felices", "felices"), "person invariant"),
]
# States (estar) for people and animals.
STATES: list[Adj] = [
    _adj("tired", "cansado", "cansada", "animal"),
    _adj("sick", "enfermo", "enferma", "animal"),
    _adj("busy", "ocupado", "ocupada", ""),
    _adj("ready", "listo", "lista", ""),
    _adj("angry", "enojado", "enojada", "animal"),
]
PROFESSIONS: list[tuple[str, str, tuple[str, str, str, str]]] = [
    ("teacher", "teachers", ("profesor", "profesora", "profesores", "profesoras")),
    ("doctor", "doctors", ("médico", "médica", "médicos", "médicas")),
    ("cook", "cooks", ("cocinero", "cocinera", "cocineros", "cocineras")),
    ("student", "students", ("estudiante", "estudiante", "estudiantes", "estudiantes")),
]

# Transitive verbs: English base, English 3rd singular, Spanish infinitive, Let's-form ("" = none),
# the nouns it takes as objects (only inanimate ones, except for tener).
_THINGS = (
    "car bicycle boat house table chair book pencil cup box bag ball hat shirt dress shoe phone"
)
TRANSITIVE: list[tuple[str, str, str, str, str]] = [
    ("eat", "eats", "comer", "Comamos", "apple orange cake bread cheese fish rice soup"),
    ("drink", "drinks", "beber", "Bebamos", "milk coffee tea juice"),
    ("buy", "buys", "comprar", "Compremos", _THINGS + " apple orange cake bread cheese fish"),
    ("want", "wants", "querer", "", _THINGS + " apple cake coffee tea juice"),
    ("have", "has", "tener", "", _THINGS + " key dog cat bird horse"),
    ("see", "sees", "ver", "", _THINGS + " tree flower"),
    ("read", "reads", "leer", "Leamos", "book letter newspaper"),
    ("write", "writes", "escribir", "Escribamos", "letter book"),
    ("open", "opens", "abrir", "Abramos", "door window box bag book letter"),
    ("need", "needs", "necesitar", "", _THINGS + " key"),
    ("wash", "washes", "lavar", "Lavemos", "car bicycle cup shirt dress shoe window apple"),
    ("sell", "sells", "vender", "Vendamos", "car bicycle boat house table chair book apple"),
]
# Intransitive verbs: English base, 3rd singular, Spanish infinitive, can an animal do it.
INTRANSITIVE: list[tuple[str, str, str, bool]] = [
    ("run", "runs", "correr", True),
    ("sleep", "sleeps", "dormir", True),
    ("swim", "swims", "nadar", True),
    ("walk", "walks", "caminar", True),
    ("work", "works", "trabajar", False),
    ("dance", "dances", "bailar", False),
    ("sing", "sings", "cantar", False),
    ("study", "studies", "estudiar", False),
    ("cook", "cooks", "cocinar", False),
    ("read", "reads", "leer", False),
]
_EVERY_DAY = part("every day", "todos los días", "0-0 0?1 1?1 1-2")
ADVERBS: list[Part] = [
    part("", ""),
    part("today", "hoy"),
    part("now", "ahora"),
    part("a lot", "mucho", "0?0 1-0"),
    part("well", "bien"),
    _EVERY_DAY,
    part("here", "aquí"),
]
_WHEN: list[Part] = [part("", ""), part("today", "hoy"), _EVERY_DAY]  # when one goes
# Destinations of "go": English, Spanish (a + el contracts to "al": "to" and "the" both sure).
_TO_THE = "0-0 1-0 2-1"
DESTINATIONS: list[Part] = [
    part("to the park", "al parque", _TO_THE),
    part("to the market", "al mercado", _TO_THE),
    part("to the cinema", "al cine", _TO_THE),
    part("to work", "al trabajo"),
    part("to the beach", "a la playa"),
    part("to the station", "a la estación"),
    part("to the city", "a la ciudad"),
    part("to school", "a la escuela", "0-0 1?1 1-2"),
    part("home", "a casa", "0?0 0-1"),
]
# Locations for estar / hay, with the kinds of thing (Noun.place, or person) that can be there.
LOCATIONS: list[tuple[Part, str]] = [
    (part("here", "aquí"), "small large vehicle fixed plant animal horse food person"),
    (part("there", "allí"), "small large vehicle fixed plant animal horse food person"),
    (part("at home", "en casa"), "person animal small"),
    (part("in the house", "en la casa"), "person animal small large"),
    (part("in the kitchen", "en la cocina"), "person animal small large food"),
    (part("in the garden", "en el jardín"), "person animal horse large plant"),
    (part("in the park", "en el parque"), "person animal horse plant"),
    (part("on the table", "en la mesa"), "small food"),
    (part("in the box", "en la caja"), "small"),
    (part("in the car", "en el coche"), "person animal small"),
    (part("at school", "en la escuela", "0-0 1?1 1-2"), "person"),
]
LIVE_PLACES: list[Part] = [
    part("here", "aquí"),
    part("in the city", "en la ciudad"),
    part("in Spain", "en España"),
    part("in Mexico", "en México"),
    part("in Madrid", "en Madrid"),
]
NUMBERS: list[Pair] = [("two", "dos"), ("three", "tres"), ("four", "cuatro"), ("five", "cinco")]
_THE = {("m", False): "el", ("f", False): "la", ("m", True): "los", ("f", True): "las"}
_A = {"m": "un", "f": "una"}
_POSSESSIVE = {
    "my": {("m", False): "mi", ("f", False): "mi", ("m", True): "mis", ("f", True): "mis"},
    "your": {("m", False): "tu", ("f", False): "tu", ("m", True): "tus", ("f", True): "tus"},
    "our": {
        ("m", False): "nuestro",
        ("f", False): "nuestra",
        ("m", True): "nuestros",
        ("f", True): "nuestras",
    },
}

# ---------------------------------------------------------------------------------------------
# Sentence parts
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NP:
    """A noun phrase in both languages, with what the verb and predicates must agree with."""

    phrase: Part  # Spanish side empty for a dropped pronoun
    person: int
    agree: tuple[str, bool] | None  # (gender, plural), None = unknown gender
    noun: Noun | None = None

    @property
    def en(self) -> str:
        return " ".join(self.phrase.en)

    @property
    def es(self) -> str:
        return " ".join(self.phrase.es)


def _article_en(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def noun_phrase(noun: Noun, det: str, plural: bool, adj: Adj | None) -> NP:
    """``det`` is "the", "a", "bare", a number word, or a possessive (my/your/our)."""
    g = noun.gender
    en_noun = noun.en_pl if plural else noun.en
    parts = {"noun": part(en_noun, noun.es_pl if plural else noun.es)}
    if adj:
        parts["adj"] = part(adj.en, adj.form(g, plural))
    if det == "the":
        parts["det"] = part("the", _THE[g, plural])
    elif det == "a":
        parts["det"] = part(_article_en(adj.en if adj else en_noun), _A[g])
    elif det in _POSSESSIVE:
        parts["det"] = part(det, _POSSESSIVE[det][g, plural])
    elif det != "bare":
        parts["det"] = part(det, dict(NUMBERS)[det])
    phrase = arrange(parts, "det adj noun", "det noun adj")  # the adjective follows the noun
    return NP(phrase, 4 if plural else 2, (g, plural), noun)


def _random_np(
    rng: random.Random, nouns: list[str], dets: str, p_adj: float = 0.5, exclude: str = ""
) -> NP:
    noun = NOUNS[rng.choice([n for n in nouns if n != exclude])]
    if not noun.en_pl:  # mass noun: "bread" / "the bread", never plural or counted
        det = rng.choice(["bare", "the"]) if "bare" in dets.split() else "the"
        return noun_phrase(noun, det, False, None)
    det = rng.choice(dets.split())
    plural = det in ("bare", "the_pl", "my_pl", "your_pl", "our_pl") or det in dict(NUMBERS)
    det = det.removesuffix("_pl")
    adjs = [a for a in ADJECTIVES if set(a.tags.split()) & set(noun.adjs.split())]
    adj = rng.choice(adjs) if adjs and rng.random() < p_adj else None
    return noun_phrase(noun, det, plural, adj)


_OBJECT_DETS = "the the_pl a bare bare two three my my_pl your our_pl"
_SUBJECT_DETS = "the the the_pl the_pl my my_pl your our our_pl"


def _pronoun(rng: random.Random, allow: str = "I you he she we they") -> NP:
    en, es, person, agree = rng.choice([p for p in PRONOUNS if p[0] in allow.split()])
    return NP(part(en, es), person, agree)


def _dropped(subj: NP, verb: str) -> list[tuple[str, str]]:
    """A dropped pronoun lives on in the verb ending: a possible link to the verb."""
    return [] if subj.phrase.es else [("subj", verb)]


def _clause(subj: NP, en_verb: tuple[str, str], es_verb: str, rest: Part, mode: str) -> AlignedPair:
    """Assemble "subject verb rest" in both languages for mode stmt / neg / q.

    ``en_verb`` is (base, 3rd singular); English builds negation and questions with do/does,
    which has no Spanish word of its own (a possible link to the verb).
    """
    third = subj.person == 2
    parts = {"subj": subj.phrase, "rest": rest}
    maybe = _dropped(subj, "verb")
    if mode == "stmt":
        parts["verb"] = part(en_verb[1] if third else en_verb[0], es_verb)
        return _finish(arrange(parts, "subj verb rest", "subj verb rest", maybe))
    parts["verb"] = part(en_verb[0], es_verb)
    parts["do"] = part("does" if third else "do", "")
    maybe.append(("do", "verb"))
    if mode == "neg":
        parts["not"] = part("not", "no")
        return _finish(arrange(parts, "subj do not verb rest", "subj not verb rest", maybe))
    return _finish(arrange(parts, "do subj verb rest", "subj verb rest", maybe), question=True)


def _be_clause(subj: NP, es_verb: str, rest: Part, mode: str) -> AlignedPair:
    """Like _clause, for "to be" (am/is/are), which inverts instead of using do."""
    en_be = {0: "am", 2: "is"}.get(subj.person, "are")
    parts = {"subj": subj.phrase, "be": part(en_be, es_verb), "rest": rest}
    maybe = _dropped(subj, "be")
    if mode == "stmt":
        return _finish(arrange(parts, "subj be rest", "subj be rest", maybe))
    if mode == "neg":
        parts["not"] = part("not", "no")
        return _finish(arrange(parts, "subj be not rest", "subj not be rest", maybe))
    return _finish(arrange(parts, "be subj rest", "subj be rest", maybe), question=True)


def _capitalize(text: str) -> str:
    i = 1 if text[:1] in "¿¡" else 0
    return text[:i] + text[i : i + 1].upper() + text[i + 1 :]


class AlignedPair(NamedTuple):
    en: str
    es: str
    gold: Alignment  # English word i - Spanish word j (attnmt.align.words)


def _finish(body: Part, question: bool = False, exclaim: bool = False) -> AlignedPair:
    """Join words, capitalise, and punctuate like Tatoeba ("¿...?" / "¡...!" in Spanish)."""
    end = "?" if question else "!" if exclaim else "."
    opening = {"?": "¿", "!": "¡"}.get(end, "")
    parts = {"open": part("", opening), "body": body, "end": part(end, end)}
    whole = arrange(parts, "body end", "open body end", [("end", "open")] if opening else [])
    en = _capitalize(" ".join(body.en) + end)
    es = _capitalize(opening + " ".join(body.es) + end)
    if len(words(en)) != len(whole.en) or len(words(es)) != len(whole.es):
        raise AssertionError(f"demo grammar: {whole} does not count the words of {en!r} / {es!r}")
    return AlignedPair(en, es, whole.gold)


def _mode(rng: random.Random) -> str:
    return rng.choices(["stmt", "neg", "q"], weights=[5, 3, 2])[0]


# ---------------------------------------------------------------------------------------------
# Templates: each draws one random sentence pair
# ---------------------------------------------------------------------------------------------


def _transitive(rng: random.Random) -> AlignedPair:
    en_base, en_3sg, es_inf, _, objects = rng.choice(TRANSITIVE)
    mode = _mode(rng)
    if es_inf in ("comer", "beber") and rng.random() < 0.3:  # animals eat and drink too
        subj = _random_np(rng, ["dog", "cat", "bird", "horse"], _SUBJECT_DETS, p_adj=0.3)
        objects = "apple bread fish cheese" if es_inf == "comer" else "milk"  # not the coffee
    else:
        subj = _pronoun(rng, "I you he she we they" if mode != "q" else "you he she we they")
    # "No tengo un coche" is stiff Spanish ("No tengo coche"): no indefinite article under "no".
    dets = _OBJECT_DETS.replace(" a ", " ") if mode == "neg" else _OBJECT_DETS
    obj = _random_np(rng, objects.split(), dets)
    return _clause(subj, (en_base, en_3sg), conjugate(es_inf, subj.person), obj.phrase, mode)


def _intransitive(rng: random.Random) -> AlignedPair:
    en_base, en_3sg, es_inf, animal = rng.choice(INTRANSITIVE)
    mode = _mode(rng)
    if animal and rng.random() < 0.4:
        subj = _random_np(rng, ["dog", "cat", "bird", "horse"], _SUBJECT_DETS, p_adj=0.3)
    else:
        subj = _pronoun(rng, "I you he she we they" if mode != "q" else "you he she we they")
    adverb = rng.choice(ADVERBS)
    return _clause(subj, (en_base, en_3sg), conjugate(es_inf, subj.person), adverb, mode)


def _go(rng: random.Random) -> AlignedPair:
    mode = _mode(rng)
    subj = _pronoun(rng, "I you he she we they" if mode != "q" else "you he she we they")
    rest = join(rng.choice(DESTINATIONS), rng.choice(_WHEN))
    return _clause(subj, ("go", "goes"), conjugate("ir", subj.person), rest, mode)


def _lets(rng: random.Random) -> AlignedPair:
    if rng.random() < 0.3:
        return _finish(join(part("Let's go", "Vamos", "0?0 1-0"), rng.choice(DESTINATIONS)))
    en_verb, _, _, es_lets, objects = rng.choice([v for v in TRANSITIVE if v[3]])
    obj = _random_np(rng, objects.split(), "the the_pl a bare two our our_pl")
    return _finish(join(part(f"Let's {en_verb}", es_lets, "0?0 1-0"), obj.phrase))


def _live(rng: random.Random) -> AlignedPair:
    mode = _mode(rng)
    subj = _pronoun(rng, "I you he she we they" if mode != "q" else "you he she we they")
    if rng.random() < 0.4:
        house = _random_np(rng, ["house"], "a", p_adj=1.0)
        place = join(part("in", "en"), house.phrase)
    else:
        place = rng.choice(LIVE_PLACES)
    return _clause(subj, ("live", "lives"), conjugate("vivir", subj.person), place, mode)


def _ser(rng: random.Random) -> AlignedPair:
    """Predicate adjectives (ser) agree with a noun or a pronoun: "Las casas son blancas."."""
    mode = _mode(rng)
    if rng.random() < 0.6:
        candidates: list[Adj] = []
        while not candidates:  # "the big orange" leaves nothing to say about an orange's size
            subj = _random_np(rng, [n for n in NOUNS if NOUNS[n].adjs], _SUBJECT_DETS, 0.25)
            assert subj.noun is not None
            tags = set(subj.noun.adjs.split())
            for used in ADJECTIVES:  # no "the black shoes are blue": drop the subject's adj group
                if used.en == subj.en.split()[-2]:
                    tags -= set(used.tags.split())
            candidates = [a for a in ADJECTIVES if set(a.tags.split()) & tags]
        adj = rng.choice(candidates)
    else:
        subj = _pronoun(rng)
        if subj.agree is None:
            adj = rng.choice([a for a in PERSON_ADJS if "invariant" in a.tags])
        else:
            adj = rng.choice(PERSON_ADJS)
    gender, plural = subj.agree or ("m", subj.person in (3, 4))  # invariant: gender is moot
    rest = part(adj.en, adj.form(gender, plural))
    return _be_clause(subj, conjugate("ser", subj.person), rest, mode)


def _profession(rng: random.Random) -> AlignedPair:
    """Professions take no article in Spanish: "She is a doctor." -> "Ella es médica."."""
    mode = _mode(rng)
    en_sg, en_pl, forms = rng.choice(PROFESSIONS)
    invariant = forms[0] == forms[1]
    subj = _pronoun(rng, "I you he she we they" if invariant else "he she they")
    gender, _ = subj.agree or ("m", False)
    plural = subj.person in (3, 4)
    es = forms[(2 if plural else 0) + (gender == "f")]
    if plural:
        rest = part(en_pl, es)
    else:  # the English article has no Spanish word: a possible link to the noun
        rest = part(f"{_article_en(en_sg)} {en_sg}", es, "0?0 1-0")
    return _be_clause(subj, conjugate("ser", subj.person), rest, mode)


def _estar(rng: random.Random) -> AlignedPair:
    """Where something is, or how someone is (estar)."""
    mode = _mode(rng)
    if rng.random() < 0.6:
        subj = _random_np(rng, list(NOUNS), _SUBJECT_DETS, p_adj=0.3)
        assert subj.noun is not None
        place = subj.noun.place
        place = "small" if place == "food" and subj.noun.en_pl else place  # an apple, a cake
        if place in ("animal", "horse") and rng.random() < 0.3:
            state = rng.choice([s for s in STATES if "animal" in s.tags])
            g, pl = subj.agree or ("m", False)
            rest = part(state.en, state.form(g, pl))
            return _be_clause(subj, conjugate("estar", subj.person), rest, mode)
        choices = [loc for loc in LOCATIONS if place in loc[1].split()]
        choices = [loc for loc in choices if loc[0].en[-1] != subj.noun.en]  # box in box
    else:
        subj = _pronoun(rng)
        if subj.agree is not None and rng.random() < 0.4:
            state = rng.choice(STATES)
            rest = part(state.en, state.form(*subj.agree))
            return _be_clause(subj, conjugate("estar", subj.person), rest, mode)
        choices = [loc for loc in LOCATIONS if "person" in loc[1].split()]
    location, _ = rng.choice(choices)
    return _be_clause(subj, conjugate("estar", subj.person), location, mode)


def _there_is(rng: random.Random) -> AlignedPair:
    """ "There is a cat in the garden." -> "Hay un gato en el jardín." (hay never agrees)."""
    places = ("small", "animal", "horse", "plant")
    nouns = [n for n, x in NOUNS.items() if x.en_pl and x.place in places]
    np = _random_np(rng, nouns, "a a bare two three four five", p_adj=0.4)
    assert np.noun is not None
    kind = np.noun.place
    location, _ = rng.choice(
        [loc for loc in LOCATIONS if kind in loc[1].split() and loc[0].en[-1] != np.noun.en]
    )
    plural = np.person == 4
    question = rng.random() < 0.3
    if question:  # "is" carries hay's meaning; "there" has no word of its own
        there = part("are there" if plural else "is there", "hay", "0-0 1?0")
    else:
        there = part("there are" if plural else "there is", "hay", "0?0 1-0")
    return _finish(join(there, np.phrase, location), question=question)


def _where(rng: random.Random) -> AlignedPair:
    """Wh-questions invert in Spanish too: "¿Dónde está el perro?", "¿Dónde vive ella?"."""
    r = rng.random()
    where = part("where", "dónde")
    if r < 0.5:
        subj = _random_np(rng, list(NOUNS), _SUBJECT_DETS, p_adj=0.3)
        be = part("is" if subj.person == 2 else "are", conjugate("estar", subj.person))
        return _finish(join(where, be, subj.phrase), question=True)
    subj = _pronoun(rng)
    parts = {"where": where, "subj": subj.phrase}
    if r < 0.7:
        en_be = {0: "am", 2: "is"}.get(subj.person, "are")
        parts["verb"] = part(en_be, conjugate("estar", subj.person))
        order = "where verb subj"
        return _finish(arrange(parts, order, order, _dropped(subj, "verb")), question=True)
    en_verb, es_inf = rng.choice([("live", "vivir"), ("work", "trabajar"), ("study", "estudiar")])
    parts["do"] = part("does" if subj.person == 2 else "do", "")
    parts["verb"] = part(en_verb, conjugate(es_inf, subj.person))
    maybe = [("do", "verb"), *_dropped(subj, "verb")]
    return _finish(arrange(parts, "where do subj verb", "where verb subj", maybe), question=True)


TEMPLATES: list[tuple[Callable[[random.Random], AlignedPair], float]] = [
    (_transitive, 34),
    (_intransitive, 9),
    (_ser, 14),
    (_estar, 13),
    (_go, 8),
    (_there_is, 7),
    (_where, 5),
    (_profession, 4),
    (_live, 3),
    (_lets, 3),
]


def generate_demo_aligned(n: int = 4000, seed: int = 0) -> list[AlignedPair]:
    """Up to ``n`` distinct English->Spanish pairs with their gold, the same for the same seed.

    The fixed phrases come first ("Let's go." always, even for n=1), then random sentences from
    the templates. Each English sentence appears once (its translation and its gold are unique
    by construction), and DEMO_EXAMPLES other than "Let's go." never appear.
    """
    rng = random.Random(seed)
    held_out = set(DEMO_EXAMPLES[1:])
    out: dict[str, AlignedPair] = {}
    for en, es, links in FIXED_PHRASES[: max(n, 0)]:
        out[en] = AlignedPair(en, es, part(en, es, links).gold)
    functions, weights = zip(*TEMPLATES)
    misses = 0
    while len(out) < n and misses < 2000 + 10 * n:  # "up to n": stop if the grammar runs dry
        pair = rng.choices(functions, weights)[0](rng)
        seen = out.get(pair.en)
        if seen is not None and seen != pair:  # one English sentence, one translation and gold
            raise AssertionError(f"demo grammar: {seen} and {pair}")
        if seen is not None or pair.en in held_out:
            misses += 1
            continue
        out[pair.en] = pair
    return list(out.values())


def generate_demo_corpus(n: int = 4000, seed: int = 0) -> list[Pair]:
    """The pairs of :func:`generate_demo_aligned`, without their gold."""
    return [(p.en, p.es) for p in generate_demo_aligned(n, seed)]


def gold_path(corpus: str | Path) -> Path:
    """Where the gold alignments of a demo corpus file go: beside it, ``demo.tsv`` ->
    ``demo.align``."""
    return Path(corpus).with_suffix(".align")


def write_demo_tsv(path: str | Path, n: int = 4000, seed: int = 0, gold: bool = False) -> Path:
    """Write the demo corpus as ``English<TAB>Spanish`` lines, atomically (temp file + rename).

    ``gold``: also write its alignments to :func:`gold_path`, line k for pair k (Pharaoh,
    ``i-j`` sure and ``i?j`` possible, English word first)."""
    pairs = generate_demo_aligned(n, seed)
    if gold:
        write_pharaoh(gold_path(path), [p.gold for p in pairs])
    return write_text_atomic(path, "".join(f"{p.en}\t{p.es}\n" for p in pairs))


def demo_gold(
    pairs: Sequence[Pair],
    n: int = 4000,
    seed: int = 0,
    reverse: bool = False,
    lowercase: bool = False,
) -> list[Alignment]:
    """The gold of pairs taken from the demo corpus (a run's test.tsv, say), source word first.

    ``n``, ``seed``, ``reverse`` and ``lowercase`` as the run made its corpus: ``data.demo_size``,
    ``train.seed``, ``data.reverse`` (Spanish->English: links transposed), ``data.lowercase``.
    """
    fold = str.lower if lowercase else str
    table = {(fold(p.en), fold(p.es)): p.gold for p in generate_demo_aligned(n, seed)}
    out = []
    for k, (src, tgt) in enumerate(pairs, 1):
        gold = table.get((tgt, src) if reverse else (src, tgt))
        if gold is None:
            raise ValueError(f"pair {k} is not in the demo corpus (n={n}, seed={seed}): {src!r}")
        out.append(gold.transposed() if reverse else gold)
    return out
