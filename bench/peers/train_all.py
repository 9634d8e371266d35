"""Steps 1-3 of run_peers: attnmt trains, its data becomes the peers' data, the peers train.

Pipeline position: called by run_peers.run_arch in the peers' interpreter; attnmt runs in child
processes with its own interpreter (``attnmt train``, ``attnmt_prep.py``), the peers with their
own CLIs. Each fills one row of ``res`` (training throughput, steps, peak RSS);
``res["setup"]`` holds what the data preparation measured and the shared output cap.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import signal
import statistics
import zipfile
from pathlib import Path
from string import Template
from typing import Any

from children import (
    ATTNMT_PY,
    HERE,
    PEERS_PY,
    REPO,
    attnmt_cmd,
    check,
    result_line,
    run_checked,
    run_child,
)

# Validation and periodic saves are off during the budget: attnmt validates and saves once at
# the end, as the peers do (JoeyNMT on SIGINT, OpenNMT-py every --ckpt-every steps).
ATTNMT_SETS = [
    "train.max_steps=100000000", "train.eval_every=100000000", "train.save_every=100000000",
    "train.eval_max_sents=100", "train.patience=0", "train.progress=false", "train.log_every=5",
]  # fmt: skip


def median_rate(values: list[float]) -> float:
    """Median throughput over log windows, dropping the first (warm-up) one when possible."""
    return statistics.median(values[1:] or values) if values else float("nan")


# --------------------------------------------------------------------------------------------
# 1. attnmt
# --------------------------------------------------------------------------------------------


def train_attnmt(arch: str, args: argparse.Namespace, work: Path, res: dict[str, Any]) -> None:
    """attnmt's fp32 run (``work/attnmt``) and, with --bf16/--fp16, the same config in bf16/fp16."""
    sets = [
        f"train.max_minutes={args.minutes}", *ATTNMT_SETS, f"train.threads={args.threads}",
        f"train.device={args.device}", *args.attnmt_set,
    ]  # fmt: skip
    if args.limit:
        sets.append(f"data.limit={args.limit}")
    config = REPO / "attnmt" / "configs" / f"{arch}_tatoeba.yaml"
    variants = [("attnmt", work / "attnmt", [])]
    if args.bf16:
        variants.append(("attnmt-bf16", work / "attnmt-bf16", ["train.precision=bf16"]))
    if args.fp16:
        variants.append(("attnmt-fp16", work / "attnmt-fp16", ["train.precision=fp16"]))
    for name, out_dir, extra in variants:
        log = work / "logs" / f"{name}_train.log"
        print(f"[{arch}] {name}: training {args.minutes} min ...", flush=True)
        cmd = [str(ATTNMT_PY), "-m", "attnmt", "train", str(config)]  # `attnmt train`
        cmd += [arg for s in (f"train.out_dir={out_dir}", *sets, *extra) for arg in ("--set", s)]
        r = run_checked(cmd, log, args.threads, f"{name} training")
        records = [json.loads(x) for x in (out_dir / "train_log.jsonl").read_text().splitlines()]
        train_recs = [x for x in records if x["kind"] == "train"]
        res[name] = {
            "train_tok_s": median_rate([x["tokens_per_s"] for x in train_recs]),
            "steps": max((x["step"] for x in train_recs), default=0),
            "train_peak_rss_mib": r["peak_rss_mib"],
        }


# --------------------------------------------------------------------------------------------
# 2. The same split and vocabulary for the peers
# --------------------------------------------------------------------------------------------


