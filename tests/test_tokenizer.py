"""Tokenizers: fixed special ids, SentencePiece training, round trips, <unk>, detokenisation."""

from __future__ import annotations

import pytest

from attnmt.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIALS,
    UNK_ID,
    SentencePieceTokenizer,
    WordTokenizer,
    tokenizer_from_dict,
    train_tokenizer,
)

CORPUS = [
    "the cat sat on the mat.",
    "the dog ate the bread.",
    "a cat and a dog are friends.",
    "we eat apples and bread every day.",
    "they want to see the sea.",
    "I see the cat on the mat.",
    "you want the dog to eat.",
    "the friends sat and ate apples.",
] * 3
HELD_OUT = ["the cat ate the apples.", "we see a dog."]


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def sp(request) -> SentencePieceTokenizer:
    # 5000 is far too many pieces for this corpus: training must shrink it, not fail.
    return SentencePieceTokenizer.train(CORPUS, vocab_size=5000, model_type=request.param)


@pytest.fixture(scope="module")
def word() -> WordTokenizer:
    return WordTokenizer.train(CORPUS, vocab_size=1000)


def test_sentencepiece_special_ids(sp):
    assert [sp.id_to_piece(i) for i in (PAD_ID, BOS_ID, EOS_ID, UNK_ID)] == SPECIALS
    assert sp.sp.pad_id() == PAD_ID and sp.sp.bos_id() == BOS_ID
    assert sp.sp.eos_id() == EOS_ID and sp.sp.unk_id() == UNK_ID


def test_word_special_ids(word):
    assert [word.id_to_piece(i) for i in range(4)] == SPECIALS
    assert word.vocab[:4] == SPECIALS


def test_sentencepiece_vocab_shrinks(sp):
    assert 4 < sp.vocab_size < 5000


def test_sentencepiece_round_trip(sp):
    for text in CORPUS[:8] + HELD_OUT:
        ids = sp.encode(text)
        assert ids and all(i > EOS_ID for i in ids)  # no specials inside an encoding
        assert UNK_ID not in ids  # every character was seen
        assert sp.decode(ids) == text
        assert len(sp.pieces(text)) == len(ids)


def test_sentencepiece_decode_drops_specials(sp):
    ids = sp.encode("the cat")
    assert sp.decode([BOS_ID, *ids, EOS_ID, PAD_ID, PAD_ID]) == "the cat"


def test_sentencepiece_bad_model_type_and_empty_corpus():
    with pytest.raises(ValueError, match="sp_model_type"):
        SentencePieceTokenizer.train(CORPUS, 50, model_type="char")
    with pytest.raises(ValueError, match="empty"):
        SentencePieceTokenizer.train(["", "  "], 50)


@pytest.mark.parametrize("text", ["the 🐈 sat", "猫が座った", "ΑΒΓ the cat", "🙂", ""])
def test_unknown_characters_map_to_unk(sp, word, text):
    for tok in (sp, word):
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        if text:
            assert UNK_ID in ids
        assert isinstance(tok.decode(ids), str)  # decoding <unk> never crashes
        assert len(tok.pieces(text)) == len(ids)


def test_word_unknown_word(word):
    ids = word.encode("the zebra sat")
    assert ids[1] == UNK_ID and ids[0] != UNK_ID and ids[2] != UNK_ID
    assert word.decode(ids) == "the <unk> sat"
    assert word.id_to_piece(10_000) == "<unk>"
    assert word.decode([10_000, ids[0]]) == "the"  # out-of-range ids are dropped, not a crash


def test_word_round_trip(word):
    for text in CORPUS[:8] + HELD_OUT:
        assert word.decode(word.encode(text)) == text


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("¿Dónde está el perro?", ["¿", "Dónde", "está", "el", "perro", "?"]),
        ("¡Hola, amigo!", ["¡", "Hola", ",", "amigo", "!"]),
        ("Let's go.", ["Let's", "go", "."]),
        ("It costs 5%; (really) [yes] {no}: ok!", None),
        ("¿Qué? ¡No!", None),
    ],
)
def test_word_detokenisation(text, tokens):
    tok = WordTokenizer.train([text], vocab_size=100)
    if tokens is not None:
        assert WordTokenizer.split(text) == tokens
    assert tok.decode(tok.encode(text)) == text


def test_word_vocab_order_and_limit():
    tok = WordTokenizer.train(["b a a c c c"], vocab_size=6)
    assert tok.vocab == SPECIALS + ["c", "a"]  # most frequent first, then the limit
    assert WordTokenizer.train(["b a a"], vocab_size=2).vocab == SPECIALS
    tie = WordTokenizer.train(["y x z"], vocab_size=10)
    assert tie.vocab[4:] == ["x", "y", "z"]  # ties sorted alphabetically: deterministic


def test_word_vocab_must_start_with_specials():
    with pytest.raises(ValueError, match="<pad>"):
        WordTokenizer(["hello", "<pad>", "<bos>", "<eos>", "<unk>"])


def test_to_dict_round_trip(sp, word):
    for tok in (sp, word):
        d = tok.to_dict()
        assert d["kind"] == tok.kind
        again = tokenizer_from_dict(d)
        assert type(again) is type(tok)
        assert again.vocab_size == tok.vocab_size
        for text in CORPUS[:8] + HELD_OUT + ["the 🐈 zebra"]:
            assert again.encode(text) == tok.encode(text)
            assert again.decode(again.encode(text)) == tok.decode(tok.encode(text))


def test_train_tokenizer_dispatch():
    assert isinstance(train_tokenizer("word", CORPUS, 100, "bpe"), WordTokenizer)
    sp = train_tokenizer("sentencepiece", CORPUS, 60, "unigram")
    assert isinstance(sp, SentencePieceTokenizer)
    assert sp.vocab_size <= 60
    with pytest.raises(ValueError, match="bytes"):
        train_tokenizer("bytes", CORPUS, 100, "bpe")


def test_unknown_tokenizer_kind():
    with pytest.raises(ValueError, match="chars"):
        tokenizer_from_dict({"kind": "chars"})
    with pytest.raises(ValueError, match="None"):
        tokenizer_from_dict({})
