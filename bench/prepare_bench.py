"""How `attnmt prepare`, ShardBatcher and `attnmt train` scale with corpus size: time and memory.

    python bench/prepare_bench.py                    # 0.1M and 1M pairs
    python bench/prepare_bench.py --sizes 0.1M,1M --big   # and 10M pairs (about 0.9 GB of TSV)
    python bench/prepare_bench.py --sizes 20k --steps 6   # a quick check of the script itself

Corpora are generated at run time under --work (default /tmp/attnmt-prepare-bench, never in the
repository): the Tatoeba pairs of ../shared/data repeated, each copy made distinct by a marker
on both sides, so the split, the tokenizer and the encoding see new sentences in every copy.

Per size, each measured in its own child process:
- prepare: wall time, peak RSS of the busiest process (``os.wait4``) and the peak sum of PSS
  over the whole process tree (the workers included; sampled every 0.1 s from /proc);
- ShardBatcher start-up: opening the prepared directory, building epoch 0's batches and reading
  the first batch; its time and peak RSS, next to a child that only imports torch and attnmt;
- training on the prepared directory: the real CLI, ``python -m attnmt train CONFIG --set
  data.prepared=DIR ...``, for --steps optimizer steps with a log line per step and validation
  and checkpoints only after the last step (a dev set of --dev-max pairs). Start-up is the wall
  time from launching the command to the first line of its train_log.jsonl (written after the
  first optimizer step; the log is polled every 0.02 s); tokens/s (target tokens) is over the
  steps after the first; peak RSS is ``os.wait4``'s for the process (the whole run: the
  validation on the small dev set and the checkpoint written after the last step included);
- the same under ``torchrun --standalone --nproc-per-node 2``: start-up to rank 0's first log
  line, tokens/s of both ranks together and per rank, and each rank's peak RSS (its VmHWM, read
  from /proc every 0.1 s while it runs; growth in its last 0.1 s is missed);
- the in-memory path (``data.prepared`` unset) for sizes up to --in-memory-max (default 1M):
  it holds the whole corpus in memory, so it is the reference for tokens/s, not for memory.

Prints one Markdown table per kind of measurement and one of the targets beside what was
measured, writes everything to --out-json (rewritten after every size) and draws time and
memory against corpus size to --plot.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TATOEBA = REPO.parent / "shared" / "data" / "tatoeba-eng-spa" / "pairs.tsv"

from attnmt.atomic import write_text_atomic  # noqa: E402 -- after the path set-up above
from attnmt.plot import LOG_NAME, read_log, save_figure  # noqa: E402

# The targets of issue #14, printed beside the measurements.
PREPARE_SCALE = 3.0  # 10M pairs: prepare seconds per million pairs within 3x those of 1M
PREPARE_MIB = 4096  # prepare peak memory (busiest process and whole tree) <= 4 GB
STARTUP_S = 15.0  # training start-up (launch to first optimizer step) <= 15 s
TRAIN_MIB = 2048  # peak RSS of a training process <= 2 GB
SAME_WITHIN = 0.20  # start-up and training RSS independent of size: 1M and 10M within 20%
BIG = 10**9  # eval_every / save_every beyond any --steps: nothing but steps in the window


def make_corpus(n: int, path: Path) -> Path:
    """``n`` pairs: Tatoeba copies, copy c marked "(c)" on both sides."""
    if path.exists():
        return path
    base = [line.split("\t")[:2] for line in TATOEBA.read_text(encoding="utf-8").splitlines()]
    tmp = path.with_suffix(".partial")
    with open(tmp, "w", encoding="utf-8") as f:
        for i in range(n):
            c, (src, tgt) = divmod(i, len(base))[0], base[i % len(base)]
            f.write(f"{src} ({c})\t{tgt} ({c})\n" if c else f"{src}\t{tgt}\n")
    tmp.rename(path)
    return path


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_child(args: list[str]) -> dict:
    """Run this script as a child; its JSON result plus wall time and memory."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", *args], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    peak_tree, done = [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            peak_tree[0] = max(peak_tree[0], sum(map(_pss_kib, _descendants(proc.pid))))

    threading.Thread(target=sample, daemon=True).start()
    t0 = time.perf_counter()
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    done.set()
    if rc := os.waitstatus_to_exitcode(status):
        raise SystemExit(f"child {args[0]} failed with exit code {rc}")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(wall_s=wall, max_rss_mib=usage.ru_maxrss / 1024, tree_pss_mib=peak_tree[0] / 1024)
    return result


def child(kind: str, *rest: str) -> dict:
    """What a child measures; prints one JSON line."""
    t0 = time.perf_counter()
    if kind == "baseline":
        import torch

        import attnmt.data  # noqa: F401 -- torch, numpy and attnmt: what every trainer holds
        import attnmt.prepare  # noqa: F401

        return {"s": time.perf_counter() - t0, "torch": torch.__version__}
    if kind == "prepare":
        from attnmt.config import load_config
        from attnmt.prepare import prepare, read_manifest

        config, corpus, out, workers, dev_max = rest
        held = [f"data.dev_max={dev_max}", f"data.test_max={dev_max}"]
        cfg = load_config(config, [f"data.corpus={corpus}", *held])
        cfg.data.prepared, cfg.data.workers = out, int(workers)
        path = prepare(cfg, log=lambda *_: None, progress=False)
        return {"s": time.perf_counter() - t0, "counts": read_manifest(path)["counts"]}
    from attnmt.data import ShardBatcher
    from attnmt.prepare import open_prepared

    t0 = time.perf_counter()  # start-up after the imports (those are the baseline's)
    prep = open_prepared(rest[0])
    batcher = ShardBatcher(prep.train, int(rest[1]), seed=1234, weights=prep.weights)
    batches = batcher.batches(0)
    batcher.batch(batches[0])
    return {"s": time.perf_counter() - t0, "examples": len(batcher), "batches": len(batches)}


# --------------------------------------------------------------------------------------------
# Training through the CLI: start-up, tokens/s, memory per process
# --------------------------------------------------------------------------------------------


def _hwm_kib(pid: int) -> int:
    """The process's peak RSS so far (VmHWM); 0 once it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _rank(pid: int) -> int | None:
    """The RANK torchrun gave the process, None for a process it did not start."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [int(v[5:]) for v in env if v.startswith(b"RANK=")]
    return ranks[0] if ranks else None


def train_command(args: argparse.Namespace, n: int, corpus: Path, prepared: Path | None,
                  out: Path, ranks: int) -> list[str]:  # fmt: skip
    """``python -m attnmt train`` (or under torchrun) on ``corpus``, prepared or in memory."""
    sets = [f"data.corpus={corpus}", f"train.out_dir={out}", f"train.max_steps={args.steps}",
            "train.log_every=1", f"train.eval_every={BIG}", f"train.save_every={BIG}",
            "train.max_minutes=0", "train.eval_max_sents=20", "train.progress=false",
            f"train.device={args.device}", f"train.threads={args.threads}"]  # fmt: skip
    if prepared is not None:  # the prepare child's data config, so the directory is reused
        sets += [f"data.prepared={prepared}", f"data.dev_max={args.dev_max}",
                 f"data.test_max={args.dev_max}"]  # fmt: skip
    else:  # about as many held-out pairs as the caps keep (shares of distinct sources)
        share = min(0.1, args.dev_max / n)
        sets += [f"data.dev_fraction={share}", f"data.test_fraction={share}"]
    launch = [sys.executable, "-m", "attnmt"]
    if ranks > 1:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                  f"--nproc-per-node={ranks}", "-m", "attnmt"]  # fmt: skip
    return [*launch, "train", args.config, *(x for s in sets for x in ("--set", s))]


