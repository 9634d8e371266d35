"""explain: the step-by-step trace equals greedy translation; attention, top-k, limits, heatmaps."""

from __future__ import annotations

import json
import math

import pytest
import torch

from attnmt.align import hypothesis_links, words
from attnmt.checkpoint import build_model
from attnmt.config import Config
from attnmt.data import make_batch
from attnmt.explain import Trace, explain, plot_attention, render_table, word_alignment
from attnmt.search import max_output_len
from attnmt.tokenizer import WordTokenizer
from attnmt.translate import Hypothesis, TorchEngine, Translator
from tests.conftest import EosBiased

PAIRS = [
    ("Let's go.", "Vamos."),
    ("Go.", "Ve."),
    ("Run!", "¡Corre!"),
    ("I see.", "Ya veo."),
    ("Let's run.", "Corramos."),
    ("I go.", "Voy."),
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_translator(arch: str = "lstm", train_steps: int = 60, dropout: float = 0.0) -> Translator:
    """A tiny real model, briefly overfit on PAIRS so it emits <eos> and has some structure."""
    torch.manual_seed(0)
    cfg = Config()
    cfg.model.arch = arch
    cfg.model.emb_dim = cfg.model.hidden = 32
    cfg.model.ff_dim, cfg.model.heads, cfg.model.dropout = 64, 2, dropout
    cfg.model.layers = 2 if arch == "transformer" else 1
    src_tok = WordTokenizer.train([s for s, _ in PAIRS], 100)
    tgt_tok = WordTokenizer.train([t for _, t in PAIRS], 100)
    model = build_model(cfg.model, src_tok.vocab_size, tgt_tok.vocab_size)
    batch = make_batch([(src_tok.encode(s), tgt_tok.encode(t)) for s, t in PAIRS])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(train_steps):
        logits = model(batch.src, batch.src_mask, batch.tgt_in)  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), batch.tgt_out.flatten(), ignore_index=0
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    return Translator(TorchEngine(model), src_tok, tgt_tok, cfg)  # left in training mode


def greedy(translator: Translator, text: str, with_attention: bool = False) -> Hypothesis:
    """translate(beam=1): what explain's trace must equal."""
    return translator.with_options(beam=1).translate([text], with_attention=with_attention)[0][0]


@pytest.fixture(scope="module")
def translator() -> Translator:
    return make_translator()


def test_empty_text_is_rejected(translator):
    with pytest.raises(ValueError, match="empty"):
        explain(translator, "   ")


@pytest.mark.parametrize("text", ["Let's go.", "Run!", "I see.", "unknown words here"])
def test_trace_equals_greedy_translation(translator, text):
    trace = explain(translator, text)
    hyp = greedy(translator, text)
    assert trace.output_ids == hyp.ids
    assert trace.output_tokens == hyp.tokens
    assert trace.output_text == hyp.text
    assert trace.src_tokens == hyp.src_tokens
    assert (trace.stopped_by == "eos") == hyp.finished
    # The headline attention rows are the ones translate reports.
    full = greedy(translator, text, with_attention=True)
    assert torch.allclose(
        torch.tensor([s.weights for s in trace.steps]), torch.tensor(full.attention)
    )


@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_trace_alignment_is_the_translation_alignment(arch):
    """The trace's word links are those ``translate --align`` gives its greedy translation: the
    same headline attention, the same words, the same rule."""
    tr = make_translator(arch, train_steps=30)
    for text in ("Let's go.", "I see.", "Let's run."):
        a = explain(tr, text).alignment
        hyp = greedy(tr, text, with_attention=True)
        assert a.links == sorted(hypothesis_links(hyp, text))
        assert (a.src_words, a.output_words) == (words(text), words(hyp.text))
        assert len(a.src_word_ids) == len(hyp.src_tokens) - 1  # every piece but <eos>
        assert len(a.output_word_ids) == len(hyp.tokens)
        assert sorted(j for _, j in a.links) == list(range(len(a.output_words)))


def test_alignment_of_an_empty_output():
    trace = Trace(["go", "<eos>"], [], [], "", "eos", 1, 1, source_text="go")
    a = word_alignment(trace)
    assert (a.src_words, a.src_word_ids, a.output_words, a.links) == (["go"], [0], [], [])


