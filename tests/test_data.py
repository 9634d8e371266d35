"""Batches: padding, specials, masks, token counts, length filtering, bucketed batch order."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
import torch

from attnmt.data import (
    BucketBatcher,
    ShardBatcher,
    cut_sorted,
    encode_pairs,
    make_batch,
    pad,
    source_tensor,
)
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


# ------------------------------------------------------------------------------------------
# ShardBatcher (examples read by index, as from prepared shards)
# ------------------------------------------------------------------------------------------


class ListSource:
    """An ExampleSource over a list, standing in for prepare.Part."""

    def __init__(self, examples):
        self.items = examples
        self.lengths = np.array([[len(s), len(t)] for s, t in examples], np.uint16).reshape(-1, 2)
        self.reads = 0

    def examples(self, indices):
        self.reads += len(indices)
        return [self.items[i] for i in np.asarray(indices).tolist()]


def distinct_examples(n: int, seed: int = 0, first_id: int = 4):
    """Random lengths, and a distinct first source id per example so contents are traceable."""
    rng = random.Random(seed)
    return [([first_id + i] + [4] * rng.randint(0, 20), [5] * rng.randint(0, 25)) for i in range(n)]


def flat(batches) -> list[int]:
    return [i for b in batches for i in b]


def widest(examples, b) -> int:
    return max(max(len(examples[i][0]), len(examples[i][1])) + 1 for i in b)


@pytest.mark.parametrize("batch_tokens,window", [(30, 1000), (64, 40), (200, 7)])
def test_shard_batcher_each_example_once_within_budget(batch_tokens, window):
    examples = distinct_examples(157)
    batcher = ShardBatcher([ListSource(examples)], batch_tokens, seed=1, window=window)
    assert len(batcher) == 157
    for epoch in (0, 1):
        batches = batcher.batches(epoch)
        assert sorted(flat(batches)) == list(range(len(examples)))
        for b in batches:
            assert len(b) * widest(examples, b) <= batch_tokens or len(b) == 1
            batch = batcher.batch(b)
            assert batch.src.numel() <= batch_tokens or len(b) == 1
            assert torch.equal(batch.tgt_out, make_batch([examples[i] for i in b]).tgt_out)
            assert batch.src[:, 0].tolist() == [examples[i][0][0] for i in b]  # rows in order


def test_shard_batcher_deterministic_per_seed_and_epoch():
    examples = distinct_examples(300)

    def make(seed):
        return ShardBatcher([ListSource(examples)], 60, seed=seed, window=50)

    a, b = make(3), make(3)
    assert list(a.batches(0)) == list(b.batches(0))  # a resumed run rebuilds the same epoch
    assert list(a.batches(5)) == list(b.batches(5))
    assert list(a.batches(0)) != list(a.batches(1))
    assert list(a.batches(0)) != list(make(4).batches(0))


def test_shard_batcher_sorts_within_bounded_windows():
    examples = distinct_examples(500)
    batcher = ShardBatcher([ListSource(examples)], 80, seed=2, window=64)
    where = {int(i): pos // 64 for pos, i in enumerate(batcher.epoch_order(0))}
    for b in batcher.batches(0):
        assert len({where[i] for i in b}) == 1  # a batch never reaches past its window
    padded = sum(batcher.batch(b).tgt_out.numel() for b in batcher.batches(0))
    real = sum(len(t) + 1 for _, t in examples)
    assert real / padded > 0.6  # still bucketed: little padding


def test_shard_batcher_unshuffled_is_sorted_and_fixed():
    examples = distinct_examples(50)
    a = ShardBatcher([ListSource(examples)], 80, seed=0, shuffle=False)
    assert list(a.batches(0)) == list(ShardBatcher([ListSource(examples)], 80, 9,
                                                   shuffle=False).batches(3))  # fmt: skip
    keys = [(widest(examples, [i]), len(examples[i][1])) for i in flat(a.batches(0))]
    assert keys == sorted(keys)


def test_shard_batcher_over_long_example_alone():
    examples = [([4] * 3, [5] * 3), ([4] * 50, [5] * 2), ([4], [5])]
    batches = list(ShardBatcher([ListSource(examples)], 20, seed=0).batches(0))
    assert [1] in batches and sorted(flat(batches)) == [0, 1, 2]


@pytest.mark.parametrize("n", [97, 40, 7])
def test_shard_batcher_ranks_disjoint_and_read_only_their_share(n):
    examples = distinct_examples(n, seed=2)
    everything = ShardBatcher([ListSource(examples)], 40, seed=5).batches(2)
    shares = []
    for rank in (0, 1):
        source = ListSource(examples)
        batcher = ShardBatcher([source], 40, seed=5)
        batches = batcher.batches(2, rank=rank, world=2)
        for b in batches:
            batcher.batch(b)
        shares.append(batches)
        assert source.reads == len(flat(batches))  # no other rank's examples were read
    r0, r1 = shares
    assert len(r0) == len(r1) > 0  # equal steps per rank, or DDP would hang
    assert not set(flat(r0)) & set(flat(r1))
    assert len(r0) + len(r1) >= len(everything) - 1  # at most one batch is left over
    assert list(r0) == list(everything)[0 : 2 * len(r0) : 2]  # interleaved, as BucketBatcher


def test_shard_batcher_several_sources_without_weights():
    a, b = distinct_examples(60, seed=1), distinct_examples(90, seed=2, first_id=100)
    batcher = ShardBatcher([ListSource(a), ListSource(b)], 50, seed=0, window=32)
    batches = batcher.batches(0)
    assert sorted(flat(batches)) == list(range(150))
    both = a + b
    for idx in list(batches)[:10]:
        assert batcher.batch(idx).src[:, 0].tolist() == [both[i][0][0] for i in idx]


def test_shard_batcher_weights_are_respected():
    small, big = distinct_examples(100, seed=1), distinct_examples(400, seed=2, first_id=1000)
    batcher = ShardBatcher([ListSource(small), ListSource(big)], 60, seed=0,
                           weights=[3, 1])  # fmt: skip
    assert len(batcher) == 500 and batcher.quotas == [375, 125]
    seen: Counter[int] = Counter()
    for epoch in range(4):
        ids = flat(batcher.batches(epoch))
        assert sum(i < 100 for i in ids) == 375 and sum(i >= 100 for i in ids) == 125
        if epoch == 0:
            assert len(set(i for i in ids if i >= 100)) == 125  # no repeats within a pass
        seen.update(ids)
    assert {seen[i] for i in range(100)} == {15}  # 4 * 375 draws = 15 whole passes
    assert {seen[i] for i in range(100, 500)} <= {1, 2}  # 1.25 passes of the big one


def test_shard_batcher_empty_weighted_source_gives_nothing():
    examples = distinct_examples(30)
    batcher = ShardBatcher([ListSource([]), ListSource(examples)], 60, seed=0, weights=[3, 1])
    assert batcher.quotas == [0, 30]
    assert sorted(flat(batcher.batches(1))) == list(range(30))


def test_shard_batcher_batches_behave_like_lists():
    batches = ShardBatcher([ListSource(distinct_examples(80))], 40, seed=0).batches(0)
    as_list = list(batches)
    assert batches[-1] == as_list[-1] and batches[1:4] == as_list[1:4]
    assert all(isinstance(b, list) and isinstance(b[0], int) for b in batches[:3])


def test_shard_batcher_refuses_empty_and_bad_weights():
    with pytest.raises(ValueError, match="no training examples"):
        ShardBatcher([ListSource([])], 10, seed=0)
    one = ListSource(distinct_examples(5))
    for weights in ([1], [1, -1], [0, 0]):
        with pytest.raises(ValueError, match="weights"):
            ShardBatcher([one, one], 10, seed=0, weights=weights)


def test_cut_sorted_fits_the_widest_row():
    assert cut_sorted([2, 2, 2, 2, 5, 5], 10) == [4, 6]
    assert cut_sorted([3, 3, 9, 30], 10) == [2, 3, 4]  # 3*9 > 10: refit; 30 alone