def log_rates(out: Path) -> dict[str, Any]:
    """From train_log.jsonl: the first step's time inside the loop, and target tokens/s over
    the steps after it (each line's rate times the time since the line before)."""
    train = read_log(out / LOG_NAME)["train"]
    steps = sorted(train)
    if len(steps) < 2 or steps[0] != 1:
        raise SystemExit(f"{out / LOG_NAME}: expected a line for every step from 1, got {steps}")
    elapsed = [train[s]["elapsed_s"] for s in steps]
    spans = [b - a for a, b in zip(elapsed, elapsed[1:])]
    tokens = sum(train[s]["tokens_per_s"] * dt for s, dt in zip(steps[1:], spans))
    return {"first_step_s": elapsed[0], "tokens_per_s": tokens / max(1e-9, sum(spans)),
            "steps": len(steps)}  # fmt: skip


def run_train(cmd: list[str], out: Path, prepared: bool) -> dict[str, Any]:
    """Run one training command; start-up, rates and memory (per rank under torchrun)."""
    subprocess.run(["rm", "-rf", str(out)], check=True)  # a fresh run, never a resume
    out.mkdir(parents=True)
    console = out.with_name(out.name + ".out")
    log, hwm, ranks, startup = out / LOG_NAME, {}, {}, None
    with open(console, "w") as sink:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT)
        for tick in itertools.count():
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if startup is None and log.exists() and log.stat().st_size > 0:
                startup = time.perf_counter() - t0
            if tick % 50 == 0:  # every second: the ranks torchrun has started by now
                ranks.update((p, _rank(p)) for p in _descendants(proc.pid) if p not in ranks)
            if tick % 5 == 0:
                hwm.update((p, max(hwm.get(p, 0), _hwm_kib(p))) for p in ranks)
            time.sleep(0.02)
    wall = time.perf_counter() - t0
    proc.returncode = rc = os.waitstatus_to_exitcode(status)
    text = console.read_text(errors="replace")
    if rc or startup is None:
        raise SystemExit(f"{' '.join(cmd)}\nfailed (exit code {rc}); its output:\n{text[-3000:]}")
    if prepared and "prepared data up to date" not in text:
        raise SystemExit(f"{console}: train prepared the data again instead of reusing it")
    per_rank = {r: hwm[p] / 1024 for p, r in ranks.items() if r is not None and hwm.get(p)}
    return {"startup_s": startup, "wall_s": wall, "max_rss_mib": usage.ru_maxrss / 1024,
            "rank_rss_mib": dict(sorted(per_rank.items())), **log_rates(out)}  # fmt: skip


