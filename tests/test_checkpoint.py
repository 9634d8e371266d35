"""Checkpoints: build_model, atomic save, load errors, resume compatibility, the run lock."""

from __future__ import annotations

import dataclasses
import os
import pickle
from dataclasses import dataclass

import pytest
import torch

from attnmt.atomic import write_atomic
from attnmt.checkpoint import (
    FORMAT,
    Checkpoint,
    CheckpointError,
    RunDirBusy,
    RunLock,
    TrainingState,
    build_model,
    config_differences,
    resolve_path,
)
from attnmt.config import ModelConfig
from attnmt.interface import Seq2Seq
from attnmt.tokenizer import SentencePieceTokenizer, WordTokenizer, tokenizer_from_dict


@dataclass
class Inner:
    a: torch.Tensor
    n: int


def atomic_save(obj, path):
    write_atomic(path, lambda f: torch.save(obj, f))


def load_raw(path):
    """The checkpoint file as the plain dict it is on disk (loaded through Checkpoint's reader)."""
    from attnmt.checkpoint import _read

    return _read(resolve_path(path))


def tiny_cfg(**kw) -> ModelConfig:
    base = dict(emb_dim=16, hidden=16, heads=2, ff_dim=32, dropout=0.0)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_build_model(arch):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(arch=arch), src_vocab=11, tgt_vocab=13)
    assert isinstance(model, Seq2Seq)
    src = torch.tensor([[4, 5, 2], [6, 2, 0]])
    logits = model(src, src != 0, torch.tensor([[1, 7], [1, 8]]))
    assert logits.shape == (2, 2, 13)


def test_build_model_unknown_arch():
    with pytest.raises(ValueError, match="gru"):
        build_model(tiny_cfg(arch="gru"), 10, 10)


def ckpt_dict(**extra) -> dict:
    base = {"format": FORMAT, "model": {"w": torch.arange(3.0)}, "config": {}}
    base |= {"src_tokenizer": {}, "tgt_tokenizer": {}}
    return base | extra


