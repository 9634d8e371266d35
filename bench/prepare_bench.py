"""How `attnmt prepare` and ShardBatcher scale with corpus size: time and memory.

    python bench/prepare_bench.py                 # 0.1M and 1M pairs
    python bench/prepare_bench.py --sizes 1M --big   # and 10M pairs (about 0.9 GB of TSV)

Corpora are generated at run time under --work (default /tmp/attnmt-prepare-bench, never in the
repository): the Tatoeba pairs of ../shared/data repeated, each copy made distinct by a marker
on both sides, so the split, the tokenizer and the encoding see new sentences in every copy.

Per size, each measured in its own child process:
- prepare: wall time, peak RSS of the busiest process (``os.wait4``) and the peak sum of PSS
  over the whole process tree (the workers included; sampled every 0.1 s from /proc);
- ShardBatcher start-up: opening the prepared directory, building epoch 0's batches and reading
  the first batch; its time and peak RSS, next to a child that only imports torch and attnmt.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TATOEBA = REPO.parent / "shared" / "data" / "tatoeba-eng-spa" / "pairs.tsv"


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
        import attnmt.data  # noqa: F401 -- torch, numpy and attnmt: what every trainer holds
        import attnmt.prepare  # noqa: F401

        return {"s": time.perf_counter() - t0}
    if kind == "prepare":
        from attnmt.config import load_config
        from attnmt.prepare import prepare, read_manifest

        config, corpus, out, workers = rest
        cfg = load_config(config, [f"data.corpus={corpus}"])
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


def parse_size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 1_000, "M": 1_000_000}.get(text[-1], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(*sys.argv[2:])))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="0.1M,1M", help="pair counts, e.g. 0.1M,1M")
    ap.add_argument("--big", action="store_true", help="add a 10M-pair corpus")
    ap.add_argument("--config", default=str(REPO / "attnmt/configs/lstm_tatoeba.yaml"))
    ap.add_argument("--workers", type=int, default=0, help="prepare processes (0 = all cores)")
    ap.add_argument("--work", default="/tmp/attnmt-prepare-bench")
    args = ap.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")] + ([10_000_000] if args.big else [])
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base = run_child(["baseline"])
    print(f"cores {len(os.sched_getaffinity(0))}; baseline child (torch + attnmt imported): "
          f"RSS {base['max_rss_mib']:.0f} MiB")  # fmt: skip
    print("| pairs | prepare s | prepare max RSS MiB | prepare tree PSS MiB | batcher start s "
          "| batcher RSS MiB | train pairs | batches/epoch |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for n in sizes:
        corpus = make_corpus(n, work / f"pairs-{n}.tsv")
        out = work / f"prepared-{n}"
        subprocess.run(["rm", "-rf", str(out)], check=True)  # a fresh build, not a reuse
        prep = run_child(["prepare", args.config, str(corpus), str(out), str(args.workers)])
        start = run_child(["batcher", str(out), "3000"])
        print(f"| {n:,} | {prep['s']:.1f} | {prep['max_rss_mib']:.0f} | "
              f"{prep['tree_pss_mib']:.0f} | {start['s']:.2f} | {start['max_rss_mib']:.0f} | "
              f"{prep['counts']['train']:,} | {start['batches']:,} |", flush=True)  # fmt: skip
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in prep["counts"]["stage_s"].items())
        print(f"|   | stages: {stages} |", flush=True)


if __name__ == "__main__":
    main()
