"""Training loop: checkpoints, logs, schedules, overfitting, and exact resume after SIGKILL."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from attnmt.checkpoint import Checkpoint, ResumeError, RunDirBusy
from attnmt.config import load_config
from attnmt.data import BucketBatcher
from attnmt.train import (
    Progress,
    RunLog,
    Runtime,
    advance,
    after_validation,
    budget_stop,
    cpu_supports,
    lr_factor,
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
    assert lr_factor(50, cfg) == pytest.approx(0.5)
    assert lr_factor(100, cfg) == pytest.approx(1.0)
    assert lr_factor(400, cfg) == pytest.approx(0.5)
    cfg = load_config(None, ["train.schedule=noam", "train.warmup=100", "model.hidden=256"])
    peak = lr_factor(100, cfg)
    assert lr_factor(50, cfg) < peak and lr_factor(400, cfg) < peak
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


@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_resume_after_sigkill_matches_uninterrupted(tmp_path: Path, arch: str) -> None:
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
