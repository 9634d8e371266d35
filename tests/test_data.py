"""Batches: padding, specials, masks, token counts, length filtering, bucketed batch order."""

from __future__ import annotations

import random

import pytest
import torch

from attnmt.data import BucketBatcher, encode_pairs, make_batch, pad, source_tensor
from attnmt.tokenizer import BOS_ID, EOS_ID, PAD_ID, WordTokenizer


def test_pad():
    out = pad([[5, 6, 7], [8], []])
    assert out.dtype == torch.long
    assert out.tolist() == [[5, 6, 7], [8, PAD_ID, PAD_ID], [PAD_ID] * 3]


def test_source_tensor_appends_eos():
    src, mask = source_tensor([[5, 6], [7, 8, 9], []])
    assert src.tolist() == [[5, 6, EOS_ID, 0], [7, 8, 9, EOS_ID], [EOS_ID, 0, 0, 0]]
    assert mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [3, 4, 1]  # an empty source still has its <eos>


def test_make_batch():
    batch = make_batch([([5, 6], [10, 11, 12]), ([7], [13]), ([8, 9, 4], [])])
    assert batch.src.shape == batch.src_mask.shape == (3, 4)
    assert batch.tgt_in.shape == batch.tgt_out.shape == (3, 4)
    assert batch.tgt_in[:, 0].tolist() == [BOS_ID] * 3
    assert batch.tgt_in.tolist()[0] == [BOS_ID, 10, 11, 12]
    assert batch.tgt_out.tolist()[0] == [10, 11, 12, EOS_ID]
    assert batch.tgt_out.tolist()[1] == [13, EOS_ID, PAD_ID, PAD_ID]
    assert batch.tgt_out.tolist()[2] == [EOS_ID, PAD_ID, PAD_ID, PAD_ID]
    # tgt_in is tgt_out shifted right by one: the decoder reads what it predicted last step
    real = batch.tgt_out != PAD_ID
    assert torch.equal(batch.tgt_in[:, 1:][real[:, 1:]], batch.tgt_out[:, :-1][real[:, 1:]])
    assert torch.equal(batch.src_mask, batch.src != PAD_ID)
    assert batch.n_tokens == 4 + 2 + 1 == int(real.sum())


def test_batch_to_keeps_everything():
    batch = make_batch([([5], [6, 7])])
    moved = batch.to("cpu")
    assert moved.n_tokens == batch.n_tokens
    assert torch.equal(moved.tgt_out, batch.tgt_out) and moved.src_mask.dtype == torch.bool


def test_encode_pairs_drops_long_pairs():
    tok = WordTokenizer.train(["a b c d e f"], vocab_size=20)
    pairs = [("a b", "c d"), ("a b c d", "e"), ("a", "b c d e f"), ("f", "zz"), ("", "a")]
    examples, dropped = encode_pairs(pairs, tok, tok, max_len=3)
    assert dropped == 2
    assert [tok.decode(s) for s, _ in examples] == ["a b", "f", ""]
    assert examples[1][1] == [3]  # unknown word -> <unk>, kept
    kept_all, none = encode_pairs(pairs, tok, tok, max_len=0)
    assert none == 0 and len(kept_all) == len(pairs)


def random_examples(n: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(seed)
    return [
        ([4] * rng.randint(0, 20), [5] * rng.randint(0, 25)) for _ in range(n)
    ]  # lengths are all that batching looks at


@pytest.mark.parametrize("batch_tokens", [30, 64, 200])
def test_bucket_batcher_covers_each_example_once(batch_tokens):
    examples = random_examples(157)
    batcher = BucketBatcher(examples, batch_tokens=batch_tokens, seed=1)
    for epoch in (0, 1):
        batches = batcher.batches(epoch)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(examples)))
        for b in batches:
            width = max(max(len(examples[i][0]), len(examples[i][1])) + 1 for i in b)
            assert len(b) * width <= batch_tokens or len(b) == 1
            batch = batcher.batch(b)
            assert batch.src.numel() <= batch_tokens or len(b) == 1
            assert batch.tgt_in.numel() <= batch_tokens or len(b) == 1


def test_bucket_batcher_groups_similar_lengths():
    examples = random_examples(300)
    batches = BucketBatcher(examples, batch_tokens=200, seed=0).batches(0)
    real = sum(len(examples[i][1]) + 1 for b in batches for i in b)
    padded = sum(BucketBatcher(examples, 200, 0).batch(b).tgt_out.numel() for b in batches)
    assert real / padded > 0.8  # bucketing keeps padding small


def test_bucket_batcher_deterministic_per_epoch():
    examples = random_examples(120)
    a = BucketBatcher(examples, batch_tokens=60, seed=3)
    b = BucketBatcher(examples, batch_tokens=60, seed=3)
    assert a.batches(0) == b.batches(0)
    assert a.batches(5) == a.batches(5)
    assert a.batches(0) != a.batches(1)
    assert a.batches(0) != BucketBatcher(examples, batch_tokens=60, seed=4).batches(0)


def test_bucket_batcher_without_shuffle_is_sorted():
    examples = random_examples(50)
    batches = BucketBatcher(examples, batch_tokens=80, seed=0, shuffle=False).batches(0)
    assert batches == BucketBatcher(examples, 80, 9, shuffle=False).batches(3)
    lens = [len(examples[i][1]) for b in batches for i in b]
    assert lens == sorted(lens)


def test_bucket_batcher_over_long_example_alone():
    examples = [([4] * 3, [5] * 3), ([4] * 50, [5] * 2), ([4], [5])]
    batches = BucketBatcher(examples, batch_tokens=20, seed=0).batches(0)
    assert [1] in batches
    assert sorted(i for b in batches for i in b) == [0, 1, 2]


@pytest.mark.parametrize("n", [97, 40, 7])
def test_bucket_batcher_two_ranks(n):
    examples = random_examples(n, seed=2)
    batcher = BucketBatcher(examples, batch_tokens=40, seed=5)
    r0, r1 = batcher.batches(2, rank=0, world=2), batcher.batches(2, rank=1, world=2)
    assert len(r0) == len(r1) > 0  # equal steps per rank, or DDP would hang
    i0, i1 = {i for b in r0 for i in b}, {i for b in r1 for i in b}
    assert not i0 & i1
    everything = batcher.batches(2)
    assert len(r0) + len(r1) >= len(everything) - 1  # at most one batch is left over
    assert i0 | i1 <= set(range(n))


def test_bucket_batcher_empty():
    with pytest.raises(ValueError, match="no training examples"):
        BucketBatcher([], batch_tokens=10, seed=0)
