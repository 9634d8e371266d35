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
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from string import Template
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HERE = REPO / "bench" / "peers"
# attnmt's interpreter: its own venv here; on a GPU machine (bench/gpu/run_device.sh) one Python
# holds attnmt and the peers, named by ATTNMT_PYTHON.
ATTNMT_PY = Path(os.environ.get("ATTNMT_PYTHON", REPO / ".venv" / "bin" / "python"))
PEERS_PY = sys.executable
SPECIALS = {"<pad>", "<bos>", "<eos>", "<unk>"}

# --------------------------------------------------------------------------------------------
# Child processes: time limit, start marker, peak RSS
# --------------------------------------------------------------------------------------------


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        # torch>=2.6 loads with weights_only=True; OpenNMT-py and JoeyNMT checkpoints hold
        # pickled option objects, so their own loaders need the old behaviour.
        TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1",
        PYTHONUNBUFFERED="1",
        # The repo first; keep a PYTHONPATH the caller set (wheels unpacked on a GPU machine).
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
    )
    return env


def run_child(
    cmd: list[str],
    log_path: Path,
    threads: int,
    budget_s: float = 0.0,
    start_marker: str = "",
    stop_signal: int = signal.SIGINT,
    grace_s: float = 120.0,
) -> dict[str, Any]:
    """Run ``cmd`` with stdout+stderr in ``log_path``; returns rc, wall time and peak RSS.

    With ``budget_s``: the budget starts when ``start_marker`` first appears in the log (the
    toolkit's training loop began; setup is not charged, as attnmt's own max_minutes does not
    charge it) and ``stop_signal`` is sent when it runs out; SIGKILL after ``grace_s``.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        t0 = time.time()
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=child_env(threads)
        )
        loop_start = 0.0 if start_marker else t0
        stopped_at = 0.0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = time.time()
            if budget_s and not loop_start and start_marker in log_path.read_text(errors="ignore"):
                loop_start = now
            if budget_s and loop_start and not stopped_at and now - loop_start >= budget_s:
                proc.send_signal(stop_signal)
                stopped_at = now
            if stopped_at and now - stopped_at > grace_s:
                proc.kill()
            time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "rc": proc.returncode,
        "wall_s": time.time() - t0,
        "loop_s": (stopped_at or time.time()) - (loop_start or t0),
        "stopped": bool(stopped_at),
        "peak_rss_mib": usage.ru_maxrss / 1024,  # KiB on Linux
    }


def check(result: dict[str, Any], log_path: Path, what: str, allow_stop: bool = False) -> None:
    if result["rc"] != 0 and not (allow_stop and result["stopped"]):
        tail = "\n".join(log_path.read_text(errors="ignore").splitlines()[-25:])
        raise SystemExit(f"{what} failed (rc {result['rc']}), log {log_path}:\n{tail}")


def result_line(log_path: Path) -> dict[str, Any]:
    """The ``RESULT {json}`` line a worker prints last."""
    for line in reversed(log_path.read_text(errors="ignore").splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"no RESULT line in {log_path}")


# --------------------------------------------------------------------------------------------
# attnmt side (runs in attnmt's venv)
# --------------------------------------------------------------------------------------------

ATTNMT_TRAIN = """
import sys
from attnmt.config import load_config
from attnmt.train import train
train(load_config(sys.argv[1], sys.argv[2:]))
"""

# Re-create attnmt's split from the run's resolved config and write what the peers read.
ATTNMT_PREP = """
import json, sys
from collections import Counter
from pathlib import Path
import torch
from attnmt.config import load_config
from attnmt.corpus import read_corpus
from attnmt.tokenizer import tokenizer_from_dict
from attnmt.train import load_splits

run, data = Path(sys.argv[1]), Path(sys.argv[2])
data.mkdir(parents=True, exist_ok=True)
cfg = load_config(run / "config.yaml")
ckpt = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
assert ckpt["src_tokenizer"] == ckpt["tgt_tokenizer"], "peers need attnmt's shared vocabulary"
tok = tokenizer_from_dict(ckpt["tgt_tokenizer"])
(data / "sp.model").write_bytes(ckpt["tgt_tokenizer"]["model_proto"])
splits = load_splits(cfg)
for name in ("dev", "test"):  # the split attnmt trained with, re-derived: must be identical
    assert getattr(splits, name) == read_corpus(str(run / f"{name}.tsv")).pairs, name