# --------------------------------------------------------------------------------------------
# One corpus size
# --------------------------------------------------------------------------------------------


def measure(args: argparse.Namespace, n: int, work: Path) -> dict[str, Any]:
    """Every measurement of one corpus size."""

    def note(what: str) -> None:  # progress on stderr; the tables come at the end
        print(f"[{n:,} pairs] {what}", file=sys.stderr, flush=True)

    corpus = make_corpus(n, work / f"pairs-{n}.tsv")
    out = work / f"prepared-{n}"
    subprocess.run(["rm", "-rf", str(out)], check=True)  # a fresh build, not a reuse
    note("prepare")
    prep = run_child(["prepare", args.config, str(corpus), str(out), str(args.workers),
                      str(args.dev_max)])  # fmt: skip
    note(f"prepare {prep['s']:.1f} s; ShardBatcher start-up")
    result: dict[str, Any] = {"pairs": n, "prepare": prep,
                              "batcher": run_child(["batcher", str(out), "3000"])}  # fmt: skip
    runs = [("train", out, 1)]
    if not args.skip_torchrun:
        runs.append(("torchrun", out, 2))
    if n <= args.in_memory_max:
        runs.append(("in_memory", None, 1))
    for name, prepared, ranks in runs:
        note(f"{name}: {args.steps} steps")
        cmd = train_command(args, n, corpus, prepared, work / f"{name}-{n}", ranks)
        result[name] = run_train(cmd, work / f"{name}-{n}", prepared is not None)
        result[name]["ranks"] = ranks
        note(f"{name}: start-up {result[name]['startup_s']:.1f} s, "
             f"{result[name]['tokens_per_s']:,.0f} tok/s")  # fmt: skip
    return result


