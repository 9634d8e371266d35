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
from tests.conftest import TINY_OVERRIDES, write_tiny_tsv

REPO = Path(__file__).resolve().parents[1]


def losses(run: Path) -> list[float]:
    lines = (run / "train_log.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["kind"] == "train"]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_two_process_ddp_matches_single_process(tmp_path: Path) -> None:
    corpus = write_tiny_tsv(tmp_path / "tiny.tsv")
    sets = [f"data.corpus={corpus}", *TINY_OVERRIDES, "train.max_steps=30", "train.eval_every=30",
            "train.save_every=30", "train.log_every=5"]  # fmt: skip
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

    a, b = losses(single), losses(ddp)
    assert len(a) == len(b) == 6
    # Same data per step and the same gradients up to float summation order: the curves agree
    # to well within 1% (stated tolerance), and both go down.
    for x, y in zip(a, b):
        assert abs(x - y) <= 0.01 * abs(x), (a, b)
    assert b[-1] < b[0]
    # Only rank 0 writes checkpoints, and they load like any other.
    assert Checkpoint.load(ddp / "last.pt").training.progress["step"] == 30
