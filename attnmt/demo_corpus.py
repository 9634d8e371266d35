"""The embedded English->Spanish demo corpus: a small grammar that writes correct sentence pairs.

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
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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

# Always in the corpus, "Let's go." first so that even a tiny corpus has it.
FIXED_PHRASES: list[Pair] = [
    ("Let's go.", "Vamos."),
    ("Let's go!", "¡Vamos!"),
    ("Let's go home.", "Vamos a casa."),
    ("Let's eat.", "Comamos."),
    ("Let's eat!", "¡Comamos!"),
    ("Let's drink.", "Bebamos."),
    ("Let's dance.", "Bailemos."),
    ("Let's dance!", "¡Bailemos!"),
    ("Let's sing.", "Cantemos."),
    ("Let's read.", "Leamos."),
    ("Let's work.", "Trabajemos."),
    ("Let's run!", "¡Corramos!"),
    ("Let's swim.", "Nademos."),
    ("Let's walk.", "Caminemos."),
    ("Let's study.", "Estudiemos."),
    ("Let's cook.", "Cocinemos."),
    ("Let's sleep.", "Durmamos."),
    ("Hello.", "Hola."),
    ("Thank you.", "Gracias."),
    ("Thank you very much.", "Muchas gracias."),
    ("Good morning.", "Buenos días."),
    ("Good afternoon.", "Buenas tardes."),
    ("Good night.", "Buenas noches."),
    ("Goodbye.", "Adiós."),
    ("See you tomorrow.", "Hasta mañana."),
    ("See you later.", "Hasta luego."),
    ("I'm sorry.", "Lo siento."),
    ("Excuse me.", "Perdón."),
    ("Please.", "Por favor."),
    ("Of course.", "Por supuesto."),
    ("Help!", "¡Ayuda!"),
    ("Watch out!", "¡Cuidado!"),
    ("Good luck!", "¡Buena suerte!"),
    ("Cheers!", "¡Salud!"),
    ("Come here.", "Ven aquí."),
    ("Wait.", "Espera."),
    ("Be careful.", "Ten cuidado."),
    ("I understand.", "Entiendo."),
    ("I don't understand.", "No entiendo."),
    ("I don't know.", "No sé."),
    ("How are you?", "¿Cómo estás?"),
    ("I am fine.", "Estoy bien."),
    ("What time is it?", "¿Qué hora es?"),
    ("Nice to meet you.", "Mucho gusto."),
    ("Happy birthday!", "¡Feliz cumpleaños!"),
]

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
ADVERBS: list[Pair] = [
    ("", ""),
    ("today", "hoy"),
    ("now", "ahora"),
    ("a lot", "mucho"),
    ("well", "bien"),
    ("every day", "todos los días"),
    ("here", "aquí"),
]
# Destinations of "go": English, Spanish (a + el contracts to "al").
DESTINATIONS: list[Pair] = [
    ("to the park", "al parque"),
    ("to the market", "al mercado"),
    ("to the cinema", "al cine"),
    ("to work", "al trabajo"),
    ("to the beach", "a la playa"),
    ("to the station", "a la estación"),
    ("to the city", "a la ciudad"),
    ("to school", "a la escuela"),
    ("home", "a casa"),
]
# Locations for estar / hay, with the kinds of thing (Noun.place, or person) that can be there.
LOCATIONS: list[tuple[str, str, str]] = [
    ("here", "aquí", "small large vehicle fixed plant animal horse food person"),
    ("there", "allí", "small large vehicle fixed plant animal horse food person"),
    ("at home", "en casa", "person animal small"),
    ("in the house", "en la casa", "person animal small large"),
    ("in the kitchen", "en la cocina", "person animal small large food"),
    ("in the garden", "en el jardín", "person animal horse large plant"),
    ("in the park", "en el parque", "person animal horse plant"),
    ("on the table", "en la mesa", "small food"),
    ("in the box", "en la caja", "small"),
    ("in the car", "en el coche", "person animal small"),
    ("at school", "en la escuela", "person"),
]
LIVE_PLACES: list[Pair] = [
    ("here", "aquí"),
    ("in the city", "en la ciudad"),
    ("in Spain", "en España"),
    ("in Mexico", "en México"),
    ("in Madrid", "en Madrid"),
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
# Phrases
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NP:
    """A noun phrase in both languages, with what the verb and predicates must agree with."""

    en: str
    es: str  # "" for a dropped pronoun
    person: int
    agree: tuple[str, bool] | None  # (gender, plural), None = unknown gender
    noun: Noun | None = None


def _article_en(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def noun_phrase(noun: Noun, det: str, plural: bool, adj: Adj | None) -> NP:
    """``det`` is "the", "a", "bare", a number word, or a possessive (my/your/our)."""
    g = noun.gender
    en_noun = noun.en_pl if plural else noun.en
    es_noun = noun.es_pl if plural else noun.es
    en_body = f"{adj.en} {en_noun}" if adj else en_noun
    es_body = f"{es_noun} {adj.form(g, plural)}" if adj else es_noun  # adjective follows the noun
    if det == "the":
        en, es = f"the {en_body}", f"{_THE[g, plural]} {es_body}"
    elif det == "a":
        en, es = f"{_article_en(en_body)} {en_body}", f"{_A[g]} {es_body}"
    elif det == "bare":
        en, es = en_body, es_body
    elif det in _POSSESSIVE:
        en, es = f"{det} {en_body}", f"{_POSSESSIVE[det][g, plural]} {es_body}"
    else:
        en, es = f"{det} {en_body}", f"{dict(NUMBERS)[det]} {es_body}"
    return NP(en, es, 4 if plural else 2, (g, plural), noun)


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
    return NP(en, es, person, agree)


def _clause(subj: NP, en_verb: tuple[str, str], es_verb: str, rest: tuple[str, str], mode: str):
    """Assemble "subject verb rest" in both languages for mode stmt / neg / q.

    ``en_verb`` is (base, 3rd singular); English builds negation and questions with do/does.
    """
    third = subj.person == 2
    en_rest, es_rest = rest
    if mode == "stmt":
        en = [subj.en, en_verb[1] if third else en_verb[0], en_rest]
        es = [subj.es, es_verb, es_rest]
    elif mode == "neg":
        en = [subj.en, "does not" if third else "do not", en_verb[0], en_rest]
        es = [subj.es, "no", es_verb, es_rest]
    else:
        en = ["does" if third else "do", subj.en, en_verb[0], en_rest]
        es = [subj.es, es_verb, es_rest]
    return _finish(en, es, question=mode == "q")


def _be_clause(subj: NP, es_verb: str, rest: tuple[str, str], mode: str):
    """Like _clause, for "to be" (am/is/are), which inverts instead of using do."""
    en_be = {0: "am", 2: "is"}.get(subj.person, "are")
    en_rest, es_rest = rest
    if mode == "stmt":
        en, es = [subj.en, en_be, en_rest], [subj.es, es_verb, es_rest]
    elif mode == "neg":
        en, es = [subj.en, en_be, "not", en_rest], [subj.es, "no", es_verb, es_rest]
    else:
        en, es = [en_be, subj.en, en_rest], [subj.es, es_verb, es_rest]
    return _finish(en, es, question=mode == "q")


def _capitalize(text: str) -> str:
    i = 1 if text[:1] in "¿¡" else 0
    return text[:i] + text[i : i + 1].upper() + text[i + 1 :]


def _finish(en: list[str], es: list[str], question: bool = False, exclaim: bool = False) -> Pair:
    """Join words, capitalise, and punctuate like Tatoeba ("¿...?" / "¡...!" in Spanish)."""
    en_text = " ".join(w for w in en if w)
    es_text = " ".join(w for w in es if w)
    if question:
        en_text, es_text = en_text + "?", "¿" + es_text + "?"
    elif exclaim:
        en_text, es_text = en_text + "!", "¡" + es_text + "!"
    else:
        en_text, es_text = en_text + ".", es_text + "."
    return _capitalize(en_text), _capitalize(es_text)


def _mode(rng: random.Random) -> str:
    return rng.choices(["stmt", "neg", "q"], weights=[5, 3, 2])[0]


# ---------------------------------------------------------------------------------------------
# Templates: each draws one random sentence pair
# ---------------------------------------------------------------------------------------------


def _transitive(rng: random.Random) -> Pair:
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
    return _clause(subj, (en_base, en_3sg), conjugate(es_inf, subj.person), (obj.en, obj.es), mode)


def _intransitive(rng: random.Random) -> Pair:
    en_base, en_3sg, es_inf, animal = rng.choice(INTRANSITIVE)
    mode = _mode(rng)
    if animal and rng.random() < 0.4:
        subj = _random_np(rng, ["dog", "cat", "bird", "horse"], _SUBJECT_DETS, p_adj=0.3)
    else:
        subj = _pronoun(rng, "I you he she we they" if mode != "q" else "you he she we they")
    adverb = rng.choice(ADVERBS)
    return _clause(subj, (en_base, en_3sg), conjugate(es_inf, subj.person), adverb, mode)


def _go(rng: random.Random) -> Pair:
    mode = _mode(rng)
    subj = _pronoun(rng, "I you he she we they" if mode != "q" else "you he she we they")
    dest_en, dest_es = rng.choice(DESTINATIONS)
    when_en, when_es = rng.choice([("", ""), ("today", "hoy"), ("every day", "todos los días")])
    rest = (f"{dest_en} {when_en}".strip(), f"{dest_es} {when_es}".strip())
    return _clause(subj, ("go", "goes"), conjugate("ir", subj.person), rest, mode)


def _lets(rng: random.Random) -> Pair:
    if rng.random() < 0.3:
        dest_en, dest_es = rng.choice(DESTINATIONS)
        return _finish(["Let's go", dest_en], ["Vamos", dest_es])
    en_verb, _, _, es_lets, objects = rng.choice([v for v in TRANSITIVE if v[3]])
    obj = _random_np(rng, objects.split(), "the the_pl a bare two our our_pl")
    return _finish(["Let's", en_verb, obj.en], [es_lets, obj.es])


def _live(rng: random.Random) -> Pair:
    mode = _mode(rng)
    subj = _pronoun(rng, "I you he she we they" if mode != "q" else "you he she we they")
    if rng.random() < 0.4:
        house = _random_np(rng, ["house"], "a", p_adj=1.0)
        place = (f"in {house.en}", f"en {house.es}")
    else:
        place = rng.choice(LIVE_PLACES)
    return _clause(subj, ("live", "lives"), conjugate("vivir", subj.person), place, mode)


def _ser(rng: random.Random) -> Pair:
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
    return _be_clause(subj, conjugate("ser", subj.person), (adj.en, adj.form(gender, plural)), mode)


def _profession(rng: random.Random) -> Pair:
    """Professions take no article in Spanish: "She is a doctor." -> "Ella es médica."."""
    mode = _mode(rng)
    en_sg, en_pl, forms = rng.choice(PROFESSIONS)
    invariant = forms[0] == forms[1]
    subj = _pronoun(rng, "I you he she we they" if invariant else "he she they")
    gender, _ = subj.agree or ("m", False)
    plural = subj.person in (3, 4)
    en = en_pl if plural else f"{_article_en(en_sg)} {en_sg}"
    es = forms[(2 if plural else 0) + (gender == "f")]
    return _be_clause(subj, conjugate("ser", subj.person), (en, es), mode)


def _estar(rng: random.Random) -> Pair:
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
            rest = (state.en, state.form(g, pl))
            return _be_clause(subj, conjugate("estar", subj.person), rest, mode)
        choices = [loc for loc in LOCATIONS if place in loc[2].split()]
        choices = [loc for loc in choices if loc[0].split()[-1] != subj.noun.en]  # box in box
    else:
        subj = _pronoun(rng)
        if subj.agree is not None and rng.random() < 0.4:
            state = rng.choice(STATES)
            rest = (state.en, state.form(*subj.agree))
            return _be_clause(subj, conjugate("estar", subj.person), rest, mode)
        choices = [loc for loc in LOCATIONS if "person" in loc[2].split()]
    loc_en, loc_es, _ = rng.choice(choices)
    return _be_clause(subj, conjugate("estar", subj.person), (loc_en, loc_es), mode)


def _there_is(rng: random.Random) -> Pair:
    """ "There is a cat in the garden." -> "Hay un gato en el jardín." (hay never agrees)."""
    places = ("small", "animal", "horse", "plant")
    nouns = [n for n, x in NOUNS.items() if x.en_pl and x.place in places]
    np = _random_np(rng, nouns, "a a bare two three four five", p_adj=0.4)
    assert np.noun is not None
    kind = np.noun.place
    loc_en, loc_es, _ = rng.choice(
        [loc for loc in LOCATIONS if kind in loc[2].split() and loc[0].split()[-1] != np.noun.en]
    )
    plural = np.person == 4
    question = rng.random() < 0.3
    if question:
        en = ["are there" if plural else "is there", np.en, loc_en]
    else:
        en = ["there are" if plural else "there is", np.en, loc_en]
    return _finish(en, ["hay", np.es, loc_es], question=question)


def _where(rng: random.Random) -> Pair:
    """Wh-questions invert in Spanish too: "¿Dónde está el perro?", "¿Dónde vive ella?"."""
    r = rng.random()
    if r < 0.5:
        subj = _random_np(rng, list(NOUNS), _SUBJECT_DETS, p_adj=0.3)
        be = "is" if subj.person == 2 else "are"
        return _finish(
            ["where", be, subj.en], ["dónde", conjugate("estar", subj.person), subj.es], True
        )
    subj = _pronoun(rng)
    if r < 0.7:
        be = {0: "am", 2: "is"}.get(subj.person, "are")
        es = ["dónde", conjugate("estar", subj.person), subj.es]
        return _finish(["where", be, subj.en], es, question=True)
    en_verb, es_inf = rng.choice([("live", "vivir"), ("work", "trabajar"), ("study", "estudiar")])
    do = "does" if subj.person == 2 else "do"
    es = ["dónde", conjugate(es_inf, subj.person), subj.es]
    return _finish(["where", do, subj.en, en_verb], es, question=True)


TEMPLATES: list[tuple[Callable[[random.Random], Pair], float]] = [
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


def generate_demo_corpus(n: int = 4000, seed: int = 0) -> list[Pair]:
    """Up to ``n`` distinct English->Spanish pairs, the same for the same seed.

    The fixed phrases come first ("Let's go." always, even for n=1), then random sentences from
    the templates. Each English sentence appears once (its translation is unique by construction),
    and DEMO_EXAMPLES other than "Let's go." never appear.
    """
    rng = random.Random(seed)
    held_out = set(DEMO_EXAMPLES[1:])
    out: dict[str, str] = {}
    for en, es in FIXED_PHRASES[: max(n, 0)]:
        out[en] = es
    functions, weights = zip(*TEMPLATES)
    misses = 0
    while len(out) < n and misses < 2000 + 10 * n:  # "up to n": stop if the grammar runs dry
        en, es = rng.choices(functions, weights)[0](rng)
        if out.get(en, es) != es:  # one English sentence, one translation: a grammar bug if not
            raise AssertionError(f"demo grammar: {en!r} -> {out[en]!r} and {es!r}")
        if en in out or en in held_out:
            misses += 1
            continue
        out[en] = es
    return list(out.items())


def write_demo_tsv(path: str | Path, n: int = 4000, seed: int = 0) -> Path:
    """Write the demo corpus as ``English<TAB>Spanish`` lines, atomically (temp file + rename)."""
    text = "".join(f"{en}\t{es}\n" for en, es in generate_demo_corpus(n, seed))
    return write_text_atomic(path, text)
