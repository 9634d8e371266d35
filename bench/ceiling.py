"""How much faster could attnmt get on this machine without changing its arithmetic?

    python bench/ceiling.py train --config attnmt/configs/transformer_tatoeba.yaml
    python bench/ceiling.py translate --model runs/peers/lstm/attnmt/last.pt --beam 5 --quantize
    python bench/ceiling.py train --config ... --peer-ratio 1.10 --target 1.5

A speed target against a peer that runs the same matrix multiplies through the same BLAS
(oneDNN/MKL in PyTorch) is bounded by those multiplies: even if every other operation and all of
Python cost nothing, a step cannot take less than its matrix-multiply time. This script measures
that bound for a real workload:

- ``train``: the training step of attnmt's loop (forward, label-smoothed loss, backward, clipping,
  AdamW) over the first --batches length-bucketed batches of the config's corpus;
- ``translate``: ``Translator.translate`` (greedy or beam) over --sentences test sources, every
  output forced to --fixed-len tokens so the work does not depend on how far the model learned.

After a warm-up pass it profiles --repeats passes. For each it takes the wall time and sums the
self time of the operators in each group: matrix multiplies (GEMMs, the LSTM and fused attention
kernels, int8 linears), the vocabulary-wide softmax / loss / top-k (also work any exact trainer or
search must do), the other operators (element-wise ops, copies, optimizer arithmetic), and the
Python between operators (what is left of the wall time). A pass's ceilings are its wall time
over its matrix-multiply time, and over matrix multiplies plus the vocabulary softmax; the median
over passes is reported, since this machine's speed drifts from pass to pass (by up to 30%)
while the shares stay put.

With --peer-ratio R (attnmt's measured throughput over the peer's) and --target T, it says whether
T times the peer is reachable: that needs T/R times today's speed, which must not exceed the
ceiling. Nothing is written except --json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench"), str(REPO / "bench" / "gpu")]

# Operators whose work is a matrix multiply done by the BLAS / oneDNN / fbgemm kernels.
MATMUL_OPS = {
    "aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm", "aten::addbmm",
    "aten::mkldnn_rnn_layer", "aten::mkldnn_rnn_layer_backward",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
    "quantized::linear_dynamic", "aten::quantized_lstm",
}  # fmt: skip
# Work over the whole vocabulary per output position: softmax, the loss, top-k selection.
VOCAB_OPS = {
    "aten::_log_softmax", "aten::_log_softmax_backward_data", "aten::_softmax",
    "aten::nll_loss_forward", "aten::nll_loss_backward", "aten::topk", "aten::max",
}  # fmt: skip


def train_workload(args: argparse.Namespace):
    """A callable running --batches training steps, and the target tokens it trains on."""
    from compile_bench import first_batches
    from precision_profile import make_step

    from attnmt.checkpoint import build_model
    from attnmt.config import load_config

    cfg = load_config(args.config, [f"data.limit={args.limit}"] if args.limit else [])
    batches, src_vocab, tgt_vocab = first_batches(cfg, args.batches)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, src_vocab, tgt_vocab).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=cfg.train.betas)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    step = make_step(model, opt, scaler, None, cfg, torch.device("cpu"))

    def run() -> None:
        for b in batches:
            step(b)

    return run, f"{sum(b.n_tokens for b in batches)} target tokens"


def translate_workload(args: argparse.Namespace):
    """A callable translating --sentences test sources with every output --fixed-len long."""
    from attnmt.translate import Translator

    tr = Translator.from_checkpoint(args.model, quantize=args.quantize)
    n = args.fixed_len
    tr = tr.with_options(
        beam=args.beam, n_best=1, min_len=n, max_len_a=0.0, max_len_b=n, batch_size=64
    )
    test = Path(args.model).parent / "test.tsv"
    lines = [line.split("\t")[0] for line in test.read_text(encoding="utf-8").splitlines()]
    lines = lines[: args.sentences]

    def run() -> None:
        tr.translate(lines)

    return run, f"{len(lines)} sentences x {args.fixed_len} tokens, beam {args.beam}"


def measure(run, repeats: int) -> dict:
    """Profile ``repeats`` passes (after a warm-up pass); each pass gives its wall time and the
    self time of each operator group. Returns every pass and the median ceilings."""
    from torch.profiler import profile

    run()  # warm-up: allocations, oneDNN primitive caches
    passes = []
    for _ in range(repeats):
        with profile() as prof:
            t0 = time.perf_counter()
            run()
            wall = time.perf_counter() - t0
        groups = {"matmul": 0.0, "vocab": 0.0, "ops_other": 0.0}
        ops: dict[str, dict[str, float]] = {"matmul": {}, "other": {}}
        for e in prof.key_averages():
            s = e.self_cpu_time_total / 1e6
            if e.key in MATMUL_OPS:
                groups["matmul"] += s
                ops["matmul"][e.key] = s
            elif e.key in VOCAB_OPS:
                groups["vocab"] += s
            elif e.key.startswith(("aten::", "quantized::")):
                groups["ops_other"] += s
                ops["other"][e.key] = s
        top = {k: sorted(v.items(), key=lambda kv: -kv[1])[:6] for k, v in ops.items()}
        # Shares and ceilings come from one pass: this machine's speed drifts between passes.
        # The profiler's own overhead lands in "everything else", which makes a ceiling a
        # little higher than it is, never lower.
        passes.append({
            "wall_s": wall,
            **{f"{k}_s": v for k, v in groups.items()},
            "python_s": wall - sum(groups.values()),
            "ceiling_matmul": wall / groups["matmul"],
            "ceiling_matmul_vocab": wall / (groups["matmul"] + groups["vocab"]),
            "top_ops": top,
        })  # fmt: skip
    return {
        "passes": passes,
        "ceiling_matmul": statistics.median(p["ceiling_matmul"] for p in passes),
        "ceiling_matmul_vocab": statistics.median(p["ceiling_matmul_vocab"] for p in passes),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("workload", choices=["train", "translate"])
    ap.add_argument("--config", help="train: the config whose corpus and model to use")
    ap.add_argument("--batches", type=int, default=10, help="train: batches per pass")
    ap.add_argument("--limit", type=int, default=0, help="train: corpus pairs to read (0 = all)")
    ap.add_argument("--model", help="translate: checkpoint (its test.tsv gives the sources)")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--quantize", action="store_true", help="translate: int8 (--quantize)")
    ap.add_argument("--sentences", type=int, default=256)
    ap.add_argument("--fixed-len", type=int, default=16, help="translate: tokens per output")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="profiled passes (median ceiling)")
    ap.add_argument("--peer-ratio", type=float, help="attnmt's measured speed / the peer's")
    ap.add_argument("--target", type=float, default=0.0, help="speed-up over the peer wanted")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if args.workload == "train" and not args.config:
        ap.error("train needs --config")
    if args.workload == "translate" and not args.model:
        ap.error("translate needs --model")

    torch.set_num_threads(args.threads)
    run, what = (train_workload if args.workload == "train" else translate_workload)(args)
    r = measure(run, args.repeats)
    print(f"{args.workload}: {what}, {args.threads} threads, {args.repeats} profiled passes")
    print(f"{'':<34}" + "".join(f"{'pass ' + str(i + 1):>16}" for i in range(args.repeats)))
    rows = (("wall", "wall_s"), ("matrix multiplies", "matmul_s"),
            ("vocabulary softmax/loss/top-k", "vocab_s"), ("other operators", "ops_other_s"),
            ("Python between operators", "python_s"))  # fmt: skip
    for label, key in rows:
        cells = "".join(f"{p[key]:8.2f} s {100 * p[key] / p['wall_s']:4.0f}%" for p in r["passes"])
        print(f"  {label:<32}{cells}")
    for group, top in r["passes"][-1]["top_ops"].items():
        print(f"  largest {group} ops (last pass): " + ", ".join(f"{k} {v:.2f} s" for k, v in top))
    print(f"median ceiling, matrix multiplies only:   {r['ceiling_matmul']:.2f}x today's speed")
    print(
        f"median ceiling, + the vocabulary softmax: {r['ceiling_matmul_vocab']:.2f}x today's speed"
    )
    if args.peer_ratio and args.target:
        need = args.target / args.peer_ratio
        r["needed"] = need
        for label, key in (("matrix-multiply", "ceiling_matmul"),
                           ("matrix-multiply + softmax", "ceiling_matmul_vocab")):  # fmt: skip
            verdict = "within" if need <= r[key] else "beyond"
            print(
                f"{args.target}x the peer needs {need:.2f}x today's speed: {verdict} the "
                f"{label} ceiling ({r[key]:.2f}x)"
            )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), **r}, indent=1))


if __name__ == "__main__":
    main()
