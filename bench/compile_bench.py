"""Does torch.compile (or a thread setting) pay for training on this machine? Eager vs compiled.

    python bench/compile_bench.py --config configs/transformer_tatoeba.yaml
    python bench/compile_bench.py --config configs/lstm_tatoeba.yaml --batches 20

Takes the first --batches length-bucketed training batches of epoch 0 (real Tatoeba batches:
every batch has its own B, S and T) and runs full training steps over them (forward, label-smoothed
loss, backward, clipping, AdamW) two passes in a row, for each variant:

- ``eager``: the model as attnmt trains it;
- ``compile``: ``torch.compile(model, dynamic=True)`` (Inductor); pass 1 includes compilation and
  the recompiles new shapes trigger, pass 2 is the steady state once every shape has been seen;
- ``eager-1thread``: eager with ``torch.set_num_threads(1)`` (the thread-setting question).

Each variant runs in its own process from the same seed, so the variants do the same arithmetic;
one that runs past --timeout seconds is recorded as a timeout.
Reports target tokens/s of pass 1 and pass 2, the median step time of pass 2, and the ratio of
each variant's pass 2 to eager's. Nothing is written except --json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = ("eager", "compile", "eager-1thread")


def first_batches(cfg, n_batches: int) -> tuple[list, int, int]:
    """The first ``n_batches`` length-bucketed training batches of epoch 0, as train() builds
    them; returns (batches, source vocab size, target vocab size)."""
    from attnmt.data import BucketBatcher, encode_pairs
    from attnmt.prepare import build_tokenizers
    from attnmt.train import load_splits

    splits = load_splits(cfg)
    src_tok, tgt_tok = build_tokenizers(cfg, splits.train)
    examples, _ = encode_pairs(splits.train, src_tok, tgt_tok, cfg.data.max_len)
    batcher = BucketBatcher(examples, cfg.train.batch_tokens, cfg.train.seed)
    batches = [batcher.batch(i) for i in batcher.batches(0)[:n_batches]]
    return batches, src_tok.vocab_size, tgt_tok.vocab_size


def run_variant(config: str, variant: str, n_batches: int, threads: int) -> dict:
    """One variant, in this process: returns pass-1/pass-2 throughput and step times."""
    import torch

    from attnmt.checkpoint import build_model
    from attnmt.config import load_config
    from attnmt.evaluate import token_loss

    torch.set_num_threads(1 if variant == "eager-1thread" else threads)
    cfg = load_config(config)
    torch.manual_seed(cfg.train.seed)
    batches, src_vocab, tgt_vocab = first_batches(cfg, n_batches)
    model = build_model(cfg.model, src_vocab, tgt_vocab)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=cfg.train.betas)
    fwd = torch.compile(model, dynamic=True) if variant == "compile" else model

    passes = []
    for _ in range(2):
        times, tokens = [], 0
        for b in batches:
            t0 = time.perf_counter()
            logits = fwd(b.src, b.src_mask, b.tgt_in)  # (B, T, V)
            loss = token_loss(logits, b.tgt_out, cfg.train.label_smoothing) / b.n_tokens
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
            tokens += b.n_tokens
        passes.append({"tok_s": tokens / sum(times), "median_step_s": statistics.median(times)})
    return {"variant": variant, "pass1": passes[0], "pass2": passes[1], "batches": len(batches)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--batches", type=int, default=30, help="training batches per pass")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--timeout", type=int, default=900, help="seconds per variant")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_variant(args.config, args.child, args.batches, args.threads)))
        return

    rows = []
    for variant in args.variants.split(","):
        cmd = [sys.executable, __file__, "--config", args.config, "--batches", str(args.batches),
               "--threads", str(args.threads), "--child", variant]  # fmt: skip
        try:
            out = subprocess.run(
                cmd, check=True, capture_output=True, text=True, cwd=REPO, timeout=args.timeout
            )
        except subprocess.TimeoutExpired:
            print(f"{variant}: over {args.timeout} s, recorded as a timeout", file=sys.stderr)
            rows.append({"variant": variant, "timeout_s": args.timeout})
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{variant}: done", file=sys.stderr)
    base = next((r["pass2"]["tok_s"] for r in rows if r["variant"] == "eager"), None)
    head = ("variant", "pass-1 tok/s", "pass-2 tok/s", "step s (med)", "vs eager")
    print(f"{head[0]:<15}{head[1]:>14}{head[2]:>14}{head[3]:>14}{head[4]:>10}")
    for r in rows:
        if "timeout_s" in r:
            print(f"{r['variant']:<15}{'timeout (' + str(r['timeout_s']) + ' s)':>28}")
            continue
        ratio = f"{r['pass2']['tok_s'] / base:.2f}x" if base else "-"
        print(
            f"{r['variant']:<15}{r['pass1']['tok_s']:>14,.0f}{r['pass2']['tok_s']:>14,.0f}"
            f"{r['pass2']['median_step_s']:>14.3f}{ratio:>10}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"config": args.config, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
