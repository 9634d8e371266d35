"""Guided alignment training (train.guided_alignment): gold links reach the batches as piece
links, the loss pulls the chosen attention towards them, and bad gold files are named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from attnmt.align import align_pairs, alignment_error, read_corpus_gold
from attnmt.checkpoint import Checkpoint
from attnmt.config import ConfigError, load_config
from attnmt.corpus import CorpusError, read_corpus
from attnmt.demo_corpus import demo_gold, gold_path, write_demo_tsv
from attnmt.train import Runtime, load_splits, prepare_data, train
from attnmt.translate import Translator

SMALL = [
    "data.demo_size=300", "data.tokenizer=word", "model.emb_dim=32", "model.hidden=32",
    "model.dropout=0", "model.heads=2", "model.ff_dim=64", "train.batch_tokens=300",
    "train.max_steps=80", "train.eval_every=80", "train.save_every=40", "train.log_every=20",
    "train.lr=0.01", "train.schedule=constant", "train.threads=1", "train.progress=false",
]  # fmt: skip


def run(tmp_path: Path, name: str, *extra: str) -> Path:
    cfg = load_config(None, [*SMALL, f"train.out_dir={tmp_path / name}", *extra])
    return train(cfg, log=lambda *_: None)


def held_out_aer(run_dir: Path, head: int) -> float:
    tr = Translator.from_checkpoint(run_dir / "last.pt")
    pairs = [p for name in ("dev.tsv", "test.tsv") for p in read_corpus(str(run_dir / name)).pairs]
    gold = demo_gold(pairs, 300, tr.cfg.train.seed)
    return alignment_error(align_pairs(tr, pairs, layer=0, head=head), gold).aer


@pytest.mark.parametrize("arch, head", [("lstm", -1), ("transformer", 1)])
def test_guided_alignment_teaches_the_chosen_attention_to_align(tmp_path, arch, head):
    """Same seed and data, with and without the alignment loss: the guided model's attention
    (the Transformer's trained head) aligns held-out pairs far better, and the loss falls."""
    common = [f"model.arch={arch}", "model.layers=1", f"model.align_head={head}"]
    plain = run(tmp_path, "plain", *common)
    guided = run(tmp_path, "guided", *common, "train.guided_alignment=demo",
                 "train.guided_alignment_weight=1.0")  # fmt: skip
    assert held_out_aer(guided, head) < held_out_aer(plain, head) - 0.2
    log = [json.loads(x) for x in (guided / "train_log.jsonl").read_text().splitlines()]
    align = [r["align_loss"] for r in log if r["kind"] == "train"]
    assert len(align) == 4 and align[-1] < 0.5 * align[0]
    assert all("align_loss" not in json.loads(x) for x in (plain / "train_log.jsonl").open())


def test_batches_carry_gold_on_subword_pieces(tmp_path):
    """SentencePiece pieces: every piece of a gold-linked word pair is linked, the <eos> row and
    column and the padding stay empty."""
    sp = ["data.tokenizer=sentencepiece", "data.vocab_size=120", "train.guided_alignment=demo"]
    cfg = load_config(None, [*SMALL, *sp, f"train.out_dir={tmp_path}"])
    data = prepare_data(cfg, None, Runtime(torch.device("cpu")))
    b = data.batcher.batch(data.batcher.batches(0)[0])
    assert b.gold is not None and b.gold.shape == (*b.tgt_out.shape, b.src.size(1))
    src_len, tgt_len = b.src_mask.sum(1), (b.tgt_out != 0).sum(1)  # each with its <eos>
    for k in range(b.src.size(0)):
        g = b.gold[k]
        assert g[: tgt_len[k] - 1, : src_len[k] - 1].sum(1).gt(0).float().mean() > 0.5
        assert g[tgt_len[k] - 1 :].sum() == 0 and g[:, src_len[k] - 1 :].sum() == 0


def test_gold_file_corpus_reverse_and_limit(tmp_path):
    corpus = write_demo_tsv(tmp_path / "demo.tsv", n=50, seed=0, gold=True)
    base = [*SMALL, f"data.corpus={corpus}", f"train.guided_alignment={gold_path(corpus)}",
            "data.dev_fraction=0", "data.test_fraction=0", f"train.out_dir={tmp_path}"]  # fmt: skip
    forward = load_splits(load_config(None, base))
    backward = load_splits(load_config(None, [*base, "data.reverse=true"]))
    assert backward.train == [(t, s) for s, t in forward.train]
    assert backward.train_gold == [g.transposed() for g in forward.train_gold]
    limited = load_splits(load_config(None, [*base, "data.limit=10"]))  # the file goes on
    assert limited.train_gold == forward.train_gold[:10]


def test_bad_gold_files_name_the_file_and_line(tmp_path):
    corpus = write_demo_tsv(tmp_path / "demo.tsv", n=20, seed=0)
    pairs = read_corpus(str(corpus)).pairs
    short = tmp_path / "short.align"
    short.write_text("0-0\n" * 19)
    with pytest.raises(CorpusError, match="short.align: 19 alignment lines for 20"):
        read_corpus_gold(short, pairs)
    outside = tmp_path / "outside.align"
    outside.write_text("0-0\n" * 3 + "0-0 40-1\n" + "0-0\n" * 16)
    with pytest.raises(CorpusError, match=r"outside.align:4: link 40-1 is outside the pair"):
        read_corpus_gold(outside, pairs)
    cfg = load_config(None, [*SMALL, f"data.corpus={corpus}", f"train.out_dir={tmp_path / 'r'}",
                             f"train.guided_alignment={outside}"])  # fmt: skip
    with pytest.raises(CorpusError, match="outside.align:4"):
        train(cfg, log=lambda *_: None)


@pytest.mark.parametrize("sets, message", [
    (["data.corpus=pairs.tsv", "train.guided_alignment=demo"], "'demo' is the demo corpus's gold"),
    (["data.prepared=prep", "train.guided_alignment=a.align"], "in-memory data only"),
    (["train.guided_alignment_weight=-1"], "guided_alignment_weight: must be >= 0"),
    (["model.align_head=-2"], "align_head: must be >= -1"),
])  # fmt: skip
def test_config_refuses_what_guided_alignment_cannot_do(sets, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, sets)


def test_guided_run_resumes_exactly(tmp_path):
    """40 steps, then the same run resumed to 80, ends where a straight 80-step run ends."""
    guided = ["model.arch=transformer", "model.layers=2", "model.align_layer=0",
              "model.align_head=0", "train.guided_alignment=demo", "model.dropout=0.1"]  # fmt: skip
    straight = run(tmp_path, "straight", *guided)
    run(tmp_path, "split", *guided, "train.max_steps=40")
    resumed = run(tmp_path, "split", *guided)
    a, b = (Checkpoint.load(r / "last.pt") for r in (straight, resumed))
    assert b.training.progress["step"] == 80
    for k in a.weights:
        assert torch.equal(a.weights[k], b.weights[k]), k
