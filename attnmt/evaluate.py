"""Scores: sacreBLEU BLEU and chrF (with their signatures) and perplexity, through Translator.

Pipeline position: test pairs -> ``Translator.translate`` -> hypotheses -> sacreBLEU; and test
pairs -> teacher-forced model -> cross-entropy -> perplexity. Training reuses the same functions
for validation, so dev numbers and test numbers are computed the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import sacrebleu
import torch
import torch.nn.functional as F
from torch import Tensor

from attnmt.corpus import normalize
from attnmt.data import BucketBatcher, ShardBatcher, encode_pairs
from attnmt.interface import Seq2Seq
from attnmt.tokenizer import PAD_ID
from attnmt.translate import DecodeOptions, Translator, eval_mode


def token_loss(logits: Tensor, tgt_out: Tensor, smoothing: float) -> Tensor:
    """Summed (label-smoothed) cross-entropy over real target tokens; PAD positions ignored."""
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),  # (B*T, V)
        tgt_out.reshape(-1),  # (B*T,)
        ignore_index=PAD_ID,
        label_smoothing=smoothing,
        reduction="sum",
    )


@torch.inference_mode()
def mean_token_loss(
    model: Seq2Seq, batcher: BucketBatcher | ShardBatcher, device: torch.device
) -> float:
    """Mean per-token cross-entropy (no smoothing) of the model on every batch of ``batcher``."""
    total, n = 0.0, 0
    with eval_mode(model):
        for idx in batcher.batches(epoch=0):
            b = batcher.batch(idx).to(device)
            total += float(token_loss(model(b.src, b.src_mask, b.tgt_in), b.tgt_out, 0.0))
            n += b.n_tokens
    return total / max(1, n)


@dataclass
class EvalResult:
    bleu: float
    chrf: float
    bleu_signature: str
    chrf_signature: str
    perplexity: float
    sentences: int
    hypotheses: list[str]

    def report(self) -> str:
        return (
            f"BLEU {self.bleu:.2f}  ({self.bleu_signature})\n"
            f"chrF {self.chrf:.2f}  ({self.chrf_signature})\n"
            f"perplexity {self.perplexity:.2f}  ({self.sentences} sentences)"
        )


def bleu_chrf(hyps: list[str], refs: list[str]) -> tuple[float, float]:
    """Corpus BLEU and chrF, one reference per hypothesis."""
    return sacrebleu.corpus_bleu(hyps, [refs]).score, sacrebleu.corpus_chrf(hyps, [refs]).score


def evaluate(
    translator: Translator, pairs: list[tuple[str, str]], options: DecodeOptions | None = None
) -> EvalResult:
    """Translate the sources of ``pairs`` (``options``, default the translator's; the best
    hypothesis only) and score them against the targets. Perplexity needs a PyTorch model."""
    if not pairs:
        raise ValueError("evaluate: the test set is empty")
    model = translator.model  # before translating: an engine without one fails at once
    lower = translator.cfg.data.lowercase
    refs = [normalize(t, lower) for _, t in pairs]
    best_only = DecodeOptions.resolve(options or translator.options, n_best=1)
    hyps = [h[0].text for h in translator.translate([s for s, _ in pairs], best_only)]
    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    bleu_score = bleu.corpus_score(hyps, [refs])
    chrf_score = chrf.corpus_score(hyps, [refs])
    examples, _ = encode_pairs(
        [(normalize(s, lower), r) for (s, _), r in zip(pairs, refs)],
        translator.src_tok,
        translator.tgt_tok,
    )
    loss = mean_token_loss(
        model, BucketBatcher(examples, 4000, seed=0, shuffle=False), translator.device
    )
    return EvalResult(
        bleu=bleu_score.score,
        chrf=chrf_score.score,
        bleu_signature=str(bleu.get_signature()),
        chrf_signature=str(chrf.get_signature()),
        perplexity=math.exp(min(loss, 50.0)),
        sentences=len(pairs),
        hypotheses=hyps,
    )
