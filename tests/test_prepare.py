"""prepare: streaming validation, the hash split and its caps, the tokenizer sample, reuse and
rebuild, a build killed mid-way, and prepared batches equal to the in-memory encoding."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import attnmt.prepare as P
from attnmt.config import load_config
from attnmt.corpus import CorpusError, read_corpus, read_tsv
from attnmt.data import ShardBatcher, encode_pairs, make_batch

REPO = Path(__file__).resolve().parents[1]


def synthetic_pairs(n_sources: int, seed: int = 0) -> list[tuple[str, str]]:
    """Sources of word-like tokens (which the word tokenizer round-trips), each with 1-3
    translations, shuffled so the translations of a source are spread through the file."""
    rng = random.Random(seed)
    pairs = []
    for k in range(n_sources):
        src = f"s{k} " + " ".join(f"w{rng.randint(0, 60)}" for _ in range(rng.randint(1, 9)))
        for j in range(rng.randint(1, 3)):
            pairs.append((src, f"t{k} x{j} " + " ".join(f"v{rng.randint(0, 60)}" for _ in
                                                        range(rng.randint(1, 9)))))  # fmt: skip
    rng.shuffle(pairs)
    return pairs


def write_tsv(path: Path, pairs) -> Path:
    path.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    return path


def cfg_args(tmp_path: Path, corpus: Path | str, *sets: str, **data) -> tuple[list, dict]:
    """--set overrides and the prepare keys config.py does not know yet (prepare_settings
    reads them by name): word tokenizer, no length filter, one worker (in this process)."""
    sets = (f"data.corpus={corpus}", "data.tokenizer=word", "data.vocab_size=5000",
            "data.max_len=0", *sets)  # fmt: skip
    return list(sets), {"prepared": str(tmp_path / "prep"), "workers": 1, **data}


def config(sets: list, data: dict):
    cfg = load_config(None, sets)
    for key, value in data.items():
        setattr(cfg.data, key, value)
    return cfg


def make_cfg(tmp_path: Path, corpus: Path | str, *sets: str, **data):
    return config(*cfg_args(tmp_path, corpus, *sets, **data))


def quiet(cfg, log=lambda *_: None) -> Path:
    return P.prepare(cfg, log=log, progress=False)


def train_pairs(prep: P.Prepared) -> list[tuple[str, str]]:
    """The training pairs of a prepared directory, decoded (exact for the word tokenizer)."""
    part = prep.train[0]
    examples = part.examples(np.arange(len(part)))
    return [(prep.src_tok.decode(s), prep.tgt_tok.decode(t)) for s, t in examples]


# ------------------------------------------------------------------------------------------
# The split
# ------------------------------------------------------------------------------------------


def test_split_keeps_sources_apart_and_caps_dev(tmp_path):
    pairs = synthetic_pairs(400)
    corpus = write_tsv(tmp_path / "c.tsv", pairs)
    cfg = make_cfg(tmp_path, corpus, "data.dev_fraction=0.2", "data.test_fraction=0.2",
                   dev_max=30, test_max=0)  # fmt: skip
    prep = P.open_prepared(quiet(cfg))
    train, dev, test = train_pairs(prep), prep.held_out("dev"), prep.held_out("test")
    assert Counter(train + dev + test) == Counter(pairs)  # nothing lost, nothing repeated
    sources = [{s for s, _ in x} for x in (train, dev, test)]
    assert not sources[0] & sources[1] and not sources[0] & sources[2]
    assert not sources[1] & sources[2]
    for s in sources[1] | sources[2]:  # every translation of a held-out source is held out
        assert sum(p[0] == s for p in dev + test) == sum(p[0] == s for p in pairs)
    assert 0 < len(dev) <= 30  # capped; the sources over the cap went to training
    counts = prep.manifest["counts"]
    assert counts["held_out_moved"] > 0 and counts["dev"] == len(dev)
    assert 0.1 < len(sources[2]) / 400 < 0.3  # test uncapped: about its fraction
    assert dev == [p for p in pairs if p in set(dev)]  # held-out pairs keep corpus order


def test_split_and_output_do_not_depend_on_workers_or_seed(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "BLOCK_LINES", 97)  # several blocks, cut here in the main process
    corpus = write_tsv(tmp_path / "c.tsv", synthetic_pairs(300))
    one = quiet(make_cfg(tmp_path / "a", corpus, dev_max=20))
    two = quiet(make_cfg(tmp_path / "b", corpus, "train.seed=99", dev_max=20, workers=2))

    def files(d: Path) -> dict[str, bytes]:
        return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*.*"))
                if p.name != "manifest.json"}  # fmt: skip

    assert files(one) == files(two)
    counts = [P.read_manifest(d)["counts"] for d in (one, two)]
    for c in counts:
        del c["seconds"], c["stage_s"]  # timings
    assert counts[0] == counts[1]


def test_held_out_cap_evicts_whole_sources():
    h = P.HeldOut(cap=3)
    assert h.offer(50, (0, 0), ("a", "1")) == []
    assert h.offer(50, (0, 1), ("a", "2")) == []
    assert h.offer(10, (0, 2), ("b", "1")) == []
    assert h.offer(20, (0, 3), ("c", "1")) == [("a", "1"), ("a", "2")]  # over the cap: a goes
    assert {p[0] for p in h.pairs()} == {"b", "c"}
    assert h.offer(50, (0, 4), ("a", "3")) == [("a", "3")]  # a's later translation follows it
    assert h.offer(60, (0, 5), ("d", "1")) == [("d", "1")]  # above the limit: training
    assert h.pairs() == [("b", "1"), ("c", "1")]


# ------------------------------------------------------------------------------------------
# Reading: the same validation and errors as corpus.py, block by block
# ------------------------------------------------------------------------------------------


def test_iter_pairs_matches_read_corpus(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "BLOCK_LINES", 3)
    raw = (b"\xef\xbb\xbfHello  there.\tHola \xc2\xa0 ahi.\r\n\nA\tB\n\xef\xbb\xbfC\tD\n   \n"
           b"cafe\xcc\x81\tx\tattribution\n\nE\tF")  # fmt: skip
    f = tmp_path / "c.tsv"
    f.write_bytes(raw)  # a BOM on line 1, and one on line 4: the start of the second block
    for reverse, lowercase in ((False, False), (True, True)):
        expected = read_corpus(str(f), reverse=reverse, lowercase=lowercase).pairs
        assert list(P.iter_pairs(str(f), reverse, lowercase)) == expected
    src, tgt = tmp_path / "s.txt", tmp_path / "t.txt"
    src.write_text("a\n\nb\nc\nd\n\ne\n", encoding="utf-8")
    tgt.write_text("A\n\nB\nC\nD\n\nE\n", encoding="utf-8")
    assert list(P.iter_pairs(f"{src},{tgt}")) == read_corpus(f"{src},{tgt}").pairs
    prep = P.open_prepared(quiet(make_cfg(tmp_path, f, "data.dev_fraction=0",
                                          "data.test_fraction=0")))  # fmt: skip
    assert prep.manifest["counts"]["blank_lines"] == read_tsv(f).blank_lines == 3


def bad_corpora(tmp_path: Path) -> list[str]:
    good = "".join(f"a{i}\tb{i}\n" for i in range(9))
    cases = {
        "utf8.tsv": good.encode() + b"la\tcaf\xe9\n",  # line 10, in the fourth block
        "notab.tsv": (good + "no tab here\n").encode(),
        "empty.tsv": (good + "x\t  \n").encode(),
        "s1.txt": b"a\nb\nc\nd\ne\nf\ng\n\ni\n",
        "t1.txt": b"A\nB\nC\nD\nE\nF\nG\nH\nI\n",  # line 8 blank on one side only
        "s2.txt": b"a\nb\nc\nd\ne\nf\ng\n",
        "t2.txt": b"A\nB\nC\nD\nE\nF\nG\nH\nI\n",  # two lines more
        "s3.txt": b"a\nb\nc\nd\ne\nf\ng\nh\n",
        "t3.txt": b"A\nB\nC\nD\nE\nF\n",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    specs = [str(tmp_path / n) for n in ("utf8.tsv", "notab.tsv", "empty.tsv")]
    specs += [f"{tmp_path}/s{i}.txt,{tmp_path}/t{i}.txt" for i in (1, 2, 3)]
    return specs + [str(tmp_path / "missing.tsv"), str(tmp_path)]


def test_errors_name_file_and_line_as_corpus_does(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "BLOCK_LINES", 3)
    for spec in bad_corpora(tmp_path):
        with pytest.raises(CorpusError) as want:
            read_corpus(spec)
        with pytest.raises(CorpusError) as got:
            list(P.iter_pairs(spec))
        assert str(got.value) == str(want.value)
        assert (got.value.path, got.value.line) == (want.value.path, want.value.line)


def test_prepare_error_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "BLOCK_LINES", 4)
    spec = bad_corpora(tmp_path)[0]
    with pytest.raises(CorpusError, match=r"utf8\.tsv:10: invalid UTF-8"):
        quiet(make_cfg(tmp_path, spec))
    assert not (tmp_path / "prep").exists()
    assert not [p for p in tmp_path.iterdir() if ".prep.tmp-" in p.name]


def test_limit_stops_before_later_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "BLOCK_LINES", 4)
    lines = [f"a{i}\tb{i}\n" if i % 3 else "\n" for i in range(30)] + ["broken line\n"]
    corpus = tmp_path / "c.tsv"
    corpus.write_text("".join(lines), encoding="utf-8")
    prep = P.open_prepared(quiet(make_cfg(tmp_path, corpus, "data.limit=12")))
    expected = read_corpus(str(corpus), limit=12).pairs
    everything = train_pairs(prep) + prep.held_out("dev") + prep.held_out("test")
    assert sorted(everything) == sorted(expected) and prep.manifest["counts"]["pairs"] == 12


# ------------------------------------------------------------------------------------------
# The tokenizer sample
# ------------------------------------------------------------------------------------------


def test_tokenizer_trains_on_a_bounded_sample_of_training_pairs(tmp_path, monkeypatch):
    seen: list[list[str]] = []
    real = P.train_tokenizer
    monkeypatch.setattr(P, "train_tokenizer", lambda kind, texts, *a: seen.append(texts)
                        or real(kind, texts, *a))  # fmt: skip
    pairs = synthetic_pairs(300)
    cfg = make_cfg(tmp_path, write_tsv(tmp_path / "c.tsv", pairs), sp_sample=40)
    prep = P.open_prepared(quiet(cfg))
    assert len(seen) == 1 and len(seen[0]) == 2 * 40  # shared vocabulary: sources + targets
    train = set(train_pairs(prep))
    sampled = list(zip(seen[0][:40], seen[0][40:]))
    assert set(sampled) <= train  # training pairs only: dev/test never shape the vocabulary
    assert prep.manifest["counts"]["sampled"] == 40


def test_sample_positions_uniform_without_replacement():
    picks = P.sample_positions([5, 0, 100, 20], k=30)
    assert [len(p) for p in picks][1] == 0 and sum(len(p) for p in picks) == 30
    for p, n in zip(picks, [5, 0, 100, 20]):
        assert list(p) == sorted(set(p.tolist())) and all(0 <= i < n for i in p)
    again = P.sample_positions([5, 0, 100, 20], k=30)
    assert all(np.array_equal(a, b) for a, b in zip(picks, again))
    assert [len(p) for p in P.sample_positions([3, 4], k=10)] == [3, 4]  # all when k >= total
    hits = np.zeros(1000)
    for seed in range(200):
        hits[P.sample_positions([1000], 100, seed=seed)[0]] += 1
    assert hits.min() > 0 and hits.max() < 60  # each position ~20 times of 200: no bias


# ------------------------------------------------------------------------------------------
# Reuse, rebuild, and a build killed mid-way
# ------------------------------------------------------------------------------------------


def test_reused_when_unchanged_rebuilt_when_changed(tmp_path):
    corpus = write_tsv(tmp_path / "c.tsv", synthetic_pairs(100))
    logs: list[str] = []
    cfg = make_cfg(tmp_path, corpus)
    out = P.prepare(cfg, log=logs.append, progress=False)
    inode = (out / "manifest.json").stat().st_ino
    os.utime(corpus)  # touched, same content
    assert P.prepare(cfg, log=logs.append, progress=False) == out
    assert "up to date" in logs[-1] and (out / "manifest.json").stat().st_ino == inode
    keys = [P.read_manifest(out)["key"]]
    P.prepare(make_cfg(tmp_path, corpus, "data.max_len=5"), log=logs.append, progress=False)
    assert logs[-1].startswith("prepared") and "up to date" not in logs[-1]
    keys.append(P.read_manifest(out)["key"])
    data = corpus.read_bytes()
    corpus.write_bytes(data.replace(b"w1 ", b"w2 ", 1))  # same size, other content
    assert len(corpus.read_bytes()) == len(data)
    P.prepare(make_cfg(tmp_path, corpus, "data.max_len=5"), log=logs.append, progress=False)
    assert "up to date" not in logs[-1]
    keys.append(P.read_manifest(out)["key"])
    assert len(set(keys)) == 3
    assert P.open_prepared(out).manifest["data"]["max_len"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == [".prep.lock", "c.tsv", "prep"]


CHILD = """
import json, sys
from attnmt.config import load_config
from attnmt.prepare import prepare
sets, data = json.loads(sys.argv[1])
cfg = load_config(None, sets)
for key, value in data.items():
    setattr(cfg.data, key, value)
