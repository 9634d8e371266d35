"""attnmt vs JoeyNMT 2.3.0 vs OpenNMT-py 3.5.1 (+ CTranslate2): same data, same budget, one table.

    bash bench/peers/setup.sh                       # once: bench/peers/.venv
    nice -n 19 bench/peers/.venv/bin/python bench/peers/run_peers.py --minutes 10 --arch both
    nice -n 19 bench/peers/.venv/bin/python bench/peers/run_peers.py --minutes 0.5 --limit 5000

Pipeline position: a benchmark beside the package, never imported by it. attnmt runs in its own
venv (``.venv/bin/python``); the peers run in ``bench/peers/.venv``; every training and
translation runs in its own child process so its peak RSS (``os.wait4``) is its own.

Per architecture (lstm, transformer):
  1. attnmt trains ``attnmt/configs/<arch>_tatoeba.yaml`` for the budget (its own max_minutes).
  2. Its split (load_splits with the run's config) and its SentencePiece model (from the
     checkpoint) are written as pre-tokenized piece files + vocab files, so the peers see the
     same sentences and the same subword vocabulary.
  3. JoeyNMT and OpenNMT-py train matched configs (templates in bench/peers/configs/) for the same
     wall-clock budget, counted from the moment each toolkit starts its training loop. JoeyNMT
     gets SIGINT at the budget (it saves its weights on interrupt); OpenNMT-py is killed and its
     latest checkpoint (saved every --ckpt-every steps) is used.
  4. Every model translates the same test sources, greedy and beam 5, same fixed output cap,
     64 sentences per batch, --threads threads; timing excludes model loading.
  5. sacreBLEU BLEU/chrF on detokenized output against the test references.
Writes bench/results/peers_<date>.json and prints one table with attnmt/peer ratios.

Parts (all in bench/peers/, run here in the peers' interpreter, which has no attnmt): children.py
(child processes, the two interpreters), train_all.py (steps 1-3), translate_all.py (4-5),
report.py (the table). The children run programs, never code in strings: ``attnmt train`` and
attnmt_prep.py, attnmt_translate.py (attnmt's interpreter), peer_translate.py and the peers' own
CLIs (the peers' interpreter).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from children import ATTNMT_PY, REPO
from report import flops_share, print_summary
from train_all import onmt_checkpoints, prepare_data, template_values, train_attnmt, train_peers
from translate_all import translate_all


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget per toolkit")
    ap.add_argument("--arch", choices=["lstm", "transformer", "both"], default="both")
    ap.add_argument("--limit", type=int, default=0, help="use the first N corpus pairs (0 = all)")
    ap.add_argument("--threads", type=int, default=2, help="torch/CT2 threads everywhere")
    ap.add_argument("--max-len", type=int, default=0,
                    help="fixed output cap in tokens for every toolkit (0 = attnmt's "
                         "max_len_a * longest test source + max_len_b)")  # fmt: skip
    ap.add_argument(
        "--ckpt-every",
        type=int,
        default=25,
        help="OpenNMT-py checkpoint interval in steps (it is killed at the budget)",
    )
    ap.add_argument("--work", default=str(REPO / "runs" / "peers"), help="work directory")
    ap.add_argument(
        "--skip-train",
        action="store_true",
        help="reuse the trained models in --work (translate and score again)",
    )
    ap.add_argument("--no-peak", action="store_true", help="skip the matmul peak measurement")
    ap.add_argument("--attnmt-set", action="append", default=[], help="extra attnmt --set")
    ap.add_argument(
        "--translate-timeout",
        type=float,
        default=600.0,
        help="seconds per translation job (greedy + beam 5) before it is killed and left out",
    )
    ap.add_argument(
        "--bf16", action="store_true", help="also train attnmt with bfloat16 autocast (a row)"
    )
    ap.add_argument(
        "--fp16",
        action="store_true",
        help="also train attnmt (train.precision=fp16) and OpenNMT-py (model_dtype fp16) with "
        "float16 autocast + loss scaling (rows; for GPUs)",
    )
    ap.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="train and translate on this device (cuda: no int8 or CTranslate2 rows)",
    )
    ap.add_argument(
        "--peers",
        default="joeynmt,opennmt-py",
        help="comma-separated peers to run (joeynmt, opennmt-py)",
    )
    ap.add_argument(
        "--fixed-len",
        type=int,
        default=0,
        help="also time every engine with each output forced to N tokens (rows *-fixedN, "
        "*+ct2-fixedN): the same work for all, whatever the models learned; not scored",
    )
    ap.add_argument("--rows", default="", help="translate only the rows matching this regex")
    return ap


def parse_args() -> argparse.Namespace:
    ap = build_parser()
    args = ap.parse_args()
    args.peers = [p for p in args.peers.split(",") if p]
    if unknown := set(args.peers) - {"joeynmt", "opennmt-py"}:
        ap.error(f"--peers: unknown {sorted(unknown)}")
    return args


def run_arch(arch: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Steps 1-5 for one architecture (with --skip-train: 4-5 on the models in ``work``)."""
    joey_cfg = work / "joey.yaml"
    if args.skip_train:
        res = json.loads((work / "train.json").read_text())
        if "opennmt-py" in res and "checkpoint" not in res["opennmt-py"]:  # an older train.json
            res["opennmt-py"]["checkpoint"] = str(onmt_checkpoints(work / "opennmt")[-1])
        return translate_all(arch, args, work, res, res["setup"]["output_cap_tokens"], joey_cfg)
    # 1. attnmt trains first: it defines the split and the SentencePiece vocabulary. With
    # --bf16/--fp16 more attnmt runs train the same config under bf16/fp16 autocast.
    res: dict[str, Any] = {}
    train_attnmt(arch, args, work, res)
    # 2. The same split and vocabulary for the peers.
    prep, cap = prepare_data(args, work)
    values = template_values(arch, args, work / "data", prep, cap)
    res["setup"] = {**prep, "output_cap_tokens": cap, "threads": args.threads}
    res["setup"]["peers"] = args.peers
    # 3. Peers train for the same budget.
    train_peers(arch, args, work, res, values)
    (work / "train.json").write_text(json.dumps(res, indent=2))
    return translate_all(arch, args, work, res, cap, joey_cfg)