max_len = cfg.data.max_len
train = [(s, t) for s, t in splits.train
         if not max_len or (len(tok.encode(s)) <= max_len and len(tok.encode(t)) <= max_len)]
counts = Counter()
lens = [0, 0]
for name, pairs in (("train", train), ("dev", splits.dev), ("test", splits.test)):
    with open(data / f"{name}.en", "w") as fs, open(data / f"{name}.es", "w") as ft:
        for s, t in pairs:
            ps, pt = tok.pieces(s), tok.pieces(t)
            fs.write(" ".join(ps) + "\\n"); ft.write(" ".join(pt) + "\\n")
            if name == "train":
                counts.update(ps); counts.update(pt); lens[0] += len(ps) + 1; lens[1] += len(pt) + 1
    (data / f"{name}.src.txt").write_text("".join(s + "\\n" for s, _ in pairs))
    (data / f"{name}.ref.txt").write_text("".join(t + "\\n" for _, t in pairs))
pieces = [tok.id_to_piece(i) for i in range(tok.vocab_size)]
pieces = [p for p in pieces if p not in ("<pad>", "<bos>", "<eos>", "<unk>")]
assert all(p.split() == [p] for p in pieces), "a piece with whitespace cannot be pre-tokenized"
pieces.sort(key=lambda p: -counts[p])
(data / "vocab.joey").write_text("".join(p + "\\n" for p in pieces))
(data / "vocab.onmt").write_text("".join(f"{p} {counts[p] + 1}\\n" for p in pieces))
n_params = sum(v.numel() for v in ckpt["model"].values())
print("RESULT " + json.dumps({
    "train_pairs": len(train), "dev_pairs": len(splits.dev), "test_pairs": len(splits.test),
    "vocab": tok.vocab_size, "src_tokens_per_pair": lens[0] / len(train),
    "tgt_tokens_per_pair": lens[1] / len(train), "attnmt_params": n_params,
    "model": ckpt["config"]["model"], "train_cfg": ckpt["config"]["train"],
    "test_max_src_tokens": max(len(tok.encode(s)) + 1 for s, _ in splits.test),
    "max_len_a": cfg.decode.max_len_a, "max_len_b": cfg.decode.max_len_b,
}))
"""

# Translate with attnmt's Translator (and its CTranslate2 export) under the shared fixed cap.
ATTNMT_TRANSLATE = """
import json, sys, time
from pathlib import Path
import torch
ckpt, src, out, cap, threads, engine, device = sys.argv[1:8]
flags = sys.argv[8:]  # "es" (early stop), "fixed=N" (every output exactly N tokens)
early_stop = "es" in flags
fixed = next((int(f[6:]) for f in flags if f.startswith("fixed=")), 0)
torch.set_num_threads(int(threads))
if engine == "ct2":
    from attnmt.ct2 import CT2Translator, export_ctranslate2
    tr = CT2Translator(export_ctranslate2(ckpt, Path(out).parent / "attnmt_ct2"),
                       intra_threads=int(threads))
else:
    from attnmt.translate import Translator
    tr = Translator.from_checkpoint(ckpt, device=device, quantize=engine == "int8")
d = tr.cfg.decode
d.max_len_a, d.max_len_b, d.batch_size, d.length_penalty = 0.0, int(cap), 64, 1.0
if early_stop:
    d.early_stop = True
if fixed:
    d.min_len, d.max_len_a, d.max_len_b = fixed, 0.0, fixed
lines = Path(src).read_text().splitlines()
res = {}
for beam in (1, 5):
    t0 = time.perf_counter()
    hyps = tr.translate(lines, beam=beam, n_best=1)
    res[f"beam{beam}_s"] = time.perf_counter() - t0
    Path(f"{out}.beam{beam}").write_text("".join(h[0].text + "\\n" for h in hyps))
