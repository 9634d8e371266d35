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
        ({"no_repeat_ngram": -1}, "decode.no_repeat_ngram: must be >= 0, got -1"),
        ({"repetition_penalty": 0.0}, "decode.repetition_penalty: must be a number >= 1e-06"),
        ({"repetition_penalty": 1e-50}, "decode.repetition_penalty: must be a number >= 1e-06"),
        ({"repetition_penalty": -1.2}, "decode.repetition_penalty: must be a number >= 1e-06"),
        ({"repetition_penalty": float("nan")}, "decode.repetition_penalty: must be a number"),
        ({"repetition_penalty": float("inf")}, "decode.repetition_penalty: must be a number"),
        ({"batch_size": 0}, "decode.batch_size: must be >= 1, got 0"),
        ({"length_penalty": float("inf")}, "decode.length_penalty: must be a finite number"),
        ({"max_len_a": float("nan")}, "decode.max_len_a: must be >= 0"),
        ({"max_len_a": -1.0}, "decode.max_len_a: must be >= 0"),
        ({"max_len_a": 0.0, "max_len_b": 0}, "allows no output"),
        ({"split_sentences": "yes"}, "decode.split_sentences: must be true or false, got 'yes'"),
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


# --------------------------------------------------------------------------------------------
# Issue #13: a line of several sentences is translated sentence by sentence
# --------------------------------------------------------------------------------------------

FIRST, SECOND = "I see the dog.", "We eat bread."
TWO = f"{FIRST}  {SECOND}"  # two spaces: the gap between the sentences is kept as it is


def split_opts(tr: Translator, split: bool, **overrides) -> DecodeOptions:
    return opts(tr, split_sentences=split, **overrides)


def test_split_is_on_by_default():
    assert DecodeConfig().split_sentences and make_translator().options.split_sentences


@pytest.mark.parametrize("beam", [1, 3])
def test_two_sentences_are_translated_apart_and_joined(beam):
    tr = make_translator()
    off = split_opts(tr, False, beam=beam, n_best=1)
    (joined,) = tr.translate([TWO], split_opts(tr, True, beam=beam, n_best=1))[0]
    first, second = (tr.translate([s], off)[0][0] for s in (FIRST, SECOND))
    assert joined.text == f"{first.text}  {second.text}"
    assert joined.ids == first.ids + second.ids and joined.tokens == first.tokens + second.tokens
    assert joined.score == pytest.approx(first.score + second.score)
    assert joined.logprob == pytest.approx(first.logprob + second.logprob)
    assert joined.finished == (first.finished and second.finished)
    assert joined.src_tokens == first.src_tokens[:-1] + second.src_tokens
    # Off, the line is one source: the same pieces, decoded in one pass.
    (whole,) = tr.translate([TWO], off)[0]
    assert whole.src_tokens == joined.src_tokens == tr.src_tok.pieces(TWO) + ["<eos>"]


def test_spacing_between_sentences_is_kept_and_around_them_dropped():
    tr = make_translator()
    off = split_opts(tr, False)
    a, b = (tr.translate([s], off)[0][0].text for s in (FIRST, SECOND))
    texts = [f"  {FIRST} {SECOND}\t", f"{FIRST}\n{SECOND}"]
    found = tr.translate(texts, split_opts(tr, True))
    assert [h[0].text for h in found] == [f"{a} {b}", f"{a}\n{b}"]


def test_one_sentence_lines_decode_exactly_as_with_splitting_off():
    tr = make_translator()
    texts = [*TEXTS, "", "   ", " I see. "]
    on, off = split_opts(tr, True, n_best=3), split_opts(tr, False, n_best=3)
    assert as_tuples(tr.translate(texts, on, True)) == as_tuples(tr.translate(texts, off, True))


