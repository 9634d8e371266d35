"""Tokenizers: text <-> integer ids, with fixed special ids ``<pad>=0 <bos>=1 <eos>=2 <unk>=3``.

Pipeline position: corpus text -> **tokenizer** -> ids -> batches. Two kinds behind one interface:

- ``SentencePieceTokenizer``: BPE or unigram subwords (Kudo & Richardson 2018), trained on the
  training split only. Its model travels inside checkpoints as bytes.
- ``WordTokenizer``: whitespace/punctuation words, the vocabulary of the classic tutorials.

Unknown words map to ``<unk>`` and never crash anything.
"""

from __future__ import annotations

import re
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sentencepiece as spm

# The special ids every tokenizer, batch and model agrees on; SPECIALS spells them in id order.
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]


class Tokenizer:
    """Interface: encode/decode plus the pieces a person reads in explain output."""

    kind: str = ""

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        """Text -> ids (no <bos>/<eos>; the batcher adds those)."""
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text; special ids are dropped."""
        raise NotImplementedError

    def id_to_piece(self, i: int) -> str:
        raise NotImplementedError

    def pieces(self, text: str) -> list[str]:
        """The tokens of ``text`` as strings, aligned with ``encode(text)``."""
        return [self.id_to_piece(i) for i in self.encode(text)]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (str/bytes/lists) that survives ``torch.load(weights_only=True)``."""
        raise NotImplementedError


class SentencePieceTokenizer(Tokenizer):
    kind = "sentencepiece"

    def __init__(self, model_proto: bytes):
        self.model_proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int, model_type: str = "bpe"
    ) -> SentencePieceTokenizer:
        """Train on ``texts``; the vocabulary shrinks automatically for tiny corpora."""
        if model_type not in ("bpe", "unigram"):
            raise ValueError(f"data.sp_model_type: expected 'bpe' or 'unigram', got {model_type!r}")
        lines = [t for t in texts if t.strip()]
        if not lines:
            raise ValueError("cannot train a tokenizer on an empty corpus")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "train.txt"
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            kwargs = dict(
                input=str(path),
                model_type=model_type,
                pad_id=PAD_ID,
                bos_id=BOS_ID,
                eos_id=EOS_ID,
                unk_id=UNK_ID,
                pad_piece="<pad>",
                bos_piece="<bos>",
                eos_piece="<eos>",
                unk_piece="<unk>",
                character_coverage=1.0,
                input_sentence_size=2_000_000,
                shuffle_input_sentence=True,
                num_threads=2,
                minloglevel=2,
            )
            # SentencePiece refuses a vocab larger than the corpus supports; shrink and retry,
            # because a too-large request is a size hint, not a user error worth stopping for.
            size = vocab_size
            while True:
                writer = _BytesWriter()
                try:
                    spm.SentencePieceTrainer.train(
                        model_writer=writer, vocab_size=size, hard_vocab_limit=True, **kwargs
                    )
                    break
                except RuntimeError as e:
                    m = re.search(r"value <= (\d+)", str(e))
                    if not m or int(m.group(1)) >= size:
                        raise
                    size = int(m.group(1))
        return cls(writer.data)

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text, out_type=int)

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode([i for i in ids if i >= UNK_ID])

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(int(i))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "model_proto": self.model_proto}


class _BytesWriter:
    """Collects the trained SentencePiece model in memory (no model file on disk)."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, b: bytes) -> None:
        self.data += b


_WORD_RE = re.compile(r"\w+(?:'\w+)?|[^\w\s]", re.UNICODE)


class WordTokenizer(Tokenizer):
    """Words and punctuation marks; detokenizes by re-attaching punctuation."""

    kind = "word"

    def __init__(self, vocab: list[str]):
        if vocab[: len(SPECIALS)] != SPECIALS:
            raise ValueError("word vocabulary must start with <pad> <bos> <eos> <unk>")
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}

    @staticmethod
    def split(text: str) -> list[str]:
        return _WORD_RE.findall(text)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, min_freq: int = 1) -> WordTokenizer:
        counts = Counter(w for t in texts for w in cls.split(t))
        # Sort by frequency, then alphabetically, so the vocabulary is deterministic.
        words = sorted(
            (w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w)
        )
        return cls(SPECIALS + words[: max(0, vocab_size - len(SPECIALS))])

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(w, UNK_ID) for w in self.split(text)]

    def decode(self, ids: Iterable[int]) -> str:
        words = [self.vocab[i] for i in ids if i >= UNK_ID and i < len(self.vocab)]
        text = " ".join(words)
        # Re-attach closing punctuation and opening Spanish marks the way a writer would.
        text = re.sub(r" ([.,!?;:%)\]}])", r"\1", text)
        text = re.sub(r"([¿¡(\[{]) ", r"\1", text)
        return text

    def id_to_piece(self, i: int) -> str:
        return self.vocab[int(i)] if 0 <= int(i) < len(self.vocab) else "<unk>"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "vocab": self.vocab}


def train_tokenizer(kind: str, texts: list[str], vocab_size: int, sp_model_type: str) -> Tokenizer:
    """Train the tokenizer named by ``data.tokenizer``."""
    if kind == "sentencepiece":
        return SentencePieceTokenizer.train(texts, vocab_size, sp_model_type)
    if kind == "word":
        return WordTokenizer.train(texts, vocab_size)
    raise ValueError(f"data.tokenizer: unknown tokenizer {kind!r} (use 'sentencepiece' or 'word')")


def tokenizer_from_dict(d: dict[str, Any]) -> Tokenizer:
    """Inverse of ``Tokenizer.to_dict``."""
    if d.get("kind") == "sentencepiece":
        return SentencePieceTokenizer(d["model_proto"])
    if d.get("kind") == "word":
        return WordTokenizer(d["vocab"])
    raise ValueError(f"unknown tokenizer kind {d.get('kind')!r}")
