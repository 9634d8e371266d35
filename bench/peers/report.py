"""The end of run_peers: one table per architecture with attnmt/peer ratios, and FLOP/s shares.

Pipeline position: reads the results dict run_peers.main built (the same dict it writes as JSON);
computes nothing but ratios and the FLOP/s share of the matmul peak (``bench/matmul_peak.py``).
"""

from __future__ import annotations

import sys
from typing import Any

from children import REPO

COLUMNS = [
    ("train_tok_s", "train tgt tok/s", "{:.0f}"),
    ("steps", "steps", "{:.0f}"),
    ("beam5_bleu", "BLEU b5", "{:.2f}"),
    ("beam5_chrf", "chrF b5", "{:.2f}"),
    ("beam1_bleu", "BLEU gr", "{:.2f}"),
    ("beam1_sent_s", "greedy sent/s", "{:.1f}"),
    ("beam5_sent_s", "beam5 sent/s", "{:.1f}"),
    ("train_peak_rss_mib", "train RSS MiB", "{:.0f}"),
    ("translate_peak_rss_mib", "transl RSS MiB", "{:.0f}"),
]
PAIRS = [
    ("attnmt", "joeynmt"), ("attnmt", "opennmt-py"), ("attnmt-bf16", "joeynmt"),
    ("attnmt-bf16", "opennmt-py"), ("attnmt-es", "opennmt-py"), ("attnmt+int8", "opennmt-py"),
    ("attnmt+int8-es", "opennmt-py"), ("attnmt+ct2", "opennmt-py+ct2"),
    ("attnmt-fp16", "opennmt-py-fp16"), ("attnmt-fp16", "opennmt-py"),
]  # fmt: skip
FIXED_ROWS = ("attnmt+ct2-fixed", "attnmt-fixed", "attnmt+int8-fixed")


def ratio_pairs(res: dict[str, Any]) -> list[tuple[str, str]]:
    """(ours, peer) rows to divide, in order, each once, both present."""
    # Equal-work rows against their OpenNMT-py twin; int8 against its fp32 PyTorch row (OpenNMT-py
    # has no int8 of its own).
    fixed = [(ours, ours.replace("+int8", "", 1).replace("attnmt", "opennmt-py", 1))
             for ours in res if ours.startswith(FIXED_ROWS)]  # fmt: skip
    return [(a, b) for a, b in dict.fromkeys(PAIRS + fixed) if a in res and b in res]


def cell(v: Any, fmt: str) -> str:
    return f"{fmt.format(v):>16}" if isinstance(v, (int, float)) else f"{'-':>16}"


def table(arch: str, res: dict[str, Any]) -> str:
    """Every row's columns, then the ratio of each attnmt row to its peer."""
    rows = [(name, res[name]) for name in res if name != "setup" and not name.endswith("_flops")]
    width = max(len(n) for n, _ in rows) + 8
    lines = [f"{arch}".ljust(width) + "".join(f"{h:>16}" for _, h, _ in COLUMNS)]
    for name, row in rows:
        lines.append(name.ljust(width) + "".join(cell(row.get(k), f) for k, _, f in COLUMNS))
    for ours, peer in ratio_pairs(res):
        a, b = res[ours], res[peer]
        ratio = {
            k: a[k] / b[k] for k, _, _ in COLUMNS if isinstance(a.get(k), (int, float))
            and isinstance(b.get(k), (int, float)) and b[k]
        }  # fmt: skip
        label = f"{ours}/{peer}".ljust(width)
        lines.append(label + "".join(cell(ratio.get(k), "{:.2f}x") for k, _, _ in COLUMNS))
    return "\n".join(lines)


def flops_share(arch_res: dict[str, Any], peak: float, name: str = "attnmt") -> dict[str, float]:
    """Achieved training FLOP/s of row ``name`` (formula in ``matmul_peak``) and its share."""
    sys.path.insert(0, str(REPO / "bench"))
    from matmul_peak import train_flops_per_target_token

    s = arch_res["setup"]
    per_tok = train_flops_per_target_token(
        s["model"], s["vocab"], s["src_tokens_per_pair"], s["tgt_tokens_per_pair"]
    )
    achieved = per_tok * arch_res[name]["train_tok_s"]
    return {
        "flops_per_tgt_token": per_tok,
        "achieved_flop_s": achieved,
        "share_of_peak": achieved / peak,
    }


def print_summary(results: dict[str, Any], nice: int) -> None:
    """What run_peers prints at the end: set-up, the tables, the FLOP/s shares."""
    where = results.get("gpu", "CPU")
    print(f"\nbudget {results['minutes']} min per toolkit on {where}, {results['threads']} "
          f"threads, nice {nice}")  # fmt: skip
    for arch, a in results["archs"].items():
        s = a["setup"]
        print(f"\n{arch}: {s['train_pairs']} train / {s['test_pairs']} test pairs, vocab "
              f"{s['vocab']}, output cap {s['output_cap_tokens']} tokens")  # fmt: skip
        print(table(arch, a))
        for name, peak_key, kind in (("attnmt", "matmul_peak", "fp32"),
                                     ("attnmt-bf16", "matmul_peak_bf16", "bf16"),
                                     ("attnmt-fp16", "matmul_peak_fp16", "fp16")):  # fmt: skip
            if f"{name}_flops" in a:
                f = a[f"{name}_flops"]
                print(f"{name} training: {f['achieved_flop_s'] / 1e9:.2f} GFLOP/s = "
                      f"{100 * f['share_of_peak']:.1f}% of the measured {kind} matmul peak "
                      f"({results[peak_key]['peak_flop_s'] / 1e9:.1f} GFLOP/s)")  # fmt: skip
