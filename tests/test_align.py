"""Word alignments: segmentation, Pharaoh files, AER, subword merging, forced alignment through
the model interface (a copying model gives the diagonal), and the guided-alignment loss."""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from attnmt.align import (
    Alignment,
    align_pairs,
    alignment_error,
    attention_links,
    forced_attention,
    format_links,
    guided_alignment_loss,
    head_scores,
    hypothesis_links,
    parse_pharaoh,
    pick_head,
    piece_links,
    read_pharaoh,
    word_attention,
    word_ids,
    words,
    write_pharaoh,
)
from attnmt.checkpoint import build_model
from attnmt.config import Config
from attnmt.corpus import CorpusError
from attnmt.data import gold_batch
from attnmt.interface import EncoderOut, Seq2Seq, StepAttention
from attnmt.tokenizer import BOS_ID, SentencePieceTokenizer, WordTokenizer
from attnmt.translate import TorchEngine, Translator

# ---------------------------------------------------------------------------------------------
# Words and Pharaoh text
# ---------------------------------------------------------------------------------------------


def test_words_split_punctuation_and_keep_contractions():
    assert words("Let's go.") == ["Let's", "go", "."]
    assert words("¿Dónde  estás?") == ["¿", "Dónde", "estás", "?"]
    assert words("I don't know!") == ["I", "don't", "know", "!"]
    decomposed = unicodedata.normalize("NFD", "¿Está aquí?")  # "a" + combining accent
    assert words(decomposed) == ["¿", "Está", "aquí", "?"]  # NFC first: one word, not three
    assert words("") == []


def test_pharaoh_round_trip_sure_and_possible():
    gold = parse_pharaoh("0-0 2?1 1-2 3p3")  # "p" as lilt's / awesome-align's aer.py write it
    assert gold.sure == {(0, 0), (1, 2)}
    assert gold.possible == {(0, 0), (1, 2), (2, 1), (3, 3)}  # S ⊆ P
    assert gold.to_pharaoh() == "0-0 1-2 2?1 3?3"
    assert parse_pharaoh(gold.to_pharaoh()) == gold
    assert parse_pharaoh("1?1 1-1").sure == {(1, 1)}  # a link given both ways is sure
    assert parse_pharaoh("   ") == Alignment()
    assert gold.transposed().sure == {(0, 0), (2, 1)}
    assert format_links({(2, 0), (0, 1), (1, 1)}) == "0-1 1-1 2-0"


@pytest.mark.parametrize("bad", ["0-", "a-1", "1-2-3", "-1-2", "1:2", "1 - 2"])
def test_parse_pharaoh_rejects_bad_links(bad):
    with pytest.raises(ValueError, match="bad link"):
        parse_pharaoh(bad)