def bf16_unsupported() -> bool:
    """attnmt refuses bf16 on a CPU without oneDNN bf16 kernels (same torch as attnmt's venv)."""
    import torch

    return not torch.ops.mkldnn._is_mkldnn_bf16_supported()


def add_flops(results: dict[str, Any], args: argparse.Namespace) -> None:
    """The matmul peak per precision trained, and each attnmt run's share of it."""
    import torch

    sys.path.insert(0, str(REPO / "bench"))
    from matmul_peak import measure_peak

    dev = args.device
    results["matmul_peak"] = measure_peak(threads=args.threads, device=dev)
    low = [("bf16", torch.bfloat16)] if args.bf16 else []
    low += [("fp16", torch.float16)] if args.fp16 else []
    for kind, dtype in low:
        results[f"matmul_peak_{kind}"] = measure_peak(args.threads, dtype=dtype, device=dev)
    for a in results["archs"].values():
        a["attnmt_flops"] = flops_share(a, results["matmul_peak"]["peak_flop_s"])
        for kind, _ in low:
            peak = results[f"matmul_peak_{kind}"]["peak_flop_s"]
            a[f"attnmt-{kind}_flops"] = flops_share(a, peak, f"attnmt-{kind}")


def main() -> None:
    args = parse_args()
    if not ATTNMT_PY.exists():
        raise SystemExit(f"{ATTNMT_PY} missing: attnmt's own venv is needed")
    archs = ["lstm", "transformer"] if args.arch == "both" else [args.arch]
    results: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "minutes": args.minutes, "limit": args.limit, "threads": args.threads,
        "nice": os.nice(0), "device": args.device, "archs": {},
    }  # fmt: skip
    if args.device == "cuda":
        import torch

        results["gpu"] = torch.cuda.get_device_name()
        results["torch"] = torch.__version__
    if args.bf16 and args.device == "cpu" and bf16_unsupported():
        results["bf16_skipped"] = "this CPU has no oneDNN bf16 kernels (no AVX512/AMX)"
        print(f"--bf16 skipped: {results['bf16_skipped']}", flush=True)
        args = argparse.Namespace(**{**vars(args), "bf16": False})
    for arch in archs:
        work = Path(args.work) / arch
        if work.exists() and not args.skip_train:
            shutil.rmtree(work)  # a fresh run each time: nothing resumes from old checkpoints
        results["archs"][arch] = run_arch(arch, args, work)
    if not args.no_peak:
        add_flops(results, args)
    stamp = f"{datetime.datetime.now():%Y%m%d-%H%M}"
    tag = "_cuda" if args.device == "cuda" else ""
    out = REPO / "bench" / "results" / f"peers{tag}_{args.arch}_{args.minutes:g}min_{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print_summary(results, os.nice(0))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
