"""Fault injection on every write path: checkpoint, log, config, splits, outputs.

A write is cut off half-way, by a full disk (ENOSPC, raised in-process) or by SIGKILL (in a child
process), at each of those points. Afterwards the previous state must be readable, no half file
may be left where a reader looks, and the run must resume and end with the weights of a run that
was never interrupted. The faults go in through ``attnmt.atomic._open``, the one place files are
opened for writing; a last test fills a real (small) tmpfs where the machine allows one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import attnmt.atomic as atomic
from attnmt.checkpoint import Checkpoint
from attnmt.cli import main
from attnmt.plot import read_log
from tests.conftest import TINY_OVERRIDES, write_tiny_tsv
from tests.test_atomic import Faulty

REPO = Path(__file__).resolve().parents[1]

# 20 steps; last.pt at 5, 10, 15, 20; validation (and best.pt) at 10 and 20; a log line every 5.
RUN = [*TINY_OVERRIDES, "train.max_steps=20", "train.save_every=5", "train.eval_every=10"]


def inject(target: str, nth: int, keep: int, fault: str) -> None:
    """Make the ``nth`` write of file ``target`` (its temp file, or an append to it) fail after
    ``keep`` bytes."""
    real, seen = atomic._open, [0]

    def opener(path: Path, mode: str):
        f = real(path, mode)
        ours = path.name == target if mode == "ab" else path.name.startswith(f".{target}.")
        if ours:
            seen[0] += 1
            if seen[0] == nth:
                return Faulty(f, keep, fault)
        return f

    atomic._open = opener


CHILD = """
import sys
from tests.test_faults import inject
from attnmt.cli import main
target, nth, keep, fault = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
inject(target, nth, keep, fault)
sys.exit(main(sys.argv[5:]))
"""


def run_killed(target: str, nth: int, keep: int, args: list[str]) -> None:
    """``attnmt ARGS`` in a child process that SIGKILLs itself in the middle of that write."""
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, target, str(nth), str(keep), "kill", *args],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def train_args(tmp: Path, run: Path, *extra: str) -> list[str]:
    corpus = tmp / "tiny.tsv"
    if not corpus.exists():
        write_tiny_tsv(corpus)
    sets = [*RUN, f"data.corpus={corpus}", f"train.out_dir={run}", *extra]
    return ["train", *(a for s in sets for a in ("--set", s))]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The final weights of the run never interrupted."""
    tmp = tmp_path_factory.mktemp("straight")
    assert main(train_args(tmp, tmp / "run")) == 0
    return Checkpoint.load(tmp / "run" / "last.pt").weights


def temps(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp"))


def readable(run: Path) -> int:
    """Check the run directory a reader sees; returns the step of its last.pt."""
    yaml_text = (run / "config.yaml").read_text(encoding="utf-8")
    assert "out_dir" in yaml_text
    for split in ("dev.tsv", "test.tsv"):
        lines = (run / split).read_text(encoding="utf-8").split("\n")
        assert lines[-1] == "" and all(line.count("\t") == 1 for line in lines[:-1])
    if (run / "train_log.jsonl").exists():
        read_log(run / "train_log.jsonl")  # as `attnmt plot` reads it: a torn last line is left out
    return Checkpoint.load(run / "last.pt").training.progress["step"]


def assert_resumes_to_the_same_weights(tmp: Path, run: Path, straight) -> None:
    assert main(train_args(tmp, run)) == 0
    assert temps(run) == []  # what a killed writer left is gone
    final = Checkpoint.load(run / "last.pt")
    assert final.training.progress["step"] == 20
    for k, v in straight.items():
        assert torch.equal(final.weights[k], v), k
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().split("\n")[:-1]]
    keys = [(r["kind"], r["step"]) for r in log]  # each step logged once, in order
    assert len(keys) == len(set(keys)) and [k[1] for k in keys] == sorted(k[1] for k in keys)


# (file, which of its writes fails, bytes written first, steps the first start trains, the step of
# last.pt it must leave). The config and splits are written when a run starts, so they fail on
# the second start of a run that stopped at step 10.
POINTS = {
    "checkpoint": ("last.pt", 2, 4096, 20, 5),
    "log": ("train_log.jsonl", 3, 10, 20, 5),
    "config": ("config.yaml", 1, 30, 10, 10),
    "splits": ("test.tsv", 1, 20, 10, 10),
}


def first_start(tmp: Path, run: Path, point: str) -> None:
    """For the config and splits: a start that ends at step 10 before the one that fails."""
    if POINTS[point][3] == 10:
        assert main(train_args(tmp, run, "train.max_steps=10")) == 0


@pytest.mark.parametrize("point", sorted(POINTS))
def test_a_full_disk_leaves_the_run_readable_and_resumable(
    tmp_path, point, straight, monkeypatch, capsys
):
    """Issue #17, item 5: a full disk left a torn log that stopped the next start, and temp
    files; now it is one `disk full while writing FILE` error (exit 2) and a later start with
    space resumes."""
    target, nth, keep, _, step = POINTS[point]
    run = tmp_path / "run"
    first_start(tmp_path, run, point)
    before = (run / target).read_bytes() if point in ("config", "splits") else None
    capsys.readouterr()
    monkeypatch.setattr(atomic, "_open", atomic._open)  # undone after the test
    inject(target, nth, keep, "enospc")
    assert main(train_args(tmp_path, run)) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: disk full while writing {run / target}"
    assert temps(run) == []
    assert readable(run) == step
    if before is not None:  # the file that failed is the old one, whole
        assert (run / target).read_bytes() == before
    monkeypatch.undo()
    assert_resumes_to_the_same_weights(tmp_path, run, straight)