def test_read_pharaoh_errors_name_file_and_line(tmp_path):
    path = tmp_path / "gold.align"
    path.write_text("0-0 1-1\r\n0-0 1x1\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=rf"^{path}:2: bad link '1x1'"):
        read_pharaoh(path)
    path.write_text("0-0 1-1\n0-0 2?1\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=rf"^{path}:2: link 2-1 is outside the pair"):
        read_pharaoh(path, lengths=[(2, 2), (2, 2)])
    with pytest.raises(CorpusError, match=rf"^{path}: 2 alignment lines for 3 sentence pairs"):
        read_pharaoh(path, lengths=[(3, 3)] * 3)
    with pytest.raises(CorpusError, match="file not found"):
        read_pharaoh(tmp_path / "missing.align")
    (tmp_path / "latin1.align").write_bytes(b"0-0 \xe9\n")
    with pytest.raises(CorpusError, match="not UTF-8"):
        read_pharaoh(tmp_path / "latin1.align")


def test_write_and_read_pharaoh(tmp_path):
    golds = [parse_pharaoh("0-0 1?0"), Alignment(), parse_pharaoh("2-1")]
    path = write_pharaoh(tmp_path / "a.align", golds)
    assert path.read_text(encoding="utf-8") == "0-0 1?0\n\n2-1\n"
    assert read_pharaoh(path, lengths=[(2, 1), (1, 1), (3, 2)]) == golds
    write_pharaoh(tmp_path / "h.align", [{(1, 0), (0, 1)}])  # hypothesis links: all "-"
    assert (tmp_path / "h.align").read_text(encoding="utf-8") == "0-1 1-0\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.align", "h.align"]  # no temp left


# ---------------------------------------------------------------------------------------------
# AER
# ---------------------------------------------------------------------------------------------


def test_aer_perfect_is_zero():
    gold = parse_pharaoh("0-0 1-2 2-1 3?1")
    score = alignment_error([{(0, 0), (1, 2), (2, 1)}], [gold])
    assert (score.aer, score.precision, score.recall) == (0.0, 1.0, 1.0)
    # a possible link more is no error either: |A∩P| grows with |A|
    assert alignment_error([{(0, 0), (1, 2), (2, 1), (3, 1)}], [gold]).aer == 0.0


def test_aer_known_values():
    # S = {0-0, 1-1}, P = S + {2-1}; A = {0-0, 2-1, 2-2}: |A∩S| = 1, |A∩P| = 2, |A| = 3, |S| = 2
    gold = parse_pharaoh("0-0 1-1 2?1")
    score = alignment_error([{(0, 0), (2, 1), (2, 2)}], [gold])
    assert score.aer == pytest.approx(1 - (1 + 2) / (3 + 2))
    assert score.precision == pytest.approx(2 / 3) and score.recall == pytest.approx(1 / 2)
    assert (score.links, score.sure) == (3, 2)
    # corpus level: sums over sentences before dividing, not a mean of sentence AERs
    two = alignment_error([{(0, 0)}, {(5, 5)}], [parse_pharaoh("0-0"), parse_pharaoh("0-0 1-1")])
    assert two.aer == pytest.approx(1 - (1 + 1) / (2 + 3))
    assert alignment_error([set()], [parse_pharaoh("0-0")]).aer == 1.0
    assert "AER 40.00" in score.report()


def test_aer_edge_cases():
    empty = alignment_error([set()], [Alignment()])
    assert (empty.aer, empty.precision, empty.recall) == (0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="2 hypothesis alignments for 1 gold"):
        alignment_error([set(), set()], [Alignment()])


# ---------------------------------------------------------------------------------------------
# Subword pieces -> words
# ---------------------------------------------------------------------------------------------


def test_word_ids_for_sentencepiece_style_pieces():
    assert word_ids("Let's go.", ["▁Let", "'", "s", "▁go", "."]) == [0, 0, 0, 1, 2]
    assert word_ids("¿Dónde?", ["▁¿", "D", "ónde", "?"]) == [0, 1, 1, 2]
    assert word_ids("Let's go.", ["Let's", "go", "."]) == [0, 1, 2]  # word tokenizer pieces
    # a bare "▁" belongs to the next word; <unk> covers text up to where the next piece matches
    pieces = ["▁I", "▁like", "▁", "<unk>", "andú", "."]
    assert word_ids("I like ñandú.", pieces) == [0, 1, 2, 2, 2, 3]
    assert word_ids("a ñ b", ["▁a", "▁", "<unk>", "▁b"]) == [0, 1, 1, 2]
    with pytest.raises(ValueError, match="no words"):
        word_ids("  ", ["▁"])


def test_word_ids_with_a_trained_sentencepiece_model():
    from attnmt.demo_corpus import generate_demo_corpus

    pairs = generate_demo_corpus(300, seed=0)
    sp = SentencePieceTokenizer.train([s for s, _ in pairs], vocab_size=120)
    multi = 0
    for text, _ in pairs[:100]:
        pieces = sp.pieces(text)
        ids = word_ids(text, pieces)
        ws = words(text)
        assert ids == sorted(ids) and set(ids) == set(range(len(ws))), (text, pieces)
        for k, word in enumerate(ws):  # each word is exactly its pieces
            assert "".join(p.replace("▁", "") for p, w in zip(pieces, ids) if w == k) == word
        multi += len(pieces) > len(ws)
    assert multi > 20  # the vocabulary is small enough that words split


def test_word_attention_sums_source_pieces_and_averages_target_pieces():
    # 3 target pieces (words 0, 1, 1) x 4 source pieces (words 0, 0, 1, 2) + the <eos> column
    attn = torch.tensor(
        [
            [0.1, 0.2, 0.1, 0.1, 0.5],
            [0.5, 0.0, 0.1, 0.4, 0.0],
            [0.0, 0.1, 0.6, 0.1, 0.2],
        ]
    )
    merged = word_attention(attn, [0, 0, 1, 2], [0, 1, 1])
    expected = torch.tensor([[0.3, 0.1, 0.1], [(0.5 + 0.1) / 2, (0.1 + 0.6) / 2, (0.4 + 0.1) / 2]])
    assert torch.allclose(merged, expected)
    # row 0 attends most to <eos>, which is not a word: its best word is word 0
    links = attention_links(attn, "aa b c", ["▁a", "a", "▁b", "▁c"], "x yy", ["▁x", "▁y", "y"])
    assert links == {(0, 0), (1, 1)}
    assert attention_links(attn, "a", [], "x", ["▁x"]) == frozenset()


# ---------------------------------------------------------------------------------------------
# Forced alignment through the model interface
# ---------------------------------------------------------------------------------------------


@dataclass
class CopyState:
    t: int
    read: list[Tensor]  # the token each step was given, for the test to inspect


class Copier(Seq2Seq):
    """A scripted model that copies: at step t it predicts source token t and attends to
    position t. Two layers x two heads: layer 0 and layer 1 head 0 are diagonal, layer 1 head 1
    mostly attends to the mirrored position."""

    def __init__(self):
        super().__init__()
        self.read: list[Tensor] = []

    def encode(self, src, src_mask):
        return EncoderOut(memory=src.unsqueeze(-1).float(), src_mask=src_mask, extra=src)

    def init_state(self, enc):
        return CopyState(0, [])

    def decode_step(self, y_prev, state, enc):
        self.read.append(y_prev.cpu())
        src, mask = enc.extra, enc.src_mask  # (B, S)
        B, S = src.shape
        lengths = mask.sum(1)  # (B,) with <eos>
        pos = torch.clamp(torch.full((B,), state.t), max=lengths - 1)  # (B,)
        mirror = torch.clamp(lengths - 2 - state.t, min=0)  # (B,) mirror over the real words
        diag = torch.nn.functional.one_hot(pos, S).float()  # (B, S)
        flip = 0.8 * torch.nn.functional.one_hot(mirror, S).float() + 0.2 * diag  # (B, S)
        weights = torch.stack([torch.stack([diag, diag], 1), torch.stack([diag, flip], 1)], 1)
        logp = torch.full((B, 50), -30.0)  # (B, V)
        logp[torch.arange(B), src[torch.arange(B), pos]] = 0.0
        scores = torch.log(weights).masked_fill(~mask[:, None, None, :], -math.inf)
        return logp.log_softmax(-1), CopyState(state.t + 1, []), StepAttention(weights, scores)


VOCAB = ["the", "red", "car", "is", "here", ".", "el", "coche", "rojo", "está", "aquí"]


def copy_translator(tokenizer: str = "word", batch_size: int = 2) -> tuple[Translator, Copier]:
    cfg = Config()
    cfg.decode.batch_size, cfg.decode.beam, cfg.decode.n_best = batch_size, 1, 1
    cfg.decode.max_len_a, cfg.decode.max_len_b = 1.0, 2
    if tokenizer == "word":
        tok = WordTokenizer(["<pad>", "<bos>", "<eos>", "<unk>", *VOCAB])
    else:
        text = ["the red car is here .", "el coche rojo está aquí .", "the car", "red here"] * 5
        tok = SentencePieceTokenizer.train(text, vocab_size=30)
    model = Copier()
    return Translator(TorchEngine(model), tok, tok, cfg), model


PAIRS = [("the red car is here .", "the red car is here ."), ("the car .", "the car ."), ("", "")]


def test_align_pairs_on_a_copying_model_is_diagonal():
    translator, model = copy_translator()
    links = align_pairs(translator, PAIRS)
    assert links[0] == {(k, k) for k in range(6)}
    assert links[1] == {(0, 0), (1, 1), (2, 2)}
    assert links[2] == frozenset()  # nothing to align
    # teacher forcing: the model read <bos> and then the given translation, never its own output
    t = translator.tgt_tok
    first = [int(r[0]) for r in model.read]  # batches are sorted short first: "the car ." alone
    assert first[:3] == [BOS_ID, *t.encode("the car")]


def test_align_pairs_layer_and_head():
    translator, _ = copy_translator()
    pair = [PAIRS[0]]
    diagonal = {(k, k) for k in range(6)}
    assert align_pairs(translator, pair)[0] == diagonal  # last layer, heads averaged
    assert align_pairs(translator, pair, layer=0, head=1)[0] == diagonal
    mirrored = {(5 - k, k) for k in range(6)}
    assert align_pairs(translator, pair, layer=1, head=1)[0] == mirrored
    with pytest.raises(ValueError, match="layer 2: the model has 2"):
        align_pairs(translator, pair, layer=2)
    with pytest.raises(ValueError, match="head 2: the model has 2 head"):
        align_pairs(translator, pair, head=2)


def test_align_pairs_merges_subword_pieces():
    translator, _ = copy_translator("sentencepiece")
    pair = ("the red car is here .", "the red car is here .")
    assert len(translator.src_tok.pieces(pair[0])) > len(words(pair[0]))  # words do split
    assert align_pairs(translator, [pair])[0] == {(k, k) for k in range(6)}


def test_forced_attention_shapes_drop_eos():
    translator, _ = copy_translator()
    attn = forced_attention(translator, PAIRS)
    assert [tuple(a.shape) for a in attn[:2]] == [(6, 2, 2, 6), (3, 2, 2, 3)]
    assert torch.allclose(attn[0].sum(-1), torch.ones(6, 2, 2))  # no <eos> mass: copying


def test_head_scores_rank_the_diagonal_heads_first():
    translator, _ = copy_translator()
    golds = [Alignment.of((k, k) for k in range(6)), Alignment.of((k, k) for k in range(3))]
    scores = head_scores(translator, PAIRS[:2], golds)
    assert set(scores) == {(0, 0), (0, 1), (0, -1), (1, 0), (1, 1), (1, -1)}
    assert scores[1, -1].aer == 0.0 and scores[0, 0].aer == 0.0
    assert scores[1, 1].aer > 0.5


def test_hypothesis_links_from_translate_with_attention():
    translator, _ = copy_translator()
    text = "the red car is here ."
    hyp = translator.translate([text], with_attention=True)[0][0]
    assert hyp.text == "the red car is here."
    assert hypothesis_links(hyp, text) == {(k, k) for k in range(6)}
    with pytest.raises(ValueError, match="with_attention"):
        hypothesis_links(translator.translate([text])[0][0], text)


@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_align_pairs_runs_on_both_models(arch):
    cfg = Config()
    cfg.model.arch, cfg.model.emb_dim, cfg.model.hidden, cfg.model.dropout = arch, 16, 16, 0.0
    cfg.model.layers, cfg.model.heads, cfg.model.ff_dim = 2, 2, 32
    tok = WordTokenizer(["<pad>", "<bos>", "<eos>", "<unk>", *VOCAB])
    torch.manual_seed(0)
    model = build_model(cfg.model, tok.vocab_size, tok.vocab_size).eval()
    translator = Translator(TorchEngine(model), tok, tok, cfg)
    pairs = [("the red car is here .", "el coche rojo está aquí ."), ("the car .", "el coche .")]
    head = 1 if arch == "transformer" else None  # the LSTM has one layer and one head
    for links, (src, tgt) in zip(align_pairs(translator, pairs, layer=0, head=head), pairs):
        assert sorted(j for _, j in links) == list(range(len(words(tgt))))  # one per target word
        assert all(0 <= i < len(words(src)) for i, _ in links)


def test_pick_head():
    w = torch.arange(2 * 3 * 2 * 4, dtype=torch.float).view(2, 3, 2, 4)  # (B, L, nh, S)
    assert torch.equal(pick_head(w), w[:, -1].mean(1))
    assert torch.equal(pick_head(w, layer=0, head=1), w[:, 0, 1])
    assert torch.equal(pick_head(w, layer=-3), w[:, 0].mean(1))


# ---------------------------------------------------------------------------------------------
# Guided alignment: gold on subword positions and the loss
# ---------------------------------------------------------------------------------------------


def test_piece_links_and_gold_batch():
    # source pieces: words 0 0 1 ; target pieces: words 0 1 1
    links = piece_links({(0, 1), (1, 0)}, [0, 0, 1], [0, 1, 1])
    assert links == [(0, 1), (0, 2), (1, 1), (1, 2), (2, 0)]
    gold = gold_batch([links, [(0, 0)]], S=4, T=4)  # padded to 4 x 4 (the <eos> row/col too)
    assert gold.shape == (2, 4, 4)
    assert gold[0].tolist() == [[0, 0, 1, 0], [1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]]
    assert gold[1].sum() == 1 and gold[1, 0, 0] == 1
    assert piece_links({(5, 0)}, [0], [0]) == []  # a word with no piece (cut) links nothing
    with pytest.raises(ValueError, match="outside"):
        gold_batch([[(4, 0)]], S=4, T=4)


def log_attention(scores: Tensor) -> Tensor:
    return torch.log_softmax(scores, -1)


def test_loss_is_minimised_by_the_gold_distribution():
    torch.manual_seed(0)
    gold = torch.tensor([[[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])  # (1, 2, 3): row 0 has two links
    target = gold / gold.sum(-1, keepdim=True)
    at_gold = guided_alignment_loss(target.log(), gold)
    entropy = -(target[0, 0, :2] * target[0, 0, :2].log()).sum() / 2  # row 1 is one-hot: 0
    assert at_gold == pytest.approx(float(entropy))
    for _ in range(20):
        other = log_attention(torch.randn(1, 2, 3) * 3)
        assert guided_alignment_loss(other, gold) > at_gold
    # and gradient descent on the scores drives the attention to the gold rows
    scores = torch.zeros(1, 2, 3, requires_grad=True)
    opt = torch.optim.SGD([scores], lr=5.0)
    for _ in range(300):
        opt.zero_grad()
        guided_alignment_loss(log_attention(scores), gold).backward()
        opt.step()
    assert torch.allclose(log_attention(scores).exp(), target, atol=0.02)


def test_loss_known_value_is_a_mean_over_gold_rows():
    log_attn = torch.log(torch.tensor([[[0.5, 0.5], [0.8, 0.2], [0.3, 0.7]]]))  # (1, 3, 2)
    gold = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]])  # row 1 has no gold
    expected = -(math.log(0.5) + math.log(0.7)) / 2
    assert guided_alignment_loss(log_attn, gold) == pytest.approx(expected)


