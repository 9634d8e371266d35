"""Checkpoint averaging: the mean of the parameters, the checks that refuse what cannot be
averaged (naming the file and the key), and a result every command can use."""

from __future__ import annotations

import errno

import pytest
import torch

from attnmt.average import average_checkpoints
from attnmt.checkpoint import (
    Checkpoint,
    CheckpointError,
    ResumeError,
    TrainingState,
    build_model,
    check_resumable,
)
from attnmt.cli import main
from attnmt.config import Config
from attnmt.tokenizer import SPECIALS, WordTokenizer
from attnmt.translate import Translator

SRC_TOK = WordTokenizer(SPECIALS + "a b c d e".split())
TGT_TOK = WordTokenizer(SPECIALS + "A B C D E".split())


def config(arch: str = "transformer", **model) -> Config:
    cfg = Config()
    cfg.data.tokenizer = "word"
    cfg.model.arch, cfg.model.hidden, cfg.model.emb_dim, cfg.model.layers = arch, 16, 16, 1
    cfg.model.heads, cfg.model.ff_dim, cfg.model.dropout = 2, 32, 0.0
    for k, v in model.items():
        setattr(cfg.model, k, v)
    return cfg


def save(path, seed: int, cfg: Config | None = None, tgt_tok=TGT_TOK, **extra) -> Checkpoint:
    cfg = cfg or config()
    torch.manual_seed(seed)
    model = build_model(cfg.model, SRC_TOK.vocab_size, tgt_tok.vocab_size)
    ckpt = Checkpoint(cfg, model.state_dict(), SRC_TOK, tgt_tok, **extra)
    ckpt.save(path)
    return ckpt


@pytest.mark.parametrize("arch", ["transformer", "lstm"])
def test_average_of_two_is_the_mean_of_their_tensors(tmp_path, arch):
    a = save(tmp_path / "a.pt", 0, config(arch))
    b = save(tmp_path / "b.pt", 1, config(arch))
    done = average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"], tmp_path / "avg.pt")
    avg = Checkpoint.load(done.path)
    assert set(avg.weights) == set(a.weights) and done.checkpoints == 2
    for key, value in avg.weights.items():
        mean = ((a.weights[key].double() + b.weights[key].double()) / 2).float()
        assert value.dtype == torch.float32 and torch.equal(value, mean), key
    assert done.parameters == sum(p.numel() for p in avg.build_model().parameters())


def test_averaging_one_checkpoint_gives_it_back(tmp_path):
    one = save(tmp_path / "one.pt", 3)
    average_checkpoints([tmp_path / "one.pt"], tmp_path / "avg.pt")
    avg = Checkpoint.load(tmp_path / "avg.pt")
    assert avg.weights.keys() == one.weights.keys()
    assert all(torch.equal(avg.weights[k], v) for k, v in one.weights.items())
    assert avg.config == one.config and avg.training is None
    texts = ["a b c", "e d", "c"]
    same = Translator.from_checkpoint(tmp_path / "one.pt").translate(texts)
    assert [h[0].ids for h in Translator.from_checkpoint(avg.path).translate(texts)] == [
        h[0].ids for h in same
    ]


def test_the_result_translates_and_carries_no_training_state(tmp_path):
    training = TrainingState(optimizer={"state": {}}, progress={"step": 7}, rng={})
    save(tmp_path / "best.pt", 0)
    save(tmp_path / "last.pt", 1, training=training)
    average_checkpoints([tmp_path / "best.pt", tmp_path / "last.pt"], tmp_path / "avg.pt")
    raw = torch.load(tmp_path / "avg.pt", weights_only=True)
    assert not {"optimizer", "progress", "rng"} & set(raw)
    avg = Checkpoint.load(tmp_path / "avg.pt")
    with pytest.raises(ResumeError, match="no training state"):
        check_resumable(avg, avg.config)
    (hyps,) = Translator.from_checkpoint(tmp_path / "avg.pt").with_options(beam=2).translate(["a"])
    assert hyps[0].finished or len(hyps[0].ids) > 0


