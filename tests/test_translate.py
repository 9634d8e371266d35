"""Translator: input order, n-best, attention shapes, empty input, checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

from attnmt.checkpoint import Checkpoint, CheckpointError, build_model
from attnmt.config import Config
from attnmt.corpus import normalize
from attnmt.tokenizer import WordTokenizer
from attnmt.translate import Hypothesis, Translator

SRC_TEXT = ["I see the dog.", "We eat bread.", "They want a car.", "You see apples."]
TGT_TEXT = ["Veo el perro.", "Comemos pan.", "Ellos quieren un coche.", "Ves manzanas."]
TEXTS = [
    "We want the dog and the car and the bread.",
    "I see.",
    "They eat apples.",
    "You want bread.",
    "We see the car.",
]


def make_translator(seed: int = 0, **decode) -> Translator:
    cfg = Config()
    for key, value in dict(emb_dim=16, hidden=16, dropout=0.0).items():
        setattr(cfg.model, key, value)
    cfg.data.tokenizer = "word"
    cfg.decode.beam, cfg.decode.n_best, cfg.decode.batch_size = 3, 1, 2
    cfg.decode.max_len_a, cfg.decode.max_len_b = 1.0, 3
    for key, value in decode.items():
        setattr(cfg.decode, key, value)
    src_tok = WordTokenizer.train(SRC_TEXT, vocab_size=100)
    tgt_tok = WordTokenizer.train(TGT_TEXT, vocab_size=100)
    torch.manual_seed(seed)
    model = build_model(cfg.model, src_tok.vocab_size, tgt_tok.vocab_size)
    return Translator(model, src_tok, tgt_tok, cfg)


def as_tuples(hyps: list[list[Hypothesis]]) -> list[list[tuple]]:
    return [[(h.ids, h.text, h.finished) for h in nbest] for nbest in hyps]


@pytest.mark.parametrize("beam", [1, 3])
def test_results_in_input_order(beam):
    tr = make_translator()
    together = tr.translate(TEXTS, beam=beam, n_best=1)
    alone = [tr.translate([t], beam=beam, n_best=1)[0] for t in TEXTS]
    assert as_tuples(together) == as_tuples(alone)
    backwards = tr.translate(TEXTS[::-1], beam=beam, n_best=1)
    assert as_tuples(backwards) == as_tuples(together)[::-1]
    for nbest, text in zip(together, TEXTS):
        assert nbest[0].src_tokens == tr.src_tok.pieces(text) + ["<eos>"]
    assert "<unk>" in together[0][0].src_tokens  # "and" is not in the source vocabulary


def test_nbest_lists():
    tr = make_translator()
    found = tr.translate(TEXTS, beam=4, n_best=3)
    assert len(found) == len(TEXTS)
    for nbest in found:
        assert len(nbest) == 3
        scores = [h.score for h in nbest]
        assert scores == sorted(scores, reverse=True)
        for h in nbest:
            assert h.tokens == [tr.tgt_tok.id_to_piece(i) for i in h.ids]
            assert h.text == tr.tgt_tok.decode(h.ids)
            assert h.attention is None  # only on request
    defaults = tr.translate(TEXTS)  # cfg.decode: beam 3, n_best 1
    assert all(len(n) == 1 for n in defaults)


@pytest.mark.parametrize("beam", [1, 3])
def test_with_attention_shapes(beam):
    tr = make_translator()
    for nbest in tr.translate(TEXTS + [""], beam=beam, n_best=1, with_attention=True):
        for h in nbest:
            rows = len(h.tokens) + (1 if h.finished else 0)
            assert len(h.attention) == rows
            assert all(len(r) == len(h.src_tokens) for r in h.attention)
            assert all(sum(r) == pytest.approx(1.0, abs=1e-5) for r in h.attention)


def test_unfinished_when_limit_too_short():
    tr = make_translator(max_len_a=0.0, max_len_b=1)
    for nbest in tr.translate(TEXTS, beam=2, n_best=2, with_attention=True):
        for h in nbest:
            assert len(h.ids) <= 1
            assert len(h.attention) == len(h.tokens) + (1 if h.finished else 0)


def test_empty_and_unknown_input():
    tr = make_translator()
    found = tr.translate(["", "   ", "😀 xyzzy"], beam=2, n_best=1)
    assert found[0][0].src_tokens == ["<eos>"]
    assert found[1][0].src_tokens == ["<eos>"]
    assert found[0][0].text == found[1][0].text == ""  # nothing to translate gives nothing
    assert found[0][0].finished and found[0][0].logprob == 0.0
    assert found[2][0].src_tokens == ["<unk>", "<unk>", "<eos>"]
    assert all(isinstance(n[0].text, str) for n in found)
    assert tr.translate([]) == []


def test_normalisation():
    assert normalize("  Cafe\u0301   au  lait ", lowercase=False) == "Caf\u00e9 au lait"
    assert normalize("HOLA", lowercase=True) == "hola"
    tr = make_translator()
    tr.cfg.data.lowercase = True
    _, _, pieces = tr.encode_sources(["WE   EAT"])
    assert pieces == [["<unk>", "eat", "<eos>"]]  # lowercased "we" is not the vocabulary's "We"


@pytest.mark.parametrize("beam, n_best", [(2, 3), (0, 1), (3, 0)])
def test_bad_beam_or_nbest(beam, n_best):
    with pytest.raises(ValueError, match="n_best"):
        make_translator().translate(TEXTS, beam=beam, n_best=n_best)


def test_from_checkpoint_round_trip(tmp_path):
    tr = make_translator(seed=4)
    Checkpoint(tr.cfg, tr.model.state_dict(), tr.src_tok, tr.tgt_tok).save(tmp_path / "best.pt")
    for path in (tmp_path / "best.pt", tmp_path):
        again = Translator.from_checkpoint(path)
        assert again.cfg == tr.cfg
        assert not again.model.training
        for beam, n_best in ((1, 1), (3, 2)):
            a = tr.translate(TEXTS, beam=beam, n_best=n_best, with_attention=True)
            b = again.translate(TEXTS, beam=beam, n_best=n_best, with_attention=True)
            assert as_tuples(a) == as_tuples(b)
            for x, y in zip(a, b):
                for hx, hy in zip(x, y):
                    assert hx.score == pytest.approx(hy.score, abs=1e-6)
                    assert torch.allclose(
                        torch.tensor(hx.attention), torch.tensor(hy.attention), atol=1e-6
                    )


def test_from_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        Translator.from_checkpoint(tmp_path / "missing.pt")
    torch.save({"w": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not an attnmt checkpoint"):
        Translator.from_checkpoint(tmp_path / "plain.pt")


@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_quantized_translator_replaces_linear_and_lstm_and_stays_close(arch: str) -> None:
    from torch.ao.nn.quantized import dynamic as qd

    from attnmt.translate import quantize_int8

    tr = make_translator()
    if arch == "transformer":
        cfg = tr.cfg
        cfg.model.arch, cfg.model.heads, cfg.model.ff_dim, cfg.model.layers = arch, 2, 32, 2
        torch.manual_seed(0)
        tr = Translator(
            build_model(cfg.model, tr.src_tok.vocab_size, tr.tgt_tok.vocab_size),
            tr.src_tok, tr.tgt_tok, cfg,
        )  # fmt: skip
    q = quantize_int8(tr.model)
    kinds = {type(m) for m in q.modules()}
    assert qd.Linear in kinds and torch.nn.Linear not in kinds
    if arch == "lstm":
        assert qd.LSTM in kinds and torch.nn.LSTM not in kinds
    # The float model is untouched: quantization works on a copy.
    assert any(type(m) is torch.nn.Linear for m in tr.model.modules())

    # Same step log-probabilities up to int8 rounding of weights and activations.
    src, src_mask, _ = tr.encode_sources(TEXTS)
    with torch.inference_mode():
        ref = tr.model.decode_step(
            torch.full((len(TEXTS),), 1), tr.model.init_state(tr.model.encode(src, src_mask)),
            tr.model.encode(src, src_mask),
        )[0]  # fmt: skip
        enc = q.encode(src, src_mask)
        got = q.decode_step(torch.full((len(TEXTS),), 1), q.init_state(enc), enc)[0]
    assert got.shape == ref.shape
    assert torch.allclose(got.exp(), ref.exp(), atol=0.02)
    qt = Translator(q, tr.src_tok, tr.tgt_tok, tr.cfg)
    assert [len(h) for h in qt.translate(TEXTS, beam=2, n_best=2)] == [2] * len(TEXTS)


def test_quantize_is_cpu_only(tmp_path) -> None:
    with pytest.raises(ValueError, match="CPU"):
        Translator.from_checkpoint(tmp_path / "none.pt", device="cuda", quantize=True)


def test_negative_min_len_is_an_error():
    tr = make_translator()
    tr.cfg.decode.min_len = -1
    with pytest.raises(ValueError, match="decode.min_len must be >= 0"):
        tr.translate(TEXTS, beam=1)
