"""Greedy and beam search over the model interface: equivalences, termination, ranking."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from attnmt.interface import EncoderOut, Seq2Seq, StepAttention
from attnmt.rnn import RNNSeq2Seq
from attnmt.search import (
    _rank_candidates,
    beam_search,
    forbid_early_eos,
    greedy_search,
    greedy_steps,
    length_penalty,
    max_output_len,
    ngram_bans,
    output_limits,
    penalize_repeats,
)
from attnmt.tokenizer import BOS_ID, EOS_ID, PAD_ID
from tests.conftest import EosBiased

V = 19


def make_model(seed: int, **kw) -> RNNSeq2Seq:
    torch.manual_seed(seed)
    args = dict(src_vocab=V, tgt_vocab=V, emb_dim=16, hidden=16, dropout=0.0)
    args.update(kw)
    return RNNSeq2Seq(**args).eval()


def sources(seqs: list[list[int]]) -> tuple[Tensor, Tensor]:
    seqs = [s + [EOS_ID] for s in seqs]
    src = torch.full((len(seqs), max(map(len, seqs))), PAD_ID)
    for i, s in enumerate(seqs):
        src[i, : len(s)] = torch.tensor(s)
    return src, src != PAD_ID


SRC = [[5, 6, 7, 8, 9, 10, 11], [12], [4, 13, 14, 15], [], [16, 17, 18, 4, 5]]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("input_feeding", [True, False])
def test_beam1_equals_greedy(seed, input_feeding):
    model = make_model(seed, input_feeding=input_feeding, attention="additive")
    src, src_mask = sources(SRC)
    greedy = greedy_search(model, src, src_mask, max_len_a=1.5, max_len_b=4)
    beam = beam_search(model, src, src_mask, 1, 1, 1.0, max_len_a=1.5, max_len_b=4)
    for g, b in zip(greedy, beam):
        assert len(g) == len(b) == 1
        assert g[0].ids == b[0].ids
        assert g[0].finished == b[0].finished
        assert g[0].logprob == pytest.approx(b[0].logprob, abs=1e-4)


@pytest.mark.parametrize("seed", [0, 3])
def test_greedy_independent_of_batch(seed):
    model = make_model(seed)
    src, src_mask = sources(SRC)
    together = greedy_search(model, src, src_mask, 1.5, 4)
    for i, s in enumerate(SRC):
        alone = greedy_search(model, *sources([s]), 1.5, 4)[0][0]
        assert alone.ids == together[i][0].ids
        assert alone.finished == together[i][0].finished
        assert torch.allclose(alone.attention, together[i][0].attention, atol=1e-5)
    order = [4, 1, 3, 0, 2]
    shuffled = greedy_search(model, *sources([SRC[i] for i in order]), 1.5, 4)
    assert [shuffled[j][0].ids for j in range(5)] == [together[i][0].ids for i in order]


def test_beam_independent_of_batch():
    model = make_model(5)
    src, src_mask = sources(SRC)
    together = beam_search(model, src, src_mask, 3, 3, 1.0, 1.5, 4)
    for i, s in enumerate(SRC):
        alone = beam_search(model, *sources([s]), 3, 3, 1.0, 1.5, 4)[0]
        assert [c.ids for c in alone] == [c.ids for c in together[i]]


@pytest.mark.parametrize("a, b", [(1.5, 4), (0.0, 3), (2.0, 0)])
def test_never_eos_stops_at_length_limit(a, b):
    model = EosBiased(make_model(0), eos_bias=-math.inf)
    src, src_mask = sources(SRC)
    lens = src_mask.sum(1).tolist()
    greedy = greedy_search(model, src, src_mask, a, b)
    beam = beam_search(model, src, src_mask, 3, 2, 1.0, a, b)
    for i, n in enumerate(lens):
        limit = max_output_len(n, a, b)
        for c in greedy[i] + beam[i]:
            assert len(c.ids) == limit
            assert not c.finished
            assert EOS_ID not in c.ids and BOS_ID not in c.ids
            assert c.attention.shape == (limit, n)  # no <eos> step
        assert len(beam[i]) == 2


@pytest.mark.parametrize("beam", [1, 3])
def test_always_eos_first_gives_empty_output(beam):
    model = EosBiased(make_model(0), eos_bias=20.0)
    src, src_mask = sources(SRC)
    lens = src_mask.sum(1).tolist()
    found = (
        greedy_search(model, src, src_mask, 1.5, 4)
        if beam == 1
        else beam_search(model, src, src_mask, beam, 1, 1.0, 1.5, 4)
    )
    for i, cands in enumerate(found):
        best = cands[0]
        assert best.ids == [] and best.finished
        assert best.attention.shape == (1, lens[i])  # the <eos> step only
        assert best.logprob <= 0 and best.logprob > -0.01


@pytest.mark.parametrize("beam", [1, 3])
def test_min_len_keeps_eos_out_until_then(beam):
    """A model that wants to stop at once writes exactly min_len tokens, then <eos>; a min_len
    past the length limit leaves the outputs unfinished at the limit."""
    model = EosBiased(make_model(0), eos_bias=20.0)
    src, src_mask = sources(SRC)
    limits = [max_output_len(n, 1.5, 4) for n in src_mask.sum(1).tolist()]

    def search(min_len: int):
        if beam == 1:
            return greedy_search(model, src, src_mask, 1.5, 4, min_len=min_len)
        return beam_search(model, src, src_mask, beam, 1, 1.0, 1.5, 4, min_len=min_len)

    for cands in search(3):
        best = cands[0]
        assert len(best.ids) == 3 and best.finished and EOS_ID not in best.ids
        assert best.attention.shape[0] == 4  # three tokens and the <eos> step
    for cands, limit in zip(search(100), limits):
        assert len(cands[0].ids) == limit and not cands[0].finished


def test_beam_nbest_sorted_and_valid():
    model = make_model(7)
    src, src_mask = sources(SRC)
    lens = src_mask.sum(1).tolist()
    for alpha in (0.0, 1.0):
        found = beam_search(model, src, src_mask, 4, 4, alpha, 2.0, 6)
        for i, cands in enumerate(found):
            assert len(cands) == 4
            scores = [c.score for c in cands]
            assert scores == sorted(scores, reverse=True)
            assert len({tuple(c.ids) for c in cands}) == 4  # distinct hypotheses
            for c in cands:
                steps = len(c.ids) + (1 if c.finished else 0)
                assert c.score == pytest.approx(c.logprob / length_penalty(steps, alpha))
                assert all(t not in (PAD_ID, BOS_ID, EOS_ID) for t in c.ids)
                assert c.attention.shape == (steps, lens[i])
                assert torch.allclose(c.attention.sum(-1), torch.ones(steps), atol=1e-5)


def test_beam_logprob_matches_model():
    """A candidate's logprob is the model's own score of that output (teacher-forced)."""
    model = make_model(8)
    src, src_mask = sources(SRC[:3])
    found = beam_search(model, src, src_mask, 3, 3, 1.0, 2.0, 6)
    for i, cands in enumerate(found):
        for c in cands:
            tgt = [BOS_ID] + c.ids
            out = c.ids + [EOS_ID] if c.finished else c.ids
            s, m = sources([SRC[i]])
            with torch.no_grad():
                logp = torch.log_softmax(model(s, m, torch.tensor([tgt])), -1)[0]
            total = sum(float(logp[t, y]) for t, y in enumerate(out))
            assert c.logprob == pytest.approx(total, abs=1e-4)


def test_beam_wider_than_half_the_vocabulary():
    """2 * beam > V: each beam row offers all V tokens, and the n-best stay exact and distinct."""
    tiny, seqs = 6, [[4, 5, 4], [5]]
    model = make_model(9, src_vocab=tiny, tgt_vocab=tiny)
    found = beam_search(model, *sources(seqs), 5, 5, 0.0, 1.0, 2)
    for seq, cands in zip(seqs, found):
        assert len(cands) == 5 and len({tuple(c.ids) for c in cands}) == 5
        assert [c.score for c in cands] == sorted((c.score for c in cands), reverse=True)
        for c in cands:
            out = c.ids + [EOS_ID] if c.finished else c.ids
            with torch.no_grad():
                tgt = torch.tensor([[BOS_ID] + c.ids])
                logp = torch.log_softmax(model(*sources([seq]), tgt), -1)[0]
            assert c.logprob == pytest.approx(sum(float(logp[t, y]) for t, y in enumerate(out)))


@pytest.mark.parametrize("beam, n_best", [(2, 3), (0, 1), (3, 0)])
def test_nbest_validation(beam, n_best):
    src, src_mask = sources(SRC)
    with pytest.raises(ValueError, match="n_best"):
        beam_search(make_model(0), src, src_mask, beam, n_best, 1.0, 1.5, 4)


def test_length_penalty_formula():
    assert length_penalty(1, 1.0) == pytest.approx(1.0)  # (5 + 1) / 6
    assert length_penalty(7, 1.0) == pytest.approx(2.0)
    assert length_penalty(7, 0.5) == pytest.approx(math.sqrt(2.0))
    assert length_penalty(30, 0.0) == 1.0
    assert length_penalty(10, 1.0) > length_penalty(5, 1.0)


def test_max_output_len():
    assert max_output_len(10, 1.5, 10) == 25
    assert max_output_len(3, 0.5, 0) == 1
    assert max_output_len(0, 0.0, 0) == 1  # never zero steps


def test_output_limits_count_each_real_source_token():
    src, src_mask = sources(SRC)  # padded to the longest; each source ends with <eos>
    lens = [len(s) + 1 for s in SRC]
    assert output_limits(src_mask, 1.5, 4) == [max_output_len(n, 1.5, 4) for n in lens]
    assert output_limits(src_mask, 0.0, 0) == [1] * len(SRC)
    assert output_limits(src_mask[:1], 2.0, 1) == [2 * 8 + 1]


def test_forbid_early_eos_leaves_its_input_alone():
    logp = torch.log_softmax(torch.randn(3, V), -1)
    before = logp.clone()
    masked = forbid_early_eos(logp, 1, 2, EOS_ID)
    assert torch.equal(logp, before)
    assert torch.isneginf(masked[:, EOS_ID]).all()
    others = torch.arange(V) != EOS_ID
    assert torch.equal(masked[:, others], logp[:, others])
    assert forbid_early_eos(logp, 2, 2, EOS_ID) is logp  # from min_len on: untouched


def test_greedy_steps_is_greedy_search_step_by_step():
    """The step loop explain consumes: each sentence's rows, read back in order, are exactly its
    greedy output; a sentence leaves the batch after the step it ends on."""
    model = make_model(4)
    src, src_mask = sources(SRC)
    limits = output_limits(src_mask, 1.5, 4)
    found = greedy_search(model, src, src_mask, 1.5, 4)
    chosen: dict[int, list[int]] = {b: [] for b in range(len(SRC))}
    read: dict[int, list[int]] = {b: [] for b in range(len(SRC))}
    seen_alive = []
    for step in greedy_steps(model, src, src_mask, limits):
        n = len(step.alive)
        assert step.logp.shape == (n, V) and step.attention.weights.shape[0] == n
        assert step.chosen.shape == step.chosen_logp.shape == step.done.shape == (n,)
        assert torch.equal(step.chosen, step.logp.argmax(-1).cpu())
        seen_alive.append(step.alive.tolist())
        for row, b in enumerate(step.alive.tolist()):
            chosen[b].append(int(step.chosen[row]))
            read[b].append(int(step.input_ids[row]))
            ends = chosen[b][-1] == EOS_ID or len(chosen[b]) == limits[b]
            assert bool(step.done[row]) == ends
    for b, cands in enumerate(found):
        c = cands[0]
        assert chosen[b] == (c.ids + [EOS_ID] if c.finished else c.ids)
        assert read[b] == [BOS_ID] + chosen[b][:-1]  # each step reads the previous choice
    # Sentences only ever leave, and each step's rows are in original order.
    for before, after in zip(seen_alive, seen_alive[1:]):
        assert set(after) < set(before) or after == before
        assert after == sorted(after)
    assert len(seen_alive) == max(len(chosen[b]) for b in chosen)


def test_ranking_the_2k_candidates_equals_ranking_all_k_times_v():
    """The per-row shortcut keeps the exact 2K best of all K * V extensions per sentence."""
    torch.manual_seed(0)
    n, K = 3, 4
    logp = torch.log_softmax(torch.randn(n * K, V), -1)  # (n*K, V)
    scores = torch.randn(n, K)
    scores[0, 1:] = float("-inf")  # a sentence with only its first beam in use
    ranked = _rank_candidates(logp, scores)
    full = (scores.unsqueeze(-1) + logp.view(n, K, V)).view(n, K * V)  # (n, K*V)
    best, pos = full.topk(2 * K, dim=-1)
    torch.testing.assert_close(ranked.scores, best)
    assert torch.equal(ranked.origin, pos // V) and torch.equal(ranked.tokens, pos % V)


# A scripted model: the next-token distribution is a function of the output prefix, so the
# whole search tree is known and the right answer can be worked out by hand.
A, B, C, D = 4, 5, 6, 7
SV = 8
SCRIPT = {
    (): {A: 0.50, B: 0.45},
    (A,): {EOS_ID: 0.95},  # "a" ends at step 2 as the best-scoring candidate so far
    (B,): {C: 0.98},
    (B, C): {EOS_ID: 0.98},  # "b c" ends one step later with a lower raw log-prob
}
DEFAULT = {EOS_ID: 0.9}  # off-script prefixes end soon


@dataclass
class ScriptState:
    prefix: Tensor  # (B, t) tokens read so far, <bos> first


class Scripted(Seq2Seq):
    def encode(self, src, src_mask):
        return EncoderOut(memory=torch.zeros(*src.shape, 1), src_mask=src_mask)

    def init_state(self, enc):
        return ScriptState(prefix=torch.empty(enc.memory.size(0), 0, dtype=torch.long))

    def decode_step(self, y_prev, state, enc):
        prefix = torch.cat([state.prefix, y_prev.unsqueeze(1)], 1)  # (B, t+1)
        rows = []
        for row in prefix.tolist():
            probs = SCRIPT.get(tuple(row[1:]), DEFAULT)
            rest = [t for t in range(EOS_ID, SV) if t not in probs]
            p = torch.zeros(SV)
            for t, q in probs.items():
                p[t] = q
            p[rest] = (1.0 - sum(probs.values())) / len(rest)  # pad and <bos> stay impossible
            rows.append(p.log())
        mask = enc.src_mask.float()
        weights = (mask / mask.sum(1, keepdim=True)).view(mask.size(0), 1, 1, -1)
        scores = torch.zeros_like(weights).masked_fill(weights == 0, -math.inf)
        return torch.stack(rows), ScriptState(prefix), StepAttention(weights, scores)


def test_scripted_beam_keeps_searching_after_top_hypothesis_ends():
    src, src_mask = sources([[9], [9, 9, 9]])
    lp_a = math.log(0.50) + math.log(0.95)
    lp_bc = math.log(0.45) + math.log(0.98) + math.log(0.98)
    assert lp_a > lp_bc  # raw log-prob prefers the short output ...
    assert lp_bc / length_penalty(3, 2.0) > lp_a / length_penalty(2, 2.0)  # ... alpha=2 not

    raw = beam_search(Scripted(), src, src_mask, 2, 2, 0.0, 5.0, 5)
    normed = beam_search(Scripted(), src, src_mask, 2, 2, 2.0, 5.0, 5)
    for cands in raw:
        assert [c.ids for c in cands] == [[A], [B, C]]
        assert all(c.finished for c in cands)  # K finished hypotheses, not one
        assert cands[0].logprob == pytest.approx(lp_a, abs=1e-5)
        assert cands[1].logprob == pytest.approx(lp_bc, abs=1e-5)
    for cands in normed:
        # The longer hypothesis ended after the top one, and still wins on normalised score.
        assert [c.ids for c in cands] == [[B, C], [A]]
        assert cands[0].score == pytest.approx(lp_bc / length_penalty(3, 2.0), abs=1e-5)
        assert cands[0].attention.shape == (3, cands[0].attention.size(1))
    assert [c.attention.size(1) for c in normed[0] + normed[1]] == [2, 2, 4, 4]

    greedy = greedy_search(Scripted(), src, src_mask, 5.0, 5)
    assert [g[0].ids for g in greedy] == [[A], [A]]  # greedy cannot see past step 2


class CountingScripted(Scripted):
    def __init__(self):
        super().__init__()
        self.steps = 0

    def decode_step(self, y_prev, state, enc):
        self.steps += 1
        return super().decode_step(y_prev, state, enc)


def test_early_stop_ends_a_sentence_when_its_best_candidate_ends():
    src, src_mask = sources([[9], [9, 9, 9]])
    full_model, early_model = CountingScripted(), CountingScripted()
    full = beam_search(full_model, src, src_mask, 2, 1, 2.0, 5.0, 5)
    early = beam_search(early_model, src, src_mask, 2, 1, 2.0, 5.0, 5, early_stop=True)
    assert [c[0].ids for c in full] == [[B, C], [B, C]]  # waits for K=2 ended hypotheses
    # "a <eos>" is the best candidate at step 2, so early_stop ends there, before "b c" ends
    # (which alpha=2 would have ranked first): one step fewer, a different answer.
    assert [c[0].ids for c in early] == [[A], [A]]
    assert (early_model.steps, full_model.steps) == (2, 3)
    # With n_best=2 it needs two ended hypotheses, so it goes on past the first.
    both = beam_search(Scripted(), src, src_mask, 2, 2, 2.0, 5.0, 5, early_stop=True)
    assert [[c.ids for c in cands] for cands in both] == [[[B, C], [A]]] * 2


# ---------------------------------------------------------------------------------------------
# Repetition control: decode.no_repeat_ngram and decode.repetition_penalty
# ---------------------------------------------------------------------------------------------

RV = 12  # the Repeater's vocabulary


@dataclass
class HistoryState:
    out: Tensor  # (B, t) tokens read so far, <bos> first


class Repeater(Seq2Seq):
    """A model that likes to repeat itself: the token it just read and the one before that get
    large bonuses over a fixed random preference, so unchecked it writes 'x x x ...' or
    'x y x y ...'; <eos> stays possible but unlikely, so the length limit usually ends it."""

    def __init__(self, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.base = torch.randn(RV, generator=g)  # (V,) a fixed preference among tokens
        self.base[[PAD_ID, BOS_ID]] = -math.inf
        self.base[EOS_ID] = -4.0

    def encode(self, src, src_mask):
        return EncoderOut(memory=torch.zeros(*src.shape, 1), src_mask=src_mask)

    def init_state(self, enc):
        return HistoryState(torch.empty(enc.memory.size(0), 0, dtype=torch.long))

    def decode_step(self, y_prev, state, enc):
        out = torch.cat([state.out, y_prev.unsqueeze(1)], 1)  # (B, t+1)
        logits = self.base.expand(out.size(0), RV).clone()  # (B, V)
        logits.scatter_add_(1, out[:, -1:], torch.full((out.size(0), 1), 3.0))
        if out.size(1) > 1:
            logits.scatter_add_(1, out[:, -2:-1], torch.full((out.size(0), 1), 2.0))
        logits[:, [PAD_ID, BOS_ID]] = -math.inf  # <bos> read as y_prev gets no probability
        return logits.log_softmax(-1), HistoryState(out), uniform_attention(enc.src_mask)


def uniform_attention(src_mask: Tensor) -> StepAttention:
    """Equal shares on every real source token: (B, 1, 1, S)."""
    mask = src_mask.float()
    weights = (mask / mask.sum(1, keepdim=True)).view(mask.size(0), 1, 1, -1)  # (B, 1, 1, S)
    return StepAttention(weights, torch.zeros_like(weights).masked_fill(weights == 0, -math.inf))


def has_repeated_ngram(ids: list[int], n: int) -> bool:
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    return len(grams) != len(set(grams))


REP_SRC = [[4, 5, 6, 7, 8, 9], [4], [5, 6, 7]]


def search_with(model, beam: int, n_best: int = 1, **repeats) -> list[list]:
    src, src_mask = sources(REP_SRC)
    if beam == 1:
        return greedy_search(model, src, src_mask, 2.0, 4, **repeats)
    return beam_search(model, src, src_mask, beam, n_best, 1.0, 2.0, 4, **repeats)


@pytest.mark.parametrize("beam", [1, 3])
@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_no_repeat_ngram_output_never_repeats_an_ngram(beam, n, seed):
    model = Repeater(seed)
    unchecked = search_with(model, beam, n_best=beam)
    assert any(has_repeated_ngram(c.ids, n) for cands in unchecked for c in cands)
    checked = search_with(model, beam, n_best=beam, no_repeat_ngram=n)
    for cands in checked:
        assert len(cands) == beam  # every beam hypothesis kept, none lost to the bans
        for c in cands:
            assert not has_repeated_ngram(c.ids, n), c.ids
            assert math.isfinite(c.logprob)


@pytest.mark.parametrize("beam", [1, 4])
def test_repetition_off_leaves_search_bit_identical(beam):
    model = make_model(11)
    src, src_mask = sources(SRC)

    def run(**repeats):
        if beam == 1:
            return greedy_search(model, src, src_mask, 1.5, 4, **repeats)
        return beam_search(model, src, src_mask, beam, 2, 1.0, 1.5, 4, **repeats)

    default, off = run(), run(no_repeat_ngram=0, repetition_penalty=1.0)
    for a, b in zip(default, off, strict=True):
        assert [(c.ids, c.score, c.logprob, c.finished) for c in a] == [
            (c.ids, c.score, c.logprob, c.finished) for c in b
        ]
        assert all(torch.equal(x.attention, y.attention) for x, y in zip(a, b, strict=True))
    logp, history = torch.randn(3, V).log_softmax(-1), torch.tensor([[4, 5], [6, 6], [7, 4]])
    assert penalize_repeats(logp, history, 0, 1.0) is logp  # off: the model's own tensor


def test_repetition_penalty_formula():
    scores = torch.tensor([[-1.0, -2.0, 0.5, -0.5, 2.0], [-1.0, -2.0, 0.5, -0.5, 2.0]])
    history = torch.tensor([[0, 2, 2], [4, 3, 3]])  # a token held twice is penalised once
    out = penalize_repeats(scores, history, repetition_penalty=2.0)
    expected = torch.tensor([[-2.0, -2.0, 0.25, -0.5, 2.0], [-1.0, -2.0, 0.5, -1.0, 1.0]])
    assert torch.equal(out, expected)
    assert torch.equal(scores[0], torch.tensor([-1.0, -2.0, 0.5, -0.5, 2.0]))  # input kept
    # A penalty below 1 favours what was written (CTRL allows it, as CTranslate2 does).
    assert penalize_repeats(scores, history, repetition_penalty=0.5)[0, 0] == -0.5
    assert torch.equal(penalize_repeats(scores, history[:, :0], repetition_penalty=2.0), scores)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_ngram_bans_equal_brute_force(n):
    g = torch.Generator().manual_seed(n)
    history = torch.randint(4, 8, (6, 9), generator=g)  # few distinct tokens: many repeats
    for t in range(n, history.size(1) + 1):
        bans = ngram_bans(history[:, :t], n, V)
        assert bans.shape == (6, V) and bans.dtype == torch.bool
        for r in range(6):
            row = history[r, :t].tolist()
            wanted = {x for x in range(V) if tuple(row[t - n + 1 :] + [x]) in
                      {tuple(row[i : i + n]) for i in range(t - n + 1)}}  # fmt: skip
            assert set(bans[r].nonzero().squeeze(1).tolist()) == wanted
    logp = torch.zeros(6, V)
    assert torch.equal(penalize_repeats(logp, history[:, : n - 1], no_repeat_ngram=n), logp)


# The next-token distribution after a prefix, for a scripted model whose ranking the penalty
# flips: after "a", "a" (0.40) beats "b" (0.35) by log-prob, but 1.2 * log(0.40) < log(0.35).
PENALTY_SCRIPT = {(): {A: 0.7, B: 0.2}, (A,): {A: 0.40, B: 0.35}, (A, B): {EOS_ID: 0.9},
                  (A, A): {EOS_ID: 0.9}, (B,): {EOS_ID: 0.9}}  # fmt: skip


class PenaltyScripted(Scripted):
    def decode_step(self, y_prev, state, enc):
        prefix = torch.cat([state.prefix, y_prev.unsqueeze(1)], 1)  # (B, t+1)
        rows = []
        for row in prefix.tolist():
            probs = PENALTY_SCRIPT.get(tuple(row[1:]), DEFAULT)
            rest = [t for t in range(EOS_ID, SV) if t not in probs]
            p = torch.full((SV,), (1.0 - sum(probs.values())) / len(rest))
            p[[PAD_ID, BOS_ID]] = 0.0
            for t, q in probs.items():
                p[t] = q
            rows.append(p.log())
        return torch.stack(rows), ScriptState(prefix), uniform_attention(enc.src_mask)


@pytest.mark.parametrize("beam", [1, 2])
def test_repetition_penalty_changes_the_ranking_as_defined(beam):
    src, src_mask = sources([[9]])
    assert math.log(0.40) > math.log(0.35) > 1.2 * math.log(0.40)

    def best(p: float):
        model = PenaltyScripted()
        if beam == 1:
            return greedy_search(model, src, src_mask, 5.0, 5, repetition_penalty=p)
        return beam_search(model, src, src_mask, beam, 1, 0.0, 5.0, 5, repetition_penalty=p)

    (plain,), (penalised,) = best(1.0), best(1.2)
    assert plain[0].ids == [A, A] and penalised[0].ids == [A, B]
    # logprob sums the penalised log-probs the search ranked by ("b" and <eos> are new tokens).
    want = math.log(0.7) + math.log(0.35) + math.log(0.9)
    assert penalised[0].logprob == pytest.approx(want, abs=1e-5)
    assert plain[0].logprob == pytest.approx(math.log(0.7 * 0.40 * 0.9), abs=1e-5)


def test_beam_penalises_each_hypothesis_by_its_own_history():
    """Each returned hypothesis's logprob is its own tokens' log-probs with the penalty applied
    from its own prefix: a beam reading another beam's history (say, before the reorder) would
    score some hypothesis with the wrong tokens penalised."""
    model, p = Repeater(3), 1.7
    src, src_mask = sources(REP_SRC)
    found = beam_search(model, src, src_mask, 4, 4, 1.0, 2.0, 4, repetition_penalty=p)
    for i, cands in enumerate(found):
        for c in cands:
            out = c.ids + [EOS_ID] if c.finished else c.ids
            tgt = torch.tensor([[BOS_ID] + c.ids[: len(out) - 1]])  # (1, steps)
            enc = model.encode(*sources([REP_SRC[i]]))
            state, total = model.init_state(enc), 0.0
            for t, y in enumerate(out):
                logp, state, _ = model.decode_step(tgt[:, t], state, enc)
                logp = penalize_repeats(logp, torch.tensor([out[:t]]), 0, p)
                total += float(logp[0, y])
            assert c.logprob == pytest.approx(total, abs=1e-4)


@pytest.mark.parametrize("seed", [0, 1])
def test_beam1_equals_greedy_with_repetition_control(seed):
    model = make_model(seed)
    src, src_mask = sources(SRC)
    repeats = dict(no_repeat_ngram=2, repetition_penalty=1.3)
    greedy = greedy_search(model, src, src_mask, 1.5, 6, **repeats)
    beam = beam_search(model, src, src_mask, 1, 1, 1.0, 1.5, 6, **repeats)
    for g, b in zip(greedy, beam, strict=True):
        assert g[0].ids == b[0].ids and g[0].finished == b[0].finished
        assert g[0].logprob == pytest.approx(b[0].logprob, abs=1e-4)
        assert not has_repeated_ngram(g[0].ids, 2)


def test_bans_never_leave_a_row_without_a_token():
    # Row 0 could only repeat (its one possible token was written, <eos> is forbidden): it keeps
    # its log-probs. Row 1 has another token left: the ban applies.
    logp = torch.full((2, V), -math.inf)
    logp[0, 5] = logp[1, 5] = -0.1
    logp[1, 6] = -3.0
    out = penalize_repeats(logp, torch.tensor([[5], [5]]), no_repeat_ngram=1)
    assert torch.equal(out[0], logp[0])
    assert torch.isneginf(out[1, 5]) and out[1, 6] == -3.0