def test_trained_model_stops_at_eos(translator):
    trace = explain(translator, "Let's go.")
    assert trace.stopped_by == "eos"
    assert trace.steps[-1].chosen == "<eos>"
    assert trace.steps[0].input_token == "<bos>"
    # Each step reads what the previous step chose.
    for prev, step in zip(trace.steps, trace.steps[1:]):
        assert step.input_token == prev.chosen
    assert [s.index for s in trace.steps] == list(range(1, len(trace.steps) + 1))
    assert f"Stopped: <eos> after {len(trace.steps)} steps" in render_table(trace)


def test_weights_are_softmax_of_scores(translator):
    trace = explain(translator, "Let's run.")
    assert trace.layers == 1 and trace.heads == 1
    S = len(trace.src_tokens)
    for step in trace.steps:
        assert len(step.scores) == len(step.weights) == S
        w = torch.tensor(step.weights)
        assert w.sum().item() == pytest.approx(1.0, abs=1e-5)
        assert torch.allclose(w, torch.softmax(torch.tensor(step.scores), 0), atol=1e-5)
        assert torch.tensor(step.layer_head_weights).shape == (1, 1, S)


def test_top_k_sorted_probabilities(translator):
    trace = explain(translator, "I go.", top_k=3)
    V = translator.tgt_tok.vocab_size
    for step in trace.steps:
        probs = [p for _, p in step.top_k]
        assert len(probs) == 3
        assert probs == sorted(probs, reverse=True)
        assert all(0.0 <= p <= 1.0 for p in probs) and sum(probs) <= 1.0 + 1e-6
        assert step.top_k[0] == (step.chosen, pytest.approx(step.chosen_prob))
    assert len(explain(translator, "Go.", top_k=1000).steps[0].top_k) == V
    with pytest.raises(ValueError, match="top_k"):
        explain(translator, "Go.", top_k=0)


def test_min_len_trace_equals_greedy_translation(translator):
    tr = translator.with_options(min_len=6)
    trace = explain(tr, "Let's go.")
    assert len(trace.output_ids) >= 6
    assert "<eos>" not in [s.chosen for s in trace.steps[:6]]
    assert trace.output_ids == greedy(tr, "Let's go.").ids


def test_repetition_options_trace_equals_greedy_translation(translator):
    # A model that never ends writes up to its length limit, repeating itself; with
    # no_repeat_ngram=2 the trace, like translate, holds no word pair twice.
    never_ends = TorchEngine(EosBiased(translator.model, -math.inf))
    stuck = Translator(never_ends, translator.src_tok, translator.tgt_tok, translator.cfg)

    def pairs(ids: list[int]) -> list[tuple[int, int]]:
        return list(zip(ids, ids[1:]))

    ids = explain(stuck, "Let's go.").output_ids
    assert len(set(pairs(ids))) < len(pairs(ids))
    tr = stuck.with_options(no_repeat_ngram=2, repetition_penalty=1.5)
    trace = explain(tr, "Let's go.")
    assert len(set(pairs(trace.output_ids))) == len(pairs(trace.output_ids))
    assert len(trace.output_ids) == trace.max_len
    assert trace.output_ids == greedy(tr, "Let's go.").ids


@pytest.mark.parametrize("a, b", [(1.5, 10), (0.0, 3), (1.0, 0)])
def test_length_limit(translator, a, b):
    never_ends = TorchEngine(EosBiased(translator.model, -math.inf))
    stuck = Translator(never_ends, translator.src_tok, translator.tgt_tok, translator.cfg)
    stuck = stuck.with_options(max_len_a=a, max_len_b=b)
    trace = explain(stuck, "Let's go.")
    limit = max_output_len(len(trace.src_tokens), a, b)  # src_tokens end with "<eos>"
    assert trace.stopped_by == "length_limit"
    assert trace.max_len == limit == len(trace.steps) == len(trace.output_ids)
    assert "<eos>" not in [s.chosen for s in trace.steps]
    assert trace.output_ids == greedy(stuck, "Let's go.").ids
    table = render_table(trace)
    assert f"Stopped: length limit of {limit} tokens reached before <eos>" in table


