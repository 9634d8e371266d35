"""Checkpoint averaging: one checkpoint whose parameters are the mean of several checkpoints'.

Pipeline position: Checkpoint files -> **average_checkpoints** -> a weights-only Checkpoint ->
translate / evaluate / explain / serve / export, like any other.

Averaging the parameters of a run's last checkpoints smooths out the noise of the last updates
and usually gains a little BLEU for no decoding cost: Vaswani et al. 2017 (section 6.1) averaged
the last 5 or 20 checkpoints; fairseq's ``average_checkpoints.py`` and OpenNMT-py's
``average_models.py`` do the same. It only makes sense for checkpoints of one model on one path
of training, so every checkpoint must have the same tokenizers, the same config up to the keys a
resume may change (:func:`attnmt.checkpoint.config_differences`) and the same parameter names,
shapes and dtypes; the first difference is an error naming the file and the key.

Floating-point tensors are summed in float64 and divided once, then stored in their own dtype
(so averaging one checkpoint gives it back bit for bit). Integer and bool tensors (ids, masks,
counters) have no meaningful mean: they must be equal in every checkpoint and are kept as they
are. Tensors that share storage in the first checkpoint (tied embeddings) share it in the result.
Checkpoints are read one at a time (``weights_only=True``, through ``Checkpoint.load``), so memory
holds the first checkpoint, the running sums and the one being added, not all of them.

The result holds the averaged weights, the tokenizers and the config of the last checkpoint given
(its ``decode`` defaults included), and no training state: it translates, evaluates and exports,
but a run cannot resume from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from attnmt.checkpoint import Checkpoint, CheckpointError, config_differences

Key = tuple[int, int, tuple[int, ...], tuple[int, ...]]  # storage, offset, shape, stride


@dataclass(frozen=True)
class Averaged:
    """What :func:`average_checkpoints` wrote."""

    path: Path  # the averaged checkpoint
    checkpoints: int  # how many were averaged
    tensors: int  # tensors in its state dict
    parameters: int  # numbers in its floating-point tensors (the averaged ones)


def average_checkpoints(paths: Sequence[str | Path], out: str | Path) -> Averaged:
    """Average the checkpoints at ``paths`` (files or run directories) into ``out`` (atomic)."""
    if not paths:
        raise ValueError("average: give at least one checkpoint")
    first = Checkpoint.load(paths[0])
    # The others must match it key by key and in the model config, so they fit the model too.
    first.build_model()
    sums = {k: _start(v) for k, v in first.weights.items()}
    last = first
    for path in paths[1:]:
        last = Checkpoint.load(path)
        check_compatible(first, last)
        for key, value in last.weights.items():
            sums[key] = _add(sums[key], value, key, first, last)
    n = len(paths)
    means = {k: _mean(total, first.weights[k], n) for k, total in sums.items()}
    weights = _shared_like(first.weights, means)
    path = Checkpoint(last.config, weights, last.src_tokenizer, last.tgt_tokenizer).save(out)
    floats = [v for v in weights.values() if v.is_floating_point()]
    return Averaged(path, n, len(weights), sum(v.numel() for v in _distinct(floats)))


def check_compatible(first: Checkpoint, other: Checkpoint) -> None:
    """Refuse ``other`` unless it can be averaged with ``first``, naming the file and the key."""
    where = f"{other.path}: cannot be averaged with {first.path}"
    for side in ("src_tokenizer", "tgt_tokenizer"):
        a, b = getattr(first, side), getattr(other, side)
        if a.to_dict() != b.to_dict():
            sizes = f"{b.kind}, {b.vocab_size} pieces here; {a.kind}, {a.vocab_size} in the first"
            raise CheckpointError(f"{where}: {side} differs ({sizes})")
    diffs = config_differences(first.config, other.config)
    if diffs:
        raise CheckpointError(
            f"{where}: the config differs in {'; '.join(diffs)} (only checkpoints of one model "
            "and one training run can be averaged)"
        )
    mine, theirs = set(first.weights), set(other.weights)
    if mine - theirs:
        raise CheckpointError(f"{where}: it lacks parameter {min(mine - theirs)}")
    if theirs - mine:
        raise CheckpointError(f"{where}: {first.path} lacks its parameter {min(theirs - mine)}")
    for key, a in first.weights.items():
        b = other.weights[key]
        if a.shape != b.shape or a.dtype != b.dtype:
            raise CheckpointError(
                f"{where}: parameter {key} is {_kind(b)} here, {_kind(a)} in the first"
            )


def _kind(t: Tensor) -> str:
    return f"{str(t.dtype).removeprefix('torch.')} {tuple(t.shape)}"


def _start(t: Tensor) -> Tensor:
    """The running sum a tensor starts: float64 for floating point, the tensor itself else."""
    return t.detach().to(torch.float64) if t.is_floating_point() else t


def _add(total: Tensor, t: Tensor, key: str, first: Checkpoint, other: Checkpoint) -> Tensor:
    if total.is_floating_point():
        return total + t.detach().to(torch.float64)
    if not torch.equal(total, t):
        raise CheckpointError(
            f"{other.path}: cannot be averaged with {first.path}: {key} ({_kind(t)}) holds "
            "integers or bools, which have no mean, and its values differ"
        )
    return total


def _mean(total: Tensor, like: Tensor, n: int) -> Tensor:
    return (total / n).to(like.dtype) if like.is_floating_point() else like


def _storage_key(t: Tensor) -> Key:
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))


def _shared_like(original: dict[str, Tensor], weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """``weights`` with one tensor for the keys whose tensors are one tensor in ``original``
    (tied embeddings), so the file stores it once and loads tied, as the model's own save."""
    seen: dict[Key, Tensor] = {}
    return {k: seen.setdefault(_storage_key(original[k]), v) for k, v in weights.items()}


def _distinct(tensors: list[Tensor]) -> list[Tensor]:
    return list({id(t): t for t in tensors}.values())
