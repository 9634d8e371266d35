"""evaluate: scores through the Translator's options (best hypothesis only), perplexity in eval
mode without changing the model's mode, errors."""

from __future__ import annotations

import math

import pytest
import torch

from attnmt.data import BucketBatcher, encode_pairs
from attnmt.evaluate import evaluate, mean_token_loss
from attnmt.translate import DecodeOptions, Translator
from tests.test_translate import SRC_TEXT, TGT_TEXT, RecordingEngine, make_translator

PAIRS = list(zip(SRC_TEXT, TGT_TEXT))


def recording(n_best: int = 1) -> tuple[Translator, RecordingEngine]:
    tr = make_translator(n_best=n_best)  # decode.beam is 3
    engine = RecordingEngine(tr.model)
    return Translator(engine, tr.src_tok, tr.tgt_tok, tr.cfg), engine


def test_evaluate_translates_with_the_translators_options_best_only():
    tr, engine = recording(n_best=3)
    result = evaluate(tr, PAIRS)
    assert {(o.beam, o.n_best) for _, o in engine.calls} == {(3, 1)}  # one hypothesis is scored
    assert result.sentences == len(PAIRS) and len(result.hypotheses) == len(PAIRS)
    assert 0 <= result.bleu <= 100 and 0 <= result.chrf <= 100 and result.perplexity >= 1
    assert "nrefs:1" in result.bleu_signature
    assert tr.options.n_best == 3  # the translator's own defaults are untouched

    engine.calls.clear()
    greedy = evaluate(tr, PAIRS, DecodeOptions.resolve(tr.options, beam=1))
    assert {(o.beam, o.n_best) for _, o in engine.calls} == {(1, 1)}
    assert greedy.hypotheses == [h[0].text for h in tr.with_options(beam=1).translate(SRC_TEXT)]


def test_empty_test_set_is_an_error():
    with pytest.raises(ValueError, match="test set is empty"):
        evaluate(make_translator(), [])


@pytest.mark.parametrize("training", [True, False])
def test_mean_token_loss_keeps_the_models_mode(training):
    tr = make_translator()
    examples, _ = encode_pairs(PAIRS, tr.src_tok, tr.tgt_tok)
    batcher = BucketBatcher(examples, 4000, seed=0, shuffle=False)
    tr.model.train(training)
    loss = mean_token_loss(tr.model, batcher, torch.device("cpu"))
    assert tr.model.training is training
    assert math.isfinite(loss) and loss > 0
    tr.model.eval()
    assert mean_token_loss(tr.model, batcher, torch.device("cpu")) == pytest.approx(loss)


@pytest.mark.parametrize("split", [True, False])
def test_evaluate_splits_lines_into_sentences_as_translate_does(split):
    """Issue #13: a test line of two sentences is scored on its sentences' joined translations
    (decode.split_sentences, on by default), or on the line translated whole when it is off."""
    tr, engine = recording()
    two = [(f"{SRC_TEXT[0]} {SRC_TEXT[1]}", f"{TGT_TEXT[0]} {TGT_TEXT[1]}"), PAIRS[2]]
    options = DecodeOptions.resolve(tr.options, split_sentences=split)
    result = evaluate(tr, two, options)
    assert sum(n for n, _ in engine.calls) == (3 if split else 2)  # 2 + 1 sentences, or 2 lines
    assert all(o.split_sentences is split for _, o in engine.calls)
    assert result.hypotheses == [h[0].text for h in tr.translate([s for s, _ in two], options)]
    if split:
        parts = [h[0].text for h in tr.translate(SRC_TEXT[:2], options)]
        assert result.hypotheses[0] == " ".join(parts)
