"""This machine's fp32 (or bf16) matmul peak, and attnmt's training FLOP/s as a share of it.

    python bench/matmul_peak.py                          # measure the peak (2 threads)
    python bench/matmul_peak.py --run runs/lstm_tatoeba  # + a run's achieved share of it
    python bench/matmul_peak.py --dtype bfloat16         # the ceiling under bf16 autocast

Pipeline position: a benchmark helper beside the package (bench/peers/run_peers.py uses it too);
nothing in attnmt imports it. Uses only torch, so it runs in either venv.

Peak: median time of repeated square fp32 matmuls (2 n^3 FLOPs each) per size, best size wins.
On a shared machine this is a lower bound on the hardware peak; run it when the cores are idle.

Achieved: training FLOPs per target token (formulas below) x the run's median target tokens/s.
Counts multiply-accumulates (MACs) of the matmuls only (embedding lookups, softmax, norms and
elementwise ops are left out), forward = 2 FLOPs per MAC, backward = 2 x forward, so
training FLOPs = 6 x forward MACs. Per target token with r = source tokens / target tokens and
S, T = mean source / target lengths (each + 1 for <eos>):

  LSTM (E emb, H hidden, h = H/2 per direction if bidirectional, L layers, V vocab):
    encoder, per source token, per layer:  dirs * 4h * (in + h)      in = E (layer 1) or H
    attention keys W_a h_s, per source token:  H * H                 ("general" scoring)
    decoder, per target token, per layer:  4H * (in + H)             in = E + H (input feeding)
    attention scores + context:  2 * S * H;  combine W_c [c; h]: 2H * H;  output: H * V
  Transformer (H d_model, F ff, L layers, V vocab):
    encoder, per source token:  L * (4H^2 + 2HF + 2SH)               (qkvo, ffn, QK^T and AV)
    cross-attention K, V, per source token:  L * 2H^2
    decoder, per target token:  L * (4H^2 + 2TH + 2H^2 + 2SH + 2HF) + H * V
  MACs per target token = decoder + r * (encoder + keys/cross K,V).
This is the usual ~6 x params x tokens rule made explicit for an encoder-decoder: the encoder's
weights see source tokens, the decoder's see target tokens, the embeddings are lookups (no FLOPs)
but the output projection is a V x H matmul per target token, and attention adds the S and T terms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch


def measure_peak(
    threads: int = 2,
    sizes: tuple[int, ...] = (1024, 2048, 3072),
    repeats: int = 7,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
) -> dict[str, Any]:
    """Matmul FLOP/s in ``dtype``: per size the median of ``repeats`` timed runs; the best size.

    bfloat16 is the ceiling for training under bf16 autocast (its matmuls run in bf16). On a GPU
    the sizes grow to 8192 (small products cannot fill it) and each timing waits for the GPU.
    fp32 there follows PyTorch's default (no TF32 for matmuls), as training does."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    gpu = device != "cpu"
    if gpu:
        sizes = (2048, 4096, 8192)

    def sync() -> None:
        if gpu:
            torch.cuda.synchronize(device)

    per_size = {}
    for n in sizes:
        a = torch.randn(n, n, dtype=dtype, device=device)
        b = torch.randn(n, n, dtype=dtype, device=device)
        c = torch.empty(n, n, dtype=dtype, device=device)
        torch.mm(a, b, out=c)  # warm-up: thread pool, page faults, GPU kernel choice
        sync()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b, out=c)
            sync()
            times.append(time.perf_counter() - t0)
        per_size[n] = 2 * n**3 / statistics.median(times)
    best = max(per_size, key=per_size.get)
    return {
        "peak_flop_s": per_size[best],
        "best_size": best,
        "per_size_flop_s": per_size,
        "threads": threads,
        "dtype": str(dtype).removeprefix("torch."),
        "device": torch.cuda.get_device_name(device) if gpu else "cpu",
        "torch": torch.__version__,
    }