def test_loss_gradient_survives_a_saturated_softmax():
    # Scores like the (one source word takes 100%): the gold word's weight underflows to
    # 0 in float32, yet the loss is finite and pulls toward the gold word.
    scores = torch.tensor([[[-6.7, 7.7, 120.0]]], requires_grad=True)  # (1, 1, 3)
    gold = torch.tensor([[[0.0, 1.0, 0.0]]])
    assert torch.softmax(scores, -1)[0, 0, 1] == 0.0  # the gold word's weight underflowed
    loss = guided_alignment_loss(log_attention(scores), gold)
    loss.backward()
    assert loss.item() == pytest.approx(120.0 - 7.7, abs=1e-3)  # finite: -log of exp(-112.3)
    grad = scores.grad[0, 0]
    assert torch.isfinite(grad).all()
    assert grad[1] < 0 and grad[2] > 0  # raise the gold word's score, lower the saturated one


def test_loss_respects_padding_and_rows_without_gold():
    torch.manual_seed(1)
    scores = torch.randn(2, 3, 4)
    src_mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    scores = scores.masked_fill(~src_mask[:, None, :], -math.inf).requires_grad_()
    gold = torch.zeros(2, 3, 4)
    gold[0, 0, 1] = gold[0, 1, 2] = gold[1, 0, 0] = 1.0  # rows (0, 2), (1, 1), (1, 2): no gold
    loss = guided_alignment_loss(log_attention(scores), gold)
    loss.backward()
    grad = scores.grad
    assert math.isfinite(loss.item()) and torch.isfinite(grad).all()  # -inf padding: no NaN
    assert (grad[1, :, 2:] == 0).all()  # padded source positions get no gradient
    assert (grad[0, 2] == 0).all() and (grad[1, 1:] == 0).all()  # rows without gold neither
    assert (grad[0, 0] != 0).all()  # a gold row moves every score in it
    # changing a row without gold does not change the loss
    moved = scores.detach().clone()
    moved[0, 2] += 5.0
    assert guided_alignment_loss(log_attention(moved), gold) == pytest.approx(loss.item())
    # no gold at all: zero, with a graph (a batch without gold still trains on the token loss)
    none = guided_alignment_loss(log_attention(scores), torch.zeros(2, 3, 4))
    assert none.item() == 0.0 and none.requires_grad


