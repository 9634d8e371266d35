"""Training steps under each precision on a GPU, timed and profiled: where does the time go?

    python bench/gpu/precision_profile.py --config attnmt/configs/transformer_tatoeba.yaml

Runs the step attnmt's training loop runs (autocast forward, label-smoothed loss, GradScaler
for fp16, unscale, clip, AdamW) over the first --batches length-bucketed batches, two passes,
for each variant: fp32, bf16 (autocast), fp16 (autocast + GradScaler) and fp16 without the
scaler (to separate the scaler's cost from autocast's). Each step is timed to the GPU's end
(synchronize). Prints tok/s and the median and slowest step of pass 2 per variant, how many
steps the scaler skipped, then a torch.profiler table (top ops by self CUDA and self CPU time)
for a few steps of --profile.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from compile_bench import first_batches  # noqa: E402

from attnmt.checkpoint import build_model  # noqa: E402
from attnmt.config import load_config  # noqa: E402
from attnmt.evaluate import token_loss  # noqa: E402

DTYPES = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp16-noscaler": torch.float16,
}


def make_step(model, opt, scaler, dtype, cfg, device):
    def step(b) -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(b.src, b.src_mask, b.tgt_in)  # (B, T, V)
        loss = token_loss(logits, b.tgt_out, cfg.train.label_smoothing)
        scaler.scale(loss / b.n_tokens).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_norm)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--limit", type=int, default=30000, help="corpus pairs to read")
    ap.add_argument("--variants", default=",".join(DTYPES))
    ap.add_argument("--profile", default="fp16", help="variant to profile ('' = none)")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()

    device = torch.device(args.device)
    cfg = load_config(args.config, [f"data.limit={args.limit}"])
    batches, src_vocab, tgt_vocab = first_batches(cfg, args.batches)
    batches = [b.to(device) for b in batches]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    steps = {}
    for name in args.variants.split(","):
        dtype = DTYPES[name]
        torch.manual_seed(cfg.train.seed)
        model = build_model(cfg.model, src_vocab, tgt_vocab).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=cfg.train.betas)
        scaler = torch.amp.GradScaler(device.type, enabled=name == "fp16")
        step = steps[name] = make_step(model, opt, scaler, dtype, cfg, device)
        skipped = 0
        for _ in range(2):
            times, tokens = [], 0
            for b in batches:
                before = scaler.get_scale() if scaler.is_enabled() else 0.0
                sync()
                t0 = time.perf_counter()
                step(b)
                sync()
                times.append(time.perf_counter() - t0)
                tokens += b.n_tokens
                skipped += scaler.is_enabled() and scaler.get_scale() < before
        print(
            f"{name:<14} pass 2: {tokens / sum(times):>10,.0f} tok/s, median step "
            f"{1000 * statistics.median(times):7.1f} ms, slowest {1000 * max(times):7.1f} ms, "
            f"scaler skipped {skipped} of {2 * len(batches)} steps",
            flush=True,
        )

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            for b in batches[:5]:
                steps[args.profile](b)
            sync()
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=60))
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12,
                                        max_name_column_width=60))  # fmt: skip


if __name__ == "__main__":
    main()
