"""attnmt's split and subwords as files the peers read: ``attnmt_prep.py RUN_DIR DATA_DIR``.

Pipeline position: step 2 of bench/peers/run_peers.py, run with attnmt's interpreter after attnmt
trained in RUN_DIR. The split is re-derived with attnmt's own ``load_splits`` from the
checkpoint's config and checked against the run's ``dev.tsv``/``test.tsv``; the SentencePiece
model comes from the checkpoint. DATA_DIR gets, per split, space-separated pieces
(``{train,dev,test}.{en,es}``; training pairs filtered by ``data.max_len`` as attnmt filters
them) and the raw text (``*.src.txt``, ``*.ref.txt``), plus ``sp.model`` and the vocabulary files
of both peers (specials excluded: each toolkit adds its own). The last line printed is
``RESULT {json}``: sizes, the model and training config, and what the output cap needs.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

from children import print_result

from attnmt.checkpoint import Checkpoint
from attnmt.config import Config, config_to_dict
from attnmt.corpus import read_corpus
from attnmt.tokenizer import SPECIALS, SentencePieceTokenizer, Tokenizer
from attnmt.train import load_splits

Pairs = list[tuple[str, str]]


def shared_sentencepiece(ckpt: Checkpoint) -> SentencePieceTokenizer:
    """The one tokenizer both sides share: the peers get one vocabulary and one ``sp.model``."""
    tok = ckpt.tgt_tokenizer
    if ckpt.src_tokenizer.to_dict() != tok.to_dict():
        raise SystemExit("peers need attnmt's shared vocabulary (data.shared_vocab: true)")
    if not isinstance(tok, SentencePieceTokenizer):
        raise SystemExit(f"peers need a SentencePiece tokenizer, not {tok.kind!r}")
    return tok


def checked_splits(cfg: Config, run: Path, tok: Tokenizer) -> dict[str, Pairs]:
    """attnmt's train/dev/test re-derived (dev/test must equal the run's), train length-filtered."""
    splits = load_splits(cfg)
    for name in ("dev", "test"):  # the split attnmt trained with, re-derived: must be identical
        if getattr(splits, name) != read_corpus(str(run / f"{name}.tsv")).pairs:
            raise SystemExit(f"{run}: re-derived {name} split differs from {name}.tsv")
    max_len = cfg.data.max_len

    def fits(s: str, t: str) -> bool:
        return not max_len or (len(tok.encode(s)) <= max_len and len(tok.encode(t)) <= max_len)

    train = [(s, t) for s, t in splits.train if fits(s, t)]
    return {"train": train, "dev": splits.dev, "test": splits.test}


def write_split(data: Path, name: str, pairs: Pairs, tok: Tokenizer) -> tuple[Counter, int, int]:
    """Piece files and raw text of one split; returns piece counts and token totals (+ <eos>)."""
    counts: Counter = Counter()
    src_tokens = tgt_tokens = 0
    with open(data / f"{name}.en", "w") as fs, open(data / f"{name}.es", "w") as ft:
        for s, t in pairs:
            ps, pt = tok.pieces(s), tok.pieces(t)
            fs.write(" ".join(ps) + "\n")
            ft.write(" ".join(pt) + "\n")
            counts.update(ps)
            counts.update(pt)
            src_tokens, tgt_tokens = src_tokens + len(ps) + 1, tgt_tokens + len(pt) + 1
    (data / f"{name}.src.txt").write_text("".join(s + "\n" for s, _ in pairs))
    (data / f"{name}.ref.txt").write_text("".join(t + "\n" for _, t in pairs))
    return counts, src_tokens, tgt_tokens


def write_vocabs(data: Path, tok: Tokenizer, counts: Counter) -> None:
    """attnmt's pieces, most frequent first: JoeyNMT's one-per-line and OpenNMT-py's counted."""
    pieces = [tok.id_to_piece(i) for i in range(tok.vocab_size)]
    pieces = [p for p in pieces if p not in SPECIALS]
    if any(p.split() != [p] for p in pieces):
        raise SystemExit("a piece with whitespace cannot be pre-tokenized")
    pieces.sort(key=lambda p: -counts[p])
    (data / "vocab.joey").write_text("".join(p + "\n" for p in pieces))
    (data / "vocab.onmt").write_text("".join(f"{p} {counts[p] + 1}\n" for p in pieces))


def prepare(run: Path, data: Path) -> dict[str, Any]:
    """Write DATA_DIR from RUN_DIR; returns what the RESULT line reports."""
    data.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpoint.load(run / "last.pt")
    cfg, tok = ckpt.config, shared_sentencepiece(ckpt)
    (data / "sp.model").write_bytes(tok.model_proto)
    splits = checked_splits(cfg, run, tok)
    counts, src_tokens, tgt_tokens = write_split(data, "train", splits["train"], tok)
    for name in ("dev", "test"):
        write_split(data, name, splits[name], tok)
    write_vocabs(data, tok, counts)  # counted on the training split only
    n_train, plain = len(splits["train"]), config_to_dict(cfg)
    return {
        "train_pairs": n_train,
        "dev_pairs": len(splits["dev"]),
        "test_pairs": len(splits["test"]),
        "vocab": tok.vocab_size,
        "src_tokens_per_pair": src_tokens / n_train,
        "tgt_tokens_per_pair": tgt_tokens / n_train,
        "attnmt_params": sum(v.numel() for v in ckpt.weights.values()),
        "model": plain["model"],
        "train_cfg": plain["train"],
        "test_max_src_tokens": max(len(tok.encode(s)) + 1 for s, _ in splits["test"]),
        "max_len_a": cfg.decode.max_len_a,
        "max_len_b": cfg.decode.max_len_b,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("run", type=Path, help="attnmt run directory (last.pt, dev.tsv, test.tsv)")
    ap.add_argument("data", type=Path, help="directory for the peers' files")
    args = ap.parse_args()
    print_result(prepare(args.run, args.data))


if __name__ == "__main__":
    main()
