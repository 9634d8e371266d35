"""Guided alignment on Tatoeba English->Spanish: what it does to BLEU and to the attention's AER.

    python bench/guided_tatoeba.py --align /tmp/efl/tatoeba.align          # every variant
    python bench/guided_tatoeba.py --align A --variants lstm lstm+guided --steps 1500
    python bench/guided_tatoeba.py --align A --variants lstm --threads 1 &  # two at once
    python bench/guided_tatoeba.py --align A --variants lstm+guided --threads 1

Real corpora have no gold alignments, so the reference is a statistical aligner's: the
Pharaoh file ``--align`` (one line per pair of the corpus, e.g. from
``attnmt data align -i ../shared/data/tatoeba-eng-spa/pairs.tsv -o tatoeba.align``, eflomal
with grow-diag-final-and). Guided runs train on those links of their training pairs. Each
variant is a shipped Tatoeba config at a fixed step count (``--steps``; steps, not minutes, so
a busy machine changes no figure), trained into ``--root/NAME`` (a finished run is measured
again, not retrained). On the held-out split (``--select``: dev for tuning, test for the final
figures) it reports BLEU/chrF (beam 5), and the AER, precision and recall of the attention
(the model reading the reference, ``align.align_pairs``) against the aligner's links, all
counted as sure. For Transformers it also scores every (layer, head) on the dev split and
reports the best one's AER on the selected split.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from attnmt.align import (  # noqa: E402
    Alignment,
    align_pairs,
    alignment_error,
    head_scores,
    read_corpus_gold,
)
from attnmt.atomic import write_text_atomic  # noqa: E402
from attnmt.config import load_config  # noqa: E402
from attnmt.corpus import read_corpus  # noqa: E402
from attnmt.evaluate import evaluate  # noqa: E402
from attnmt.train import train  # noqa: E402
from attnmt.translate import Translator  # noqa: E402

CONFIGS = REPO / "attnmt" / "configs"
CORPUS = REPO.parent / "shared" / "data" / "tatoeba-eng-spa" / "pairs.tsv"
ARCH = {"lstm": "lstm_tatoeba.yaml", "transformer": "transformer_tatoeba.yaml"}


def variants(steps: int, align: str, lstm_w: float, tf_w: float) -> dict[str, list[str]]:
    """NAME -> (arch, overrides). Guided Transformers train the mean of the last layer's heads
    (what OpenNMT-py's alignment_heads=0 does for its layer): the map translate --align, explain
    and CTranslate2 show. (The plain recipe reads layer 0, its best on dev.)"""
    budget = [f"train.max_steps={steps}", "train.max_minutes=0", "train.patience=0",
              f"train.warmup={min(500, steps // 4)}", f"train.eval_every={steps}",
              f"train.save_every={steps}"]  # fmt: skip
    guided = [f"train.guided_alignment={align}"]
    return {
        "lstm": ["lstm", *budget],
        "lstm+guided": ["lstm", *budget, *guided, f"train.guided_alignment_weight={lstm_w}"],
        "transformer": ["transformer", *budget],
        "transformer+guided": ["transformer", *budget, *guided, "model.align_layer=-1",
                               f"train.guided_alignment_weight={tf_w}"],
    }  # fmt: skip


def run_variant(name: str, spec: list[str], root: Path, threads: int) -> Path:
    out = root / name
    sets = [f"train.out_dir={out}", f"train.threads={threads}", *spec[1:]]
    cfg = load_config(CONFIGS / ARCH[spec[0]], sets)
    if (out / "best.pt").exists() and load_config(out / "config.yaml") == cfg:
        return out  # finished with this very config (train() resumes an unfinished one)
    if out.exists():
        shutil.rmtree(out)
    print(f"[{name}] training: {' '.join(spec)}", flush=True)
    train(cfg, log=lambda line: print(f"[{name}] {line}", flush=True))
    return out


def reference_links(pairs: list[tuple[str, str]], align: str) -> dict[tuple[str, str], Alignment]:
    """The aligner's links of every corpus pair, all sure, keyed by the pair."""
    corpus = read_corpus(str(CORPUS)).pairs
    golds = read_corpus_gold(align, corpus)
    wanted = set(pairs)
    return {p: Alignment.of(g.possible) for p, g in zip(corpus, golds) if p in wanted}


def measure(run: Path, split: str, align: str) -> dict[str, Any]:
    tr = Translator.from_checkpoint(run / "best.pt")
    pairs = read_corpus(str(run / f"{split}.tsv")).pairs
    dev = read_corpus(str(run / "dev.tsv")).pairs[:500]
    ref = reference_links(pairs + dev, align)
    result = evaluate(tr, pairs)
    row: dict[str, Any] = {"bleu": result.bleu, "chrf": result.chrf, "sentences": len(pairs)}
    m = tr.cfg.model
    score = alignment_error(align_pairs(tr, pairs), [ref[p] for p in pairs])
    row.update(layer=m.align_layer, head=m.align_head, aer=score.aer, precision=score.precision,
               recall=score.recall)  # fmt: skip
    if m.arch == "transformer":  # every head on dev; the best one's AER on the split
        on_dev = head_scores(tr, dev, [ref[p] for p in dev])
        (layer, head), best = min(on_dev.items(), key=lambda kv: kv[1].aer)
        chosen = alignment_error(align_pairs(tr, pairs, layer, head), [ref[p] for p in pairs])
        row.update(best_layer=layer, best_head=head, best_dev_aer=best.aer, best_aer=chosen.aer)
        row["heads_dev_aer"] = {f"{k[0]},{k[1]}": v.aer for k, v in on_dev.items()}
    return row


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| variant | BLEU | chrF | AER % (align layer, head) | P / R % | best dev head: AER % |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        best = (f"{r['best_layer']},{r['best_head']}: {100 * r['best_aer']:.1f}"
                if "best_aer" in r else "–")  # fmt: skip
        lines.append(
            f"| {name} | {r['bleu']:.1f} | {r['chrf']:.1f} | {100 * r['aer']:.1f} "
            f"({r['layer']}, {r['head']}) | {100 * r['precision']:.1f} / "
            f"{100 * r['recall']:.1f} | {best} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--align", required=True, help="aligner links, one Pharaoh line per pair")
    ap.add_argument("--variants", nargs="*", help="lstm, lstm+guided, transformer, ...")
    ap.add_argument("--steps", type=int, default=1500, help="optimizer steps per run")
    ap.add_argument("--lstm-weight", type=float, default=0.3, help="LSTM guided weight")
    ap.add_argument("--transformer-weight", type=float, default=0.1, help="Transformer weight")
    ap.add_argument("--root", default="/tmp/guided_tatoeba", help="run directories go here")
    ap.add_argument("--select", choices=["dev", "test"], default="dev", help="split to report")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per run (0 = default)")
    args = ap.parse_args()
    todo = variants(args.steps, args.align, args.lstm_weight, args.transformer_weight)
    names = args.variants or list(todo)
    root = Path(args.root)
    results = {}
    for name in names:
        run = run_variant(name, todo[name], root, args.threads)
        results[name] = measure(run, args.select, args.align)
        # one file per invocation: two invocations may run side by side, one thread each
        path = root / f"results-{args.select}-{'+'.join(names)}.json"
        write_text_atomic(path, json.dumps(results, indent=2))
        print(table(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
