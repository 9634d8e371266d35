"""Batched greedy and beam search over the model interface only.

Pipeline position: ``model.encode`` -> **search** (repeated ``model.decode_step``) -> ids.
``Translator`` calls ``greedy_search`` / ``beam_search``; ``explain`` walks the same greedy
step loop, :func:`greedy_steps`, one step at a time, so a trace always equals beam-1 output.

Search never asks which architecture it holds: it calls ``encode``, ``init_state`` and
``decode_step`` (the contract in :mod:`attnmt.interface`), and reorders whatever state the
model returns with ``select_batch``.

Termination: each hypothesis ends at ``<eos>``. Every sentence also has an output limit of
``a * source_length + b`` steps (:func:`output_limits`, the one place it is computed), so the
loop ends even for a model that never emits ``<eos>``; a hypothesis cut by the limit is
returned with ``finished=False``.

Scores: ``logprob`` is the sum of token log-probabilities (``<eos>`` included); ``score`` divides
it by the GNMT length penalty ((5 + n) / 6) ** alpha (Wu et al. 2016, section 7), where n counts
the output steps, ``<eos>`` included. Shapes: B batch, K beam, S source, V vocab, n live
sentences (or rows), t output steps so far.

Repetition control (:func:`penalize_repeats`) changes each row's next-token log-probs from its
own output so far, in greedy and beam search alike (a beam row's history is read after the beam
reorder): ``no_repeat_ngram`` N gives -inf to any token that would complete an N-gram the row
already holds (fairseq's ``--no-repeat-ngram-size``, OpenNMT-py's ``block_ngram_repeat``);
``repetition_penalty`` p multiplies the negative and divides the positive log-probs of tokens
the row already holds (CTRL's penalized sampling, Keskar et al. 2019). The log-probs are
not renormalised afterwards, as with ``min_len``, and ``logprob`` sums the values the search
ranked by. CTranslate2 applies both to logits before its softmax: the same bans, but a penalty
on log-probs (all <= 0, so always multiplied) is milder than one on logits.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from attnmt.interface import Seq2Seq, StepAttention, select_batch

NEG_INF = float("-inf")


@dataclass
class Candidate:
    ids: list[int]  # output ids, no <bos>/<eos>
    score: float  # length-normalised log-probability (ranks hypotheses)
    logprob: float  # total log-probability (as searched: penalised by repetition_penalty)
    attention: Tensor  # (steps, S) headline attention per output step (the <eos> step included)
    finished: bool  # False when the length limit stopped it


def max_output_len(src_len: int, a: float, b: int) -> int:
    """Output steps allowed for a source of ``src_len`` tokens, its <eos> counted (at least 1)."""
    return max(1, int(a * src_len + b))


def output_limits(src_mask: Tensor, a: float, b: int) -> list[int]:
    """Each sentence's output step limit, from its real source tokens (<eos> included).

    src_mask (B, S) bool, True = real token -> B limits. Every engine uses this one rule."""
    return [max_output_len(n, a, b) for n in src_mask.sum(1).tolist()]


def length_penalty(steps: int, alpha: float) -> float:
    return ((5.0 + steps) / 6.0) ** alpha


def forbid_early_eos(logp: Tensor, t: int, min_len: int, eos_id: int) -> Tensor:
    """``decode.min_len``: at output steps t < min_len, <eos> gets log-prob -inf.

    The other tokens keep their log-probs (no renormalising), as in fairseq and OpenNMT-py.
    Returns a new tensor; ``logp`` is left as the model gave it."""
    if t >= min_len:
        return logp
    is_eos = torch.arange(logp.size(-1), device=logp.device) == eos_id  # (V,)
    return logp.masked_fill(is_eos, NEG_INF)  # (n, V)


def penalize_repeats(
    logp: Tensor, history: Tensor, no_repeat_ngram: int = 0, repetition_penalty: float = 1.0
) -> Tensor:
    """``decode.no_repeat_ngram`` and ``decode.repetition_penalty`` on one step's log-probs.

    logp (n, V); history (n, t): each row's output so far (no <bos>). Returns a new tensor, or
    ``logp`` itself when both are off, so that decoding without them is exactly as before."""
    if repetition_penalty != 1.0 and history.size(1):
        seen = torch.zeros_like(logp, dtype=torch.bool).scatter_(1, history, True)  # (n, V)
        # CTRL's rule: a score below 0 is multiplied by p, one above divided (p > 1 lowers both).
        lowered = torch.where(logp < 0, logp * repetition_penalty, logp / repetition_penalty)
        logp = torch.where(seen, lowered, logp)  # (n, V)
    if no_repeat_ngram > 0 and history.size(1) >= no_repeat_ngram:
        banned = logp.masked_fill(ngram_bans(history, no_repeat_ngram, logp.size(-1)), NEG_INF)
        # A row the bans would leave with no possible token (every other one already banned,
        # <eos> by min_len or the model) keeps its log-probs: a repeat, not an arbitrary id.
        stuck = torch.isneginf(banned).all(-1, keepdim=True)  # (n, 1)
        logp = torch.where(stuck, logp, banned)  # (n, V)
    return logp


def ngram_bans(history: Tensor, n: int, vocab: int) -> Tensor:
    """(rows, V) bool: the tokens that would complete an n-gram each row of history (rows, t)
    already holds, i.e. those that followed an earlier occurrence of its last n - 1 tokens."""
    rows, t = history.shape
    windows = history.unfold(1, n, 1)  # (rows, t-n+1, n) every n-gram so far
    last = history[:, t - n + 1 :].unsqueeze(1)  # (rows, 1, n-1) what a new token would extend
    match = (windows[:, :, :-1] == last).all(-1)  # (rows, t-n+1); all of nothing is True (n=1)
    # Scatter each match's final token; the others go to a spare column that is then dropped,
    # so one matching and one non-matching occurrence of a token cannot overwrite each other.
    ends = windows[:, :, -1].masked_fill(~match, vocab)  # (rows, t-n+1)
    bans = torch.zeros(rows, vocab + 1, dtype=torch.bool, device=history.device)  # (rows, V+1)
    return bans.scatter_(1, ends, True)[:, :vocab]  # (rows, V)


# ---------------------------------------------------------------------------------------------
# Greedy: one step loop, consumed by greedy_search (a batch) and explain (one sentence).
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GreedyStep:
    """What one greedy step saw and chose, for the n sentences still decoding."""

    t: int  # 0-based output step
    alive: Tensor  # (n,) original sentence of each row, on CPU
    input_ids: Tensor  # (n,) token each row read (<bos> first, then its previous choice), CPU
    logp: Tensor  # (n, V) next-token log-probs after min_len and the repetition options
    chosen: Tensor  # (n,) the most probable token, on CPU
    chosen_logp: Tensor  # (n,) its log-prob (float32, CPU)
    attention: StepAttention  # (n, L, nh, S)
    done: Tensor  # (n,) bool on CPU: the row ends here (<eos> or its length limit)


@torch.inference_mode()
def greedy_steps(
    model: Seq2Seq,
    src: Tensor,
    src_mask: Tensor,
    limits: list[int],
    min_len: int = 0,
    no_repeat_ngram: int = 0,
    repetition_penalty: float = 1.0,
) -> Iterator[GreedyStep]:
    """Greedy decoding as a stream of steps; ends when every sentence is done.

    A sentence leaves the batch after the step it ends on, so later steps compute only for the
    sentences still going (its encoding and decoder state rows are dropped with select_batch).
    ``limits``: output steps per sentence (:func:`output_limits`). ``min_len``: <eos> cannot be
    chosen before that many tokens (the length limit still wins). ``no_repeat_ngram`` and
    ``repetition_penalty``: :func:`penalize_repeats`, from each sentence's output so far.
    """
    B = src.size(0)
    enc = model.encode(src, src_mask)
    state = model.init_state(enc)
    y = torch.full((B,), model.bos_id, dtype=torch.long, device=src.device)  # (B,)
    y_cpu = torch.full((B,), model.bos_id, dtype=torch.long)  # (B,)
    out = torch.empty(B, 0, dtype=torch.long, device=src.device)  # (n, t) output so far
    limit = torch.tensor(limits)  # (B,)
    alive = torch.arange(B)  # (n,)
    for t in range(max(limits)):
        logp, state, attn = model.decode_step(y, state, enc)  # (n, V)
        logp = forbid_early_eos(logp, t, min_len, model.eos_id)
        logp = penalize_repeats(logp, out, no_repeat_ngram, repetition_penalty)
        best_logp, best = logp.max(dim=-1)  # (n,), (n,)
        best_cpu = best.cpu()
        done = (best_cpu == model.eos_id) | (t + 1 >= limit[alive])  # (n,)
        yield GreedyStep(t, alive, y_cpu, logp, best_cpu, best_logp.float().cpu(), attn, done)
        if bool(done.all()):
            return
        y, y_cpu = best, best_cpu
        out = torch.cat([out, best.unsqueeze(1)], 1)  # (n, t+1)
        if bool(done.any()):
            keep = (~done).nonzero().squeeze(1)  # (n',) live rows that go on
            alive, y_cpu = alive[keep], y_cpu[keep]
            keep = keep.to(src.device)
            y, out = y[keep], out[keep]  # (n',), (n', t+1)
            state, enc = select_batch(state, keep), select_batch(enc, keep)


@torch.inference_mode()
def greedy_search(
    model: Seq2Seq,
    src: Tensor,
    src_mask: Tensor,
    max_len_a: float,
    max_len_b: int,
    min_len: int = 0,
    no_repeat_ngram: int = 0,
    repetition_penalty: float = 1.0,
) -> list[list[Candidate]]:
    """Pick the most probable next token at every step, for a whole batch at once.

    Collects each sentence's choices from :func:`greedy_steps` (which says when a sentence stops
    and what ``min_len`` and the repetition options do) into one candidate per sentence."""
    B, S = src.shape
    limits = output_limits(src_mask, max_len_a, max_len_b)
    T = max(limits)
    # Outputs by original sentence; cells never written stay <eos> (only read past an <eos>).
    toks = torch.full((B, T), model.eos_id, dtype=torch.long)  # (B, T)
    lps = torch.zeros(B, T)  # (B, T)
    att = torch.zeros(B, T, S)  # (B, T, S)
    steps = greedy_steps(model, src, src_mask, limits, min_len, no_repeat_ngram, repetition_penalty)
    for step in steps:
        toks[step.alive, step.t] = step.chosen
        lps[step.alive, step.t] = step.chosen_logp
        att[step.alive, step.t] = step.attention.headline().float().cpu()  # (n, S)
    src_lens = src_mask.sum(1).tolist()
    return [
        [_greedy_candidate(toks[b, : limits[b]].tolist(), lps[b], att[b, :, : src_lens[b]], model)]
        for b in range(B)
    ]


def _greedy_candidate(row: list[int], lps: Tensor, att: Tensor, model: Seq2Seq) -> Candidate:
    """One sentence's output: ``row`` its tokens up to its limit, lps (T,), att (T, S)."""
    finished = model.eos_id in row
    steps = row.index(model.eos_id) + 1 if finished else len(row)
    logprob = float(lps[:steps].sum())
    return Candidate(
        ids=row[: steps - 1] if finished else row,
        score=logprob,  # greedy has one hypothesis: nothing to normalise against
        logprob=logprob,
        attention=att[:steps],  # (steps, S)
        finished=finished,
    )


