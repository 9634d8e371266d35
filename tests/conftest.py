"""Shared fixtures: a tiny parallel corpus and a tiny trained model (trained once per session)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from attnmt.interface import Seq2Seq

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# A toy English->Spanish corpus with a little structure to learn; enough for CLI round trips.
_SUBJECTS = [("I", "Yo"), ("You", "Tú"), ("We", "Nosotros"), ("They", "Ellos")]
_VERBS = {
    "eat": ["como", "comes", "comemos", "comen"],
    "see": ["veo", "ves", "vemos", "ven"],
    "want": ["quiero", "quieres", "queremos", "quieren"],
}
_OBJECTS = [
    ("apples", "manzanas"),
    ("bread", "pan"),
    ("the dog", "el perro"),
    ("a car", "un coche"),
]


def tiny_pairs() -> list[tuple[str, str]]:
    pairs = [("Let's go.", "Vamos.")]
    for i, (s_en, s_es) in enumerate(_SUBJECTS):
        for verb, forms in _VERBS.items():
            for o_en, o_es in _OBJECTS:
                pairs.append((f"{s_en} {verb} {o_en}.", f"{s_es} {forms[i]} {o_es}."))
    return pairs


def write_tiny_tsv(path: Path) -> Path:
    path.write_text("".join(f"{s}\t{t}\n" for s, t in tiny_pairs()), encoding="utf-8")
    return path


TINY_OVERRIDES = [
    "data.tokenizer=word",
    "data.vocab_size=200",
    "data.dev_fraction=0.1",
    "data.test_fraction=0.1",
    "model.emb_dim=32",
    "model.hidden=32",
    "model.dropout=0.0",
    "train.batch_tokens=200",
    "train.max_steps=40",
    "train.eval_every=20",
    "train.save_every=10",
    "train.log_every=5",
    "train.warmup=10",
    "train.lr=0.01",
    "train.threads=1",
    "train.progress=false",
    "decode.beam=3",
]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train a tiny LSTM model once; returns its run directory (best.pt, last.pt, test.tsv...)."""
    from attnmt.config import load_config
    from attnmt.train import train

    tmp = tmp_path_factory.mktemp("tiny_run")
    corpus = write_tiny_tsv(tmp / "tiny.tsv")
    cfg = load_config(
        None, [f"data.corpus={corpus}", f"train.out_dir={tmp / 'run'}", *TINY_OVERRIDES]
    )
    return train(cfg, log=lambda *_: None)


class EosBiased(Seq2Seq):
    """Wraps any model and shifts the log-probability of <eos> at every step, then renormalises.

    ``eos_bias=-inf`` gives a model that never ends (only the length limit stops it); a large
    positive bias gives one that ends at once.
    """

    def __init__(self, inner: Seq2Seq, eos_bias: float):
        super().__init__()
        self.inner, self.eos_bias = inner, eos_bias

    def encode(self, src, src_mask):
        return self.inner.encode(src, src_mask)

    def init_state(self, enc):
        return self.inner.init_state(enc)

    def decode_step(self, y_prev, state, enc):
        logp, state, attn = self.inner.decode_step(y_prev, state, enc)
        logp = logp.clone()
        if self.eos_bias == -math.inf:
            logp[:, self.eos_id] = -math.inf
        else:
            logp[:, self.eos_id] += self.eos_bias
        return torch.log_softmax(logp, dim=-1), state, attn  # (B, V) renormalised


def stepwise(model: Seq2Seq, src, src_mask, tgt_in):
    """Feed ``tgt_in`` (B, T) through decode_step one position at a time.

    Returns the (B, T, V) log-probs, the StepAttention of every step and the final state: what
    the "teacher-forced forward == step-by-step decoding" tests compare against ``forward``.
    """
    enc = model.encode(src, src_mask)
    state = model.init_state(enc)
    logps, attns = [], []
    for t in range(tgt_in.size(1)):
        logp, state, attn = model.decode_step(tgt_in[:, t], state, enc)
        logps.append(logp)
        attns.append(attn)
    return torch.stack(logps, 1), attns, state  # (B, T, V)
