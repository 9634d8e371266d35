"""The model contract: select_batch, StepAttention, the shared Dropout layer, pick_device."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from attnmt.interface import Dropout, EncoderOut, StepAttention, pick_device, select_batch


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


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            pick_device("cuda")


def test_dropout_keeps_expectation_masks_gradient_and_is_seeded() -> None:
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
