"""The command line end to end on a tiny config: train -> translate -> evaluate -> explain."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from attnmt.cli import main
from tests.conftest import TINY_OVERRIDES, write_tiny_tsv

REPO = Path(__file__).resolve().parents[1]


def attnmt(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """Run ``python -m attnmt`` as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "attnmt", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )


def test_train_translate_evaluate_explain(tmp_path: Path, tiny_run: Path) -> None:
    ckpt = str(tiny_run / "best.pt")

    # translate: stdin -> stdout, one line per input line
    res = attnmt("translate", "--model", ckpt, "--beam", "2", stdin="I eat bread.\nLet's go.\n")
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) == 2
    res = attnmt("translate", "--model", ckpt, "--quantize", stdin="I eat bread.\nLet's go.\n")
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) == 2
    # --min-len 12: every output has at least 12 tokens (the word tokenizer splits punctuation)
    res = attnmt("translate", "--model", ckpt, "--min-len", "12", stdin="I eat bread.\nLet's go.\n")
    assert res.returncode == 0, res.stderr
    tokens = [re.findall(r"\w+|[^\w\s]", line) for line in res.stdout.splitlines()]
    assert [len(t) >= 12 for t in tokens] == [True, True]

    # translate: files, n-best with scores
    src = tmp_path / "in.txt"
    src.write_text("I eat bread.\nWe see the dog.\n\n")
    out = tmp_path / "out.txt"
    assert main(["translate", "--model", ckpt, "-i", str(src), "-o", str(out),
                 "--n-best", "3", "--scores"]) == 0  # fmt: skip
    lines = out.read_text().splitlines()
    assert len(lines) == 3 * 3
    scores = [float(line.split("\t")[0]) for line in lines[:3]]
    assert scores == sorted(scores, reverse=True)

    # evaluate: BLEU and chrF with signatures, perplexity
    res = attnmt("evaluate", "--model", ckpt, "--test", str(tiny_run / "test.tsv"), "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert 0 <= report["bleu"] <= 100 and 0 <= report["chrf"] <= 100
    assert "nrefs:1" in report["bleu_signature"] and report["perplexity"] >= 1

    # explain: a table, JSON and a heatmap
    plot = tmp_path / "attn.png"
    res = attnmt("explain", "--model", ckpt, "Let's go.", "--plot", str(plot))
    assert res.returncode == 0, res.stderr
    assert "Step 1" in res.stdout and "Stopped" in res.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = attnmt("explain", "--model", ckpt, "Let's go.", "--json")
    assert json.loads(res.stdout)["stopped_by"] in ("eos", "length_limit")

    # plot: training curves from the run's log
    assert main(["plot", str(tiny_run), "--out", str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "curves.png").exists()


def test_train_cli_then_rerun_is_a_no_op(tmp_path: Path) -> None:
    corpus = write_tiny_tsv(tmp_path / "tiny.tsv")
    sets = [f"--set={o}" for o in TINY_OVERRIDES]
    args = ["train", "--set", f"data.corpus={corpus}", "--set", f"train.out_dir={tmp_path}/r"]
    args += [*sets, "--set=train.max_steps=10"]
    assert main(args) == 0
    before = (tmp_path / "r" / "last.pt").read_bytes()
    assert main(args) == 0  # already finished: resumes, sees max_steps reached, stops
    assert (tmp_path / "r" / "last.pt").read_bytes() == before


@pytest.mark.parametrize(
    "content, message",
    [
        (b"hello\tHola\nno tab here\n", "bad.tsv:2"),
        (b"hello\tHola\n\xff\xfe\tbad\n", "bad.tsv:2"),
        (b"hello\t   \n", "bad.tsv:1"),
    ],
)
def test_bad_corpus_names_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, content: bytes, message: str
) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_bytes(content)
    code = main(["train", "--set", f"data.corpus={bad}", "--set", f"train.out_dir={tmp_path}/r"])
    assert code == 2
    assert message in capsys.readouterr().err


def test_bad_inputs_give_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  max_step: 3\n")
    assert main(["train", str(cfg)]) == 2
    assert "train.max_step" in capsys.readouterr().err

    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err

    assert main(["train", "--set", "model.hidden=big"]) == 2
    assert "model.hidden" in capsys.readouterr().err

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    assert main(["translate", "--model", str(corrupt)]) == 2
    assert "corrupt.pt" in capsys.readouterr().err

    import torch

    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    assert main(["translate", "--model", str(foreign)]) == 2
    assert "not an attnmt checkpoint" in capsys.readouterr().err

    assert main(["translate", "--model", str(tmp_path / "nope.pt")]) == 2
    assert "not found" in capsys.readouterr().err
