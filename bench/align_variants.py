"""Which plain LSTM variant's attention aligns? AER, BLEU and training time per demo variant.

    python bench/align_variants.py                              # every variant, in turn
    python bench/align_variants.py --variants general additive+uni  # some of them
    python bench/align_variants.py --variants general additive --seeds 1 2 3
    python bench/align_variants.py --define big=model.attention=additive,model.hidden=512
    python bench/align_variants.py --select dev                 # the dev split (for tuning)

Each variant is ``attnmt/configs/lstm_demo.yaml`` plus ``--set``-style overrides that always name
the scoring (``general``, ``dot``, ``additive``, and ``SCORING+KNOB`` for one more change), so a
table means the same whatever the demo's default is. It is trained with ``attnmt.train.train``
into ``--root/NAME``; a finished run of the same config there is measured again, not retrained
(``--fresh`` retrains). ``--seeds`` adds ``NAME@SEED`` runs: ``train.seed`` also draws the demo
corpus and its split, so seeds differ in data as well as in initialisation. On the held-out
split (``test`` by default; ``--select dev`` when tuning) it reports:

- AER / precision / recall of the attention of the model forced to read the reference
  (``align.align_pairs``) against the demo gold (``demo_corpus.demo_gold``), Och & Ney 2003;
- BLEU (sacreBLEU, beam 5 as the demo decodes) and exact match of the translations;
- where the attention mass goes, per target word (forced attention, word level): the mean share
  on the gold-linked source words, on the final punctuation mark, on ``<eos>``, and the mean
  largest share (1.0 = every row one-hot);
- training time (the run's own ``elapsed_s``; only comparable on an otherwise idle machine);
- for "Let's go." and "The red car is not here.", each greedy output word, the source word it
  attends to most (``explain.explain``), whether that is the gold counterpart, and the largest
  raw score (a saturated softmax has huge ones); "held out" when the seed's split kept the
  sentence out of training.

Prints a Markdown table and writes JSON (``--json``, rewritten after every variant). Variants
run one at a time: the machine is shared, and timings of concurrent runs would mean nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from attnmt.align import (  # noqa: E402
    Alignment,
    align_pairs,
    alignment_error,
    forced_attention,
    head_scores,
    parse_pharaoh,
    word_attention,
    word_ids,
    words,
)
from attnmt.atomic import write_text_atomic  # noqa: E402
from attnmt.config import Config, config_to_dict, load_config  # noqa: E402
from attnmt.corpus import normalize, read_corpus  # noqa: E402
from attnmt.demo_corpus import demo_gold  # noqa: E402
from attnmt.evaluate import evaluate  # noqa: E402
from attnmt.explain import explain  # noqa: E402
from attnmt.train import train  # noqa: E402
from attnmt.translate import Translator  # noqa: E402

CONFIG = REPO / "attnmt" / "configs" / "lstm_demo.yaml"

# Variants are lstm_demo.yaml plus overrides, every one naming its scoring, so that a table
# means the same whatever the demo's default is (general until issue 15, additive since).
# The rest of the demo: bidirectional encoder, input feeding, dropout 0.1, emb 128 / hidden 256,
# word tokens, 450 steps.
SCORING: dict[str, list[str]] = {
    "general": ["model.attention=general"],  # Luong
    "dot": ["model.attention=dot"],
    "additive": ["model.attention=additive"],  # Bahdanau
}
KNOBS: dict[str, list[str]] = {
    "uni": ["model.bidirectional=false"],
    "no_feed": ["model.input_feeding=false"],
    "dropout0": ["model.dropout=0.0"],
    "dropout0.3": ["model.dropout=0.3"],
    "lowercase": ["data.lowercase=true"],
    "sentencepiece": ["data.tokenizer=sentencepiece", "data.vocab_size=1000"],
    "small": ["model.emb_dim=64", "model.hidden=128"],
    "wide": ["model.emb_dim=256", "model.hidden=512"],
    "longer": ["train.max_steps=900", "train.eval_every=300", "train.save_every=300"],
}
# NAME (a scoring) and SCORING+KNOB for the two scorings worth varying.
VARIANTS: dict[str, list[str]] = SCORING | {
    f"{s}+{k}": [*SCORING[s], *o] for s in ("general", "additive") for k, o in KNOBS.items()
}


# Gold for the two sentences the brief asks about (never in the corpus, so written here):
# English word i - Spanish word j, as the demo grammar would link them.
EXPLAINED: dict[str, tuple[str, str]] = {
    "Let's go.": ("Vamos.", "0?0 1-0 2-1"),
    "The red car is not here.": ("El coche rojo no está aquí.", "0-0 1-2 2-1 3-4 4-3 5-5 6-6"),
}


def run_variant(
    name: str, overrides: list[str], root: Path, fresh: bool, config: Path = CONFIG
) -> Path:
    """Train the variant into root/name unless a finished run with the same config is there."""
    out = root / name
    cfg = load_config(config, [f"train.out_dir={out}", "train.progress=false", *overrides])
    if fresh or not finished(out, cfg):
        if out.exists():
            shutil.rmtree(out)  # a clean start: train() would resume a half-done run
        print(f"[{name}] training: {' '.join(overrides) or '(the demo config)'}", flush=True)
        train(cfg, log=lambda line: print(f"[{name}] {line}", flush=True))
    return out


def finished(out: Path, cfg: Config) -> bool:
    """A run of this very config (wherever it was trained) that reached its last step."""
    log = out / "train_log.jsonl"
    if not (out / "best.pt").exists() or not log.exists():
        return False
    steps = [json.loads(line).get("step", 0) for line in log.read_text().splitlines() if line]
    return bool(steps) and max(steps) >= cfg.train.max_steps and same_config(out, cfg)


def same_config(out: Path, cfg: Config) -> bool:
    def key(c: Config) -> dict[str, Any]:
        d = config_to_dict(c)
        for name in ("out_dir", "progress"):  # where and how visibly it ran change no number
            d["train"].pop(name)
        return d

    return key(load_config(out / "config.yaml")) == key(cfg)


def train_seconds(run: Path) -> float:
    records = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    return max((r.get("elapsed_s", 0.0) for r in records if r.get("kind") == "train"), default=0.0)


def attention_mass(
    translator: Translator, pairs: list[tuple[str, str]], golds: list[Alignment]
) -> dict[str, float]:
    """Where each target word's forced attention goes, averaged over target words (words that
    have gold links only, for the gold share)."""
    lower = translator.cfg.data.lowercase
    sums = {"gold": 0.0, "final_punct": 0.0, "eos": 0.0, "max": 0.0}
    rows = gold_rows = 0
    for (src, tgt), gold, attn in zip(pairs, golds, forced_attention(translator, pairs)):
        if attn.numel() == 0:
            continue
        src, tgt = normalize(src, lower), normalize(tgt, lower)
        a = attn[:, -1].mean(1)  # (T, L, nh, S) -> (T, S): the headline attention
        src_w = word_ids(src, translator.src_tok.pieces(src))
        tgt_w = word_ids(tgt, translator.tgt_tok.pieces(tgt))
        eos = 1.0 - a.sum(-1)  # (T,) forced_attention drops the <eos> column; its share is left
        eos_w = word_attention(eos.unsqueeze(1), [0], tgt_w)[:, 0]  # (Tw,)
        aw = word_attention(a, src_w, tgt_w)  # (Tw, Sw)
        last = words(src)[-1]
        punct = aw[:, -1] if not last[0].isalnum() else torch.zeros(aw.size(0))
        sums["final_punct"] += float(punct.sum())
        sums["eos"] += float(eos_w.sum())
        sums["max"] += float(torch.cat([aw, eos_w.unsqueeze(1)], 1).max(1).values.sum())
        rows += aw.size(0)
        for j in range(aw.size(0)):
            linked = [i for i, jj in gold.possible if jj == j]
            if linked:
                sums["gold"] += float(aw[j, linked].sum())
                gold_rows += 1
    return {
        "gold_share": sums["gold"] / max(1, gold_rows),
        "final_punct_share": sums["final_punct"] / max(1, rows),
        "eos_share": sums["eos"] / max(1, rows),
        "max_share": sums["max"] / max(1, rows),
    }


def explained(translator: Translator, run: Path) -> dict[str, Any]:
    """Greedy output of the two example sentences, each output word with the source word it
    attends to most, its share, and whether that is a gold counterpart."""
    held_out = {
        s for split in ("dev", "test") for s, _ in read_corpus(str(run / f"{split}.tsv")).pairs
    }
    out = {}
    for text, (_, pharaoh) in EXPLAINED.items():
        trace = explain(translator, text)
        gold = parse_pharaoh(pharaoh)
        src = normalize(text, translator.cfg.data.lowercase)
        src_w = word_ids(src, trace.src_tokens[:-1]) + [-1]  # the <eos> column is no word
        tgt_w = word_ids(trace.output_text, trace.output_tokens) if trace.output_tokens else []
        steps = []
        for j, step in enumerate(trace.steps[: len(trace.output_tokens)]):
            best = max(range(len(step.weights)), key=step.weights.__getitem__)
            steps.append({
                "output": trace.output_tokens[j],
                "attends": trace.src_tokens[best],
                "share": step.weights[best],
                "max_score": max(step.scores),
                "gold": (src_w[best], tgt_w[j]) in gold.possible,
            })  # fmt: skip
        out[text] = {"output": trace.output_text, "steps": steps, "held_out": text in held_out}
    return out


def measure(run: Path, split: str) -> dict[str, Any]:
    translator = Translator.from_checkpoint(run / "best.pt")
    cfg = translator.cfg
    pairs = read_corpus(str(run / f"{split}.tsv")).pairs
    golds = demo_gold(pairs, cfg.data.demo_size, cfg.train.seed, cfg.data.reverse,
                      cfg.data.lowercase)  # fmt: skip
    t0 = time.perf_counter()
    score = alignment_error(align_pairs(translator, pairs), golds)
    align_s = time.perf_counter() - t0
    result = evaluate(translator, pairs)
    refs = [normalize(t, cfg.data.lowercase) for _, t in pairs]
    exact = sum(h == r for h, r in zip(result.hypotheses, refs)) / len(refs)
    return {
        "split": split,
        "pairs": len(pairs),
        **best_head(translator, run, pairs, golds),
        "aer": score.aer,
        "precision": score.precision,
        "recall": score.recall,
        "bleu": result.bleu,
        "exact": exact,
        "train_s": train_seconds(run),
        "align_s": align_s,
        **attention_mass(translator, pairs, golds),
        "explain": explained(translator, run),
    }


def best_head(
    translator: Translator, run: Path, pairs: list[tuple[str, str]], golds: list[Alignment]
) -> dict[str, Any]:
    """For a model with several heads: every (layer, head)'s AER on dev, and the AER on
    ``pairs`` of the one best on dev (what model.align_layer/align_head should say)."""
    if translator.cfg.model.arch != "transformer":
        return {}
    cfg = translator.cfg
    dev = read_corpus(str(run / "dev.tsv")).pairs
    dev_gold = demo_gold(dev, cfg.data.demo_size, cfg.train.seed, cfg.data.reverse,
                         cfg.data.lowercase)  # fmt: skip
    on_dev = head_scores(translator, dev, dev_gold)
    (layer, head), best = min(on_dev.items(), key=lambda kv: kv[1].aer)
    chosen = alignment_error(align_pairs(translator, pairs, layer, head), golds)
    return {"heads_dev_aer": {f"{k[0]},{k[1]}": v.aer for k, v in on_dev.items()},
            "best_layer": layer, "best_head": head, "best_dev_aer": best.aer,
            "best_head_aer": chosen.aer}  # fmt: skip


def table(results: dict[str, dict[str, Any]]) -> str:
    head = (
        "| variant | overrides | AER | P | R | BLEU | exact | gold | punct | eos | max | train s |"
        "\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for name, r in results.items():
        pct = [100 * r[k] for k in ("aer", "precision", "recall")]
        mass = [r[k] for k in ("gold_share", "final_punct_share", "eos_share", "max_share")]
        lines.append(
            f"| {name} | {' '.join(r['overrides']) or '-'} | "
            + " | ".join(f"{v:.1f}" for v in pct)
            + f" | {r['bleu']:.1f} | {100 * r['exact']:.1f} | "
            + " | ".join(f"{v:.2f}" for v in mass)
            + f" | {r['train_s']:.0f} |"
        )
    return "\n".join(lines)


def seed_table(results: dict[str, dict[str, Any]]) -> str:
    """Per variant, AER and BLEU over its seeds (NAME, NAME@SEED, ...)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for name, r in results.items():
        groups.setdefault(name.split("@")[0], []).append(r)
    lines = ["| variant | seeds | AER | BLEU | exact |", "|---|---|---|---|---|"]
    for name, rs in groups.items():
        cells = []
        for key in ("aer", "bleu", "exact"):
            v = [100 * r[key] if key != "bleu" else r[key] for r in rs]
            cells.append(f"{sum(v) / len(v):.1f} ({min(v):.1f}-{max(v):.1f})")
        lines.append(f"| {name} | {len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def explain_lines(results: dict[str, dict[str, Any]]) -> str:
    """One line per variant and sentence: output word <- attended source word (share)."""
    lines = []
    for name, r in results.items():
        for text, e in r["explain"].items():
            cells = " ".join(
                f"{s['output']}<-{s['attends']}({100 * s['share']:.0f}%{'' if s['gold'] else '!'})"
                for s in e["steps"]
            )
            top = max((s["max_score"] for s in e["steps"]), default=0.0)
            note = " (held out)" if e.get("held_out") else ""
            lines.append(
                f"- {name}: {text!r}{note} -> {e['output']!r}: {cells}  [max score {top:.1f}]"
            )
    return "\n".join(lines)


def parse_defines(items: list[str]) -> dict[str, list[str]]:
    """``NAME=key=value,key=value`` -> {NAME: [key=value, ...]}."""
    out = {}
    for item in items:
        name, _, rest = item.partition("=")
        if not name or not rest:
            raise SystemExit(f"--define {item!r}: expected NAME=section.key=value[,...]")
        out[name] = rest.split(",")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", nargs="*", help=f"names among {', '.join(VARIANTS)}")
    ap.add_argument("--define", action="append", default=[], metavar="NAME=K=V,K=V",
                    help="an extra variant (runs after --variants)")  # fmt: skip
    ap.add_argument("--root", default="/tmp/align_variants", help="run directories go here")
    ap.add_argument("--config", type=Path, default=CONFIG, help="base config (default the demo)")
    ap.add_argument("--select", choices=["dev", "test"], default="test", help="split to report")
    ap.add_argument("--json", default="", help="results file (default ROOT/results-SPLIT.json)")
    ap.add_argument("--fresh", action="store_true", help="retrain runs that are already there")
    ap.add_argument("--seeds", nargs="*", type=int, default=[],
                    help="also train each variant with these train.seed values (NAME@SEED); the "
                    "seed also draws the demo corpus and its split")  # fmt: skip
    args = ap.parse_args()
    defined = parse_defines(args.define)
    names = args.variants if args.variants is not None else ([] if defined else list(VARIANTS))
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)} (known: {', '.join(VARIANTS)})")
    todo = {**{n: VARIANTS[n] for n in names}, **defined}
    todo |= {f"{n}@{k}": [*o, f"train.seed={k}"] for n, o in list(todo.items()) for k in args.seeds}
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    path = Path(args.json or root / f"results-{args.select}.json")
    results = json.loads(path.read_text()) if path.exists() else {}
    for name, overrides in todo.items():
        run = run_variant(name, overrides, root, args.fresh, args.config)
        results[name] = r = {"overrides": overrides, **measure(run, args.select)}
        write_text_atomic(path, json.dumps(results, indent=1))
        best = (f", best dev head {r['best_layer']},{r['best_head']}: AER "
                f"{100 * r['best_head_aer']:.1f}" if "best_head" in r else "")  # fmt: skip
        print(f"[{name}] AER {100 * r['aer']:.1f}, BLEU {r['bleu']:.1f}{best}")
    shown = {n: results[n] for n in todo}
    print(f"\n{args.select} split; AER/P/R/exact in %; shares per target word\n")
    print(table(shown))
    if args.seeds:
        print(f"\nmean (min-max) over the config's seed and {' '.join(map(str, args.seeds))}\n")
        print(seed_table(shown))
    print()
    print(explain_lines(shown))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
