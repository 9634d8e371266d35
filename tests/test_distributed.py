"""torchrun + DDP on 2 CPU processes (gloo) follows single-process training at the same batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnmt.checkpoint import Checkpoint
from attnmt.demo_corpus import gold_path, write_demo_tsv
from tests.conftest import TINY_OVERRIDES, write_tiny_tsv

REPO = Path(__file__).resolve().parents[1]


def losses(run: Path, key: str = "loss") -> list[float]:
    lines = (run / "train_log.jsonl").read_text().splitlines()
    return [r[key] for r in map(json.loads, lines) if r["kind"] == "train"]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
@pytest.mark.parametrize("guided", [False, True], ids=["plain", "guided-alignment"])
def test_two_process_ddp_matches_single_process(tmp_path: Path, guided: bool) -> None:
    if guided:  # the demo corpus with its gold links beside it, and the alignment loss on
        corpus = write_demo_tsv(tmp_path / "demo.tsv", n=300, seed=0, gold=True)
        extra = [f"train.guided_alignment={gold_path(corpus)}", "train.guided_alignment_weight=1"]
    else:
        corpus, extra = write_tiny_tsv(tmp_path / "tiny.tsv"), []
    sets = [f"data.corpus={corpus}", *TINY_OVERRIDES, "train.max_steps=30", "train.eval_every=30",
            "train.save_every=30", "train.log_every=5", *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

    def cmd(out: Path, *extra: str) -> list[str]:
        args = [a for s in [*sets, f"train.out_dir={out}", *extra] for a in ("--set", s)]
        return ["-m", "attnmt", "train", *args]

    # One process accumulating 2 batches per step == 2 ranks with one batch each, because the
    # ranks take interleaved shards of the same batch order (data.BucketBatcher.batches).
    single = tmp_path / "single"
    subprocess.run([sys.executable, *cmd(single, "train.accum=2")], env=env, check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    ddp = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    res = subprocess.run([*torchrun, *cmd(ddp)], env=env, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]

    for key in ("loss", "align_loss") if guided else ("loss",):
        a, b = losses(single, key), losses(ddp, key)
        assert len(a) == len(b) == 6
        # Same data per step and the same gradients up to float summation order: the curves
        # agree to well within 1% (stated tolerance), and both go down.
        for x, y in zip(a, b):
            assert abs(x - y) <= 0.01 * abs(x), (key, a, b)
        assert b[-1] < b[0]
    # Only rank 0 writes checkpoints, and they load like any other.
    assert Checkpoint.load(ddp / "last.pt").training.progress["step"] == 30


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_ddp_over_prepared_shards_follows_in_memory_ddp(tmp_path: Path) -> None:
    """torchrun over prepared shards (each rank reading its own batches from disk) trains like
    torchrun over the corpus in memory. On a corpus smaller than one shuffle window the two
    batchers make the same batches, so the stated tolerance is float rounding: every logged
    loss within 0.1% of the other run's (measured: equal to 7 digits)."""
    corpus = write_tiny_tsv(tmp_path / "tiny.tsv")
    held_out = tmp_path / "held_out.tsv"  # given dev/test files: both train on the whole corpus
    held_out.write_text("".join(corpus.read_text().splitlines(keepends=True)[:8]))
    sets = [f"data.corpus={corpus}", f"data.valid={held_out}", f"data.test={held_out}",
            *TINY_OVERRIDES, "train.max_steps=60", "train.eval_every=60", "train.save_every=60",
            "train.log_every=10"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    curves = []
    for name, extra in (("memory", []), ("prepared", [f"data.prepared={tmp_path / 'prep'}"])):
        args = [
            a for s in [*sets, f"train.out_dir={tmp_path / name}", *extra] for a in ("--set", s)
        ]
        res = subprocess.run([*torchrun, "-m", "attnmt", "train", *args], env=env,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        assert res.returncode == 0, res.stderr[-3000:]
        curves.append(losses(tmp_path / name))
    memory, prepared = curves
    assert len(memory) == len(prepared) == 6
    for x, y in zip(memory, prepared):
        assert abs(x - y) <= 1e-3 * x, (memory, prepared)
    assert prepared[-1] < 0.5 * prepared[0]
