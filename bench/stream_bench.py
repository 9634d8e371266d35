"""Peak memory and speed of `attnmt translate` as its input grows (issue #14: it streams).

    .venv/bin/python bench/stream_bench.py                      # 10k and 100k lines
    .venv/bin/python bench/stream_bench.py --sizes 10k --windows 4096,0

For each input size and each ``--window`` (0 = one window holding the whole input: what
translate did before it streamed), one ``attnmt translate -i IN -o OUT`` runs in a child process;
the script reports its wall time, lines per second and peak RSS (``os.wait4``). Streaming shows
as a peak RSS that stays flat as the input grows tenfold, while the whole-input window's grows.

The model is a tiny untrained Transformer (word vocabulary, d 32, one layer) written to --work,
decoding greedily to at most 8 tokens, so the run measures the streaming machinery and the
memory of held lines rather than a real model's search; the input lines are generated from a
small English vocabulary (seeded), 4 to 20 words, some of two sentences. Everything goes under
--work (default /tmp/attnmt-stream-bench), never into the repository. 100k lines take about a
minute per window on 2 CPU cores; do not run millions here.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WORDS = ("I you we they see eat want the a dog car bread apples house red big small "
         "here there today not and with").split()  # fmt: skip


def size(text: str) -> int:
    """10k, 1M, 2500 -> a number of lines."""
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1].lower(), 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def make_input(n: int, path: Path) -> Path:
    if path.exists():
        return path
    rng = random.Random(n)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            words = [rng.choice(WORDS) for _ in range(rng.randint(4, 20))]
            if rng.random() < 0.2:  # a line of two sentences
                words.insert(len(words) // 2, ".")
            f.write(" ".join(words).capitalize() + ".\n")
    return path


def make_model(path: Path) -> Path:
    """A tiny untrained Transformer checkpoint, greedy, output limited to 8 tokens."""
    if path.exists():
        return path
    import torch

    from attnmt.checkpoint import Checkpoint, build_model
    from attnmt.config import Config
    from attnmt.tokenizer import train_tokenizer

    cfg = Config()
    cfg.data.tokenizer = "word"
    cfg.model.arch, cfg.model.hidden, cfg.model.layers = "transformer", 32, 1
    cfg.model.heads, cfg.model.ff_dim, cfg.model.dropout = 2, 64, 0.0
    cfg.decode.beam, cfg.decode.max_len_a, cfg.decode.max_len_b = 1, 0.0, 8
    src_tok = train_tokenizer("word", [" ".join(WORDS) + " ."], 200, "bpe")
    tgt_tok = train_tokenizer("word", [" ".join(WORDS) + " ."], 200, "bpe")
    torch.manual_seed(0)
    model = build_model(cfg.model, src_tok.vocab_size, tgt_tok.vocab_size)
    Checkpoint(cfg, model.state_dict(), src_tok, tgt_tok).save(path)
    return path


def run_translate(model: Path, src: Path, out: Path, window: int, threads: int) -> dict:
    """One `attnmt translate` child: wall seconds and its own peak RSS (MiB)."""
    args = [sys.executable, "-m", "attnmt", "translate", "--model", str(model), "-i", str(src),
            "-o", str(out), "--no-progress", "--threads", str(threads)]  # fmt: skip
    if window:
        args += ["--window", str(window)]
    else:  # one window for the whole input: the memory of reading it all first
        args += ["--window", str(sum(1 for _ in open(src, "rb")))]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    child = subprocess.Popen(args, env=env, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if status:
        sys.exit(f"translate failed: {child.stderr.read().decode() if child.stderr else status}")
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10k,100k", help="input lines, comma-separated")
    ap.add_argument("--windows", default="4096,0", help="--window values; 0 = the whole input")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the child")
    ap.add_argument("--work", default="/tmp/attnmt-stream-bench", help="scratch directory")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = make_model(work / "tiny.pt")
    rows = []
    for n in map(size, args.sizes.split(",")):
        src = make_input(n, work / f"in-{n}.txt")
        for window in map(int, args.windows.split(",")):
            r = run_translate(model, src, work / "out.txt", window, args.threads)
            row = {"lines": n, "window": window or "all", **r,
                   "lines_per_s": round(n / r["seconds"])}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{'lines':>9} {'window':>7} {'seconds':>8} {'lines/s':>8} {'peak RSS MiB':>13}")
    for r in rows:
        print(f"{r['lines']:>9} {r['window']:>7} {r['seconds']:>8} {r['lines_per_s']:>8} "
              f"{r['peak_rss_mib']:>13}")  # fmt: skip


if __name__ == "__main__":
    main()
