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

from attnmt.model import Seq2Seq, select_batch


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


@torch.inference_mode()
def greedy_search(
    model: Seq2Seq, src: Tensor, src_mask: Tensor, max_len_a: float, max_len_b: int
) -> list[list[Candidate]]:
    """Pick the most probable next token at every step, for a whole batch at once."""
    B = src.size(0)
    src_lens = src_mask.sum(1).tolist()
    limits = torch.tensor([max_output_len(n, max_len_a, max_len_b) for n in src_lens])
    enc = model.encode(src, src_mask)
    state = model.init_state(enc)
    y = torch.full((B,), model.bos_id, dtype=torch.long, device=src.device)
    done = torch.zeros(B, dtype=torch.bool)
    tokens, logps, attns = [], [], []
    for t in range(int(limits.max())):
        logp, state, attn = model.decode_step(y, state, enc)  # (B, V)
        best_logp, y = logp.max(dim=-1)  # (B,), (B,)
        tokens.append(y.cpu())
        logps.append(best_logp.float().cpu())
        attns.append(attn.headline().float().cpu())  # (B, S)
        done |= (y.cpu() == model.eos_id) | (t + 1 >= limits)
        if bool(done.all()):
            break
    toks = torch.stack(tokens, 1)  # (B, steps)
    lps = torch.stack(logps, 1)  # (B, steps)
    att = torch.stack(attns, 1)  # (B, steps, S)
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
) -> list[list[Candidate]]:
    """Keep the ``beam`` best partial hypotheses per sentence; return the ``n_best`` best.

    A sentence is done when ``beam`` hypotheses have ended with ``<eos>`` (not when the top one
    has), or when it reaches its length limit; the search ends when every sentence is done.
    """
    if beam < 1 or n_best < 1 or n_best > beam:
        raise ValueError(f"need 1 <= n_best <= beam, got beam={beam} n_best={n_best}")
    B, K, dev = src.size(0), beam, src.device
    src_lens = src_mask.sum(1).tolist()
    limits = [max_output_len(n, max_len_a, max_len_b) for n in src_lens]
    enc = model.encode(src, src_mask)
    # Every sentence gets K copies of its encoding: row b*K + k is beam k of sentence b.
    enc = select_batch(enc, torch.arange(B, device=dev).repeat_interleave(K))  # (B*K, ...)
    state = model.init_state(enc)
    y = torch.full((B * K,), model.bos_id, dtype=torch.long, device=dev)
    # Only beam 0 is live at the start, so the first step does not pick K copies of one token.
    beam_scores = torch.full((B, K), float("-inf"), device=dev)
    beam_scores[:, 0] = 0.0
    history = torch.empty(B * K, 0, dtype=torch.long, device=dev)  # (B*K, t) tokens so far
    attn_hist = torch.empty(B * K, 0, src.size(1))  # (B*K, t, S) on CPU
    finished: list[list[Candidate]] = [[] for _ in range(B)]
    done = [False] * B
    base = torch.arange(B, device=dev).unsqueeze(1) * K  # (B, 1) first row of each sentence

    for t in range(max(limits)):
        logp, state, attn = model.decode_step(y, state, enc)  # (B*K, V)
        V = logp.size(-1)
        step_attn = attn.headline().float().cpu().unsqueeze(1)  # (B*K, 1, S)
        cand = (beam_scores.unsqueeze(-1) + logp.view(B, K, V)).view(B, K * V)  # (B, K*V)
        # 2K candidates: even if K of them end in <eos>, K can still continue.
        top_scores, top_idx = cand.topk(2 * K, dim=-1)  # (B, 2K)
        origin = torch.div(top_idx, V, rounding_mode="floor")  # (B, 2K) which beam it extends
        tok = top_idx % V  # (B, 2K)
        is_eos = tok == model.eos_id

        # Hypotheses that end here: <eos> among the K best candidates of a live sentence.
        eos_b, eos_j = torch.nonzero(
            is_eos[:, :K] & (top_scores[:, :K] > float("-inf")), as_tuple=True
        )
        for b, j in zip(eos_b.tolist(), eos_j.tolist()):
            if done[b] or len(finished[b]) >= K:
                continue
            row = b * K + int(origin[b, j])
            logprob = float(top_scores[b, j])
            finished[b].append(
                Candidate(
                    ids=history[row].tolist(),
                    score=logprob / length_penalty(t + 1, length_penalty_alpha),
                    logprob=logprob,
                    attention=torch.cat([attn_hist[row], step_attn[row]], 0)[:, : src_lens[b]],
                    finished=True,
                )
            )

        # The K best candidates that do not end continue (a stable sort puts non-<eos> first).
        keep = torch.sort(is_eos.to(torch.int8), dim=-1, stable=True).indices[:, :K]  # (B, K)
        beam_scores = top_scores.gather(1, keep)  # (B, K)
        rows = (base + origin.gather(1, keep)).view(-1)  # (B*K,) rows they extend
        y = tok.gather(1, keep).view(-1)  # (B*K,)
        state = select_batch(state, rows)
        history = torch.cat([history.index_select(0, rows), y.unsqueeze(1)], 1)  # (B*K, t+1)
        attn_hist = torch.cat([attn_hist.index_select(0, rows.cpu()), step_attn[rows.cpu()]], 1)

        for b in range(B):
            if done[b]:
                continue
            if len(finished[b]) >= K:
                done[b] = True
            elif t + 1 >= limits[b]:
                # Length limit: the live hypotheses are returned unfinished, never dropped.
                for k in range(K):
                    row, logprob = b * K + k, float(beam_scores[b, k])
                    if logprob == float("-inf"):
                        continue
                    finished[b].append(
                        Candidate(
                            ids=history[row].tolist(),
                            score=logprob / length_penalty(t + 1, length_penalty_alpha),
                            logprob=logprob,
                            attention=attn_hist[row, :, : src_lens[b]],
                            finished=False,
                        )
                    )
                done[b] = True
        if all(done):
            break
        # Finished sentences keep computing (batch shapes stay fixed) but can no longer win.
        for b in range(B):
            if done[b]:
                beam_scores[b] = float("-inf")

    return [sorted(f, key=lambda c: -c.score)[:n_best] for f in finished]