def test_a_run_directory_means_its_best_checkpoint(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    best = save(run / "best.pt", 0)
    average_checkpoints([run], tmp_path / "avg.pt")
    avg = Checkpoint.load(tmp_path / "avg.pt")
    assert all(torch.equal(avg.weights[k], v) for k, v in best.weights.items())


def test_configs_may_differ_only_where_a_resume_may(tmp_path):
    later = config()
    later.train.max_steps, later.decode.beam = 5000, 2  # a resumed run, other decode defaults
    save(tmp_path / "a.pt", 0)
    save(tmp_path / "b.pt", 1, later)
    average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"], tmp_path / "avg.pt")
    assert Checkpoint.load(tmp_path / "avg.pt").config.decode.beam == 2  # the last one's


@pytest.mark.parametrize(
    "other, key",
    [
        ({"cfg": config(hidden=32, emb_dim=32)}, "model.hidden: 16 -> 32"),
        ({"cfg": config("lstm")}, "model.arch: 'transformer' -> 'lstm'"),
        ({"tgt_tok": WordTokenizer(SPECIALS + "A B C D F".split())}, "tgt_tokenizer differs"),
        (
            {"tgt_tok": WordTokenizer(SPECIALS + "A B".split())},
            "tgt_tokenizer differs (word, 6 pieces here; word, 9",
        ),
    ],
)
def test_what_differs_is_an_error_naming_the_file_and_the_key(tmp_path, other, key):
    save(tmp_path / "a.pt", 0)
    save(tmp_path / "b.pt", 1, **other)
    out = tmp_path / "avg.pt"
    with pytest.raises(CheckpointError) as e:
        average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"], out)
    assert str(e.value).startswith(f"{tmp_path / 'b.pt'}: cannot be averaged with ")
    assert key in str(e.value)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.pt"]


def with_extra(path, seed: int, extra: dict[str, torch.Tensor]) -> Checkpoint:
    """A checkpoint whose state dict also holds ``extra`` (buffers the shipped models lack)."""
    torch.manual_seed(seed)
    cfg = config()
    weights = build_model(cfg.model, SRC_TOK.vocab_size, TGT_TOK.vocab_size).state_dict()
    ckpt = Checkpoint(cfg, {**weights, **extra}, SRC_TOK, TGT_TOK)
    ckpt.save(path)
    return ckpt


def test_integer_and_bool_tensors_are_kept_when_equal_and_refused_when_not(tmp_path, monkeypatch):
    # No shipped model has such buffers, so the model check is skipped for these state dicts.
    monkeypatch.setattr(Checkpoint, "build_model", lambda self: None)
    ids, mask = torch.tensor([3, 1, 4]), torch.tensor([True, False, True])
    with_extra(tmp_path / "a.pt", 0, {"ids": ids, "mask": mask})
    with_extra(tmp_path / "b.pt", 1, {"ids": ids.clone(), "mask": mask.clone()})
    average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"], tmp_path / "avg.pt")
    avg = Checkpoint.load(tmp_path / "avg.pt").weights
    assert avg["ids"].dtype == torch.int64 and torch.equal(avg["ids"], ids)
    assert avg["mask"].dtype == torch.bool and torch.equal(avg["mask"], mask)
    with_extra(tmp_path / "c.pt", 2, {"ids": torch.tensor([3, 1, 5]), "mask": mask})
    with pytest.raises(CheckpointError, match=r"c\.pt: .*: ids \(int64 \(3,\)\) holds integers"):
        average_checkpoints([tmp_path / "a.pt", tmp_path / "c.pt"], tmp_path / "avg2.pt")
    with_extra(tmp_path / "d.pt", 3, {"ids": ids.float(), "mask": mask})
    with pytest.raises(
        CheckpointError, match=r"d\.pt: .*parameter ids is float32 \(3,\) here, int64"
    ):
        average_checkpoints([tmp_path / "a.pt", tmp_path / "d.pt"], tmp_path / "avg3.pt")
    with_extra(tmp_path / "e.pt", 4, {"ids": ids})
    with pytest.raises(CheckpointError, match=r"e\.pt: .*it lacks parameter mask"):
        average_checkpoints([tmp_path / "a.pt", tmp_path / "e.pt"], tmp_path / "avg4.pt")


def test_tied_weights_stay_one_tensor(tmp_path):
    cfg = config(tie_embeddings=True)
    save(tmp_path / "a.pt", 0, cfg)
    save(tmp_path / "b.pt", 1, cfg)
    average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"], tmp_path / "avg.pt")
    w = torch.load(tmp_path / "avg.pt", weights_only=True)["model"]
    assert w["tgt_emb.weight"].data_ptr() == w["out.weight"].data_ptr()
    assert w["src_emb.weight"].data_ptr() != w["out.weight"].data_ptr()


def test_checkpoints_are_read_with_weights_only(tmp_path, monkeypatch):
    save(tmp_path / "a.pt", 0)
    save(tmp_path / "b.pt", 1)
    calls, load = [], torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"], tmp_path / "avg.pt")
    assert calls == [True, True]


def test_the_output_is_written_atomically(tmp_path, monkeypatch):
    save(tmp_path / "a.pt", 0)
    out = tmp_path / "avg.pt"
    out.write_bytes(b"the previous file")
    save_ = torch.save

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="disk full"):
        average_checkpoints([tmp_path / "a.pt"], out)
    assert out.read_bytes() == b"the previous file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "avg.pt"]  # no temp file
    monkeypatch.setattr(torch, "save", save_)
    average_checkpoints([tmp_path / "a.pt"], out)
    assert Checkpoint.load(out).training is None


def test_cli_average_then_translate(tmp_path, capsys, monkeypatch):
    import io
    import sys

    save(tmp_path / "a.pt", 0)
    save(tmp_path / "b.pt", 1)
    out = tmp_path / "avg.pt"
    assert main(["average", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "averaged 2 checkpoints" in printed and str(out) in printed
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"a b\nc\n")))
    assert main(["translate", "--model", str(out), "--beam", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    save(tmp_path / "c.pt", 2, config(hidden=32, emb_dim=32))
    assert main(["average", str(out), str(tmp_path / "c.pt"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'c.pt'}: cannot be averaged")
    assert "model.hidden: 16 -> 32" in err
    assert main(["average", str(tmp_path / "missing.pt"), "--out", str(out)]) == 2
    assert "missing.pt: checkpoint not found" in capsys.readouterr().err


def test_the_result_exports_to_ctranslate2(tmp_path):
    pytest.importorskip("ctranslate2")
    from attnmt.ct2 import export_ctranslate2, load_translator

    save(tmp_path / "a.pt", 0)
    save(tmp_path / "b.pt", 1)
    average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"], tmp_path / "avg.pt")
    out = export_ctranslate2(tmp_path / "avg.pt", tmp_path / "ct2")
    texts = ["a b c", "d"]
    ours = Translator.from_checkpoint(tmp_path / "avg.pt").with_options(beam=1).translate(texts)
    theirs = load_translator(out).with_options(beam=1).translate(texts)
    assert [h[0].ids for h in theirs] == [h[0].ids for h in ours]