# ---------------------------------------------------------------------------------------------
# Beam search: the loop in beam_search, its parts below it.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Beams:
    """The live hypotheses: K rows per live sentence (row g*K + k is beam k of sentence g)."""

    alive: list[int]  # (n,) original sentence of each live sentence g
    scores: Tensor  # (n, K) total log-prob per beam; -inf for a beam not in use
    tokens: Tensor  # (n*K, t) output ids so far
    attention: Tensor  # (n*K, t, S) headline attention so far, on CPU


@dataclass(frozen=True)
class Ranked:
    """The 2K best one-token extensions of each live sentence, best first."""

    scores: Tensor  # (n, 2K) total log-prob
    origin: Tensor  # (n, 2K) the beam k each one extends
    tokens: Tensor  # (n, 2K) the token it appends


@torch.inference_mode()
def beam_search(
    model: Seq2Seq,
    src: Tensor,
    src_mask: Tensor,
    beam: int,
    n_best: int,
    length_penalty_alpha: float,
    max_len_a: float,
    max_len_b: int,
    early_stop: bool = False,
    min_len: int = 0,
    no_repeat_ngram: int = 0,
    repetition_penalty: float = 1.0,
) -> list[list[Candidate]]:
    """Keep the ``beam`` best partial hypotheses per sentence; return the ``n_best`` best.

    A sentence is done when ``beam`` hypotheses have ended with ``<eos>``, or when it reaches its
    length limit; it then leaves the batch, so later steps compute only for the sentences still
    searching. The search ends when every sentence is done. ``early_stop`` also ends a sentence
    as soon as its best candidate ends (and ``n_best`` have ended), as OpenNMT-py and JoeyNMT do:
    fewer steps, but a longer hypothesis the length penalty would have ranked first can be missed.
    ``min_len``: no hypothesis ends with <eos> before that many tokens. ``no_repeat_ngram`` and
    ``repetition_penalty``: :func:`penalize_repeats`, from each beam's own output so far.
    """
    if beam < 1 or n_best < 1 or n_best > beam:
        raise ValueError(f"need 1 <= n_best <= beam, got beam={beam} n_best={n_best}")
    B, K, dev, alpha, eos = src.size(0), beam, src.device, length_penalty_alpha, model.eos_id
    limits = output_limits(src_mask, max_len_a, max_len_b)
    src_lens = src_mask.sum(1).tolist()
    enc = model.encode(src, src_mask)
    # Every sentence gets K copies of its encoding.
    enc = select_batch(enc, torch.arange(B, device=dev).repeat_interleave(K))  # (B*K, ...)
    state = model.init_state(enc)
    beams = _first_beams(B, K, src.size(1), dev)
    bos = torch.full((B * K,), model.bos_id, dtype=torch.long, device=dev)  # (B*K,)
    finished: list[list[Candidate]] = [[] for _ in range(B)]
    for t in range(max(limits)):
        y = beams.tokens[:, -1] if t else bos  # (n*K,)
        logp, state, attn = model.decode_step(y, state, enc)  # (n*K, V)
        logp = forbid_early_eos(logp, t, min_len, eos)
        # beams.tokens row r is the hypothesis that logp row r extends (reordered last step).
        logp = penalize_repeats(logp, beams.tokens, no_repeat_ngram, repetition_penalty)
        step_attn = attn.headline().float().cpu().unsqueeze(1)  # (n*K, 1, S) on CPU
        ranked = _rank_candidates(logp, beams.scores)
        for g, row, logprob in _ended_here(ranked, _ended_counts(beams, finished), eos):
            b = beams.alive[g]
            att = torch.cat([beams.attention[row], step_attn[row]], 0)  # (t+1, S)
            finished[b].append(_hypothesis(beams.tokens[row], logprob, att, src_lens[b], alpha))
        n = len(beams.alive)
        top_ended = (ranked.tokens[:, 0] == eos).tolist() if early_stop else [False] * n
        beams, rows = _extend(beams, ranked, step_attn, eos)
        n_ended = _ended_counts(beams, finished)
        going, cut = _who_goes_on(beams, n_ended, top_ended, t, limits, n_best)
        for g in cut:  # length limit: the live hypotheses are returned unfinished, never dropped
            b = beams.alive[g]
            finished[b] += _unfinished(beams, g, src_lens[b], alpha)
        if not going:
            break
        if len(going) < n:
            beams, sel = _drop_sentences(beams, going)
            enc, rows = select_batch(enc, sel), rows.index_select(0, sel)  # K alike copies each
        # One reorder of the decoder state: follow the surviving beams of the live sentences.
        state = select_batch(state, rows)
    return [sorted(f, key=lambda c: -c.score)[:n_best] for f in finished]