def lstm_macs(m: dict[str, Any], vocab: int, r: float, src_len: float) -> float:
    """Forward MACs per target token of attnmt's LSTM (see the module docstring)."""
    E, H, L = m["emb_dim"], m["hidden"], m["layers"]
    dirs = 2 if m["bidirectional"] else 1
    h = H // dirs
    enc = sum(dirs * 4 * h * ((E if i == 0 else H) + h) for i in range(L))
    keys = H * H if m["attention"] in ("general", "additive") else 0  # W_a h_s, once per source
    dec_in0 = E + (H if m["input_feeding"] else 0)
    dec = sum(4 * H * ((dec_in0 if i == 0 else H) + H) for i in range(L))
    dec += 2 * src_len * H + 2 * H * H + H * vocab
    return dec + r * (enc + keys)


def transformer_macs(
    m: dict[str, Any], vocab: int, r: float, src_len: float, tgt_len: float
) -> float:
    """Forward MACs per target token of attnmt's Transformer (see the module docstring)."""
    H, F, L = m["hidden"], m["ff_dim"], m["layers"]
    enc = L * (4 * H * H + 2 * H * F + 2 * src_len * H)
    cross_kv = L * 2 * H * H
    dec = L * (4 * H * H + 2 * tgt_len * H + 2 * H * H + 2 * src_len * H + 2 * H * F) + H * vocab
    return dec + r * (enc + cross_kv)


def train_flops_per_target_token(
    model_cfg: dict[str, Any], vocab: int, src_tokens: float, tgt_tokens: float
) -> float:
    """Training FLOPs (6 x forward MACs) per target token; lengths are per-pair means incl <eos>."""
    r = src_tokens / tgt_tokens
    if model_cfg["arch"] == "lstm":
        macs = lstm_macs(model_cfg, vocab, r, src_tokens)
    else:
        macs = transformer_macs(model_cfg, vocab, r, src_tokens, tgt_tokens)
    return 6 * macs


def run_share(run_dir: Path, peak: float) -> dict[str, float]:
    """Achieved training FLOP/s of an attnmt run directory (last.pt + train_log.jsonl)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from attnmt.checkpoint import Checkpoint
    from attnmt.config import config_to_dict
    from attnmt.corpus import read_corpus

    ckpt = Checkpoint.load(run_dir / "last.pt")
    src_tok, tgt_tok = ckpt.src_tokenizer, ckpt.tgt_tokenizer
    # Mean lengths from the run's dev split (same distribution as train, no re-splitting needed).
    pairs = read_corpus(str(run_dir / "dev.tsv")).pairs
    src = statistics.mean(len(src_tok.encode(s)) + 1 for s, _ in pairs)
    tgt = statistics.mean(len(tgt_tok.encode(t)) + 1 for _, t in pairs)
    logs = [json.loads(x) for x in (run_dir / "train_log.jsonl").read_text().splitlines()]
    tps = [x["tokens_per_s"] for x in logs if x["kind"] == "train"]
    tok_s = statistics.median(tps[1:] or tps)
    model_cfg = config_to_dict(ckpt.config)["model"]
    per_tok = train_flops_per_target_token(model_cfg, tgt_tok.vocab_size, src, tgt)
    params = sum(v.numel() for v in ckpt.weights.values())
    return {
        "arch": ckpt.config.model.arch,
        "params": params,
        "tgt_tokens_per_s": tok_s,
        "flops_per_tgt_token": per_tok,
        "flops_6N_per_tgt_token": 6 * params * (1 + src / tgt),  # the cruder rule, for reference
        "achieved_flop_s": per_tok * tok_s,
        "share_of_peak": per_tok * tok_s / peak,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--run", help="attnmt run directory to rate against the peak")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = ap.parse_args()
    peak = measure_peak(args.threads, repeats=args.repeats, dtype=getattr(torch, args.dtype))
    for n, f in peak["per_size_flop_s"].items():
        print(f"{n:>5} x {n}: {f / 1e9:8.2f} GFLOP/s")
    gflops = peak["peak_flop_s"] / 1e9
    print(f"peak {args.dtype} matmul ({args.threads} threads): {gflops:.2f} GFLOP/s")
    if args.run:
        s = run_share(Path(args.run), peak["peak_flop_s"])
        print(json.dumps(s, indent=2))
        print(f"{s['arch']}: {s['achieved_flop_s'] / 1e9:.2f} GFLOP/s achieved = "
              f"{100 * s['share_of_peak']:.1f}% of peak")  # fmt: skip


if __name__ == "__main__":
    main()