prepare(cfg, log=lambda *_: None, progress=False)
"""


def kill_mid_build(tmp_path: Path, corpus: Path) -> None:
    """Start prepare in a child, SIGKILL it as soon as its build has begun writing."""
    args = json.dumps(cfg_args(tmp_path, corpus))
    child = subprocess.Popen([sys.executable, "-c", CHILD, args], cwd=REPO)
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None:
        if any((p / "text").exists() for p in tmp_path.glob(".prep.tmp-*")):
            break
        time.sleep(0.005)
    assert child.poll() is None, "prepare ended before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait()


def test_sigkill_mid_prepare_leaves_old_or_nothing(tmp_path):
    pairs = synthetic_pairs(8000)
    corpus = write_tsv(tmp_path / "c.tsv", pairs)
    kill_mid_build(tmp_path, corpus)
    assert list(tmp_path.glob(".prep.tmp-*"))  # killed with its build half done...
    assert not (tmp_path / "prep").exists()  # ...and nothing half-written in its place
    old = quiet(make_cfg(tmp_path, corpus))
    assert not list(tmp_path.glob(".prep.tmp-*"))  # the killed build's leftovers are gone
    old_key = P.read_manifest(old)["key"]
    write_tsv(corpus, pairs[: len(pairs) // 2])  # the corpus changes: a rebuild starts...
    kill_mid_build(tmp_path, corpus)  # ...and is killed
    prep = P.open_prepared(tmp_path / "prep")  # the old directory, whole and readable
    assert prep.manifest["key"] == old_key
    assert len(train_pairs(prep)) == prep.manifest["counts"]["train"]
    fresh = P.open_prepared(quiet(make_cfg(tmp_path, corpus)))
    assert fresh.manifest["key"] != old_key
    assert fresh.manifest["counts"]["pairs"] == len(pairs) // 2


# ------------------------------------------------------------------------------------------
# Prepared batches == the in-memory encoding
# ------------------------------------------------------------------------------------------


def test_batches_equal_in_memory_encoding(tmp_path):
    pairs = synthetic_pairs(600, seed=3)
    corpus = write_tsv(tmp_path / "c.tsv", pairs)
    cfg = make_cfg(tmp_path, corpus, "data.tokenizer=sentencepiece", "data.vocab_size=300",
                   "data.max_len=12", dev_max=10**6)  # fmt: skip
    prep = P.open_prepared(quiet(cfg))
    held = set(prep.held_out("dev")) | set(prep.held_out("test"))
    train = [p for p in pairs if p not in held]  # corpus order, as the shards keep it
    examples, dropped = encode_pairs(train, prep.src_tok, prep.tgt_tok, cfg.data.max_len)
    assert dropped == prep.manifest["counts"]["over_max_len"] > 0
    part = prep.train[0]
    assert part.examples(np.arange(len(part))) == examples
    assert np.array_equal(part.lengths, [[len(s), len(t)] for s, t in examples])
    batcher = ShardBatcher(prep.train, 150, seed=1, weights=prep.weights)
    batches = batcher.batches(0)
    assert sorted(i for b in batches for i in b) == list(range(len(examples)))
    for b in list(batches)[:20]:
        got, want = batcher.batch(b), make_batch([examples[i] for i in b])
        assert all(np.array_equal(getattr(got, k), getattr(want, k)) for k in
                   ("src", "src_mask", "tgt_in", "tgt_out"))  # fmt: skip
    dev = P.open_prepared(prep.path).dev
    assert dev is not None and len(dev) == len(prep.held_out("dev"))


def test_mixed_corpora_and_demo(tmp_path):
    a = write_tsv(tmp_path / "a.tsv", synthetic_pairs(50, seed=1))
    b = write_tsv(tmp_path / "b.tsv", synthetic_pairs(200, seed=2))
    prep = P.open_prepared(quiet(make_cfg(tmp_path, a, mix=f"{b}:1", weight=3.0)))
    assert [len(p) for p in prep.train][1] == len(synthetic_pairs(200, seed=2))
    assert prep.weights == [3.0, 1.0] and json.loads(json.dumps(prep.manifest))["parts"]["mix1"]
    batcher = ShardBatcher(prep.train, 100, seed=0, weights=prep.weights)
    ids = [i for batch in batcher.batches(0) for i in batch]
    n0 = len(prep.train[0])
    assert sum(i < n0 for i in ids) == round(len(batcher) * 3 / 4)
    demo = P.open_prepared(quiet(make_cfg(tmp_path / "d", "demo", "data.demo_size=200")))
    assert demo.manifest["counts"]["pairs"] == 200 and "demo" in demo.manifest["inputs"]


def test_separate_dev_and_test_files_are_capped_and_not_split_from_train(tmp_path):
    train = synthetic_pairs(100, seed=1)
    corpus = write_tsv(tmp_path / "c.tsv", train)
    dev = write_tsv(tmp_path / "dev.tsv", synthetic_pairs(30, seed=2))
    test = write_tsv(tmp_path / "test.tsv", synthetic_pairs(5, seed=3))
    cfg = make_cfg(tmp_path, corpus, f"data.valid={dev}", f"data.test={test}", dev_max=7)
    prep = P.open_prepared(quiet(cfg))
    assert Counter(train_pairs(prep)) == Counter(train)  # nothing held out of the corpus
    assert prep.held_out("dev") == read_tsv(dev).pairs[:7]
    assert prep.held_out("test") == read_tsv(test).pairs
