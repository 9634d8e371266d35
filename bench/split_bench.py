"""BLEU with and without sentence splitting (issue #13: decode.split_sentences).

    .venv/bin/python bench/split_bench.py --model runs/transformer_tatoeba \
        --test runs/transformer_tatoeba/dev.tsv --lang en

Translates every source line of a TSV (or SRC,TGT) file twice through ``Translator``: with
``split_sentences`` on (each line cut into sentences, translated together, joined back) and off
(each line whole). Reports sacreBLEU BLEU and chrF, as ``attnmt evaluate`` computes them, on
the lines of more than one sentence (by the splitter's count, with --lang's rules) and on all
lines, plus a few multi-sentence lines whose translations differ. ``--json FILE`` also writes
the numbers. One-sentence lines decode identically either way (``Translator`` hands them to the
engine unchanged), so any difference on all lines comes from the multi-sentence ones.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from attnmt.atomic import write_text_atomic  # noqa: E402
from attnmt.corpus import normalize, read_corpus  # noqa: E402
from attnmt.evaluate import bleu_chrf  # noqa: E402
from attnmt.interface import pick_device  # noqa: E402
from attnmt.sentences import split_sentences  # noqa: E402
from attnmt.translate import Translator  # noqa: E402


def scores(hyps: list[str], refs: list[str]) -> dict[str, float | None]:
    if not hyps:
        return {"bleu": None, "chrf": None}  # no such lines
    bleu, chrf = bleu_chrf(hyps, refs)
    return {"bleu": round(bleu, 2), "chrf": round(chrf, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="checkpoint (.pt or run dir)")
    ap.add_argument("--test", required=True, help="pairs: TSV file or SRC_FILE,TGT_FILE")
    ap.add_argument("--reverse", action="store_true", help="the TSV's columns are tgt, src")
    ap.add_argument("--lang", default="", help="source language code for the splitter's rules")
    ap.add_argument("--beam", type=int, help="beam size (default: the checkpoint's)")
    ap.add_argument("--limit", type=int, default=0, help="the first N pairs only")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--examples", type=int, default=5, help="differing lines to print")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()

    tr = Translator.from_checkpoint(args.model, device=pick_device(args.device))
    tr = tr.with_src_lang(args.lang).with_options(beam=args.beam, n_best=1)
    pairs = read_corpus(args.test, reverse=args.reverse).pairs
    pairs = pairs[: args.limit] if args.limit else pairs
    srcs = [s for s, _ in pairs]
    refs = [normalize(t, tr.cfg.data.lowercase) for _, t in pairs]  # as evaluate reads them
    multi = [i for i, s in enumerate(srcs) if len(split_sentences(s, args.lang).sentences) > 1]
    hyps = {
        name: [h[0].text for h in tr.with_options(split_sentences=on).translate(srcs)]
        for name, on in (("split", True), ("whole", False))
    }
    result = {"lines": len(pairs), "multi_sentence_lines": len(multi)}
    for name, hs in hyps.items():
        result[name] = {
            "multi": scores([hs[i] for i in multi], [refs[i] for i in multi]),
            "all": scores(hs, refs),
        }
    print(json.dumps(result, indent=2))
    shown = [i for i in multi if hyps["split"][i] != hyps["whole"][i]][: args.examples]
    for i in shown:
        print(f"\nsource: {srcs[i]}\nref:    {refs[i]}\nsplit:  {hyps['split'][i]}\n"
              f"whole:  {hyps['whole'][i]}")  # fmt: skip
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