@pytest.mark.parametrize("point", sorted(POINTS))
def test_sigkill_mid_write_leaves_the_run_readable_and_resumable(tmp_path, point, straight):
    """Issue #17, item 5: a SIGKILL during a save left a partial `.last.pt.tmp*`; the old files
    stay whole, and the next start removes the temp and resumes."""
    target, nth, keep, _, step = POINTS[point]
    run = tmp_path / "run"
    first_start(tmp_path, run, point)
    before = (run / target).read_bytes() if point in ("config", "splits") else None
    run_killed(target, nth, keep, train_args(tmp_path, run))
    if point != "log":  # a half temp file is left (only the next start can remove it)
        left = temps(run)
        assert len(left) == 1 and left[0].startswith(f".{target}."), left
    else:
        assert not (run / target).read_text().endswith("\n")  # a torn last line
    assert readable(run) == step
    if before is not None:
        assert (run / target).read_bytes() == before
    assert_resumes_to_the_same_weights(tmp_path, run, straight)


@pytest.mark.parametrize("fault", ["enospc", "kill"])
def test_a_failed_output_write_keeps_the_old_output(tiny_run, tmp_path, fault, capsys):
    """`translate -o` and `plot --out` (the outputs) under a full disk or a SIGKILL."""
    out, curves = tmp_path / "out.txt", tmp_path / "curves.png"
    out.write_text("old translations\n")
    curves.write_bytes(b"old picture")
    (tmp_path / "in.txt").write_text("I eat bread.\nLet's go.\n")
    jobs = [
        ("out.txt", ["translate", "--model", str(tiny_run), "-i", str(tmp_path / "in.txt"),
                     "-o", str(out)]),
        ("curves.png", ["plot", str(tiny_run), "--out", str(curves)]),
    ]  # fmt: skip
    for target, args in jobs:
        if fault == "kill":
            run_killed(target, 1, 5, args)
        else:
            real = atomic._open
            try:
                inject(target, 1, 5, "enospc")
                assert main(args) == 2
            finally:
                atomic._open = real
            err = capsys.readouterr().err.strip()
            assert err == f"error: disk full while writing {tmp_path / target}"
            assert temps(tmp_path) == []
    assert out.read_text() == "old translations\n" and curves.read_bytes() == b"old picture"
    for _, args in jobs:  # the next write works, and removes what a killed writer left
        assert main(args) == 0
    assert temps(tmp_path) == [] and len(out.read_text().split("\n")) == 3
    assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------
# A real full disk: a small tmpfs in a private mount namespace
# ---------------------------------------------------------------------------------------------

TMPFS = """
set -u
mount -t tmpfs -o size=600k tmpfs "$MNT" || exit 99
python -m attnmt "$@" --set train.out_dir="$MNT/run" > "$OUT/first.out" 2> "$OUT/first.err"
echo $? > "$OUT/first.rc"
ls -a "$MNT/run" > "$OUT/after_first.ls"
python -c "
import sys
from pathlib import Path
from tests.test_faults import readable
print(readable(Path(sys.argv[1])))" "$MNT/run" > "$OUT/step" 2>&1
mount -o remount,size=64m "$MNT"
python -m attnmt "$@" --set train.out_dir="$MNT/run" > "$OUT/second.out" 2> "$OUT/second.err"
echo $? > "$OUT/second.rc"
python -c "
import sys
from attnmt.checkpoint import Checkpoint
print(Checkpoint.load(sys.argv[1]).training.progress['step'])" "$MNT/run/last.pt" > "$OUT/final"
"""


def test_a_real_full_disk_then_a_start_with_space_resumes(tmp_path):
    if (
        shutil.which("unshare") is None
        or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode
    ):
        pytest.skip("no unprivileged mount namespaces here (unshare -rm)")
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    python = Path(sys.executable).parent
    env = {**os.environ, "PYTHONPATH": str(REPO), "MNT": str(mnt), "OUT": str(out),
           "PATH": f"{python}:{os.environ['PATH']}"}  # fmt: skip
    args = train_args(tmp_path, mnt / "unused")[:-2]  # the script names the run directory
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", TMPFS, "sh", *args], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    if proc.returncode == 99:
        pytest.skip("cannot mount a tmpfs here")
    first_err = (out / "first.err").read_text().strip().split("\n")
    assert (out / "first.rc").read_text().strip() == "2", first_err
    assert first_err[-1].startswith(f"error: disk full while writing {mnt}/run/"), first_err
    assert not [n for n in (out / "after_first.ls").read_text().split() if n.endswith(".tmp")]
    # Where the disk fills up depends on the sizes of things; a whole last.pt is left anyway.
    assert (out / "step").read_text().strip() in ("5", "10", "15"), (out / "step").read_text()
    assert (out / "second.rc").read_text().strip() == "0", (out / "second.err").read_text()
    assert (out / "final").read_text().strip() == "20"
