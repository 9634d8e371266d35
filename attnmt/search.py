"""Batched greedy and beam search over the model interface only.

Pipeline position: ``model.encode`` -> **search** (repeated ``model.decode_step``) -> ids.

Search never asks which architecture it holds: it calls ``encode``, ``init_state`` and
``decode_step``, and reorders whatever state the model returns with ``select_batch``.

Termination: each hypothesis ends at ``<eos>``. Every sentence also has an output limit of
``a * source_length + b`` steps, so the loop ends even for a model that never emits ``<eos>``;
a hypothesis cut by the limit is returned with ``finished=False``.

Scores: ``logprob`` is the sum of token log-probabilities (``<eos>`` included); ``score`` divides
it by the GNMT length penalty ((5 + n) / 6) ** alpha (Wu et al. 2016, section 7), where n counts
the output steps, ``<eos>`` included. Shapes: B batch, K beam, S source, V vocab.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from attnmt.interface import Seq2Seq, select_batch


@dataclass
class Candidate:
    ids: list[int]  # output ids, no <bos>/<eos>
    score: float  # length-normalised log-probability (ranks hypotheses)
    logprob: float  # total log-probability
    attention: Tensor  # (steps, S) headline attention per output step (the <eos> step included)
    finished: bool  # False when the length limit stopped it


def max_output_len(src_len: int, a: float, b: int) -> int:
    """Output steps allowed for a source of ``src_len`` tokens (at least 1)."""
    return max(1, int(a * src_len + b))


def length_penalty(steps: int, alpha: float) -> float:
    return ((5.0 + steps) / 6.0) ** alpha


def forbid_early_eos(logp: Tensor, t: int, min_len: int, eos_id: int) -> None:
    """``decode.min_len``: at output steps t < min_len, <eos> gets log-prob -inf (in place).

    The other tokens keep their log-probs (no renormalising), as in fairseq and OpenNMT-py."""
    if t < min_len:
        logp[:, eos_id] = float("-inf")


@torch.inference_mode()
def greedy_search(
    model: Seq2Seq,
    src: Tensor,
    src_mask: Tensor,
    max_len_a: float,
    max_len_b: int,
    min_len: int = 0,
) -> list[list[Candidate]]:
    """Pick the most probable next token at every step, for a whole batch at once.

    A sentence leaves the batch as soon as it ends, so later steps compute only for the
    sentences still going (its encoding and decoder state rows are dropped with select_batch).
    ``min_len``: <eos> cannot be chosen before that many tokens (the length limit still wins).
    """
    B, S = src.shape
    src_lens = src_mask.sum(1).tolist()
    limits = torch.tensor([max_output_len(n, max_len_a, max_len_b) for n in src_lens])
    T = int(limits.max())
    enc = model.encode(src, src_mask)
    state = model.init_state(enc)
    y = torch.full((B,), model.bos_id, dtype=torch.long, device=src.device)
    # Outputs by original sentence; rows never written stay <eos> (only read past an <eos>).
    toks = torch.full((B, T), model.eos_id, dtype=torch.long)  # (B, T)
    lps = torch.zeros(B, T)  # (B, T)
    att = torch.zeros(B, T, S)  # (B, T, S)
    alive = torch.arange(B)  # (n,) original sentence of each live row
    for t in range(T):
        logp, state, attn = model.decode_step(y, state, enc)  # (n, V)
        forbid_early_eos(logp, t, min_len, model.eos_id)
        best_logp, y = logp.max(dim=-1)  # (n,), (n,)
        y_cpu = y.cpu()
        toks[alive, t] = y_cpu
        lps[alive, t] = best_logp.float().cpu()
        att[alive, t] = attn.headline().float().cpu()  # (n, S)
        done = (y_cpu == model.eos_id) | (t + 1 >= limits[alive])  # (n,)
        if bool(done.all()):
            break
        if bool(done.any()):
            keep = (~done).nonzero().squeeze(1)  # (n',) live rows that go on
            alive = alive[keep]
            keep = keep.to(src.device)
            y, state, enc = y[keep], select_batch(state, keep), select_batch(enc, keep)
    results = []
    for b in range(B):
        row = toks[b, : int(limits[b])].tolist()
        finished = model.eos_id in row
        steps = row.index(model.eos_id) + 1 if finished else len(row)
        logprob = float(lps[b, :steps].sum())
        results.append(
            [
                Candidate(
                    ids=row[: steps - 1] if finished else row,
                    score=logprob,  # greedy has one hypothesis: nothing to normalise against
                    logprob=logprob,
                    attention=att[b, :steps, : src_lens[b]],
                    finished=finished,
                )
            ]
        )
    return results


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
) -> list[list[Candidate]]:
    """Keep the ``beam`` best partial hypotheses per sentence; return the ``n_best`` best.

    A sentence is done when ``beam`` hypotheses have ended with ``<eos>``, or when it reaches its
    length limit; it then leaves the batch, so later steps compute only for the sentences still
    searching. The search ends when every sentence is done. ``early_stop`` also ends a sentence
    as soon as its best candidate ends (and ``n_best`` have ended), as OpenNMT-py and JoeyNMT do:
    fewer steps, but a longer hypothesis the length penalty would have ranked first can be missed.
    ``min_len``: no hypothesis ends with <eos> before that many tokens.
    Shapes: n live sentences, rows n*K (row g*K + k is beam k of live sentence g).
    """
    if beam < 1 or n_best < 1 or n_best > beam:
        raise ValueError(f"need 1 <= n_best <= beam, got beam={beam} n_best={n_best}")
    B, K, dev = src.size(0), beam, src.device
    src_lens = src_mask.sum(1).tolist()
    limits = [max_output_len(n, max_len_a, max_len_b) for n in src_lens]
    enc = model.encode(src, src_mask)
    # Every sentence gets K copies of its encoding.
    enc = select_batch(enc, torch.arange(B, device=dev).repeat_interleave(K))  # (B*K, ...)
    state = model.init_state(enc)
    y = torch.full((B * K,), model.bos_id, dtype=torch.long, device=dev)
    # Only beam 0 is live at the start, so the first step does not pick K copies of one token.
    beam_scores = torch.full((B, K), float("-inf"), device=dev)
    beam_scores[:, 0] = 0.0
    history = torch.empty(B * K, 0, dtype=torch.long, device=dev)  # (n*K, t) tokens so far
    attn_hist = torch.empty(B * K, 0, src.size(1))  # (n*K, t, S) on CPU
    finished: list[list[Candidate]] = [[] for _ in range(B)]
    alive = list(range(B))  # original sentence of each live sentence g
    offsets = torch.arange(K, device=dev)  # (K,)

    def add(b: int, row: int, logprob: float, steps: int, attn: Tensor, ended: bool) -> None:
        finished[b].append(
            Candidate(
                ids=history[row].tolist(),
                score=logprob / length_penalty(steps, length_penalty_alpha),
                logprob=logprob,
                attention=attn[:, : src_lens[b]],
                finished=ended,
            )
        )

    for t in range(max(limits)):
        n = len(alive)
        logp, state, attn = model.decode_step(y, state, enc)  # (n*K, V)
        forbid_early_eos(logp, t, min_len, model.eos_id)
        V = logp.size(-1)
        step_attn = attn.headline().float().cpu().unsqueeze(1)  # (n*K, 1, S)
        # 2K candidates per sentence: even if K of them end in <eos>, K can still continue.
        # A beam's score is added to all V of its extensions alike, so each of the sentence's 2K
        # best is among the 2K best of its own beam: pick those per beam row first, then rank
        # K * 2K sums instead of adding the score to all K * V log-probs.
        per_row = min(2 * K, V)
        row_lp, row_tok = logp.topk(per_row, dim=-1)  # (n*K, per_row)
        cand = beam_scores.unsqueeze(-1) + row_lp.view(n, K, per_row)  # (n, K, per_row)
        top_scores, top_pos = cand.view(n, K * per_row).topk(2 * K, dim=-1)  # (n, 2K)
        origin = torch.div(top_pos, per_row, rounding_mode="floor")  # (n, 2K) which beam it extends
        tok = row_tok.view(n, K * per_row).gather(1, top_pos)  # (n, 2K)
        is_eos = tok == model.eos_id

        # Hypotheses that end here: <eos> among the K best candidates (of a live beam).
        ends = is_eos[:, :K] & (top_scores[:, :K] > float("-inf"))  # (n, K)
        if bool(ends.any()):
            for g, j in ends.nonzero().tolist():
                b = alive[g]
                if len(finished[b]) < K:
                    row = g * K + int(origin[g, j])
                    hist = torch.cat([attn_hist[row], step_attn[row]], 0)  # (t+1, S)
                    add(b, row, float(top_scores[g, j]), t + 1, hist, True)

        # The K best candidates that do not end continue (a stable sort puts non-<eos> first).
        keep = torch.sort(is_eos.to(torch.int8), dim=-1, stable=True).indices[:, :K]  # (n, K)
        beam_scores = top_scores.gather(1, keep)  # (n, K)
        first = torch.arange(n, device=dev)[:, None] * K  # (n, 1) each sentence's first row
        rows = (first + origin.gather(1, keep)).view(-1)  # (n*K,) rows they extend
        y = tok.gather(1, keep).view(-1)  # (n*K,)
        history = torch.cat([history.index_select(0, rows), y.unsqueeze(1)], 1)  # (n*K, t+1)
        rows_cpu = rows.cpu()
        attn_hist = torch.cat([attn_hist.index_select(0, rows_cpu), step_attn[rows_cpu]], 1)

        # Sentences with K ended hypotheses (or early_stop: whose best candidate ended), or at
        # their length limit, leave the batch.
        top_ended = is_eos[:, 0].tolist() if early_stop else [False] * n
        going = []
        for g, b in enumerate(alive):
            if len(finished[b]) >= K or (top_ended[g] and len(finished[b]) >= n_best):
                continue
            if t + 1 >= limits[b]:
                # Length limit: the live hypotheses are returned unfinished, never dropped.
                for k, logprob in enumerate(beam_scores[g].tolist()):
                    if logprob > float("-inf"):
                        row = g * K + k
                        add(b, row, logprob, t + 1, attn_hist[row], False)
                continue
            going.append(g)
        if not going:
            break
        if len(going) < n:
            g_idx = torch.tensor(going, device=dev)  # (n',)
            sel = (g_idx[:, None] * K + offsets[None, :]).view(-1)  # (n'*K,) their rows
            alive = [alive[g] for g in going]
            beam_scores = beam_scores.index_select(0, g_idx)
            y, history = y.index_select(0, sel), history.index_select(0, sel)
            attn_hist = attn_hist.index_select(0, sel.cpu())
            enc = select_batch(enc, sel)  # the K copies of a sentence are identical
            rows = rows.index_select(0, sel)
        # One reorder of the decoder state: follow the surviving beams of the live sentences.
        state = select_batch(state, rows)

    return [sorted(f, key=lambda c: -c.score)[:n_best] for f in finished]