def test_the_sentences_of_all_lines_are_one_batch():
    tr = make_translator()
    engine = RecordingEngine(tr.model)
    spied = Translator(engine, tr.src_tok, tr.tgt_tok, tr.cfg)
    texts = [TWO, "I see.", "", f"{SECOND} {FIRST} They want a car."]
    found = spied.translate(texts, split_opts(tr, True, batch_size=64))
    assert [n for n, _ in engine.calls] == [6]  # 2 + 1 + 0 + 3 sentences, in one engine call
    assert len(found) == len(texts) and found[2][0].text == ""
    engine.calls.clear()
    spied.translate(texts, split_opts(tr, False, batch_size=64))
    assert [n for n, _ in engine.calls] == [3]  # off: a line is one source


def test_n_best_of_a_split_line_joins_each_sentences_kth_hypothesis():
    tr = make_translator()
    on, off = split_opts(tr, True, beam=4, n_best=3), split_opts(tr, False, beam=4, n_best=3)
    joined = tr.translate([TWO], on)[0]
    firsts, seconds = (tr.translate([s], off)[0] for s in (FIRST, SECOND))
    assert len(joined) == 3
    for k, h in enumerate(joined):
        assert h.text == f"{firsts[k].text}  {seconds[k].text}"
        assert h.score == pytest.approx(firsts[k].score + seconds[k].score)
    scores = [h.score for h in joined]
    assert scores == sorted(scores, reverse=True)  # ranks in step: still best first


def hyp(text: str, score: float, src: list[str]) -> Hypothesis:
    return Hypothesis(text, text.split(), [4] * len(text.split()), score, score, src, None, True)


def test_a_sentence_with_fewer_hypotheses_repeats_its_last():
    from attnmt.sentences import split_sentences
    from attnmt.translate import join_hypotheses

    split = split_sentences("I see. We go.", "en")
    parts = [[hyp("x", -1.0, ["I", "see", ".", "<eos>"])],
             [hyp("y", -1.0, ["We", "<eos>"]), hyp("z", -2.0, ["We", "<eos>"])]]  # fmt: skip
    joined = join_hypotheses(split, parts, with_attention=False)
    assert [(h.text, h.score) for h in joined] == [("x y", -2.0), ("x z", -3.0)]
    assert joined[0].src_tokens == ["I", "see", ".", "We", "<eos>"]


def test_attention_of_a_split_line_is_block_diagonal():
    from attnmt.align import hypothesis_links, words

    tr = make_translator(max_len_a=1.0, max_len_b=6)
    (joined,) = tr.translate([TWO], split_opts(tr, True, beam=1), with_attention=True)[0]
    off = split_opts(tr, False, beam=1)
    first, second = (tr.translate([s], off, with_attention=True)[0][0] for s in (FIRST, SECOND))
    a = torch.tensor(joined.attention)  # (T [+1], S + 1)
    s1, t1 = len(first.src_tokens) - 1, len(first.tokens)  # the first sentence's pieces, tokens
    assert a.shape == (len(joined.tokens) + joined.finished, len(joined.src_tokens))
    assert torch.allclose(a.sum(1), torch.ones(a.size(0)))
    f, g = torch.tensor(first.attention), torch.tensor(second.attention)
    assert torch.allclose(a[:t1, :s1], f[:t1, :s1]) and torch.allclose(a[:t1, -1], f[:t1, -1])
    assert torch.allclose(a[t1:, s1:], g[: a.size(0) - t1, :])  # the last <eos> row: second's
    assert not a[:t1, s1:-1].any() and not a[t1:, :s1].any()  # nothing across sentences
    # So word links stay within their sentence.
    n_src, n_out = len(words(FIRST)), len(words(first.text))
    for i, j in hypothesis_links(joined, TWO):
        assert (i < n_src) == (j < n_out)


def test_the_splitter_follows_the_source_language():
    tr = make_translator()
    engine = RecordingEngine(tr.model)
    spied = Translator(engine, tr.src_tok, tr.tgt_tok, tr.cfg)
    text = "La Sra. García vino. Yo como pan."  # "Sra." ends no sentence in Spanish
    for lang, sentences in (("", 3), ("es", 2)):
        engine.calls.clear()
        spied.with_src_lang(lang).translate([text])
        assert sum(n for n, _ in engine.calls) == sentences
    assert spied.with_src_lang("es").with_options(beam=1).src_lang == "es"  # options keep it