def _first_beams(B: int, K: int, S: int, device: torch.device) -> Beams:
    """K empty hypotheses per sentence, of which only beam 0 is live at the start, so the first
    step does not pick K copies of one token."""
    scores = torch.full((B, K), NEG_INF, device=device)  # (B, K)
    scores[:, 0] = 0.0
    return Beams(
        alive=list(range(B)),
        scores=scores,
        tokens=torch.empty(B * K, 0, dtype=torch.long, device=device),  # (B*K, 0)
        attention=torch.empty(B * K, 0, S),  # (B*K, 0, S)
    )


def _rank_candidates(logp: Tensor, scores: Tensor) -> Ranked:
    """The 2K best extensions per sentence: even if K of them end in <eos>, K can still continue.

    logp (n*K, V) next-token log-probs; scores (n, K) each beam's total so far. A beam's score is
    added to all V of its extensions alike, so each of the sentence's 2K best is among the 2K
    best of its own beam: pick those per beam row first, then rank K * 2K sums instead of adding
    the score to all K * V log-probs.
    """
    n, K = scores.shape
    per_row = min(2 * K, logp.size(-1))
    row_lp, row_tok = logp.topk(per_row, dim=-1)  # (n*K, per_row)
    cand = scores.unsqueeze(-1) + row_lp.view(n, K, per_row)  # (n, K, per_row)
    top_scores, top_pos = cand.view(n, K * per_row).topk(2 * K, dim=-1)  # (n, 2K)
    origin = torch.div(top_pos, per_row, rounding_mode="floor")  # (n, 2K) which beam it extends
    tokens = row_tok.view(n, K * per_row).gather(1, top_pos)  # (n, 2K)
    return Ranked(scores=top_scores, origin=origin, tokens=tokens)


