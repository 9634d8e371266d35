"""Training loop: checkpoints, logs, schedules, overfitting, and exact resume after SIGKILL."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

import attnmt.train
from attnmt.average import average_checkpoints
from attnmt.checkpoint import Checkpoint, ResumeError, RunDirBusy
from attnmt.config import ConfigError, load_config
from attnmt.data import BucketBatcher
from attnmt.train import (
    Progress,
    RunLog,
    Runtime,
    Stepper,
    WeightEma,
    advance,
    after_validation,
    budget_stop,
    cpu_supports,
    fit_plan,
    lr_factor,
    run_seconds,
    train,
    training_groups,
)
from tests.conftest import SHARED_DATA, TINY_OVERRIDES, write_tiny_tsv

REPO = Path(__file__).resolve().parents[1]


def tiny_cfg(tmp_path: Path, *extra: str):
    corpus = write_tiny_tsv(tmp_path / "tiny.tsv")
    return load_config(
        None,
        [f"data.corpus={corpus}", f"train.out_dir={tmp_path / 'run'}", *TINY_OVERRIDES, *extra],
    )


# Six pairs, no held-out data, 150 steps: a batch a model can learn by heart.
SIX_PAIRS_150_STEPS = [
    "data.dev_fraction=0",
    "data.test_fraction=0",
    "data.limit=6",
    "train.label_smoothing=0",
    "train.max_steps=150",
    "train.eval_every=150",
    "train.save_every=150",
]


def overfit_cfg(tmp_path: Path, arch: str, *extra: str):
    """The six pairs for ``arch`` (small Transformer), at a constant lr of 0.01."""
    return tiny_cfg(
        tmp_path,
        f"model.arch={arch}",
        "model.heads=2",
        "model.ff_dim=64",
        *SIX_PAIRS_150_STEPS,
        "train.lr=0.01",
        "train.schedule=constant",
        *extra,
    )


def test_run_writes_checkpoints_logs_and_splits(tiny_run: Path) -> None:
    for name in ("best.pt", "last.pt", "config.yaml", "train_log.jsonl", "dev.tsv", "test.tsv"):
        assert (tiny_run / name).exists(), name
    assert any((tiny_run / "tb").iterdir()), "TensorBoard event files"
    records = [json.loads(line) for line in (tiny_run / "train_log.jsonl").read_text().splitlines()]
    train_recs = [r for r in records if r["kind"] == "train"]
    valid_recs = [r for r in records if r["kind"] == "valid"]
    assert [r["step"] for r in valid_recs] == [20, 40]
    assert all(r["tokens_per_s"] > 0 and r["lr"] > 0 for r in train_recs)
    assert train_recs[-1]["loss"] < train_recs[0]["loss"], "loss goes down"
    assert all(0 <= r["dev_bleu"] <= 100 and r["valid_ppl"] >= 1 for r in valid_recs)
    ckpt = Checkpoint.load(tiny_run / "last.pt")
    assert ckpt.training.progress["step"] == 40
    assert ckpt.config.model.hidden == 32
    assert ckpt.src_tokenizer.kind == "word"


def test_splits_keep_sources_apart(tiny_run: Path) -> None:
    def sources(name: str) -> set[str]:
        return {line.split("\t")[0] for line in (tiny_run / name).read_text().splitlines()}

    assert sources("dev.tsv") and sources("test.tsv")
    assert not sources("dev.tsv") & sources("test.tsv")


def test_lr_schedules() -> None:
    cfg = load_config(None, ["train.warmup=100"])
    assert lr_factor(50, 1000, cfg) == pytest.approx(0.5)
    assert lr_factor(100, 1000, cfg) == pytest.approx(1.0)
    assert lr_factor(400, 1000, cfg) == pytest.approx(0.5)
    cfg = load_config(None, ["train.schedule=noam", "train.warmup=100", "model.hidden=256"])
    peak = lr_factor(100, 1000, cfg)
    assert lr_factor(50, 1000, cfg) < peak and lr_factor(400, 1000, cfg) < peak
    assert peak == pytest.approx(256**-0.5 * 100**-0.5)


def test_tiny_batch_overfits(tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path, *SIX_PAIRS_150_STEPS, "train.lr=0.02")
    run = train(cfg, log=lambda *_: None)
    records = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r for r in records if r["kind"] == "train"][-1]["loss"] < 0.05


@pytest.mark.skipif(not cpu_supports("bf16"), reason="this CPU has no oneDNN bf16 kernels")
@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_bf16_autocast_on_cpu_overfits_and_keeps_fp32_weights(tmp_path: Path, arch: str) -> None:
    cfg = overfit_cfg(tmp_path, arch, "train.precision=bf16")
    run = train(cfg, log=lambda *_: None)
    records = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert losses[-1] < 0.2 * losses[0]  # bf16 matmuls still learn the tiny batch
    weights = Checkpoint.load(run / "last.pt").weights
    assert all(w.dtype == torch.float32 for w in weights.values() if w.is_floating_point())


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_on_a_cpu_without_kernels_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, precision: str
) -> None:
    monkeypatch.setattr("attnmt.train.cpu_supports", lambda p: False)
    with pytest.raises(ValueError, match=f"train.precision={precision}: this CPU has no"):
        train(tiny_cfg(tmp_path, f"train.precision={precision}"), log=lambda *_: None)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_unknown_precision_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="train.precision"):
        train(tiny_cfg(tmp_path, "train.precision=bf61"), log=lambda *_: None)


def test_early_stopping_and_plateau_decay(tmp_path: Path) -> None:
    """With lr 0 nothing can improve: the plateau schedule halves the lr after every validation
    without a dev BLEU gain, and early stopping ends the run after `patience` of them."""
    cfg = tiny_cfg(
        tmp_path,
        "train.lr=0",
        "train.schedule=plateau",
        "train.plateau_patience=1",
        "train.plateau_factor=0.5",
        "train.patience=2",
        "train.eval_every=10",
        "train.max_steps=100",
    )
    run = train(cfg, log=lambda *_: None)
    progress = Checkpoint.load(run / "last.pt").training.progress
    assert progress["step"] == 30  # best at step 10, no gain at 20 and 30 -> stop
    assert progress["bad_evals"] == 2
    assert progress["plateau_scale"] == pytest.approx(0.25)


def test_unknown_config_key_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  hiden: 3\n")
    from attnmt.config import ConfigError

    with pytest.raises(ConfigError, match=r"bad.yaml.*model.hiden"):
        load_config(bad)


def _state(path: Path) -> dict[str, torch.Tensor]:
    return Checkpoint.load(path).weights


# A budget run whose plan (fixed at step 10, before the kill) is max_steps: the real clock of a
# run and of its resume cannot give different plans, and the cosine lr follows the stored one.
BUDGET_RUN = {"train.max_minutes": "60", "train.plan_steps": "10", "train.schedule": "cosine"}


@pytest.mark.parametrize(
    "arch, budget", [("lstm", {}), ("transformer", {}), ("lstm", BUDGET_RUN)], ids=str
)
def test_resume_after_sigkill_matches_uninterrupted(tmp_path: Path, arch: str, budget) -> None:
    """Kill a run with SIGKILL mid-training, start it again: same final weights."""
    corpus = write_tiny_tsv(tmp_path / "tiny.tsv")
    overrides = dict(o.split("=", 1) for o in TINY_OVERRIDES)
    overrides.update(
        {
            "data.corpus": str(corpus),
            "model.arch": arch,
            "model.hidden": "128",
            "model.emb_dim": "64",
            "model.ff_dim": "256",
            "model.layers": "2",
            "model.dropout": "0.3",  # dropout draws random numbers: RNG state must resume too
            "train.max_steps": "200",
            "train.save_every": "4",
            "train.eval_every": "100",
            **budget,
        }
    )
    config = {}
    for key, value in overrides.items():
        section, name = key.split(".")
        config.setdefault(section, {})[name] = yaml.safe_load(value)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run(out: Path) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "attnmt", "train", str(cfg_path), "--set"]
        return subprocess.Popen(
            [*cmd, f"train.out_dir={out}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    straight = tmp_path / "straight"
    assert run(straight).wait(timeout=300) == 0

    killed = tmp_path / "killed"
    proc = run(killed)
    deadline = time.time() + 240
    step = 0
    while time.time() < deadline and proc.poll() is None:
        if (killed / "last.pt").exists():
            step = Checkpoint.load(killed / "last.pt").training.progress["step"]
            if step >= 12:
                break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    step = Checkpoint.load(killed / "last.pt").training.progress["step"]
    assert 12 <= step < 200
    assert run(killed).wait(timeout=300) == 0

    a, b = _state(straight / "last.pt"), _state(killed / "last.pt")
    assert Checkpoint.load(killed / "last.pt").training.progress["step"] == 200
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # The log of the resumed run has each step once, like the uninterrupted one.
    steps = [json.loads(x)["step"] for x in (killed / "train_log.jsonl").read_text().splitlines()]
    straight_steps = [
        json.loads(x)["step"] for x in (straight / "train_log.jsonl").read_text().splitlines()
    ]
    assert steps == straight_steps
    if budget:  # the plan was fixed once, before the kill, and kept
        assert Checkpoint.load(killed / "last.pt").training.progress["plan_steps"] == 200
        plans = [json.loads(x) for x in (killed / "train_log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in plans if r["kind"] == "plan"] == [10]


@pytest.mark.skipif(
    not (SHARED_DATA / "tatoeba-eng-spa" / "pairs.tsv").exists(), reason="../shared/data absent"
)
def test_trains_briefly_on_tatoeba(tmp_path: Path) -> None:
    """Integration: the real corpus, real SentencePiece, a few steps, a sane perplexity."""
    cfg = load_config(
        REPO / "configs" / "lstm_tatoeba.yaml",
        [
            f"train.out_dir={tmp_path / 'run'}",
            "data.limit=6000",
            "data.vocab_size=1000",
            "model.emb_dim=64",
            "model.hidden=128",
            "train.max_steps=60",
            "train.max_minutes=0",
            "train.eval_every=60",
            "train.eval_max_sents=50",
            "train.batch_tokens=1500",
            "train.warmup=20",
            "train.progress=false",
            "decode.beam=1",
        ],
    )
    run = train(cfg, log=lambda *_: None)
    records = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["kind"] == "valid"][-1]
    vocab = Checkpoint.load(run / "last.pt").src_tokenizer.to_dict()
    assert vocab["kind"] == "sentencepiece"
    # Far better than guessing uniformly over the vocabulary after 60 steps.
    assert math.isfinite(valid["valid_ppl"]) and valid["valid_ppl"] < 1000 / 4


# --------------------------------------------------------------------------------------------
# The loop's parts, without a training run
# --------------------------------------------------------------------------------------------


def test_after_validation_best_plateau_and_early_stop() -> None:
    t = load_config(
        None, ["train.schedule=plateau", "train.plateau_patience=2", "train.plateau_factor=0.5",
               "train.patience=3"],
    ).train  # fmt: skip
    p = Progress()
    out = after_validation(p, 10.0, t)
    assert out.is_best and out.stop == "" and out.progress.best_bleu == 10.0
    assert p.best_bleu == -1.0  # pure: the input is not changed
    seen = [out]
    for bleu in (9.0, 10.0, 8.0):  # no gain three times (equal is no gain)
        seen.append(after_validation(seen[-1].progress, bleu, t))
    assert [o.is_best for o in seen] == [True, False, False, False]
    assert [o.progress.bad_evals for o in seen] == [0, 1, 2, 3]
    assert [o.progress.plateau_scale for o in seen] == [1.0, 1.0, 0.5, 0.5]  # every 2nd miss
    assert [bool(o.stop) for o in seen] == [False, False, False, True]
    assert "3 validations" in seen[-1].stop
    back = after_validation(seen[2].progress, 11.0, t)  # a gain resets the patience counter
    assert back.is_best and back.progress.bad_evals == 0 and back.progress.plateau_scale == 0.5


def test_after_validation_without_dev_set_or_with_patience_off() -> None:
    t = load_config(None, []).train  # patience 0, inverse_sqrt schedule
    out = after_validation(Progress(best_bleu=5.0), None, t)
    assert out.is_best and out.stop == "" and out.progress == Progress(best_bleu=5.0)
    out = after_validation(Progress(best_bleu=5.0, bad_evals=50), 1.0, t)
    assert not out.is_best and out.stop == "" and out.progress.plateau_scale == 1.0


def test_budget_stop() -> None:
    t = load_config(None, ["train.max_steps=10", "train.max_minutes=1", "train.max_epochs=2"]).train
    assert budget_stop(Progress(step=10), t, 0.0, False) == "max_steps 10"
    assert budget_stop(Progress(step=3), t, 61.0, False) == "time budget 1.0 min"
    assert budget_stop(Progress(step=3, epoch=2), t, 0.0, True) == "max_epochs 2"
    assert budget_stop(Progress(step=3, epoch=1), t, 0.0, True) == ""


def test_training_groups_continue_from_the_saved_position() -> None:
    examples = [([4] * (i % 7 + 1), [5] * (i % 5 + 1)) for i in range(60)]
    batcher = BucketBatcher(examples, batch_tokens=24, seed=3)
    rt = Runtime(torch.device("cpu"))
    epoch0, epoch1 = batcher.batches(0), batcher.batches(1)
    usable0 = len(epoch0) - len(epoch0) % 2
    groups = training_groups(batcher, Progress(epoch=0, batch_in_epoch=2), accum=2, rt=rt)
    got = [next(groups) for _ in range(usable0 // 2)]
    assert [g for g, _ in got] == [epoch0[i : i + 2] for i in range(2, usable0, 2)] + [epoch1[:2]]
    assert [done for _, done in got][-2:] == [True, False]  # the epoch ends at its last group
    p = Progress(step=4, epoch=0, batch_in_epoch=usable0 - 2)
    assert advance(p, 2, True) == Progress(step=5, epoch=1, batch_in_epoch=0)
    assert advance(p, 2, False) == Progress(step=5, epoch=0, batch_in_epoch=usable0)


def test_run_log_drops_redone_steps_and_a_torn_last_line(tmp_path: Path) -> None:
    log = tmp_path / "train_log.jsonl"
    lines = [json.dumps({"kind": "train", "step": s, "loss": 1.0}) + "\n" for s in (5, 10, 15)]
    log.write_text("".join(lines) + '{"kind": "train", "st')  # a crash mid-write
    runlog = RunLog(tmp_path, step=10, enabled=True)
    runlog.write({"kind": "train", "step": 11, "loss": 0.5})
    runlog.close()
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [5, 10, 11]
    log.write_text(lines[0] + "{broken\n" + lines[1])  # damage in the middle is not guessed at
    with pytest.raises(ValueError, match=r"train_log.jsonl:2"):
        RunLog(tmp_path, step=10, enabled=True)


# --------------------------------------------------------------------------------------------
# Resume with another config, and two trainers in one run directory
# --------------------------------------------------------------------------------------------


def test_resume_with_another_config_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """Bug: the saved weights were loaded into a model built from the new config (a raw
    RuntimeError from load_state_dict) after config.yaml had been overwritten."""
    train(tiny_cfg(tmp_path, "train.max_steps=10"), log=lambda *_: None)
    run = tmp_path / "run"
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    changed = tiny_cfg(tmp_path, "train.max_steps=20", "model.hidden=64", "train.lr=0.5")
    with pytest.raises(ResumeError) as e:
        train(changed, log=lambda *_: None)
    msg = str(e.value)
    assert "model.hidden: 32 -> 64" in msg and "train.lr: 0.01 -> 0.5" in msg
    assert "max_steps" not in msg.split("keys that may change")[0]  # a resumable key
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert after == before  # config.yaml, splits, log and checkpoints untouched


def test_resume_error_reaches_the_cli_as_one_line(tmp_path: Path, capsys) -> None:
    from attnmt.cli import main

    corpus = write_tiny_tsv(tmp_path / "tiny.tsv")
    sets = [f"data.corpus={corpus}", f"train.out_dir={tmp_path / 'run'}", *TINY_OVERRIDES,
            "train.max_steps=5"]  # fmt: skip
    args = [a for s in sets for a in ("--set", s)]
    assert main(["train", *args]) == 0
    assert main(["train", *args, "--set", "data.vocab_size=150"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "data.vocab_size: 200 -> 150" in err
    assert "Traceback" not in err


def test_resume_may_change_the_resumable_keys(tmp_path: Path) -> None:
    train(tiny_cfg(tmp_path, "train.max_steps=10"), log=lambda *_: None)
    more = tiny_cfg(tmp_path, "train.max_steps=20", "train.log_every=2", "decode.beam=1")
    run = train(more, log=lambda *_: None)
    assert Checkpoint.load(run / "last.pt").training.progress["step"] == 20


HOLD_LOCK = """
import sys, time
from attnmt.checkpoint import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_trainer_is_refused_and_a_killed_one_does_not_block(tmp_path: Path) -> None:
    """Bug: nothing stopped two `attnmt train` processes writing one run directory at once."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)], env=env,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirBusy, match=rf"PID {holder.pid}\b"):
            train(tiny_cfg(tmp_path, "train.max_steps=5"), log=lambda *_: None)
        assert not (run / "config.yaml").exists()  # refused before writing anything
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (run / "train.lock").exists()  # the stale file stays; its lock died with the process
    train(tiny_cfg(tmp_path, "train.max_steps=5"), log=lambda *_: None)
    assert (run / "last.pt").exists()


# A 400-step run on the generated demo corpus, kept cheap: a tiny LSTM, small batches.
DEMO_400_STEPS = [
    "data.corpus=demo", "data.tokenizer=word", "data.vocab_size=2000", "model.emb_dim=8",
    "model.hidden=8", "model.bidirectional=false", "model.dropout=0", "train.batch_tokens=40",
    "train.max_steps=400", "train.eval_every=400", "train.save_every=400", "train.log_every=400",
    "train.eval_max_sents=1", "train.threads=1", "train.progress=false",
]  # fmt: skip


def files(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}


def test_resume_with_another_demo_size_is_refused_and_keeps_the_test_set(tmp_path, capsys):
    """Issue #17, item 1: after a 400-step run, rerunning with data.demo_size=350 exited 0 and
    rewrote test.tsv from the new split: 15 of its 18 sources had been training sentences."""
    from attnmt.cli import main

    sets = [*DEMO_400_STEPS, f"train.out_dir={tmp_path / 'run'}"]
    train(load_config(None, sets), log=lambda *_: None)
    before = files(tmp_path / "run")
    args = ["train", *(a for s in sets for a in ("--set", s))]
    assert main([*args, "--set", "data.demo_size=350"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "data.demo_size: 4000 -> 350" in err
    assert files(tmp_path / "run") == before  # test.tsv (and everything else) untouched


def test_resume_on_an_edited_corpus_is_refused(tmp_path: Path) -> None:
    """The same config over a corpus file edited since the run began would move training
    sentences into the rewritten dev/test files: refused, naming the file."""
    cfg = tiny_cfg(tmp_path, "train.max_steps=5")
    train(cfg, log=lambda *_: None)
    before = files(tmp_path / "run")
    again = tiny_cfg(tmp_path, "train.max_steps=10")  # (rewrites tiny.tsv as it was)
    corpus = tmp_path / "tiny.tsv"
    held_out = before["test.tsv"].decode().split("\n")[0]  # "source<TAB>target"
    text = corpus.read_text(encoding="utf-8")
    assert held_out in text
    corpus.write_text(text.replace(held_out, held_out + " Otra vez."), encoding="utf-8")
    with pytest.raises(ResumeError, match=r"(dev|test).tsv: the corpus no longer splits"):
        train(again, log=lambda *_: None)
    assert files(tmp_path / "run") == before


def test_a_user_config_without_out_dir_leaves_the_demo_run_alone(tmp_path, monkeypatch):
    """Issue #17, item 1: a config without train.out_dir, run where runs/demo existed, resumed
    the demo model (or, since #6, was refused): now it trains in runs/<config name>."""
    from attnmt.cli import main

    monkeypatch.chdir(tmp_path)
    corpus = write_tiny_tsv(tmp_path / "tiny.tsv")
    sets = [a for s in [*TINY_OVERRIDES, "train.max_steps=5"] for a in ("--set", s)]
    assert main(["train", *sets, "--set", f"data.corpus={corpus}", "--set",
                 "train.out_dir=runs/demo", "--set", "data.vocab_size=150"]) == 0  # fmt: skip
    demo = files(Path("runs/demo"))
    (tmp_path / "mine.yaml").write_text(f"data:\n  corpus: {corpus}\n", encoding="utf-8")
    assert main(["train", "mine.yaml", *sets]) == 0
    assert (tmp_path / "runs" / "mine" / "last.pt").exists()
    assert files(Path("runs/demo")) == demo


def test_run_files_follow_the_umask_and_keep_their_mode(tmp_path: Path) -> None:
    """Issue #17, item 8: config.yaml and the splits were written 0600 whatever the umask, and
    overwriting a 0644 file left it 0600."""
    old = os.umask(0o022)
    try:
        run = train(tiny_cfg(tmp_path, "train.max_steps=5"), log=lambda *_: None)
        for name in ("config.yaml", "dev.tsv", "test.tsv", "last.pt", "train_log.jsonl"):
            assert (run / name).stat().st_mode & 0o777 == 0o644, name
        os.chmod(run / "test.tsv", 0o640)
        os.umask(0o077)
        train(tiny_cfg(tmp_path, "train.max_steps=5"), log=lambda *_: None)  # rewrites them
        assert (run / "test.tsv").stat().st_mode & 0o777 == 0o640  # its mode is kept
        assert (run / "config.yaml").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


def test_training_on_prepared_shards_learns_and_resumes_exactly(tmp_path: Path) -> None:
    """data.prepared: train() prepares the shards on first use, then reads them lazily."""
    prep = tmp_path / "prepared"
    sets = [f"data.prepared={prep}", "data.workers=1", "data.dev_max=4", "data.test_max=4"]

    def run(name: str, steps: int) -> Path:
        more = [f"train.out_dir={tmp_path / name}", f"train.max_steps={steps}"]
        cfg = tiny_cfg(tmp_path, *sets, *more, "train.save_every=5", "train.eval_every=10")
        return train(cfg, log=lambda *_: None)

    whole = run("whole", 20)
    assert (prep / "tokenizers.json").exists() and len(
        (whole / "dev.tsv").read_text().splitlines()
    ) == 4
    records = [json.loads(x) for x in (whole / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert losses[-1] < losses[0]
    run("parts", 10)
    resumed = run("parts", 20)  # the second call resumes from step 10
    a, b = _state(whole / "last.pt"), _state(resumed / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------------------------
# Budget-aware schedules and the step plan (issue #13)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_planned_schedules_warm_up_peak_and_end_at_the_min_ratio(schedule: str) -> None:
    cfg = load_config(None, [f"train.schedule={schedule}", "train.warmup_fraction=0.1",
                             "train.min_lr_ratio=0.05"])  # fmt: skip
    f = [lr_factor(s, 200, cfg) for s in range(1, 251)]  # f[s - 1] is step s; plan 200
    assert f[:20] == sorted(f[:20]) and len(set(f[:20])) == 20  # warmup rises: 20 steps
    assert f[0] == pytest.approx(1 / 20) and f[19] == 1.0 == max(f)
    assert all(a >= b for a, b in zip(f[19:], f[20:]))  # then never rises again
    assert f[199] == 0.05 and set(f[199:]) == {0.05}  # exactly the floor at the plan's end
    assert f[109] == pytest.approx(0.525)  # half-way through the decay: half-way down
    if schedule == "cosine":  # a cosine stays higher than a line in the first half
        assert f[60] > 1 - 0.95 * (61 - 20) / 180


def test_planned_schedules_without_fraction_or_with_a_plan_shorter_than_warmup() -> None:
    cfg = load_config(None, ["train.schedule=linear", "train.warmup_fraction=0",
                             "train.warmup=10", "train.min_lr_ratio=0"])  # fmt: skip
    assert lr_factor(5, 1000, cfg) == 0.5 and lr_factor(10, 1000, cfg) == 1.0
    assert lr_factor(505, 1000, cfg) == pytest.approx(0.5)
    # A 4-step plan with 10 warmup steps: up for 3, and still the floor at its last.
    assert [lr_factor(s, 4, cfg) for s in (1, 2, 3, 4)] == pytest.approx([1 / 3, 2 / 3, 1, 0])


def test_the_new_keys_are_checked() -> None:
    for bad, key in (("train.plan_steps=1", "train.plan_steps"),
                     ("train.ema_decay=1", "train.ema_decay"),
                     ("train.min_lr_ratio=-0.1", "train.min_lr_ratio"),
                     ("train.warmup_fraction=1.5", "train.warmup_fraction"),
                     ("train.keep_last=-1", "train.keep_last"),
                     ("train.schedule=cosinus", "train.schedule")):  # fmt: skip
        with pytest.raises(ConfigError, match=key):
            load_config(None, [bad])


def test_fit_plan_counts_steps_validations_and_saves() -> None:
    t = load_config(None, ["train.max_minutes=10", "train.max_steps=10000",
                           "train.eval_every=100", "train.save_every=100"]).train  # fmt: skip
    p = Progress(step=30, elapsed_s=40.0, step_s=1.0, valid_s=5.0, save_s=0.5)
    # 600 s: 40 spent; step 557 ends after 527 more steps and 6 validations with their saves
    # (100, ..., 500 and the stop at 557): 40 + 527 + 6 * 5.5 = 600.
    assert fit_plan(p, t) == 557
    assert run_seconds(p, 557, t) == 600.0 < run_seconds(p, 558, t)
    assert fit_plan(p, replace(t, max_steps=300)) == 300  # max_steps binds
    assert fit_plan(replace(p, elapsed_s=600.0), t) == 30  # no time left: no further step
    # keep_last: the final average is one more validation and keep_last reads, budgeted too.
    assert fit_plan(p, replace(t, keep_last=2)) < 557


class FakeClock:
    """A clock that moves only when a training step or a validation says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Killed(Exception):
    """Stands in for SIGKILL in the in-process resume tests."""


REAL_STEP, REAL_VALIDATE = Stepper.step, attnmt.train.validate


def fake_costs(monkeypatch, clock: FakeClock, step_s: float, valid_s: float,
               kill_before: int = 0) -> None:  # fmt: skip
    """Every training step takes ``step_s`` on ``clock``, every validation ``valid_s``; with
    ``kill_before`` the run dies before its ``kill_before``-th step in this process."""
    calls = []

    def step(self, batches, lr):
        calls.append(1)
        if len(calls) == kill_before:
            raise Killed
        clock.now += step_s
        return REAL_STEP(self, batches, lr)

    def validate(*args, **kwargs):
        clock.now += valid_s
        return REAL_VALIDATE(*args, **kwargs)

    monkeypatch.setattr(Stepper, "step", step)
    monkeypatch.setattr(attnmt.train, "validate", validate)


# One minute, timed over 10 steps; a validation every 20 steps, a save every 10.
BUDGET_1_MIN = ["train.max_minutes=1", "train.plan_steps=10", "train.max_steps=1000",
                "train.eval_every=20", "train.save_every=10", "train.schedule=cosine"]  # fmt: skip


def records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]


def test_a_budget_run_fixes_its_plan_from_the_clock_and_stops_there(tmp_path, monkeypatch):
    """1 s a step, 4 s a validation: after step 10 and its validation, 14 s are spent; the 46 s
    left hold 34 steps and the validations at 20, 40 and the stop: the plan is step 44."""
    totals = []

    class Bar(attnmt.train.tqdm):
        def close(self):
            totals.append(self.total)
            super().close()

    monkeypatch.setattr(attnmt.train, "tqdm", Bar)
    clock, lines = FakeClock(), []
    fake_costs(monkeypatch, clock, step_s=1.0, valid_s=4.0)
    run = train(tiny_cfg(tmp_path, *BUDGET_1_MIN), log=lines.append, clock=clock)
    progress = Checkpoint.load(run / "last.pt").training.progress
    assert (progress["plan_steps"], progress["step"]) == (44, 44)
    assert (progress["step_s"], progress["valid_s"], progress["save_s"]) == (1.0, 4.0, 0.0)
    assert clock.now == 60.0  # the plan's end is the budget's: 14 + 34 + 3 * 4
    recs = records(run)
    assert [r["step"] for r in recs if r["kind"] == "plan"] == [10]
    assert [r["step"] for r in recs if r["kind"] == "valid"] == [10, 20, 40, 44]
    assert "the plan's 44 steps" in lines[-1]
    assert set(totals) == {44}  # the progress bar's total is the plan (close runs twice)
    lr = [r["lr"] for r in recs if r["kind"] == "train"]
    assert lr[-1] == pytest.approx(0.01 * 0.01)  # cosine down to min_lr_ratio at the plan's end
    # Started again, the finished run does nothing.
    before = files(run)
    train(tiny_cfg(tmp_path, *BUDGET_1_MIN), log=lines.append, clock=FakeClock())
    assert "already reached" in lines[-1] and files(run)["last.pt"] == before["last.pt"]


def test_a_budget_run_resumes_with_its_stored_plan_exactly(tmp_path, monkeypatch):
    """Killed at step 24 (last.pt from step 20) and resumed on a clock ten times faster, which
    would plan hundreds of steps: the run keeps its plan and ends with the same weights."""
    straight, clock = tmp_path / "straight", FakeClock()
    fake_costs(monkeypatch, clock, 1.0, 4.0)
    train(tiny_cfg(tmp_path, *BUDGET_1_MIN, f"train.out_dir={straight}"), log=lambda *_: None,
          clock=clock)  # fmt: skip
    assert Checkpoint.load(straight / "last.pt").training.progress["step"] == 44
    clock = FakeClock()
    fake_costs(monkeypatch, clock, 1.0, 4.0, kill_before=25)
    with pytest.raises(Killed):
        train(tiny_cfg(tmp_path, *BUDGET_1_MIN), log=lambda *_: None, clock=clock)
    killed = tmp_path / "run"
    assert Checkpoint.load(killed / "last.pt").training.progress["step"] == 20
    fast = FakeClock()
    fake_costs(monkeypatch, fast, 0.1, 0.4)
    train(tiny_cfg(tmp_path, *BUDGET_1_MIN), log=lambda *_: None, clock=fast)
    resumed = Checkpoint.load(killed / "last.pt")
    assert resumed.training.progress["plan_steps"] == 44 == resumed.training.progress["step"]
    assert resumed.training.progress["step_s"] == 1.0  # stored, never measured again
    a, b = _state(straight / "last.pt"), resumed.weights
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_resume_may_not_move_a_cosine_plan_but_refits_a_plan_free_one(tmp_path, monkeypatch):
    clock = FakeClock()
    fake_costs(monkeypatch, clock, 1.0, 4.0)
    train(tiny_cfg(tmp_path, *BUDGET_1_MIN), log=lambda *_: None, clock=clock)
    before = files(tmp_path / "run")
    with pytest.raises(ResumeError, match=r"planned last step, 44.*train.max_minutes: 1.0 -> 2.0"):
        train(tiny_cfg(tmp_path, *BUDGET_1_MIN, "train.max_minutes=2"), log=lambda *_: None)
    assert files(tmp_path / "run") == before

    # inverse_sqrt: more minutes refit the plan from the stored timings (not timed again).
    sets = [*BUDGET_1_MIN, "train.schedule=inverse_sqrt", f"train.out_dir={tmp_path / 'isqrt'}"]
    clock = FakeClock()
    fake_costs(monkeypatch, clock, 1.0, 4.0)
    train(tiny_cfg(tmp_path, *sets), log=lambda *_: None, clock=clock)
    stored = Progress(**Checkpoint.load(tmp_path / "isqrt" / "last.pt").training.progress)
    more = tiny_cfg(tmp_path, *sets, "train.max_minutes=2")
    train(more, log=lambda *_: None, clock=clock)
    progress = Checkpoint.load(tmp_path / "isqrt" / "last.pt").training.progress
    assert progress["plan_steps"] == fit_plan(stored, more.train) == progress["step"] == 92


def test_train_minutes_flag_sets_max_minutes(tmp_path, monkeypatch) -> None:
    from attnmt.cli import main

    seen = []
    monkeypatch.setattr(attnmt.train, "train", seen.append)
    assert main(["train", "--set", "train.max_minutes=5", "--minutes", "2.5"]) == 0
    assert seen[0].train.max_minutes == 2.5


# --------------------------------------------------------------------------------------------
# Weight EMA and checkpoint averaging (issue #13)
# --------------------------------------------------------------------------------------------


def test_weight_ema_after_n_constant_updates_matches_the_closed_form() -> None:
    """The first step copies; each later one lags a weight moving by delta a step behind it by
    d * (lag + delta): after n steps the lag is delta * d * (1 - d^(n-1)) / (1 - d)."""
    torch.manual_seed(0)
    model, d, delta, n = torch.nn.Linear(3, 2), 0.9, 0.01, 25
    ema = WeightEma(model, d)
    for _ in range(n):
        with torch.no_grad():
            for w in model.parameters():
                w.add_(delta)
        ema.update()
    lag = delta * d * (1 - d ** (n - 1)) / (1 - d)
    for name, w in model.named_parameters():
        averaged = ema.eval_model.state_dict()[name]
        assert averaged.dtype == torch.float32
        assert torch.allclose(averaged, w.detach() - lag, atol=1e-6), name
    off = WeightEma(model, 0.0)
    assert off.eval_model is model and off.state() is None


# EMA and keep_last over 40 steps: saves at 10, 20, 30, 40; one validation, at the end.
EMA_AND_AVERAGE = ["train.ema_decay=0.9", "train.keep_last=3", "train.save_every=10",
                   "train.eval_every=40"]  # fmt: skip


def test_ema_and_averaging_resume_exactly_and_average_the_last_saves(tmp_path, monkeypatch):
    straight = train(tiny_cfg(tmp_path, *EMA_AND_AVERAGE, f"train.out_dir={tmp_path / 's'}"),
                     log=lambda *_: None)  # fmt: skip
    fake_costs(monkeypatch, FakeClock(), 1.0, 0.0, kill_before=26)  # last.pt from step 20
    with pytest.raises(Killed):
        train(tiny_cfg(tmp_path, *EMA_AND_AVERAGE), log=lambda *_: None)
    run = tmp_path / "run"
    (run / "step-35.pt").write_bytes((run / "step-20.pt").read_bytes())  # a stale later save
    monkeypatch.undo()
    lines = []
    train(tiny_cfg(tmp_path, *EMA_AND_AVERAGE), log=lines.append)

    last, best = Checkpoint.load(run / "last.pt"), Checkpoint.load(run / "best.pt")
    want = Checkpoint.load(straight / "last.pt")
    for k in want.weights:
        assert torch.equal(want.weights[k], last.weights[k]), k
    for k, v in want.training.ema.items():
        assert torch.equal(v, last.training.ema[k]), k
    # best.pt (the only validation, at the end) holds the EMA's weights, not the trained ones.
    ema = {k.removeprefix("module."): v for k, v in last.training.ema.items() if "." in k}
    assert ema.keys() == best.weights.keys() and best.training is None
    assert all(torch.equal(ema[k], best.weights[k]) for k in ema)
    assert not all(torch.equal(ema[k], last.weights[k]) for k in ema)

    steps = sorted(run.glob("step-*.pt"))
    assert [p.name for p in steps] == ["step-20.pt", "step-30.pt", "step-40.pt"]
    newest = Checkpoint.load(run / "step-40.pt")  # the trained weights alone
    assert newest.training is None
    assert all(torch.equal(newest.weights[k], last.weights[k]) for k in last.weights)
    expected = average_checkpoints(steps, tmp_path / "expected.pt").path
    avg, ref = Checkpoint.load(run / "avg.pt"), Checkpoint.load(expected)
    assert all(torch.equal(avg.weights[k], ref.weights[k]) for k in ref.weights)
    straight_avg = Checkpoint.load(straight / "avg.pt")
    assert all(torch.equal(avg.weights[k], straight_avg.weights[k]) for k in ref.weights)
    assert [r["checkpoints"] for r in records(run) if r["kind"] == "average"] == [3]
    assert any(line.startswith("avg.pt: the mean of step-20.pt, step-30.pt, step-40.pt")
               for line in lines)  # fmt: skip