def test_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="differ"):
        guided_alignment_loss(torch.zeros(1, 2, 3), torch.zeros(1, 3, 2))


# ---------------------------------------------------------------------------------------------
# Models: forward(..., align=(layer, head)) for guided alignment
# ---------------------------------------------------------------------------------------------


def tiny_model(arch: str, **model) -> Seq2Seq:
    cfg = Config()
    cfg.model.arch = arch
    cfg.model.hidden, cfg.model.emb_dim, cfg.model.ff_dim = 16, 16, 32
    cfg.model.layers, cfg.model.heads, cfg.model.dropout = 2, 2, 0.0
    for key, value in model.items():
        setattr(cfg.model, key, value)
    torch.manual_seed(0)
    return build_model(cfg.model, 20, 20).eval()


def padded_batch() -> tuple[Tensor, Tensor, Tensor]:
    src = torch.tensor([[5, 6, 7, 2], [8, 2, 0, 0]])  # (B, S): <eos> = 2, padding = 0
    tgt_in = torch.tensor([[BOS_ID, 9, 10, 11], [BOS_ID, 12, 0, 0]])  # (B, T)
    return src, src != 0, tgt_in


@pytest.mark.parametrize(
    "arch, model, align",
    [
        ("lstm", {}, (0, 0)),
        ("lstm", {"input_feeding": False}, (-1, -1)),
        ("transformer", {}, (0, 1)),
        ("transformer", {}, (-1, -1)),
    ],
)
@torch.no_grad()
def test_forward_log_attention_is_what_decoding_attends(arch, model, align):
    """The log attention of ``forward(..., align)`` is the log of the weights the same layer and
    head give one decode step at a time (heads averaged for head -1), padding at -inf; and the
    logits are those of a plain forward."""
    m = tiny_model(arch, **model)
    src, mask, tgt_in = padded_batch()
    logits, log_attn = m(src, mask, tgt_in, align=align)
    torch.testing.assert_close(logits, m(src, mask, tgt_in), atol=1e-5, rtol=0)
    assert log_attn.shape == (2, 4, 4)  # (B, T, S)
    assert torch.isneginf(log_attn[1, :, 2:]).all()  # padded source positions
    enc, steps = m.encode(src, mask), []
    state = m.init_state(enc)
    for t in range(tgt_in.size(1)):
        _, state, attn = m.decode_step(tgt_in[:, t], state, enc)
        steps.append(pick_head(attn.weights, *align))
    stepped = torch.stack(steps, 1)  # (B, T, S)
    torch.testing.assert_close(log_attn.exp(), stepped, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch, align, message", [
    ("lstm", (1, 0), "the LSTM has 1 attention layer"),
    ("lstm", (0, 1), "the model has 1 head"),
    ("transformer", (2, 0), "the model has 2 attention layer"),
    ("transformer", (0, 2), "the model has 2 head"),
])  # fmt: skip
def test_forward_rejects_a_layer_or_head_the_model_lacks(arch, align, message):
    src, mask, tgt_in = padded_batch()
    with pytest.raises(ValueError, match=message):
        tiny_model(arch)(src, mask, tgt_in, align=align)