def test_atomic_save_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "last.pt"  # missing parent directories are created
    atomic_save(ckpt_dict(step=1), path)
    atomic_save(ckpt_dict(step=2), path)
    assert load_raw(path)["step"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_atomic_save_failure_keeps_old_file(tmp_path):
    path = tmp_path / "last.pt"
    atomic_save(ckpt_dict(step=1), path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_save({"x": Unpicklable()}, path)
    assert load_raw(path)["step"] == 1  # the old checkpoint is intact


def test_load_missing(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="not found") as e:
        load_raw(path)
    assert str(path) in str(e.value)


def write_bad_files(tmp_path) -> dict:
    good = tmp_path / "good.pt"
    atomic_save(ckpt_dict(), good)
    data = good.read_bytes()
    files = {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "text": b"hello, I am not a checkpoint\n",
        "pickle": pickle.dumps({"format": FORMAT}, protocol=2),
    }
    out = {}
    for name, content in files.items():
        out[name] = tmp_path / f"{name}.pt"
        out[name].write_bytes(content)
    return out


@pytest.mark.parametrize("kind", ["truncated", "empty", "text", "pickle"])
def test_load_unreadable_file(tmp_path, kind):
    path = write_bad_files(tmp_path)[kind]
    with pytest.raises(CheckpointError) as e:
        load_raw(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize(
    "obj", [{"w": torch.zeros(2)}, [torch.zeros(2)], {"format": "something-else"}]
)
def test_load_foreign_torch_file(tmp_path, obj):
    path = tmp_path / "foreign.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="not an attnmt checkpoint") as e:
        load_raw(path)
    assert str(path) in str(e.value)


def test_load_refuses_code_objects(tmp_path):
    """weights_only: a pickled arbitrary object is refused, not executed."""
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "obj": Inner(torch.zeros(1), 1)}, path)
    with pytest.raises(CheckpointError, match=str(path.name)):
        load_raw(path)


def test_load_directory_prefers_best_then_last(tmp_path):
    atomic_save(ckpt_dict(name="last"), tmp_path / "last.pt")
    assert load_raw(tmp_path)["name"] == "last"
    atomic_save(ckpt_dict(name="best"), tmp_path / "best.pt")
    assert load_raw(tmp_path)["name"] == "best"
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(CheckpointError) as e:
        load_raw(empty)
    assert str(empty) in str(e.value)


def test_weights_only_loads_tokenizer_bytes(tmp_path):
    proto = bytes(range(256)) * 4  # arbitrary bytes, like a SentencePiece model proto
    tok = WordTokenizer(["<pad>", "<bos>", "<eos>", "<unk>", "hola"])
    path = tmp_path / "c.pt"
    atomic_save(
        ckpt_dict(
            src_tokenizer={"kind": "sentencepiece", "model_proto": proto},
            tgt_tokenizer=tok.to_dict(),
            config={"model": {"hidden": 16}, "train": {"betas": [0.9, 0.98]}},
        ),
        path,
    )
    ckpt = load_raw(path)
    assert ckpt["src_tokenizer"]["model_proto"] == proto
    assert ckpt["tgt_tokenizer"] == tok.to_dict()
    assert torch.equal(ckpt["model"]["w"], torch.arange(3.0))


def test_sentencepiece_tokenizer_survives_checkpoint(tmp_path):
    texts = ["the cat sat on the mat", "a dog ate the bread", "we see the sea"] * 4
    sp = SentencePieceTokenizer.train(texts, vocab_size=40)
    atomic_save(ckpt_dict(src_tokenizer=sp.to_dict()), tmp_path / "c.pt")
    again = tokenizer_from_dict(load_raw(tmp_path / "c.pt")["src_tokenizer"])
    assert again.encode("the cat ate") == sp.encode("the cat ate")


# ---------------------------------------------------------------------------------------------
# The Checkpoint type
# ---------------------------------------------------------------------------------------------


def word_tok() -> WordTokenizer:
    return WordTokenizer(["<pad>", "<bos>", "<eos>", "<unk>", "hola", "adiós"])


def tiny_checkpoint(arch: str = "lstm", training=None) -> Checkpoint:
    from attnmt.config import Config

    cfg = Config()
    cfg.model = tiny_cfg(arch=arch)
    torch.manual_seed(0)
    weights = build_model(cfg.model, 6, 6).state_dict()
    return Checkpoint(cfg, weights, word_tok(), word_tok(), training)


@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_checkpoint_round_trip_builds_the_same_model(tmp_path, arch):
    state = TrainingState({"state": {}, "param_groups": []}, {"step": 3}, {"torch": torch.zeros(2)})
    ckpt = tiny_checkpoint(arch, state)
    again = Checkpoint.load(ckpt.save(tmp_path / "c.pt"))
    assert again.config == ckpt.config and again.path == tmp_path / "c.pt"
    assert again.src_tokenizer.to_dict() == word_tok().to_dict()
    assert again.training.progress == {"step": 3}
    a, b = ckpt.build_model(), again.build_model()
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert Checkpoint.load(tiny_checkpoint(arch).save(tmp_path / "w.pt")).training is None


def test_weights_that_do_not_fit_the_config_are_a_clear_error(tmp_path):
    ckpt = tiny_checkpoint("lstm")
    bigger = dataclasses.replace(ckpt.config.model, hidden=32)
    cfg = dataclasses.replace(ckpt.config, model=bigger)
    path = dataclasses.replace(ckpt, config=cfg).save(tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=r"c.pt: its weights do not fit its model config"):
        Checkpoint.load(path).build_model()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: d.pop("model"), "lacks model"),
        (lambda d: d.update(src_tokenizer={"kind": "sentencepiece", "model_proto": b"junk"}),
         "unusable checkpoint"),
        (lambda d: d.update(config={"model": {"hidden": "wide"}}), "unusable checkpoint"),
    ],
)  # fmt: skip
def test_damaged_checkpoints_name_the_file(tmp_path, damage, message):
    raw = tiny_checkpoint().to_dict()
    damage(raw)
    path = tmp_path / "bad.pt"
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=message) as e:
        Checkpoint.load(path)
    assert str(path) in str(e.value)


def test_config_differences_skip_resumable_keys():
    from attnmt.config import load_config

    a = load_config(None, [])
    b = load_config(None, ["train.max_steps=5", "train.out_dir=elsewhere", "decode.beam=2",
                           "model.layers=2", "data.vocab_size=10"])  # fmt: skip
    assert config_differences(a, b) == ["data.vocab_size: 4000 -> 10", "model.layers: 1 -> 2"]
    assert config_differences(a, a) == []


def test_run_lock_is_exclusive_and_released(tmp_path):
    with RunLock(tmp_path / "run") as lock:
        assert lock.path.read_text().strip() == str(os.getpid())
        # flock locks belong to open file descriptions: a second open in this process conflicts
        # just as another process would.
        with pytest.raises(RunDirBusy, match=f"PID {os.getpid()}"), RunLock(tmp_path / "run"):
            pass
    with RunLock(tmp_path / "run"):  # released on exit
        pass