print("RESULT " + json.dumps(res))
"""


# --------------------------------------------------------------------------------------------
# Peer workers (run in the peers venv as `run_peers.py --worker ...`)
# --------------------------------------------------------------------------------------------


def worker_joey_translate(cfg_path: str, src: str, out: str, cap: int, threads: int) -> None:
    """Load a JoeyNMT model once and time ``predict`` (the function ``joeynmt translate``
    uses; its ``-o`` option crashes in 2.3.0) for greedy and beam 5."""
    import torch
    from joeynmt.config import load_config, parse_global_args
    from joeynmt.prediction import predict, prepare

    torch.set_num_threads(threads)
    cfg = load_config(Path(cfg_path))
    cfg["testing"]["load_model"] = str(Path(cfg["model_dir"]) / "latest.ckpt")
    args = parse_global_args(cfg, rank=0, mode="translate")
    model, _, _, data = prepare(args, rank=0, mode="translate")
    lines = Path(src).read_text().splitlines()
    res = {}
    for beam in (1, 5):
        test_args = args.test._replace(
            beam_size=beam, max_output_length=cap, batch_size=64, batch_type="sentence", n_best=1
        )
        data.reset_cache()
        for line in lines:
            data.set_item(line)
        t0 = time.perf_counter()
        _, _, hyps, _, _, _ = predict(
            model=model, data=data, device=args.device, n_gpu=args.n_gpu, rank=0,
            compute_loss=False, normalization="none", num_workers=0, args=test_args,
            autocast=args.autocast,
        )  # fmt: skip
        res[f"beam{beam}_s"] = time.perf_counter() - t0
        assert len(hyps) == len(lines), (len(hyps), len(lines))
        Path(f"{out}.beam{beam}").write_text("".join(h + "\n" for h in hyps))
    print("RESULT " + json.dumps(res))


def worker_ct2_translate(
    model_dir: str, src: str, out: str, cap: int, threads: int, fixed: int = 0
) -> None:
    """CTranslate2 on pre-tokenized pieces. ``fixed`` > 0: every output is exactly ``fixed``
    tokens (min = max decoding length), so two models of the same size do the same work whatever
    they learned -- an engine-level comparison of two exports."""
    import ctranslate2

    tr = ctranslate2.Translator(model_dir, device="cpu", intra_threads=threads, inter_threads=1)
    batch = [line.split() for line in Path(src).read_text().splitlines()]
    lengths = dict(min_decoding_length=fixed, max_decoding_length=fixed) if fixed else {}
    res = {}
    for beam in (1, 5):
        t0 = time.perf_counter()
        found = tr.translate_batch(
            batch, beam_size=beam, max_batch_size=64, length_penalty=1.0,
            **(lengths or dict(max_decoding_length=cap)),
        )  # fmt: skip
        res[f"beam{beam}_s"] = time.perf_counter() - t0
        text = "".join(" ".join(r.hypotheses[0]) + "\n" for r in found)
        Path(f"{out}.beam{beam}").write_text(text)
    print("RESULT " + json.dumps(res))


# --------------------------------------------------------------------------------------------
# Configs, logs, scores
# --------------------------------------------------------------------------------------------


def onmt_checkpoints(onmt_dir: Path) -> list[Path]:
    """OpenNMT-py's complete checkpoints, oldest first. It writes them in place (no temp file and
    rename), so the one it was writing when killed at the budget is a truncated zip: skipped."""
    import zipfile

    found = sorted(onmt_dir.glob("model_step_*.pt"), key=lambda p: int(p.stem.split("_")[-1]))
    return [p for p in found if zipfile.is_zipfile(p)]


def render(template: str, path: Path, **values: Any) -> Path:
    text = Template((HERE / "configs" / template).read_text()).substitute(values)
    path.write_text(text)
    return path


def median_rate(values: list[float]) -> float:
    """Median throughput over log windows, dropping the first (warm-up) one when possible."""
    return statistics.median(values[1:] or values) if values else float("nan")


def detok(piece_file: Path, sp_model: Path, out: Path) -> Path:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(sp_model))
    lines = piece_file.read_text().splitlines()
    out.write_text("".join(sp.decode_pieces(line.split()) + "\n" for line in lines))
    return out


def score(hyp_file: Path, ref_file: Path) -> dict[str, float]:
    import sacrebleu

    hyps = hyp_file.read_text().splitlines()
    refs = ref_file.read_text().splitlines()
    assert len(hyps) == len(refs), (hyp_file, len(hyps), len(refs))
    return {
        "bleu": sacrebleu.metrics.BLEU().corpus_score(hyps, [refs]).score,
        "chrf": sacrebleu.metrics.CHRF().corpus_score(hyps, [refs]).score,
    }


def lr_peak_warmup(train_cfg: dict[str, Any]) -> tuple[float, int]:
    if train_cfg["schedule"] != "inverse_sqrt":
        raise SystemExit("run_peers matches only attnmt's inverse_sqrt schedule")
    return train_cfg["lr"], train_cfg["warmup"]


# --------------------------------------------------------------------------------------------
# One architecture, three toolkits
# --------------------------------------------------------------------------------------------


def run_arch(arch: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    budget_s = args.minutes * 60
    data, res = work / "data", {}
    gpu = args.device == "cuda"

    run_dir = work / "attnmt"
    joey_dir, onmt_dir = work / "joeynmt", work / "opennmt"
    if args.skip_train:
        res = json.loads((work / "train.json").read_text())
        cap = res["setup"]["output_cap_tokens"]
        joey_cfg = work / "joey.yaml"
        if "opennmt-py" in res and "checkpoint" not in res["opennmt-py"]:  # an older train.json
            res["opennmt-py"]["checkpoint"] = str(onmt_checkpoints(onmt_dir)[-1])
        return translate_all(arch, args, work, res, cap, joey_cfg)

    # 1. attnmt trains first: it defines the split and the SentencePiece vocabulary. With
    # --bf16 a second attnmt run trains the same config under bfloat16 autocast on the CPU.
    sets = [
        f"train.max_minutes={args.minutes}",
        "train.max_steps=100000000", "train.eval_every=100000000", "train.save_every=100000000",
        "train.eval_max_sents=100", "train.patience=0", "train.progress=false", "train.log_every=5",
        f"train.threads={args.threads}", f"train.device={args.device}", *args.attnmt_set,
    ]  # fmt: skip
    if args.limit:
        sets.append(f"data.limit={args.limit}")
    config = REPO / "attnmt" / "configs" / f"{arch}_tatoeba.yaml"
    variants = [("attnmt", run_dir, [])]
    if args.bf16:
        variants.append(("attnmt-bf16", work / "attnmt-bf16", ["train.precision=bf16"]))
    if args.fp16:
        variants.append(("attnmt-fp16", work / "attnmt-fp16", ["train.precision=fp16"]))
    for name, out_dir, extra in variants:
        log = work / "logs" / f"{name}_train.log"
        print(f"[{arch}] {name}: training {args.minutes} min ...", flush=True)
        cmd = [str(ATTNMT_PY), "-c", ATTNMT_TRAIN, str(config), f"train.out_dir={out_dir}", *sets]
        r = run_child([*cmd, *extra], log, args.threads)
        check(r, log, f"{name} training")
        records = [json.loads(x) for x in (out_dir / "train_log.jsonl").read_text().splitlines()]
        train_recs = [x for x in records if x["kind"] == "train"]
        res[name] = {
            "train_tok_s": median_rate([x["tokens_per_s"] for x in train_recs]),
            "steps": max((x["step"] for x in train_recs), default=0),
            "train_peak_rss_mib": r["peak_rss_mib"],
        }

    # 2. The same split and vocabulary for the peers.
    log = work / "logs" / "prep.log"
    r = run_child([str(ATTNMT_PY), "-c", ATTNMT_PREP, str(run_dir), str(data)], log, args.threads)
    check(r, log, "data preparation")
    prep = result_line(log)
    model_cfg, train_cfg = prep["model"], prep["train_cfg"]
    cap = args.max_len or int(prep["max_len_a"] * prep["test_max_src_tokens"] + prep["max_len_b"])
    # A small dev set for JoeyNMT (it needs one; it only validates at the very end here).
    for side in ("en", "es"):
        lines = (data / f"dev.{side}").read_text().splitlines(keepends=True)[:100]
        (data / f"devsmall.{side}").write_text("".join(lines))
    lr, warmup = lr_peak_warmup(train_cfg)
    common = dict(
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
        joey_cuda=str(gpu).lower(),
    )  # fmt: skip
    if arch == "lstm" and not (model_cfg["bidirectional"] and model_cfg["input_feeding"]):
        raise SystemExit("the peer LSTM templates assume a bidirectional encoder + input feeding")
    res["setup"] = {**prep, "output_cap_tokens": cap, "threads": args.threads}

    # 3. Peers train for the same budget.
    onmt_dir.mkdir(parents=True, exist_ok=True)
    joey_cfg = render(f"joey_{arch}.yaml", work / "joey.yaml", model_dir=joey_dir, **common)
    onmt_runs = [("opennmt-py", onmt_dir, "")]
    if args.fp16:
        # OpenNMT-py's mixed precision: torch autocast + GradScaler, as attnmt's train.precision.
        onmt_runs.append(("opennmt-py-fp16", work / "opennmt-fp16", "model_dtype: fp16\n"))
    onmt_cfgs = {}
    for name, model_dir, extra in onmt_runs:
        cfg_path = render(f"onmt_{arch}.yaml", work / f"{name}.yaml", model_dir=model_dir, **common)
        if gpu:
            extra += "gpu_ranks: [0]\nworld_size: 1\n"
        cfg_path.write_text(cfg_path.read_text() + extra)
        onmt_cfgs[name] = (cfg_path, model_dir)
    res["setup"]["peers"] = args.peers

    if "joeynmt" in args.peers:
        train_joey(arch, args, work, res, joey_cfg, joey_dir, budget_s)
    if "opennmt-py" in args.peers:
        for name, (cfg_path, model_dir) in onmt_cfgs.items():
            train_onmt(arch, args, work, res, name, cfg_path, model_dir, budget_s)
    (work / "train.json").write_text(json.dumps(res, indent=2))
    return translate_all(arch, args, work, res, cap, joey_cfg)


def train_joey(
    arch: str,
    args: argparse.Namespace,
    work: Path,
    res: dict[str, Any],
    joey_cfg: Path,
    joey_dir: Path,
    budget_s: float,
) -> None:
    print(f"[{arch}] JoeyNMT: training {args.minutes} min ...", flush=True)
    log = work / "logs" / "joey_train.log"
    cmd = [PEERS_PY, "-m", "joeynmt", "train", str(joey_cfg), "--skip-test"]
    r = run_child(cmd, log, args.threads, budget_s, "EPOCH 1", signal.SIGINT)
    check(r, log, "JoeyNMT training", allow_stop=True)
    text = log.read_text(errors="ignore")
    res["joeynmt"] = {
        "train_tok_s": median_rate(
            [float(x) for x in re.findall(r"Tokens per Sec:\s+(\d+)", text)]
        ),  # noqa: E501
        "steps": max([int(x) for x in re.findall(r"Step:\s+(\d+)", text)], default=0),
        "train_peak_rss_mib": r["peak_rss_mib"],
        "loop_s": r["loop_s"],
    }
    if not (joey_dir / "latest.ckpt").exists():
        raise SystemExit(f"JoeyNMT saved no checkpoint; see {log}")


def train_onmt(
    arch: str,
    args: argparse.Namespace,
    work: Path,
    res: dict[str, Any],
    name: str,
    onmt_cfg: Path,
    onmt_dir: Path,
    budget_s: float,
) -> None:
    print(f"[{arch}] {name}: training {args.minutes} min ...", flush=True)
    log = work / "logs" / f"{name}_train.log"
    cmd = [PEERS_PY, "-m", "onmt.bin.train", "-config", str(onmt_cfg)]
    r = run_child(cmd, log, args.threads, budget_s, "Starting training on", signal.SIGKILL)
    check(r, log, f"{name} training", allow_stop=True)
    text = log.read_text(errors="ignore")
    ckpts = onmt_checkpoints(onmt_dir)
    if not ckpts:
        raise SystemExit(f"{name} saved no checkpoint (lower --ckpt-every); see {log}")
    res[name] = {
        "train_tok_s": median_rate([float(x) for x in re.findall(r"/\s*(\d+) tok/s", text)]),
        "steps": max([int(x) for x in re.findall(r"Step (\d+)/", text)], default=0),
        "ckpt_step": int(ckpts[-1].stem.split("_")[-1]),
        "train_peak_rss_mib": r["peak_rss_mib"],
        "loop_s": r["loop_s"],
        "checkpoint": str(ckpts[-1]),
    }


def translate_all(
    arch: str,
    args: argparse.Namespace,
    work: Path,
    res: dict[str, Any],
    cap: int,
    joey_cfg: Path,
) -> dict[str, Any]:
    """4. Translate the same test set, greedy and beam 5, same cap; 5. score it."""
    data, run_dir, peers_py = work / "data", work / "attnmt", PEERS_PY
    gpu = args.device == "cuda"
    src_raw, src_pieces, refs = data / "test.src.txt", data / "test.en", data / "test.ref.txt"
    n_test = len(refs.read_text().splitlines())
    out = work / "hyps"
    out.mkdir(exist_ok=True)
    # attnmt rows: name, checkpoint, engine (torch / int8 = --quantize), early stop.
    # int8 (--quantize) and the CTranslate2 rows are CPU translation: left out on a GPU.
    attnmt_rows = [("attnmt", run_dir, "torch", ""), ("attnmt-es", run_dir, "torch", "es")]
    if not gpu:
        attnmt_rows += [
            ("attnmt+int8", run_dir, "int8", ""),
            ("attnmt+int8-es", run_dir, "int8", "es"),
        ]
    for name in ("attnmt-bf16", "attnmt-fp16"):
        if name in res:
            attnmt_rows.append((name, work / name, "torch", ""))
    n_fixed = args.fixed_len
    if n_fixed:
        # Every output forced to n_fixed tokens (min = max length): equal work per sentence for
        # every toolkit, however far each model learned; timed, not scored.
        attnmt_rows.append((f"attnmt-fixed{n_fixed}", run_dir, "torch", f"fixed={n_fixed}"))
        if not gpu:
            attnmt_rows.append((f"attnmt+int8-fixed{n_fixed}", run_dir, "int8", f"fixed={n_fixed}"))
    jobs: list[tuple[str, list[str], bool]] = [
        (name, [str(ATTNMT_PY), "-c", ATTNMT_TRANSLATE, str(ckpt_dir / "last.pt"), str(src_raw),
                str(out / name), str(cap), str(args.threads), engine, args.device, es], False)
        for name, ckpt_dir, engine, es in attnmt_rows
    ]  # fmt: skip
    if "joeynmt" in res:
        jobs += [
            ("joeynmt", [peers_py, __file__, "--worker", "joey", str(joey_cfg), str(src_pieces),
                         str(out / "joeynmt"), str(cap), str(args.threads)], True),
        ]  # fmt: skip
    onmt_runs = [(n, n, []) for n in ("opennmt-py", "opennmt-py-fp16") if n in res]
    if n_fixed and "opennmt-py" in res:
        forced = ["-min_length", str(n_fixed), "-max_length", str(n_fixed)]
        onmt_runs.append((f"opennmt-py-fixed{n_fixed}", "opennmt-py", forced))
    for name, trained, extra in onmt_runs:
        for beam in (1, 5):
            # OpenNMT-py's own CLI; -report_time prints the time spent translating (no loading).
            cmd = [
                peers_py, "-m", "onmt.bin.translate", "-model", res[trained]["checkpoint"],
                "-src", str(src_pieces), "-output", str(out / f"{name}.beam{beam}"),
                "-beam_size", str(beam), "-max_length", str(cap), "-batch_size", "64",
                "-batch_type", "sents", "-length_penalty", "wu", "-alpha", "1.0", "-report_time",
                "-gpu", "0" if gpu else "-1",
            ]  # fmt: skip
            cmd = [*cmd, *extra]  # the later -max_length wins
            jobs.append((f"{name}.beam{beam}", cmd, True))
    if arch == "transformer" and not gpu and "opennmt-py" in res:
        ct2_dir = work / "onmt_ct2"
        log = work / "logs" / "ct2_convert.log"
        if not (ct2_dir / "model.bin").exists():
            cmd = [peers_py, "-m", "ctranslate2.converters.opennmt_py",
                   "--model_path", res["opennmt-py"]["checkpoint"], "--output_dir", str(ct2_dir),
                   "--unsafe_deserialization", "--force"]  # fmt: skip
            check(run_child(cmd, log, args.threads), log, "CTranslate2 conversion")
        jobs.append(("opennmt-py+ct2", [peers_py, __file__, "--worker", "ct2", str(ct2_dir),
                     str(src_pieces), str(out / "opennmt-py+ct2"), str(cap),
                     str(args.threads)], True))  # fmt: skip
        jobs.append(("attnmt+ct2", [str(ATTNMT_PY), "-c", ATTNMT_TRANSLATE,
                     str(run_dir / "last.pt"), str(src_raw), str(out / "attnmt+ct2"), str(cap),
                     str(args.threads), "ct2", "cpu"], False))  # fmt: skip
        if n := n_fixed:
            # Both exports through the same raw CTranslate2 call, every output n tokens long:
            # the same work for both, however far each model has learned (the attnmt export is
            # the one the attnmt+ct2 job writes).
            for name, model in (("opennmt-py", ct2_dir), ("attnmt", out / "attnmt_ct2")):
                jobs.append((f"{name}+ct2-fixed{n}", [peers_py, __file__, "--worker", "ct2",
                             str(model), str(src_pieces), str(out / f"{name}+ct2-fixed{n}"),
                             str(cap), str(args.threads), str(n)], True))  # fmt: skip
    if args.rows:
        jobs = [job for job in jobs if re.search(args.rows, job[0])]
    for name, cmd, pieces in jobs:
        print(f"[{arch}] translating: {name} ...", flush=True)
        log = work / "logs" / f"translate_{name}.log"
        # A time limit per translation job: JoeyNMT's Transformer decodes without a key/value
        # cache (every step re-runs the whole prefix), which an undertrained model that runs to
        # the output cap turns into many minutes.
        limit = args.translate_timeout
        r = run_child(cmd, log, args.threads, limit, "", signal.SIGKILL, grace_s=0.0)
        toolkit, _, beam_tag = name.partition(".")
        entry = res.setdefault(toolkit, {})
        if r["stopped"]:
            entry["translate_timeout_s"] = limit
            print(f"[{arch}] {name}: no result within {limit:.0f} s (killed)", flush=True)
            continue
        check(r, log, f"{name} translation")
        if toolkit.startswith("opennmt-py") and "ct2" not in toolkit:
            # "Total translation time" is printed to 0.1 s; the per-sentence mean has 3 digits.
            ms = re.findall(r"Average translation time \(ms\): ([\d.]+)", log.read_text())[-1]
            secs = float(ms) * n_test / 1000
            timings = {f"{beam_tag}_s": secs}
        else:
            timings = result_line(log)
        entry["translate_peak_rss_mib"] = max(
            entry.get("translate_peak_rss_mib", 0.0), r["peak_rss_mib"]
        )
        for key, secs in timings.items():
            beam = key.split("_")[0]  # "beam1" / "beam5"
            if "-fixed" in toolkit:  # forced lengths: a speed, not a translation to score
                entry[f"{beam}_sent_s"] = n_test / secs
                continue
            hyp = out / f"{toolkit}.{beam}"
            if pieces:
                hyp = detok(hyp, data / "sp.model", out / f"{toolkit}.{beam}.detok")
            sc = score(hyp, refs)
            entry[f"{beam}_sent_s"] = n_test / secs
            entry[f"{beam}_bleu"], entry[f"{beam}_chrf"] = sc["bleu"], sc["chrf"]
        # What is measured so far survives a run killed at an outer time limit.
        (work / "partial.json").write_text(json.dumps(res, indent=2, default=str))
    return res


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

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


def table(arch: str, res: dict[str, Any]) -> str:
    rows = [(name, res[name]) for name in res if name != "setup" and not name.endswith("_flops")]
    width = max(len(n) for n, _ in rows) + 8
    lines = [f"{arch}".ljust(width) + "".join(f"{h:>16}" for _, h, _ in COLUMNS)]

    def cell(v: Any, fmt: str) -> str:
        return f"{fmt.format(v):>16}" if isinstance(v, (int, float)) else f"{'-':>16}"

    for name, row in rows:
        lines.append(name.ljust(width) + "".join(cell(row.get(k), f) for k, _, f in COLUMNS))
    pairs = [("attnmt", "joeynmt"), ("attnmt", "opennmt-py"), ("attnmt-bf16", "joeynmt"),
             ("attnmt-bf16", "opennmt-py"), ("attnmt-es", "opennmt-py"),
             ("attnmt+int8", "opennmt-py"), ("attnmt+int8-es", "opennmt-py"),
             ("attnmt+ct2", "opennmt-py+ct2"), ("attnmt-fp16", "opennmt-py-fp16"),
             ("attnmt-fp16", "opennmt-py")]  # fmt: skip
    # Equal-work rows against their OpenNMT-py twin; int8 against its fp32 PyTorch row (OpenNMT-py
    # has no int8 of its own).
    fixed_rows = ("attnmt+ct2-fixed", "attnmt-fixed", "attnmt+int8-fixed")
    pairs += [(ours, ours.replace("+int8", "", 1).replace("attnmt", "opennmt-py", 1))
              for ours in res if ours.startswith(fixed_rows)]  # fmt: skip
    for ours, peer in dict.fromkeys(pairs):  # in order, each pair once
        if ours in res and peer in res:
            a, b = res[ours], res[peer]
            ratio = {
                k: a[k] / b[k] for k, _, _ in COLUMNS if isinstance(a.get(k), (int, float))
                and isinstance(b.get(k), (int, float)) and b[k]
            }  # fmt: skip
            label = f"{ours}/{peer}".ljust(width)
            lines.append(label + "".join(cell(ratio.get(k), "{:.2f}x") for k, _, _ in COLUMNS))
    return "\n".join(lines)


def flops_share(arch_res: dict[str, Any], peak: float, name: str = "attnmt") -> dict[str, float]:
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


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        kind, model, src, out, cap, threads = sys.argv[2:8]
        if kind == "joey":
            worker_joey_translate(model, src, out, int(cap), int(threads))
        else:
            worker_ct2_translate(model, src, out, int(cap), int(threads), *map(int, sys.argv[8:]))
        return
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
    args = ap.parse_args()
    args.peers = [p for p in args.peers.split(",") if p]
    if unknown := set(args.peers) - {"joeynmt", "opennmt-py"}:
        ap.error(f"--peers: unknown {sorted(unknown)}")
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
    if args.bf16 and args.device == "cpu":
        import torch

        # Same torch as attnmt's venv; attnmt refuses bf16 on a CPU without oneDNN bf16 kernels.
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            results["bf16_skipped"] = "this CPU has no oneDNN bf16 kernels (no AVX512/AMX)"
            print(f"--bf16 skipped: {results['bf16_skipped']}", flush=True)
            args.bf16 = False
    for arch in archs:
        work = Path(args.work) / arch
        if work.exists() and not args.skip_train:
            import shutil

            shutil.rmtree(work)  # a fresh run each time: nothing resumes from old checkpoints
        results["archs"][arch] = run_arch(arch, args, work)
    if not args.no_peak:
        sys.path.insert(0, str(REPO / "bench"))
        import torch
        from matmul_peak import measure_peak

        dev = args.device
        results["matmul_peak"] = measure_peak(threads=args.threads, device=dev)
        low = [("bf16", torch.bfloat16)] if args.bf16 else []
        low += [("fp16", torch.float16)] if args.fp16 else []
        for kind, dtype in low:
            results[f"matmul_peak_{kind}"] = measure_peak(args.threads, dtype=dtype, device=dev)
        for arch in archs:
            a = results["archs"][arch]
            a["attnmt_flops"] = flops_share(a, results["matmul_peak"]["peak_flop_s"])
            for kind, _ in low:
                peak = results[f"matmul_peak_{kind}"]["peak_flop_s"]
                a[f"attnmt-{kind}_flops"] = flops_share(a, peak, f"attnmt-{kind}")

    stamp = f"{datetime.datetime.now():%Y%m%d-%H%M}"
    tag = "_cuda" if args.device == "cuda" else ""
    out = REPO / "bench" / "results" / f"peers{tag}_{args.arch}_{args.minutes:g}min_{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    where = results.get("gpu", "CPU")
    print(f"\nbudget {args.minutes} min per toolkit on {where}, {args.threads} threads, "
          f"nice {os.nice(0)}")  # fmt: skip
    for arch in archs:
        a = results["archs"][arch]
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
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