def _ended_counts(beams: Beams, finished: list[list[Candidate]]) -> list[int]:
    """(n,) how many hypotheses each live sentence has ended so far."""
    return [len(finished[b]) for b in beams.alive]


def _ended_here(ranked: Ranked, n_ended: list[int], eos_id: int) -> list[tuple[int, int, float]]:
    """Hypotheses that end at this step: <eos> among a sentence's K best candidates (of a live
    beam), while it has fewer than K ended. Returns (sentence g, row it extends, logprob)."""
    K = ranked.scores.size(1) // 2
    ends = (ranked.tokens[:, :K] == eos_id) & (ranked.scores[:, :K] > NEG_INF)  # (n, K)
    if not bool(ends.any()):
        return []
    room = [K - n for n in n_ended]  # (n,)
    found = []
    for g, j in ends.nonzero().tolist():
        if room[g] > 0:
            room[g] -= 1
            found.append((g, g * K + int(ranked.origin[g, j]), float(ranked.scores[g, j])))
    return found


def _hypothesis(
    tokens: Tensor, logprob: float, attn: Tensor, src_len: int, alpha: float, ended: bool = True
) -> Candidate:
    """A returned hypothesis: tokens (t,) without <eos>, attn (steps, S) one row per step."""
    return Candidate(
        ids=tokens.tolist(),
        score=logprob / length_penalty(attn.size(0), alpha),
        logprob=logprob,
        attention=attn[:, :src_len],  # (steps, src_len)
        finished=ended,
    )


