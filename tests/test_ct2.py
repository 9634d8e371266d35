"""CTranslate2 export and engine: CT2 decodes like attnmt's own search, option by option, behind
the same Translator; int8 loads; LSTM export is refused."""

from __future__ import annotations

import json
import random
import shutil

import pytest
import torch

from attnmt.checkpoint import Checkpoint
from attnmt.config import Config
from attnmt.ct2 import (
    MANIFEST_FILE,
    TOKENIZERS_FILE,
    CT2Engine,
    ExportError,
    export_ctranslate2,
    load_translator,
)
from attnmt.data import pad, source_tensor
from attnmt.tokenizer import BOS_ID, EOS_ID, PAD_ID, SPECIALS, WordTokenizer
from attnmt.transformer import TransformerSeq2Seq
from attnmt.translate import DecodeOptions, Translator

pytest.importorskip("ctranslate2")

WORDS = "a b c d e f g h i j k l".split()
SRC_TOK = WordTokenizer(SPECIALS + WORDS)
# Different target vocabulary (and size), so both vocabularies must line up with the ids.
TGT_TOK = WordTokenizer(SPECIALS + [w.upper() for w in WORDS] + ["EXTRA"])
TEXTS = ["a b c", "d e f g h", "l", "a a b b c c", "k j i h g f e", "b", "z a", "c d e f"]


def toy_pair(rng: random.Random) -> tuple[str, str]:
    """The task: uppercase and reverse a short sentence."""
    s = [rng.choice(WORDS) for _ in range(rng.randint(1, 7))]
    return " ".join(s), " ".join(w.upper() for w in reversed(s))


def make_config(**decode) -> Config:
    cfg = Config()
    cfg.data.tokenizer = "word"
    cfg.model.arch, cfg.model.hidden, cfg.model.layers = "transformer", 32, 2
    cfg.model.heads, cfg.model.ff_dim, cfg.model.dropout = 4, 64, 0.0
    cfg.decode.batch_size = 3  # several CT2 batches per call
    for k, v in decode.items():
        setattr(cfg.decode, k, v)
    return cfg


