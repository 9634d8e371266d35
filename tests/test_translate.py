"""Translator and DecodeOptions: option resolution, input order, n-best, attention shapes, empty
input, batching, the model's train/eval mode, checkpoint round trip."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from attnmt.checkpoint import Checkpoint, CheckpointError, build_model
from attnmt.config import Config, ConfigError, DecodeConfig
from attnmt.corpus import normalize
from attnmt.tokenizer import WordTokenizer
from attnmt.translate import DecodeOptions, Hypothesis, TorchEngine, Translator

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
    model = build_model(cfg.model, src_tok.vocab_size, tgt_tok.vocab_size).eval()
    return Translator(TorchEngine(model), src_tok, tgt_tok, cfg)


def opts(tr: Translator, **overrides) -> DecodeOptions:
    return DecodeOptions.resolve(tr.options, **overrides)


def as_tuples(hyps: list[list[Hypothesis]]) -> list[list[tuple]]:
    return [[(h.ids, h.text, h.finished) for h in nbest] for nbest in hyps]


@pytest.mark.parametrize("beam", [1, 3])
def test_results_in_input_order(beam):
    tr = make_translator()
    o = opts(tr, beam=beam, n_best=1)
    together = tr.translate(TEXTS, o)
    alone = [tr.translate([t], o)[0] for t in TEXTS]
    assert as_tuples(together) == as_tuples(alone)
    backwards = tr.translate(TEXTS[::-1], o)
    assert as_tuples(backwards) == as_tuples(together)[::-1]
    for nbest, text in zip(together, TEXTS):
        assert nbest[0].src_tokens == tr.src_tok.pieces(text) + ["<eos>"]
    assert "<unk>" in together[0][0].src_tokens  # "and" is not in the source vocabulary


def test_nbest_lists():
    tr = make_translator()
    found = tr.translate(TEXTS, opts(tr, beam=4, n_best=3))
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
    for nbest in tr.translate(TEXTS + [""], opts(tr, beam=beam), with_attention=True):
        for h in nbest:
            rows = len(h.tokens) + (1 if h.finished else 0)
            assert len(h.attention) == rows
            assert all(len(r) == len(h.src_tokens) for r in h.attention)
            assert all(sum(r) == pytest.approx(1.0, abs=1e-5) for r in h.attention)


def test_unfinished_when_limit_too_short():
    tr = make_translator(max_len_a=0.0, max_len_b=2)
    for nbest in tr.translate(TEXTS, opts(tr, beam=2, n_best=2), with_attention=True):
        for h in nbest:
            assert len(h.ids) <= 2
            assert len(h.attention) == len(h.tokens) + (1 if h.finished else 0)


def test_empty_and_unknown_input():
    tr = make_translator()
    found = tr.translate(["", "   ", "😀 xyzzy"], opts(tr, beam=2))
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
    tr.cfg.data.lowercase = True  # the data section (not decode options) says how text is read
    _, _, pieces = tr.encode_sources(["WE   EAT"])
    assert pieces == [["<unk>", "eat", "<eos>"]]  # lowercased "we" is not the vocabulary's "We"


def test_options_resolve_from_the_config_defaults():
    dc = DecodeConfig()
    o = DecodeOptions.resolve(dc)
    assert dataclasses.asdict(o) == dataclasses.asdict(dc)  # defaults live in DecodeConfig only
    assert DecodeOptions.resolve(dc, beam=None, min_len=None) == o  # None means "keep"
    assert DecodeOptions.resolve(o, min_len=3, early_stop=True).min_len == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.beam = 2  # type: ignore[misc]
    with pytest.raises(TypeError, match="unknown decode options: beams"):
        DecodeOptions.resolve(dc, beams=3)


@pytest.mark.parametrize(
    "config, overrides, beam, n_best",
    [
        ((5, 1), {"n_best": 7}, 7, 7),  # a default beam widens to the n_best asked for
        ((5, 1), {"n_best": 3}, 5, 3),
        ((5, 3), {"beam": 2}, 2, 2),  # a default n_best narrows to the beam asked for
        ((5, 3), {"beam": 4}, 4, 3),
        ((5, 3), {}, 5, 3),
        ((2, 1), {"beam": 6, "n_best": 4}, 6, 4),
    ],
)
def test_beam_and_n_best_resolve_in_one_place(config, overrides, beam, n_best):
    dc = DecodeConfig(beam=config[0], n_best=config[1])
    o = DecodeOptions.resolve(dc, **overrides)
    assert (o.beam, o.n_best) == (beam, n_best)
    assert (dc.beam, dc.n_best) == config  # the config is read, never written


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"beam": 0}, "decode.beam: must be >= 1, got 0"),
        ({"beam": 2, "n_best": 3}, "decode.n_best: must be between 1 and beam (2), got 3"),
        ({"n_best": 0}, "decode.n_best: must be >= 1, got 0"),
        ({"min_len": -1}, "decode.min_len: must be >= 0, got -1"),
        ({"batch_size": 0}, "decode.batch_size: must be >= 1, got 0"),
        ({"length_penalty": float("inf")}, "decode.length_penalty: must be a finite number"),
        ({"max_len_a": float("nan")}, "decode.max_len_a: must be >= 0"),
        ({"max_len_a": -1.0}, "decode.max_len_a: must be >= 0"),
        ({"max_len_a": 0.0, "max_len_b": 0}, "allows no output"),
    ],
)
def test_bad_options_are_refused_by_name(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        DecodeOptions.resolve(DecodeConfig(), **overrides)
    with pytest.raises(ValueError, match="decode."):  # what the CLI and the server catch
        make_translator().with_options(**overrides)


def test_with_options_is_a_new_translator():
    tr = make_translator()
    greedy = tr.with_options(beam=1, min_len=2)
    assert (greedy.options.beam, greedy.options.min_len) == (1, 2)
    assert (tr.options.beam, tr.options.min_len) == (3, 0)  # the original keeps its defaults
    assert greedy.engine is tr.engine and (tr.cfg.decode.beam, tr.cfg.decode.min_len) == (3, 0)
    assert as_tuples(greedy.translate(TEXTS)) == as_tuples(tr.translate(TEXTS, greedy.options))


class RecordingEngine(TorchEngine):
    """A TorchEngine that records the batches and options it is asked to search."""

    def __init__(self, model, refuse: str | None = None):
        super().__init__(model)
        self.calls: list[tuple[int, DecodeOptions]] = []
        self.refuse = refuse

    def check(self, options):
        if self.refuse:
            raise ValueError(self.refuse)

    def search(self, sources, options, with_attention):
        self.calls.append((len(sources), options))
        return super().search(sources, options, with_attention)


@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_batches_follow_the_options_batch_size(batch_size):
    tr = make_translator()
    engine = RecordingEngine(tr.model)
    spied = Translator(engine, tr.src_tok, tr.tgt_tok, tr.cfg)
    o = opts(tr, batch_size=batch_size, beam=2)
    assert as_tuples(spied.translate(TEXTS + ["", " "], o)) == as_tuples(
        tr.translate(TEXTS + ["", " "], o)
    )
    sizes = [n for n, _ in engine.calls]
    assert sum(sizes) == len(TEXTS)  # the empty lines never reach the engine
    assert max(sizes) <= batch_size and len(sizes) == -(-len(TEXTS) // batch_size)
    assert all(seen is o for _, seen in engine.calls)


def test_engine_can_refuse_options():
    tr = make_translator()
    refusing = Translator(
        RecordingEngine(tr.model, "min_len: not here"), tr.src_tok, tr.tgt_tok, tr.cfg
    )
    with pytest.raises(ValueError, match="min_len: not here"):
        refusing.translate([""])  # refused before anything, even for nothing to decode
    with pytest.raises(ValueError, match="min_len: not here"):
        refusing.with_options(min_len=1)


@pytest.mark.parametrize("training", [True, False])
def test_translating_keeps_the_models_mode(training):
    """Bug: Translator's constructor called .eval() on the model it was given, so training had
    to undo it; now the engine is in eval mode only while it searches."""
    tr = make_translator()
    model = build_model(tr.cfg.model, tr.src_tok.vocab_size, tr.tgt_tok.vocab_size)
    model.train(training)
    wrapped = Translator(TorchEngine(model), tr.src_tok, tr.tgt_tok, tr.cfg)
    assert model.training is training
    for beam in (1, 2):
        wrapped.translate(TEXTS, opts(wrapped, beam=beam))
        assert model.training is training
        assert all(m.training is training for m in model.modules())


def test_dropout_is_off_while_translating():
    tr = make_translator()
    cfg = dataclasses.replace(tr.cfg, model=dataclasses.replace(tr.cfg.model, dropout=0.5))
    torch.manual_seed(0)
    training = build_model(cfg.model, tr.src_tok.vocab_size, tr.tgt_tok.vocab_size).train()
    frozen = build_model(cfg.model, tr.src_tok.vocab_size, tr.tgt_tok.vocab_size).eval()
    frozen.load_state_dict(training.state_dict())
    o = opts(tr, beam=2, n_best=2)
    a = Translator(TorchEngine(training), tr.src_tok, tr.tgt_tok, cfg).translate(TEXTS, o)
    b = Translator(TorchEngine(frozen), tr.src_tok, tr.tgt_tok, cfg).translate(TEXTS, o)
    assert as_tuples(a) == as_tuples(b)
    assert [h.score for n in a for h in n] == pytest.approx([h.score for n in b for h in n])


def test_from_checkpoint_round_trip(tmp_path):
    tr = make_translator(seed=4)
    Checkpoint(tr.cfg, tr.model.state_dict(), tr.src_tok, tr.tgt_tok).save(tmp_path / "best.pt")
    for path in (tmp_path / "best.pt", tmp_path):
        again = Translator.from_checkpoint(path)
        assert again.cfg == tr.cfg and again.options == tr.options
        assert not again.model.training  # its own model, for inference only
        for beam, n_best in ((1, 1), (3, 2)):
            o = opts(tr, beam=beam, n_best=n_best)
            a = tr.translate(TEXTS, o, with_attention=True)
            b = again.translate(TEXTS, o, with_attention=True)
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
        model = build_model(cfg.model, tr.src_tok.vocab_size, tr.tgt_tok.vocab_size)
        tr = Translator(TorchEngine(model), tr.src_tok, tr.tgt_tok, cfg)
    tr.model.train()
    q = quantize_int8(tr.model)
    assert tr.model.training and not q.training  # the copy is for inference; the model as was
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
    qt = Translator(TorchEngine(q), tr.src_tok, tr.tgt_tok, tr.cfg)
    assert [len(h) for h in qt.translate(TEXTS, opts(qt, beam=2, n_best=2))] == [2] * len(TEXTS)


def test_quantize_is_cpu_only(tmp_path) -> None:
    with pytest.raises(ValueError, match="CPU"):
        Translator.from_checkpoint(tmp_path / "none.pt", device="cuda", quantize=True)
