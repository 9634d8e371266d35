"""Train a config within a wall-clock budget, then measure quality and speed in one table.

    python bench/train_bench.py --config configs/lstm_tatoeba.yaml --minutes 30
    python bench/train_bench.py --config configs/transformer_tatoeba.yaml --minutes 30 --ct2

Reports: dev and test BLEU/chrF (sacreBLEU, beam 5), training target tokens/s (median of the
logged windows), translation sentences/s for greedy and beam 5 (median of --repeats runs over the
same test sentences), CTranslate2 float32/int8 sentences/s for Transformers (--ct2), and peak
resident memory of training and of translation (each measured in its own process).
Results are also written as JSON next to the run (RUN_DIR/bench.json).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_translate(translator, sources: list[str], beam: int, repeats: int) -> float:
    """Median sentences/s over ``repeats`` full passes."""
    translator = translator.with_options(beam=beam, n_best=1)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        translator.translate(sources)
        rates.append(len(sources) / (time.perf_counter() - t0))
    return statistics.median(rates)


def run_training(config: str, minutes: float, out: Path, extra: list[str]) -> dict:
    """Train with ``attnmt train`` in a child process so its peak memory is its own."""
    sets = [f"train.out_dir={out}", f"train.max_minutes={minutes}", "train.max_steps=10000000"]
    cmd = [sys.executable, "-m", "attnmt", "train", config]
    cmd += [arg for s in [*sets, *extra] for arg in ("--set", s)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)  # the child's own rusage, peak RSS included
    if rc := os.waitstatus_to_exitcode(status):
        raise subprocess.CalledProcessError(rc, cmd)
    peak = usage.ru_maxrss / 1024  # KiB on Linux
    logs = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    tps = [r["tokens_per_s"] for r in logs if r["kind"] == "train"]
    steps = max(r["step"] for r in logs)
    return {"train_tokens_per_s": statistics.median(tps[1:] or tps), "steps": steps,
            "train_peak_rss_mib": peak}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--minutes", type=float, default=30.0, help="training wall-clock budget")
    ap.add_argument("--out", help="run directory (default runs/bench_<config name>)")
    ap.add_argument("--sentences", type=int, default=1000, help="test sentences for speed")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per decoding setting")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ct2", action="store_true", help="also time the CTranslate2 export")
    ap.add_argument("--skip-train", action="store_true", help="reuse an existing run")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    import torch

    from attnmt.corpus import read_corpus
    from attnmt.evaluate import evaluate
    from attnmt.translate import Translator

    torch.set_num_threads(args.threads)
    out = Path(args.out or REPO / "runs" / f"bench_{Path(args.config).stem}")
    results: dict = {"config": args.config, "budget_min": args.minutes, "threads": args.threads}
    if not args.skip_train:
        results.update(run_training(args.config, args.minutes, out, args.overrides))

    tr = Translator.from_checkpoint(out / "best.pt")
    dev = read_corpus(str(out / "dev.tsv")).pairs
    test = read_corpus(str(out / "test.tsv")).pairs
    for name, pairs in (("dev", dev), ("test", test)):
        r = evaluate(tr.with_options(beam=5), pairs)
        results[f"{name}_bleu"], results[f"{name}_chrf"] = r.bleu, r.chrf
        results["bleu_signature"] = r.bleu_signature
    sources = [s for s, _ in test[: args.sentences]]
    results["speed_sentences"] = len(sources)
    results["greedy_sent_per_s"] = timed_translate(tr, sources, 1, args.repeats)
    results["beam5_sent_per_s"] = timed_translate(tr, sources, 5, args.repeats)
    if args.ct2:
        from attnmt.ct2 import export_ctranslate2, load_translator

        for quant in ("float32", "int8"):
            path = export_ctranslate2(out / "best.pt", out / f"ct2_{quant}", quantization=quant)
            ct = load_translator(path, threads=args.threads)
            results[f"ct2_{quant}_greedy_sent_per_s"] = timed_translate(
                ct, sources, 1, args.repeats
            )
            results[f"ct2_{quant}_beam5_sent_per_s"] = timed_translate(ct, sources, 5, args.repeats)
    results["translate_peak_rss_mib"] = peak_rss_mib()

    (out / "bench.json").write_text(json.dumps(results, indent=2))
    width = max(len(k) for k in results)
    for k, v in results.items():
        print(f"{k:<{width}}  {v:.2f}" if isinstance(v, float) else f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