# --------------------------------------------------------------------------------------------
# Tables, targets, plot
# --------------------------------------------------------------------------------------------


def per_million(r: dict[str, Any]) -> float:
    return r["prepare"]["s"] / (r["pairs"] / 1e6)


def print_prepare(base: dict[str, Any], results: list[dict[str, Any]]) -> None:
    print(f"\ncores {len(os.sched_getaffinity(0))}, torch {base['torch']}; baseline child "
          f"(torch + attnmt imported): RSS {base['max_rss_mib']:.0f} MiB\n")  # fmt: skip
    print(f"| pairs | prepare s | s per 1M pairs | prepare max RSS MiB (<= {PREPARE_MIB}) | "
          f"prepare tree PSS MiB (<= {PREPARE_MIB}) | batcher start s | batcher RSS MiB | "
          "train pairs | batches/epoch |\n|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    for r in results:
        p, b = r["prepare"], r["batcher"]
        print(f"| {r['pairs']:,} | {p['s']:.1f} | {per_million(r):.1f} | {p['max_rss_mib']:.0f} "
              f"| {p['tree_pss_mib']:.0f} | {b['s']:.2f} | {b['max_rss_mib']:.0f} | "
              f"{p['counts']['train']:,} | {b['batches']:,} |")  # fmt: skip
    for r in results:
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in r["prepare"]["counts"]["stage_s"].items())
        print(f"\n{r['pairs']:,} pairs, prepare stages: {stages}")


def print_train(results: list[dict[str, Any]]) -> None:
    """One process: prepared and in memory. Set-up is start-up before the first step began."""
    print(f"\n| pairs | data | start-up s (<= {STARTUP_S:g}) | set-up s | first step s | "
          f"peak RSS MiB (<= {TRAIN_MIB}) | tokens/s | wall s |\n"
          "|---|---|---|---|---|---|---|---|")  # fmt: skip
    for r in results:
        for name, data in (("train", "prepared"), ("in_memory", "in memory")):
            if t := r.get(name):
                print(f"| {r['pairs']:,} | {data} | {t['startup_s']:.1f} | "
                      f"{t['startup_s'] - t['first_step_s']:.1f} | {t['first_step_s']:.1f} | "
                      f"{t['max_rss_mib']:.0f} | {t['tokens_per_s']:,.0f} | "
                      f"{t['wall_s']:.0f} |")  # fmt: skip


def print_torchrun(results: list[dict[str, Any]]) -> None:
    """Per rank; tokens/s is logged for all ranks together, so per rank is its share."""
    print(f"\n| pairs (prepared, torchrun) | rank | start-up s (<= {STARTUP_S:g}) | "
          f"peak RSS MiB (<= {TRAIN_MIB}) | tokens/s, all ranks | tokens/s per rank |\n"
          "|---|---|---|---|---|---|")  # fmt: skip
    for r in results:
        t = r["torchrun"]
        rate = t["tokens_per_s"]
        for rank, mib in t["rank_rss_mib"].items():
            print(f"| {r['pairs']:,} | {rank} | {t['startup_s']:.1f} | {mib:.0f} | "
                  f"{rate:,.0f} | {rate / t['ranks']:,.0f} |")  # fmt: skip


def prepare_mib(r: dict[str, Any]) -> float:
    """Prepare's peak memory: the busiest process's RSS or the whole tree's PSS, the larger."""
    return max(r["prepare"]["max_rss_mib"], r["prepare"]["tree_pss_mib"])


def train_rss(r: dict[str, Any]) -> float:
    return r["train"]["max_rss_mib"]


def rank_rss(r: dict[str, Any]) -> float:
    """Under torchrun: the peak RSS of the busiest rank."""
    return max(r["torchrun"]["rank_rss_mib"].values())