def save(path, cfg: Config, state_dict: dict, tgt_tok: WordTokenizer = TGT_TOK) -> None:
    Checkpoint(cfg, state_dict, SRC_TOK, tgt_tok).save(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A tiny Transformer trained for a few seconds, saved as an attnmt checkpoint."""
    torch.manual_seed(0)
    rng = random.Random(0)
    cfg = make_config()
    m = TransformerSeq2Seq(SRC_TOK.vocab_size, TGT_TOK.vocab_size, 32, 2, 4, 64, 0.0)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(250):
        pairs = [toy_pair(rng) for _ in range(32)]
        src, mask = source_tensor([SRC_TOK.encode(s) for s, _ in pairs])
        tgt = [TGT_TOK.encode(t) for _, t in pairs]
        tgt_in, tgt_out = pad([[BOS_ID] + t for t in tgt]), pad([t + [EOS_ID] for t in tgt])
        logits = m(src, mask, tgt_in)
        loss = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD_ID
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    d = tmp_path_factory.mktemp("ct2")
    save(d / "model.pt", cfg, m.state_dict())
    out = export_ctranslate2(d / "model.pt", d / "ct2")
    return {"dir": d, "ckpt": d / "model.pt", "ct2": out, "state_dict": m.state_dict()}


def assert_same(ours, theirs, atol=1e-4):
    """Same hypotheses; scores to 1e-3 (CT2's search computes log-probs a bit less precisely)."""
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert (a.ids, a.tokens, a.text, a.finished) == (b.ids, b.tokens, b.text, b.finished)
        assert a.src_tokens == b.src_tokens
        assert a.logprob == pytest.approx(b.logprob, abs=1e-3)
        assert a.score == pytest.approx(b.score, abs=1e-3)
        if a.attention is not None:
            torch.testing.assert_close(
                torch.tensor(a.attention), torch.tensor(b.attention), atol=atol, rtol=0
            )


def both(trained: dict, **options) -> tuple[list, list]:
    """The same texts through the PyTorch engine and the CTranslate2 engine, same options."""
    ours = Translator.from_checkpoint(trained["ckpt"]).with_options(**options)
    ct2 = load_translator(trained["ct2"]).with_options(**options)
    return ours.translate(TEXTS), ct2.translate(TEXTS)


def test_export_writes_a_self_contained_model_dir(trained):
    out = trained["ct2"]
    for name in ("model.bin", "config.json", "attnmt_tokenizers.pt", "attnmt_config.yaml"):
        assert (out / name).exists(), name
    assert not list(trained["dir"].glob(".ct2.*")), "temp dirs left behind"
    # Re-exporting over an existing export replaces it.
    assert export_ctranslate2(trained["ckpt"], out) == out
    assert (out / "model.bin").exists()


def test_greedy_matches_attnmt(trained):
    ours = Translator.from_checkpoint(trained["ckpt"]).with_options(beam=1)
    ct2 = load_translator(trained["ct2"]).with_options(beam=1)
    assert isinstance(ct2.engine, CT2Engine) and ct2.options == ours.options
    mine = ours.translate(TEXTS, with_attention=True)
    theirs = ct2.translate(TEXTS, with_attention=True)
    assert sum(h[0].text == " ".join(reversed(t.upper().split())) for t, h in zip(TEXTS, mine)) >= 5
    for a, b in zip(mine, theirs):
        assert_same(a, b)


def test_greedy_matches_with_per_sentence_length_limits(trained, tmp_path):
    # Limits shorter than the outputs, and different per sentence within one CT2 batch.
    cfg = make_config(max_len_a=0.5, max_len_b=1)
    save(tmp_path / "short.pt", cfg, trained["state_dict"])
    out = export_ctranslate2(tmp_path / "short.pt", tmp_path / "short")
    mine = Translator.from_checkpoint(tmp_path / "short.pt").with_options(beam=1).translate(TEXTS)
    theirs = load_translator(out).with_options(beam=1).translate(TEXTS)
    assert any(not h[0].finished for h in mine)
    for a, b in zip(mine, theirs):
        assert_same(a, b)


def test_greedy_min_len_matches_attnmt(trained):
    # decode.min_len reaches CT2 as min_decoding_length: the same outputs, each >= 8 tokens.
    # Not the same scores: CT2 takes <eos> out before its softmax (the other tokens share its
    # probability), attnmt after it, as fairseq and OpenNMT-py do.
    mine, theirs = both(trained, beam=1, min_len=8)
    assert all(len(h[0].tokens) >= 8 for h in mine)
    assert [(h[0].ids, h[0].text, h[0].finished) for h in mine] == [
        (h[0].ids, h[0].text, h[0].finished) for h in theirs
    ]


def test_beam_and_n_best(trained):
    mine, theirs = both(trained, beam=4, n_best=2)
    for a, b in zip(mine, theirs):
        assert len(b) == 2 and b[0].score >= b[1].score - 1e-6
        # The n-best order may differ (CT2 normalises length its own way); the winner does not.
        assert_same(a[:1], b[:1])


def test_tied_embeddings_export(tmp_path):
    # Untrained, tied both ways (one shared vocabulary): CT2 stores the shared matrix once.
    torch.manual_seed(1)
    cfg = make_config(max_len_a=1.0, max_len_b=3)
    cfg.model.tie_embeddings = cfg.model.tie_src_tgt = True
    m = TransformerSeq2Seq(SRC_TOK.vocab_size, SRC_TOK.vocab_size, 32, 2, 4, 64, 0.0, True, True)
    save(tmp_path / "tied.pt", cfg, m.state_dict(), tgt_tok=SRC_TOK)
    out = export_ctranslate2(tmp_path / "tied.pt", tmp_path / "tied")
    mine = Translator.from_checkpoint(tmp_path / "tied.pt").with_options(beam=1).translate(TEXTS)
    theirs = load_translator(out).with_options(beam=1).translate(TEXTS)
    for a, b in zip(mine, theirs):
        assert_same(a, b)


def test_empty_input(trained):
    (hyp,) = load_translator(trained["ct2"]).translate([""], with_attention=True)
    assert hyp[0].text == "" and hyp[0].src_tokens == ["<eos>"] and hyp[0].attention == [[1.0]]


def test_int8_export_loads_and_translates(trained, tmp_path):
    out = export_ctranslate2(trained["ckpt"], tmp_path / "int8", quantization="int8")
    assert (out / "model.bin").stat().st_size < (trained["ct2"] / "model.bin").stat().st_size
    int8 = load_translator(out, compute_type="int8")
    assert int8.engine.ct2.compute_type.startswith("int8")
    found = int8.with_options(beam=2).translate(TEXTS)
    ref = load_translator(trained["ct2"]).with_options(beam=2).translate(TEXTS)
    assert len(found) == len(TEXTS) and all(len(h) == 1 for h in found)
    # Quantization perturbs the numbers, not what the model has learned: of the sentences the
    # float model gets right (uppercase, reversed), the int8 model gets all but at most one right.
    # Where the float model is unsure they may differ (a d=32 model; on an AVX2-only CPU 3 of 8
    # outputs differ, one of them a sentence the float model gets right), so those are not
    # compared. A broken export would get most of them wrong.
    right = [t.upper().split()[::-1] for t in TEXTS]
    learned = [i for i, h in enumerate(ref) if h[0].tokens == right[i]]
    assert len(learned) >= len(TEXTS) // 2  # the fixture did learn the task
    assert sum(found[i][0].tokens == right[i] for i in learned) >= len(learned) - 1


def test_lstm_export_is_refused(tmp_path):
    cfg = make_config()
    cfg.model.arch = "lstm"
    save(tmp_path / "lstm.pt", cfg, {})
    with pytest.raises(ExportError, match="no RNN/LSTM decoder support"):
        export_ctranslate2(tmp_path / "lstm.pt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def listing(d) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in d.iterdir()}


def test_refuses_a_folder_it_did_not_write_and_never_deletes_what_it_did_not_create(
    trained, tmp_path
):
    """Issue #17, item 4: any folder holding a model.bin was replaced wholesale, notes.txt and
    everything else in it gone."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    (mine / "model.bin").write_bytes(b"somebody else's model")
    before = listing(mine)
    with pytest.raises(ExportError, match=r"--out .*mine: not empty and not an earlier attnmt "
                       r"export \(it holds model.bin, notes.txt\).*--force"):  # fmt: skip
        export_ctranslate2(trained["ckpt"], mine)
    assert listing(mine) == before and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    # --force writes the export into it and keeps the other files.
    export_ctranslate2(trained["ckpt"], mine, force=True)
    assert (mine / "notes.txt").read_text() == "keep me"
    assert load_translator(mine).translate(TEXTS[:1])[0][0].text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temp dir left


def test_re_export_replaces_only_what_exports_wrote(trained, tmp_path):
    out = export_ctranslate2(trained["ckpt"], tmp_path / "out")
    written = json.loads((out / MANIFEST_FILE).read_text())["files"]
    assert set(written) == {p.name for p in out.iterdir()}
    export_ctranslate2(trained["ckpt"], out)  # an earlier export alone: replaced as a whole
    assert {p.name for p in out.iterdir()} == set(written)
    # A file an older export wrote but this one does not goes; a file the user added stays
    # (and makes the folder need --force).
    (out / "old_vocabulary.json").write_text("{}")
    (out / MANIFEST_FILE).write_text(json.dumps({"files": [*written, "old_vocabulary.json"]}))
    (out / "README.md").write_text("my notes")
    with pytest.raises(ExportError, match=r"it holds README.md\)"):
        export_ctranslate2(trained["ckpt"], out)
    export_ctranslate2(trained["ckpt"], out, force=True)
    assert {p.name for p in out.iterdir()} == {*written, "README.md"}
    assert (out / "README.md").read_text() == "my notes"


def test_export_paths_and_checkpoints_that_cannot_work_are_clear_errors(trained, tmp_path):
    """Issue #17, item 9: `export --out FILE` was a NotADirectoryError traceback, and a
    checkpoint whose config does not fit its weights was exported as a broken model."""
    from attnmt.atomic import WriteError
    from attnmt.checkpoint import CheckpointError

    a_file = tmp_path / "f"
    a_file.write_text("x")
    with pytest.raises(ExportError, match=f"--out {a_file}: is a file, not a directory"):
        export_ctranslate2(trained["ckpt"], a_file)
    with pytest.raises(WriteError, match=f"cannot create directory {a_file}: {a_file} is a file"):
        export_ctranslate2(trained["ckpt"], a_file / "x")
    raw = torch.load(trained["ckpt"], weights_only=True)
    raw["config"]["model"]["hidden"] = 64
    torch.save(raw, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="mismatch.pt: its weights do not fit"):
        export_ctranslate2(tmp_path / "mismatch.pt", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "mismatch.pt"]


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / TOKENIZERS_FILE).write_bytes(b"junk"), "unreadable tokenizer file"),
        (lambda d: (d / TOKENIZERS_FILE).write_bytes((d / TOKENIZERS_FILE).read_bytes()[:100]),
         "unreadable tokenizer file"),
        (lambda d: torch.save({"src": {"kind": "sentencepiece", "model_proto": b"x"}, "tgt": {}},
                              d / TOKENIZERS_FILE), "unreadable tokenizer file"),
        (lambda d: (d / "model.bin").write_bytes((d / "model.bin").read_bytes()[:100]),
         "cannot load the CTranslate2 model"),
    ],
)  # fmt: skip
def test_a_damaged_export_is_one_error_naming_it(trained, tmp_path, damage, message):
    """Issue #17, item 9: an unreadable tokenizer file was a raw KeyError/RuntimeError."""
    from attnmt.checkpoint import CheckpointError

    out = tmp_path / "ct2"
    shutil.copytree(trained["ct2"], out)
    damage(out)
    with pytest.raises(CheckpointError, match=message) as e:
        load_translator(out)
    assert str(out) in str(e.value)


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_batch_size_does_not_change_results(trained, batch_size):
    ct2 = load_translator(trained["ct2"])
    calls = []
    search = ct2.engine.search
    ct2.engine.search = lambda src, o, att: calls.append(len(src)) or search(src, o, att)
    found = ct2.translate(TEXTS, DecodeOptions.resolve(ct2.options, batch_size=batch_size))
    assert max(calls) <= batch_size and sum(calls) == len(TEXTS)
    for a, b in zip(found, load_translator(trained["ct2"]).translate(TEXTS)):
        assert_same(a, b)


@pytest.mark.parametrize("alpha", [0.0, 2.0])
def test_length_penalty_reaches_ct2_and_scores(trained, alpha):
    # The winner and its score under attnmt's definition (logprob / ((5+n)/6)^alpha) agree.
    mine, theirs = both(trained, beam=3, length_penalty=alpha)
    for a, b in zip(mine, theirs):
        assert_same(a[:1], b[:1])
    assert any(abs(h[0].score - h[0].logprob) > 1e-3 for h in theirs) == (alpha != 0)


def test_early_stop_needs_no_length_penalty(trained):
    ct2 = load_translator(trained["ct2"])
    for overrides in ({"early_stop": True}, {"early_stop": True, "length_penalty": 0.5}):
        with pytest.raises(ValueError, match="early_stop: .*length_penalty"):
            ct2.with_options(beam=3, **overrides)
        with pytest.raises(ValueError, match="early_stop"):
            ct2.translate(TEXTS, DecodeOptions.resolve(ct2.options, beam=3, **overrides))
    ct2.with_options(beam=1, early_stop=True)  # greedy search has no beam to end early
    # Without a length penalty CT2 ends a beam once its best candidate has ended, as attnmt's
    # early_stop does: the same winners.
    mine, theirs = both(trained, beam=3, early_stop=True, length_penalty=0.0)
    for a, b in zip(mine, theirs):
        assert_same(a[:1], b[:1])


def test_ct2_translator_has_no_pytorch_model(trained):
    from attnmt.evaluate import evaluate
    from attnmt.explain import explain

    ct2 = load_translator(trained["ct2"])
    with pytest.raises(ValueError, match="needs a PyTorch checkpoint"):
        ct2.model  # noqa: B018
    with pytest.raises(ValueError, match="needs a PyTorch checkpoint"):
        explain(ct2, TEXTS[0])
    with pytest.raises(ValueError, match="needs a PyTorch checkpoint"):
        evaluate(ct2, [(TEXTS[0], "C B A")])


def test_load_translator_errors_and_device(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="not an attnmt CTranslate2 export"):
        load_translator(tmp_path)
    ct2 = load_translator(trained["ct2"], device="cpu", threads=1)
    assert ct2.engine.ct2.device == "cpu" and ct2.device.type == "cpu"


# Sources whose right outputs (uppercase, reversed) repeat words and word pairs.
REPEATING = ["a b a b", "c c c c", "a b c a b c", "d e d e d", "f f g g f f"]


def repeats(tokens: list[str], n: int) -> bool:
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) != len(set(grams))


@pytest.mark.parametrize("n", [1, 2])
def test_no_repeat_ngram_reaches_ct2_and_greedy_matches_attnmt(trained, n):
    ours = Translator.from_checkpoint(trained["ckpt"]).with_options(beam=1)
    ct2 = load_translator(trained["ct2"]).with_options(beam=1)
    assert any(repeats(h[0].tokens, n) for h in ours.translate(REPEATING))  # what it undoes
    mine = ours.with_options(no_repeat_ngram=n).translate(REPEATING + TEXTS)
    theirs = ct2.with_options(no_repeat_ngram=n).translate(REPEATING + TEXTS)
    # The same bans: the same outputs, none repeating an n-gram (the log-probs differ, as with
    # min_len: CT2 bans before its softmax and renormalises, attnmt after it).
    assert [(h[0].ids, h[0].finished) for h in mine] == [(h[0].ids, h[0].finished) for h in theirs]
    assert not any(repeats(h[0].tokens, n) for h in mine)


def test_no_repeat_ngram_holds_for_every_ct2_beam_hypothesis(trained):
    found = load_translator(trained["ct2"]).with_options(beam=4, n_best=4, no_repeat_ngram=2)
    for hyps in found.translate(REPEATING):
        assert len(hyps) == 4 and not any(repeats(h.tokens, 2) for h in hyps)


class RecordingCT2:
    """A ctranslate2.Translator that records the keyword arguments of each translate_batch."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def translate_batch(self, *args, **kwargs):
        self.calls.append(kwargs)
        return self.inner.translate_batch(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_repetition_penalty_reaches_ct2(trained):
    ct2 = load_translator(trained["ct2"])
    recorder = ct2.engine.ct2 = RecordingCT2(ct2.engine.ct2)
    plain = ct2.with_options(beam=1).translate(REPEATING)
    penalised = ct2.with_options(beam=1, repetition_penalty=3.0).translate(REPEATING)
    sent = [(c["repetition_penalty"], c["no_repeat_ngram_size"]) for c in recorder.calls]
    assert set(sent[:2]) == {(1.0, 0)} and set(sent[2:]) == {(3.0, 0)}  # two batches each
    # Applied to logits it is strong: the outputs that repeated a word repeat fewer.
    count = sum(len(h[0].tokens) - len(set(h[0].tokens)) for h in plain)
    assert sum(len(h[0].tokens) - len(set(h[0].tokens)) for h in penalised) < count
