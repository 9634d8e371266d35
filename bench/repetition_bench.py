"""Do decode-time repetition controls pay? BLEU and repeated words per setting, on a dev set.

    python bench/repetition_bench.py --model runs/lstm_tatoeba --dev runs/lstm_tatoeba/dev.tsv
    python bench/repetition_bench.py --model CKPT --dev DEV.tsv --limit 500 --json out.json
    python bench/repetition_bench.py --model CKPT --dev DEV.tsv --ngrams 0 2 4 --penalties 1 1.5

Models trained on a short budget repeat words ("El gato gato bebe gato gato."). This decodes the
dev set once per setting of the grid -- ``decode.no_repeat_ngram`` N (``--ngrams``, default
0 2 3) x ``decode.repetition_penalty`` p (``--penalties``, default 1 1.2) x greedy and beam
search (``--beam``, default 5) -- and reports for each:

- BLEU and chrF (sacreBLEU, as ``attnmt evaluate``), and the length ratio hyp/ref in words;
- ``adjacent``: % of output words equal to the word before them (the "gato gato" stutter);
- ``over``: % of output words that are surplus repeats, i.e. beyond the number of times the
  word occurs in the reference (at least once), so legitimate repeats ("dos ... dos") count 0;
- ``sents``: % of sentences with at least one surplus repeat;
- seconds to decode (only comparable on an otherwise idle machine).

The references' own ``adjacent`` rate is printed for scale. N = 0 and p = 1 is the baseline,
bit for bit the decoding without these options. Prints a Markdown table; ``--json`` also writes
the rows. Settings run one after another: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from attnmt.atomic import write_text_atomic  # noqa: E402
from attnmt.corpus import normalize, read_corpus  # noqa: E402
from attnmt.evaluate import bleu_chrf  # noqa: E402
from attnmt.translate import Translator  # noqa: E402

WORD = re.compile(r"\w+")  # words for the repeat counts: letters and digits, punctuation dropped


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def repeat_stats(hyps: list[str], refs: list[str]) -> dict[str, float]:
    """adjacent / over / sents (see the module docstring), in percent, and the length ratio."""
    n_words = adjacent = over = sents = ref_words = 0
    for hyp, ref in zip(hyps, refs, strict=True):
        h, r = words(hyp), Counter(words(ref))
        n_words, ref_words = n_words + len(h), ref_words + sum(r.values())
        adjacent += sum(a == b for a, b in zip(h, h[1:]))
        surplus = sum(max(0, c - max(1, r[w])) for w, c in Counter(h).items())
        over, sents = over + surplus, sents + (surplus > 0)
    return {
        "adjacent": 100 * adjacent / max(1, n_words),
        "over": 100 * over / max(1, n_words),
        "sents": 100 * sents / max(1, len(hyps)),
        "len_ratio": n_words / max(1, ref_words),
    }


def run(tr: Translator, sources: list[str], refs: list[str], **options: Any) -> dict[str, Any]:
    """Decode ``sources`` with ``options`` over the model's defaults; one row of the table."""
    t0 = time.perf_counter()
    hyps = [h[0].text for h in tr.with_options(n_best=1, **options).translate(sources)]
    seconds = time.perf_counter() - t0
    bleu, chrf = bleu_chrf(hyps, refs)
    return {**options, "bleu": bleu, "chrf": chrf, **repeat_stats(hyps, refs), "seconds": seconds}


def table(rows: list[dict[str, Any]]) -> str:
    head = "| search | N | p | BLEU | chrF | adjacent % | over % | sents % | len ratio | s |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        search = "greedy" if r["beam"] == 1 else f"beam {r['beam']}"
        lines.append(
            f"| {search} | {r['no_repeat_ngram']} | {r['repetition_penalty']:g} | {r['bleu']:.2f} "
            f"| {r['chrf']:.2f} | {r['adjacent']:.2f} | {r['over']:.2f} | {r['sents']:.1f} "
            f"| {r['len_ratio']:.3f} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="checkpoint (.pt or run dir)")
    ap.add_argument("--dev", required=True, help="dev pairs: TSV file or SRC_FILE,TGT_FILE")
    ap.add_argument("--reverse", action="store_true", help="the TSV's columns are tgt, src")
    ap.add_argument("--limit", type=int, default=0, help="the first N pairs only (0 = all)")
    ap.add_argument("--beam", type=int, default=5, help="beam size of the beam rows")
    ap.add_argument("--ngrams", type=int, nargs="+", default=[0, 2, 3], help="values of N")
    ap.add_argument("--penalties", type=float, nargs="+", default=[1.0, 1.2], help="values of p")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tr = Translator.from_checkpoint(args.model, device=args.device)
    pairs = read_corpus(args.dev, reverse=args.reverse, limit=args.limit).pairs
    sources = [s for s, _ in pairs]
    refs = [normalize(t, tr.cfg.data.lowercase) for _, t in pairs]
    ref_adjacent = repeat_stats(refs, refs)["adjacent"]
    print(f"{args.model} on {len(pairs)} pairs of {args.dev}; references: {ref_adjacent:.2f}% "
          "adjacent repeats", flush=True)  # fmt: skip
    rows = []
    for beam in (1, args.beam):
        for n in args.ngrams:
            for p in args.penalties:
                rows.append(run(tr, sources, refs, beam=beam, no_repeat_ngram=n,
                                repetition_penalty=p))  # fmt: skip
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    if args.json:
        meta = {
            "model": args.model,
            "dev": args.dev,
            "pairs": len(pairs),
            "ref_adjacent": ref_adjacent,
        }
        write_text_atomic(args.json, json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