def _ratio_row(what: str, a: dict, b: dict, value: Any, unit: str) -> list[str]:
    """A size-independence target: the larger size's value within SAME_WITHIN of the other's."""
    va, vb = value(a), value(b)
    change = vb / va - 1
    return [f"{what}, {a['pairs']:,} vs {b['pairs']:,} pairs within {SAME_WITHIN:.0%}",
            f"{va:.1f} -> {vb:.1f} {unit} ({change:+.0%})",
            "met" if abs(change) <= SAME_WITHIN else "missed"]  # fmt: skip


def targets(results: list[dict[str, Any]]) -> list[list[str]]:
    """[target, measured, met/missed] for each target that these sizes can check."""
    by_n = {r["pairs"]: r for r in results}
    ns = sorted(by_n)
    pair = (1_000_000, 10_000_000) if {1_000_000, 10_000_000} <= set(ns) else tuple(ns[-2:])
    rows = []
    if len(pair) == 2:
        a, b = by_n[pair[0]], by_n[pair[1]]
        scale = per_million(b) / per_million(a)
        rows.append([f"prepare s per 1M pairs at {b['pairs']:,} <= {PREPARE_SCALE:g}x at "
                     f"{a['pairs']:,}", f"{per_million(a):.1f} -> {per_million(b):.1f} s "
                     f"({scale:.2f}x)", "met" if scale <= PREPARE_SCALE else "missed"])  # fmt: skip
        rows.append(_ratio_row("train start-up", a, b, lambda r: r["train"]["startup_s"], "s"))
        rows.append(_ratio_row("train peak RSS", a, b, train_rss, "MiB"))
    worst = max(results, key=prepare_mib)
    mib = prepare_mib(worst)
    rows.append([f"prepare peak memory <= {PREPARE_MIB} MiB (RSS and tree PSS, every size)",
                 f"{mib:.0f} MiB at {worst['pairs']:,}",
                 "met" if mib <= PREPARE_MIB else "missed"])  # fmt: skip
    for name, label in (("train", "one process"), ("torchrun", "torchrun, busiest rank")):
        done = [r for r in results if name in r]
        if not done:
            continue
        rss = train_rss if name == "train" else rank_rss
        slow, big = max(done, key=lambda r: r[name]["startup_s"]), max(done, key=rss)
        rows.append([f"train start-up <= {STARTUP_S:g} s ({label}, every size)",
                     f"{slow[name]['startup_s']:.1f} s at {slow['pairs']:,}",
                     "met" if slow[name]["startup_s"] <= STARTUP_S else "missed"])  # fmt: skip
        rows.append([f"train peak RSS <= {TRAIN_MIB} MiB ({label}, every size)",
                     f"{rss(big):.0f} MiB at {big['pairs']:,}",
                     "met" if rss(big) <= TRAIN_MIB else "missed"])  # fmt: skip
    for r in results:
        if "in_memory" in r:
            prep, mem = r["train"]["tokens_per_s"], r["in_memory"]["tokens_per_s"]
            rows.append([f"tokens/s prepared >= in memory at {r['pairs']:,}",
                         f"{prep:,.0f} vs {mem:,.0f} ({prep / mem:.2f}x)",
                         "met" if prep >= mem else "missed"])  # fmt: skip
    return rows


