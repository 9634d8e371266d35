"""``attnmt demo``: the whole pipeline on the embedded English->Spanish corpus, in minutes on a CPU.

Generate the corpus -> train an LSTM+attention model -> score the held-out test split (exact match,
BLEU, and the alignment error rate of its attention against the generator's gold word links) ->
translate a few sentences -> explain "Let's go." step by step and save its heatmap and the
training curves. Everything is seeded, so a run is reproducible.
"""

from __future__ import annotations

from pathlib import Path

from attnmt.align import align_pairs, alignment_error
from attnmt.config import Config, load_config
from attnmt.corpus import normalize, read_corpus
from attnmt.demo_corpus import DEMO_EXAMPLES, demo_gold
from attnmt.evaluate import evaluate
from attnmt.explain import explain, plot_attention, render_table
from attnmt.plot import plot_training
from attnmt.train import train
from attnmt.translate import Translator


def alignment_report(translator: Translator, test: list[tuple[str, str]], cfg: Config) -> str:
    """How well the attention aligns: the model reads each reference translation, and each
    output word's most attended source word is compared with the gold links (AER)."""
    d = cfg.data
    gold = demo_gold(test, d.demo_size, cfg.train.seed, d.reverse, d.lowercase)
    return alignment_error(align_pairs(translator, test), gold).report()


def run_demo(out_dir: str, overrides: list[str], config_path: str) -> int:
    cfg = load_config(config_path, [f"train.out_dir={out_dir}", *overrides])
    run = train(cfg)
    translator = Translator.from_checkpoint(run / "best.pt")

    test = read_corpus(str(run / "test.tsv")).pairs
    result = evaluate(translator, test)
    refs = [normalize(t, cfg.data.lowercase) for _, t in test]
    exact = sum(h == r for h, r in zip(result.hypotheses, refs)) / len(refs)
    print(f"\nHeld-out test set ({len(test)} pairs never seen in training):")
    print(f"exact match {100 * exact:.1f}%")
    print(result.report())
    print(alignment_report(translator, test, cfg))

    print("\nTranslations:")
    for text, hyps in zip(DEMO_EXAMPLES, translator.translate(DEMO_EXAMPLES)):
        print(f"  {text}  ->  {hyps[0].text}")

    sentence = DEMO_EXAMPLES[0]
    trace = explain(translator, sentence)
    print(f"\nHow the model translates {sentence!r}, step by step:\n")
    print(render_table(trace))
    heatmap = plot_attention(trace, Path(run) / "attention.png")
    curves = plot_training(run)
    print(f"\nattention heatmap: {heatmap}\ntraining curves:   {curves}")
    print(f'try: attnmt translate --model {run / "best.pt"} <<< "{sentence}"')
    return 0