def prepare_data(args: argparse.Namespace, work: Path) -> tuple[dict[str, Any], int]:
    """Run ``attnmt_prep.py`` on attnmt's run; returns its RESULT and the shared output cap."""
    data, log = work / "data", work / "logs" / "prep.log"
    run_checked(
        attnmt_cmd("attnmt_prep", work / "attnmt", data), log, args.threads, "data preparation"
    )
    prep = result_line(log)
    cap = args.max_len or int(prep["max_len_a"] * prep["test_max_src_tokens"] + prep["max_len_b"])
    # A small dev set for JoeyNMT (it needs one; it only validates at the very end here).
    for side in ("en", "es"):
        lines = (data / f"dev.{side}").read_text().splitlines(keepends=True)[:100]
        (data / f"devsmall.{side}").write_text("".join(lines))
    return prep, cap


def lr_peak_warmup(train_cfg: dict[str, Any]) -> tuple[float, int]:
    if train_cfg["schedule"] != "inverse_sqrt":
        raise SystemExit("run_peers matches only attnmt's inverse_sqrt schedule")
    return train_cfg["lr"], train_cfg["warmup"]


def template_values(
    arch: str, args: argparse.Namespace, data: Path, prep: dict[str, Any], cap: int
) -> dict[str, Any]:
    """attnmt's numbers under the names the templates in ``configs/`` use."""
    model_cfg, train_cfg = prep["model"], prep["train_cfg"]
    if arch == "lstm" and not (model_cfg["bidirectional"] and model_cfg["input_feeding"]):
        raise SystemExit("the peer LSTM templates assume a bidirectional encoder + input feeding")
    lr, warmup = lr_peak_warmup(train_cfg)
    return dict(
        data=data, seed=train_cfg["seed"], batch_tokens=train_cfg["batch_tokens"], lr=lr,
        warmup=warmup, beta1=train_cfg["betas"][0], beta2=train_cfg["betas"][1],
        label_smoothing=train_cfg["label_smoothing"], clip=train_cfg["clip_norm"],
        emb=model_cfg["emb_dim"], hidden=model_cfg["hidden"], half_hidden=model_cfg["hidden"] // 2,
        layers=model_cfg["layers"], heads=model_cfg["heads"], ff=model_cfg["ff_dim"],
        dropout=model_cfg["dropout"], cap=cap, ckpt_every=args.ckpt_every,
        # OpenNMT-py refills a bucket by re-reading the corpus: a small corpus would be read
        # dozens of times per bucket with its default of 262144 examples.
        bucket_size=min(262144, prep["train_pairs"]),
        # OpenNMT-py's noam = lr * H^-0.5 * min(s^-0.5, s * w^-1.5), the same curve as attnmt's
        # inverse_sqrt when lr = peak * sqrt(H * w).
        noam_lr=lr * math.sqrt(model_cfg["hidden"] * warmup),
        joey_cuda=str(args.device == "cuda").lower(),
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# 3. The peers, for the same budget
# --------------------------------------------------------------------------------------------


def render(template: str, path: Path, extra: str = "", **values: Any) -> Path:
    """Fill ``configs/<template>`` with ``values``, append ``extra`` lines, write ``path``."""
    text = Template((HERE / "configs" / template).read_text()).substitute(values)
    path.write_text(text + extra)
    return path


def onmt_configs(
    arch: str, args: argparse.Namespace, work: Path, values: dict[str, Any]
) -> dict[str, tuple[Path, Path]]:
    """OpenNMT-py's configs: name -> (config file, model directory)."""
    runs = [("opennmt-py", work / "opennmt", "")]
    if args.fp16:
        # OpenNMT-py's mixed precision: torch autocast + GradScaler, as attnmt's train.precision.
        runs.append(("opennmt-py-fp16", work / "opennmt-fp16", "model_dtype: fp16\n"))
    gpu = "gpu_ranks: [0]\nworld_size: 1\n" if args.device == "cuda" else ""
    configs = {}
    for name, model_dir, extra in runs:
        path = work / f"{name}.yaml"
        render(f"onmt_{arch}.yaml", path, extra + gpu, model_dir=model_dir, **values)
        configs[name] = (path, model_dir)
    (work / "opennmt").mkdir(parents=True, exist_ok=True)
    return configs


def onmt_checkpoints(onmt_dir: Path) -> list[Path]:
    """OpenNMT-py's complete checkpoints, oldest first. It writes them in place (no temp file and
    rename), so the one it was writing when killed at the budget is a truncated zip: skipped."""
    found = sorted(onmt_dir.glob("model_step_*.pt"), key=lambda p: int(p.stem.split("_")[-1]))
    return [p for p in found if zipfile.is_zipfile(p)]


def train_peer(
    arch: str, args: argparse.Namespace, name: str, cmd: list[str], log: Path, marker: str, sig: int
) -> tuple[dict[str, Any], str]:
    """Train one peer for the budget counted from ``marker``; returns the run and its log text."""
    print(f"[{arch}] {name}: training {args.minutes} min ...", flush=True)
    r = run_child(cmd, log, args.threads, args.minutes * 60, marker, sig)
    check(r, log, f"{name} training", allow_stop=True)
    return r, log.read_text(errors="ignore")


def train_joey(arch: str, args: argparse.Namespace, work: Path, joey_cfg: Path) -> dict[str, Any]:
    """JoeyNMT gets SIGINT at the budget: it saves its current weights on interrupt."""
    log = work / "logs" / "joey_train.log"
    cmd = [PEERS_PY, "-m", "joeynmt", "train", str(joey_cfg), "--skip-test"]
    r, text = train_peer(arch, args, "JoeyNMT", cmd, log, "EPOCH 1", signal.SIGINT)
    if not (work / "joeynmt" / "latest.ckpt").exists():
        raise SystemExit(f"JoeyNMT saved no checkpoint; see {log}")
    return {
        "train_tok_s": median_rate(
            [float(x) for x in re.findall(r"Tokens per Sec:\s+(\d+)", text)]
        ),
        "steps": max([int(x) for x in re.findall(r"Step:\s+(\d+)", text)], default=0),
        "train_peak_rss_mib": r["peak_rss_mib"],
        "loop_s": r["loop_s"],
    }


def train_onmt(
    arch: str, args: argparse.Namespace, work: Path, name: str, cfg: Path, model_dir: Path
) -> dict[str, Any]:
    """OpenNMT-py has no time limit: killed at the budget, its latest complete checkpoint used."""
    log = work / "logs" / f"{name}_train.log"
    cmd = [PEERS_PY, "-m", "onmt.bin.train", "-config", str(cfg)]
    r, text = train_peer(arch, args, name, cmd, log, "Starting training on", signal.SIGKILL)
    ckpts = onmt_checkpoints(model_dir)
    if not ckpts:
        raise SystemExit(f"{name} saved no checkpoint (lower --ckpt-every); see {log}")
    return {
        "train_tok_s": median_rate([float(x) for x in re.findall(r"/\s*(\d+) tok/s", text)]),
        "steps": max([int(x) for x in re.findall(r"Step (\d+)/", text)], default=0),
        "ckpt_step": int(ckpts[-1].stem.split("_")[-1]),
        "train_peak_rss_mib": r["peak_rss_mib"],
        "loop_s": r["loop_s"],
        "checkpoint": str(ckpts[-1]),
    }


def train_peers(
    arch: str, args: argparse.Namespace, work: Path, res: dict[str, Any], values: dict[str, Any]
) -> Path:
    """Render both peers' configs, train the ones in --peers; returns JoeyNMT's config."""
    joey_cfg = render(f"joey_{arch}.yaml", work / "joey.yaml", model_dir=work / "joeynmt", **values)
    onmt_cfgs = onmt_configs(arch, args, work, values)
    if "joeynmt" in args.peers:
        res["joeynmt"] = train_joey(arch, args, work, joey_cfg)
    if "opennmt-py" in args.peers:
        for name, (cfg, model_dir) in onmt_cfgs.items():
            res[name] = train_onmt(arch, args, work, name, cfg, model_dir)
    return joey_cfg
