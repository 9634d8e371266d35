"""Model interface helpers: select_batch, build_model, atomic checkpoints and their errors."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import pytest
import torch

from attnmt.config import ModelConfig
from attnmt.model import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    EncoderOut,
    Seq2Seq,
    StepAttention,
    atomic_save,
    build_model,
    load_checkpoint,
    select_batch,
)
from attnmt.tokenizer import SentencePieceTokenizer, WordTokenizer, tokenizer_from_dict


@dataclass
class Inner:
    a: torch.Tensor
    n: int


@dataclass
class Outer:
    inner: Inner
    pair: tuple
    items: list
    table: dict
    nothing: None = None


def test_select_batch_nested():
    x = torch.arange(4).unsqueeze(1) * torch.ones(4, 3, dtype=torch.long)  # row i is all i
    state = Outer(
        inner=Inner(a=x, n=7),
        pair=(x, x.float()),
        items=[x, None, "name"],
        table={"k": x, "deep": {"v": x[:, 0]}},
    )
    idx = torch.tensor([2, 2, 0])
    out = select_batch(state, idx)
    assert isinstance(out, Outer) and isinstance(out.inner, Inner)
    assert out.inner.a[:, 0].tolist() == [2, 2, 0]
    assert out.inner.n == 7
    assert isinstance(out.pair, tuple) and out.pair[1].dtype == torch.float
    assert out.pair[0][:, 0].tolist() == [2, 2, 0]
    assert isinstance(out.items, list) and out.items[1:] == [None, "name"]
    assert out.table["deep"]["v"].tolist() == [2, 2, 0]
    assert out.nothing is None
    assert state.inner.a.size(0) == 4  # the input is not modified


def test_select_batch_encoder_out_and_errors():
    enc = EncoderOut(memory=torch.randn(3, 5, 2), src_mask=torch.ones(3, 5, dtype=torch.bool))
    out = select_batch(enc, torch.tensor([1]))
    assert out.memory.shape == (1, 5, 2) and torch.equal(out.memory[0], enc.memory[1])
    assert out.extra is None
    with pytest.raises(TypeError, match="set"):
        select_batch({1, 2}, torch.tensor([0]))


def test_step_attention_headline():
    w = torch.softmax(torch.randn(2, 3, 4, 5), -1)  # (B, L, nh, S)
    att = StepAttention(weights=w, scores=w.log())
    assert torch.allclose(att.headline(), w[:, -1].mean(1))
    assert torch.allclose(att.headline().sum(-1), torch.ones(2))


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
    return {"format": CHECKPOINT_FORMAT, "model": {"w": torch.arange(3.0)}, **extra}


def test_atomic_save_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "last.pt"  # missing parent directories are created
    atomic_save(ckpt_dict(step=1), path)
    atomic_save(ckpt_dict(step=2), path)
    assert load_checkpoint(path)["step"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_atomic_save_failure_keeps_old_file(tmp_path):
    path = tmp_path / "last.pt"
    atomic_save(ckpt_dict(step=1), path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_save({"x": Unpicklable()}, path)
    assert load_checkpoint(path)["step"] == 1  # the old checkpoint is intact


def test_load_missing(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="not found") as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)


def write_bad_files(tmp_path) -> dict:
    good = tmp_path / "good.pt"
    atomic_save(ckpt_dict(), good)
    data = good.read_bytes()
    files = {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "text": b"hello, I am not a checkpoint\n",
        "pickle": pickle.dumps({"format": CHECKPOINT_FORMAT}, protocol=2),
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
        load_checkpoint(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize(
    "obj", [{"w": torch.zeros(2)}, [torch.zeros(2)], {"format": "something-else"}]
)
def test_load_foreign_torch_file(tmp_path, obj):
    path = tmp_path / "foreign.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="not an attnmt checkpoint") as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)


def test_load_refuses_code_objects(tmp_path):
    """weights_only: a pickled arbitrary object is refused, not executed."""
    path = tmp_path / "evil.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "obj": Inner(torch.zeros(1), 1)}, path)
    with pytest.raises(CheckpointError, match=str(path.name)):
        load_checkpoint(path)


def test_load_directory_prefers_best_then_last(tmp_path):
    atomic_save(ckpt_dict(name="last"), tmp_path / "last.pt")
    assert load_checkpoint(tmp_path)["name"] == "last"
    atomic_save(ckpt_dict(name="best"), tmp_path / "best.pt")
    assert load_checkpoint(tmp_path)["name"] == "best"
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(empty)
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
    ckpt = load_checkpoint(path)
    assert ckpt["src_tokenizer"]["model_proto"] == proto
    assert ckpt["tgt_tokenizer"] == tok.to_dict()
    assert torch.equal(ckpt["model"]["w"], torch.arange(3.0))


def test_sentencepiece_tokenizer_survives_checkpoint(tmp_path):
    texts = ["the cat sat on the mat", "a dog ate the bread", "we see the sea"] * 4
    sp = SentencePieceTokenizer.train(texts, vocab_size=40)
    atomic_save(ckpt_dict(src_tokenizer=sp.to_dict()), tmp_path / "c.pt")
    again = tokenizer_from_dict(load_checkpoint(tmp_path / "c.pt")["src_tokenizer"])
    assert again.encode("the cat ate") == sp.encode("the cat ate")


def test_pick_device():
    from attnmt.model import pick_device

    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            pick_device("cuda")


def test_dropout_keeps_expectation_masks_gradient_and_is_seeded() -> None:
    from attnmt.model import Dropout

    drop = Dropout(0.3)
    x = torch.ones(200, 301, requires_grad=True)  # odd size: the last 64-bit word is partly used
    torch.manual_seed(0)
    y = drop(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.3) < 0.01
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.7))  # kept elements scaled by 1/(1-p)
    y.sum().backward()
    assert torch.equal(x.grad == 0, y == 0)  # no gradient through dropped elements
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)  # the global seed fixes the mask
    assert drop.eval()(x) is x
    with pytest.raises(ValueError, match="dropout"):
        Dropout(1.0)