def _extend(beams: Beams, ranked: Ranked, step_attn: Tensor, eos_id: int) -> tuple[Beams, Tensor]:
    """The K best candidates that do not end continue (a stable sort puts non-<eos> first).

    step_attn (n*K, 1, S). Returns the new beams and rows (n*K,): the old row each new row
    extends, by which the decoder state is reordered.
    """
    n, K = beams.scores.shape
    is_eos = ranked.tokens == eos_id  # (n, 2K)
    keep = torch.sort(is_eos.to(torch.int8), dim=-1, stable=True).indices[:, :K]  # (n, K)
    first = torch.arange(n, device=keep.device)[:, None] * K  # (n, 1) each sentence's first row
    rows = (first + ranked.origin.gather(1, keep)).view(-1)  # (n*K,) rows they extend
    y = ranked.tokens.gather(1, keep).view(-1)  # (n*K,)
    tokens = torch.cat([beams.tokens.index_select(0, rows), y.unsqueeze(1)], 1)  # (n*K, t+1)
    rows_cpu = rows.cpu()
    attention = torch.cat([beams.attention.index_select(0, rows_cpu), step_attn[rows_cpu]], 1)
    return Beams(beams.alive, ranked.scores.gather(1, keep), tokens, attention), rows


def _who_goes_on(
    beams: Beams, n_ended: list[int], top_ended: list[bool], t: int, limits: list[int], n_best: int
) -> tuple[list[int], list[int]]:
    """Split the live sentences g into those that search on and those cut by their length limit
    at this step. Neither holds a sentence with K ended hypotheses, nor (early_stop's
    ``top_ended``) one whose best candidate just ended once it has ``n_best`` ended."""
    K = beams.scores.size(1)
    going, cut = [], []
    for g, b in enumerate(beams.alive):
        if n_ended[g] >= K or (top_ended[g] and n_ended[g] >= n_best):
            continue
        (cut if t + 1 >= limits[b] else going).append(g)
    return going, cut


def _unfinished(beams: Beams, g: int, src_len: int, alpha: float) -> list[Candidate]:
    """Sentence g's hypotheses in use, returned unfinished (a beam stays -inf until filled)."""
    K = beams.scores.size(1)
    return [
        _hypothesis(beams.tokens[g * K + k], lp, beams.attention[g * K + k], src_len, alpha, False)
        for k, lp in enumerate(beams.scores[g].tolist())
        if lp > NEG_INF
    ]


def _drop_sentences(beams: Beams, going: list[int]) -> tuple[Beams, Tensor]:
    """Keep only the live sentences ``going``; returns their beams and their rows sel (n'*K,)."""
    K, dev = beams.scores.size(1), beams.scores.device
    g_idx = torch.tensor(going, device=dev)  # (n',)
    sel = (g_idx[:, None] * K + torch.arange(K, device=dev)[None, :]).view(-1)  # (n'*K,)
    kept = Beams(
        alive=[beams.alive[g] for g in going],
        scores=beams.scores.index_select(0, g_idx),  # (n', K)
        tokens=beams.tokens.index_select(0, sel),  # (n'*K, t)
        attention=beams.attention.index_select(0, sel.cpu()),  # (n'*K, t, S)
    )
    return kept, sel