def test_explain_decodes_without_dropout_and_keeps_the_mode():
    """A model handed over in training mode (as training's own translator does) is traced with
    dropout off, and is still in training mode afterwards."""
    tr = make_translator(dropout=0.3)
    assert tr.model.training
    traces = [explain(tr, "Let's run.") for _ in range(3)]
    assert tr.model.training
    assert all(t.to_dict() == traces[0].to_dict() for t in traces)
    assert traces[0].output_ids == greedy(tr, "Let's run.").ids


def test_render_table_tells_each_step(translator):
    trace = explain(translator, "Let's go.")
    table = render_table(trace)
    assert "Step 1: input '<bos>'" in table
    if len(trace.steps) > 1:
        assert f"Step 2: input '{trace.steps[0].chosen}'" in table
    assert "top-5 next: " in table
    assert f"-> chose '{trace.steps[0].chosen}'" in table
    assert "█" in table or "▏" in table
    for tok in trace.src_tokens:
        assert tok in table


def test_to_dict_is_json(translator):
    trace = explain(translator, "Let's go.")
    d = json.loads(json.dumps(trace.to_dict(), allow_nan=False))
    assert set(d) == {
        "src_tokens", "steps", "output_tokens", "output_text", "stopped_by", "layers", "heads",
    }  # fmt: skip
    step = d["steps"][0]
    assert set(step) == {
        "step", "input_token", "scores", "weights", "layer_head_weights", "top_k", "chosen",
        "chosen_prob",
    }  # fmt: skip
    assert set(step["top_k"][0]) == {"token", "prob"}
    assert step["step"] == 1 and step["input_token"] == "<bos>"


def test_plot_attention_png_and_svg(translator, tmp_path):
    trace = explain(translator, "Let's go.")
    png = plot_attention(trace, tmp_path / "attn.png")
    assert png.read_bytes()[:8] == PNG_MAGIC
    svg = plot_attention(trace.to_dict(), tmp_path / "sub" / "attn.svg")
    assert b"<svg" in svg.read_bytes()[:2000]
    # A Hypothesis with attention plots the same way; no temp files are left behind.
    hyp = translator.with_options(beam=3).translate(["Run!"], with_attention=True)[0][0]
    assert plot_attention(hyp, tmp_path / "hyp.png").read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attn.png", "hyp.png", "sub"]
    with pytest.raises(ValueError, match="png or .svg"):
        plot_attention(trace, tmp_path / "attn.jpg")
    with pytest.raises(ValueError, match="with_attention"):
        plot_attention(greedy(translator, "Run!"), tmp_path / "x.png")
    with pytest.raises(ValueError, match="Trace"):
        plot_attention(hyp, tmp_path / "x.png", per_head=True)


def test_explain_from_checkpoint(tiny_run):
    tr = Translator.from_checkpoint(tiny_run)
    text = "We see the dog."
    trace = explain(tr, text)
    assert trace.output_ids == greedy(tr, text).ids
    assert trace.source_text == text and render_table(trace).startswith("Source tokens: ")


def test_transformer_trace_per_layer_and_head(tmp_path):
    tr = make_translator("transformer", train_steps=20)
    trace = explain(tr, "Let's go.")
    assert trace.output_ids == greedy(tr, "Let's go.").ids
    L, nh, S = tr.cfg.model.layers, tr.cfg.model.heads, len(trace.src_tokens)
    assert (trace.layers, trace.heads) == (L, nh)
    for step in trace.steps:
        lhw = torch.tensor(step.layer_head_weights)
        assert lhw.shape == (L, nh, S)
        assert torch.allclose(lhw.sum(-1), torch.ones(L, nh), atol=1e-5)
        assert torch.allclose(torch.tensor(step.weights), lhw[-1].mean(0), atol=1e-6)
    assert "heads averaged" in render_table(trace)
    png = plot_attention(trace, tmp_path / "heads.png", per_head=True)
    assert png.read_bytes()[:8] == PNG_MAGIC