def plot(results: list[dict[str, Any]], path: Path) -> Path:
    """Time and memory against corpus size (log x), the targets drawn as dashed lines."""
    from matplotlib.figure import Figure  # object API, as attnmt.plot

    fig = Figure(figsize=(11, 4.5), layout="constrained")
    ax_t, ax_m = fig.subplots(1, 2)
    panels = [
        (ax_t, "seconds", [("prepare", "prepare", lambda r: r["prepare"]["s"]),
                           ("ShardBatcher start-up", "batcher", lambda r: r["batcher"]["s"]),
                           ("train start-up, prepared", "train", lambda r: r["train"]["startup_s"]),
                           ("train start-up, torchrun", "torchrun",
                            lambda r: r["torchrun"]["startup_s"]),
                           ("train start-up, in memory", "in_memory",
                            lambda r: r["in_memory"]["startup_s"])],
         [(STARTUP_S, "start-up target")]),
        (ax_m, "peak memory, MiB", [
            ("prepare, busiest process RSS", "prepare", lambda r: r["prepare"]["max_rss_mib"]),
            ("prepare, tree PSS", "prepare", lambda r: r["prepare"]["tree_pss_mib"]),
            ("train RSS, prepared", "train", train_rss),
            ("train RSS, torchrun busiest rank", "torchrun", rank_rss),
            ("train RSS, in memory", "in_memory", lambda r: r["in_memory"]["max_rss_mib"])],
         [(PREPARE_MIB, "prepare target"), (TRAIN_MIB, "train target")]),
    ]  # fmt: skip
    for ax, ylabel, curves, lines in panels:
        for label, key, value in curves:
            done = [r for r in results if key in r]
            if done:
                ax.plot([r["pairs"] for r in done], [value(r) for r in done], marker="o",
                        label=label)  # fmt: skip
        for y, label in lines:
            ax.axhline(y, ls="--", lw=1, color="grey")
            ax.annotate(label, (0.01, y), xycoords=("axes fraction", "data"), fontsize=8,
                        va="bottom", color="grey")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("corpus pairs")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_t.set_yscale("log")  # prepare grows with the corpus, start-up should not: decades apart
    fig.suptitle("attnmt prepare and train against corpus size")
    return save_figure(fig, path)


def parse_size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 1_000, "M": 1_000_000}.get(text[-1], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="0.1M,1M", help="pair counts, e.g. 0.1M,1M or 20k")
    ap.add_argument("--big", action="store_true", help="add a 10M-pair corpus")
    ap.add_argument("--config", default=str(REPO / "attnmt/configs/lstm_tatoeba.yaml"))
    ap.add_argument("--workers", type=int, default=0, help="prepare processes (0 = all cores)")
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps per training run")
    ap.add_argument("--skip-torchrun", action="store_true", help="no 2-rank torchrun runs")
    ap.add_argument(
        "--in-memory-max",
        default="1M",
        help="largest size also trained in memory (data.prepared unset)",
    )
    ap.add_argument("--dev-max", type=int, default=200, help="dev and test pairs held out")
    ap.add_argument("--device", default="cpu", help="train.device of the training runs")
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="train.threads (0 = torch's default; torchrun gives each rank 1)",
    )
    ap.add_argument("--work", default="/tmp/attnmt-prepare-bench")
    ap.add_argument("--out-json", help="results file (default WORK/prepare_bench.json)")
    ap.add_argument("--plot", help="a .png or .svg (default WORK/prepare_bench.png)")
    args = ap.parse_args()
    if args.steps < 2:
        ap.error("--steps: at least 2 (tokens/s is measured over the steps after the first)")
    args.in_memory_max = parse_size(args.in_memory_max)
    return args


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(*sys.argv[2:])))
        return
    args = parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")] + ([10_000_000] if args.big else [])
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out_json = Path(args.out_json or work / "prepare_bench.json")
    base = run_child(["baseline"])
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "argv": sys.argv[1:],
                              "cores": len(os.sched_getaffinity(0)), "baseline": base,
                              "sizes": []}  # fmt: skip
    for n in sizes:
        report["sizes"].append(measure(args, n, work))
        report["targets"] = targets(report["sizes"])
        write_text_atomic(out_json, json.dumps(report, indent=1) + "\n")  # a crash keeps these
    print_prepare(base, report["sizes"])
    print_train(report["sizes"])
    if not args.skip_torchrun:
        print_torchrun(report["sizes"])
    print("\n| target | measured | |\n|---|---|---|")
    for row in report["targets"]:
        print(f"| {' | '.join(row)} |")
    png = plot(report["sizes"], Path(args.plot or work / "prepare_bench.png"))
    print(f"\nresults: {out_json}; plot: {png}")


if __name__ == "__main__":
    main()
