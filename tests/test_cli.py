"""The command line end to end on a tiny config: train -> translate -> evaluate -> explain."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from attnmt.cli import main
from tests.conftest import TINY_OVERRIDES, tiny_pairs, write_tiny_tsv

REPO = Path(__file__).resolve().parents[1]


def attnmt(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """Run ``python -m attnmt`` as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "attnmt", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )


def test_train_translate_evaluate_explain(tmp_path: Path, tiny_run: Path) -> None:
    ckpt = str(tiny_run / "best.pt")

    # translate: stdin -> stdout, one line per input line
    res = attnmt("translate", "--model", ckpt, "--beam", "2", stdin="I eat bread.\nLet's go.\n")
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) == 2
    res = attnmt("translate", "--model", ckpt, "--quantize", stdin="I eat bread.\nLet's go.\n")
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) == 2
    # --min-len 12: every output has at least 12 tokens (the word tokenizer splits punctuation)
    res = attnmt("translate", "--model", ckpt, "--min-len", "12", stdin="I eat bread.\nLet's go.\n")
    assert res.returncode == 0, res.stderr
    tokens = [re.findall(r"\w+|[^\w\s]", line) for line in res.stdout.splitlines()]
    assert [len(t) >= 12 for t in tokens] == [True, True]

    # translate: files, n-best with scores
    src = tmp_path / "in.txt"
    src.write_text("I eat bread.\nWe see the dog.\n\n")
    out = tmp_path / "out.txt"
    assert main(["translate", "--model", ckpt, "-i", str(src), "-o", str(out),
                 "--n-best", "3", "--scores"]) == 0  # fmt: skip
    lines = out.read_text().splitlines()
    assert len(lines) == 3 * 3
    scores = [float(line.split("\t")[0]) for line in lines[:3]]
    assert scores == sorted(scores, reverse=True)

    # evaluate: BLEU and chrF with signatures, perplexity
    res = attnmt("evaluate", "--model", ckpt, "--test", str(tiny_run / "test.tsv"), "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert 0 <= report["bleu"] <= 100 and 0 <= report["chrf"] <= 100
    assert "nrefs:1" in report["bleu_signature"] and report["perplexity"] >= 1

    # explain: a table, JSON and a heatmap
    plot = tmp_path / "attn.png"
    res = attnmt("explain", "--model", ckpt, "Let's go.", "--plot", str(plot))
    assert res.returncode == 0, res.stderr
    assert "Step 1" in res.stdout and "Stopped" in res.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = attnmt("explain", "--model", ckpt, "Let's go.", "--json")
    assert json.loads(res.stdout)["stopped_by"] in ("eos", "length_limit")

    # plot: training curves from the run's log
    assert main(["plot", str(tiny_run), "--out", str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "curves.png").exists()


def test_train_cli_then_rerun_is_a_no_op(tmp_path: Path) -> None:
    corpus = write_tiny_tsv(tmp_path / "tiny.tsv")
    sets = [f"--set={o}" for o in TINY_OVERRIDES]
    args = ["train", "--set", f"data.corpus={corpus}", "--set", f"train.out_dir={tmp_path}/r"]
    args += [*sets, "--set=train.max_steps=10"]
    assert main(args) == 0
    before = (tmp_path / "r" / "last.pt").read_bytes()
    assert main(args) == 0  # already finished: resumes, sees max_steps reached, stops
    assert (tmp_path / "r" / "last.pt").read_bytes() == before


@pytest.mark.parametrize(
    "content, message",
    [
        (b"hello\tHola\nno tab here\n", "bad.tsv:2"),
        (b"hello\tHola\n\xff\xfe\tbad\n", "bad.tsv:2"),
        (b"hello\t   \n", "bad.tsv:1"),
    ],
)
def test_bad_corpus_names_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, content: bytes, message: str
) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_bytes(content)
    code = main(["train", "--set", f"data.corpus={bad}", "--set", f"train.out_dir={tmp_path}/r"])
    assert code == 2
    assert message in capsys.readouterr().err


def test_bad_inputs_give_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  max_step: 3\n")
    assert main(["train", str(cfg)]) == 2
    assert "train.max_step" in capsys.readouterr().err

    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err

    assert main(["train", "--set", "model.hidden=big"]) == 2
    assert "model.hidden" in capsys.readouterr().err

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    assert main(["translate", "--model", str(corrupt)]) == 2
    assert "corrupt.pt" in capsys.readouterr().err

    import torch

    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    assert main(["translate", "--model", str(foreign)]) == 2
    assert "not an attnmt checkpoint" in capsys.readouterr().err

    assert main(["translate", "--model", str(tmp_path / "nope.pt")]) == 2
    assert "not found" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Every translate flag with both engines
# --------------------------------------------------------------------------------------------

INPUT = ["I eat bread.", "We see the dog.", "They want a car.", "You see apples.", "Let's go."]


def untrained_models(out: Path, tokenizer: str = "word") -> dict[str, Path]:
    """An untrained Transformer as a checkpoint (torch engine) and its CTranslate2 export."""
    import torch

    from attnmt.checkpoint import Checkpoint, build_model
    from attnmt.config import Config
    from attnmt.tokenizer import train_tokenizer

    pairs = tiny_pairs()
    src_tok = train_tokenizer(tokenizer, [s for s, _ in pairs], 200, "bpe")
    tgt_tok = train_tokenizer(tokenizer, [t for _, t in pairs], 200, "bpe")
    cfg = Config()
    cfg.data.tokenizer = tokenizer
    cfg.model.arch, cfg.model.hidden, cfg.model.layers = "transformer", 32, 1
    cfg.model.heads, cfg.model.ff_dim, cfg.model.dropout = 2, 64, 0.0
    d = cfg.decode
    d.beam, d.n_best, d.max_len_a, d.max_len_b, d.length_penalty = 2, 1, 0.0, 6, 1.0
    torch.manual_seed(0)
    model = build_model(cfg.model, src_tok.vocab_size, tgt_tok.vocab_size)
    Checkpoint(cfg, model.state_dict(), src_tok, tgt_tok).save(out / "model.pt")
    paths = {"torch": out / "model.pt"}
    try:
        from attnmt.ct2 import export_ctranslate2

        paths["ctranslate2"] = export_ctranslate2(out / "model.pt", out / "ct2")
    except ImportError:
        pass
    return paths


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return untrained_models(tmp_path_factory.mktemp("engines"))


@pytest.fixture(scope="module")
def sp_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return untrained_models(tmp_path_factory.mktemp("sp_engines"), "sentencepiece")


@dataclass
class Run:
    rc: int
    err: str
    lines: list[str]  # the output file
    hyps: list[list]  # the Hypothesis lists translate returned
    options: list  # the DecodeOptions each engine call got
    batches: list[int]  # sentences per engine call
    device: str  # where the engine runs
    threads: int  # torch's threads, or what ctranslate2.Translator got as intra_threads
    quantized: bool  # int8 Linear modules (torch) or an int8 compute type (CTranslate2)


class TranslateCli:
    """Runs ``attnmt translate`` in-process on ``models``, recording what reaches the engine."""

    def __init__(self, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp: Path):
        from attnmt.translate import TorchEngine, Translator

        self.models, self.tmp = models, tmp
        self.seen: dict = {}
        self.ct2_kwargs: dict = {}
        engines: list = [TorchEngine]
        if "ctranslate2" in models:
            import ctranslate2

            from attnmt.ct2 import CT2Engine

            engines.append(CT2Engine)
            real = ctranslate2.Translator
            monkeypatch.setattr(ctranslate2, "Translator", lambda *a, **kw: (
                self.ct2_kwargs.update(kw) or real(*a, **kw)))  # fmt: skip
        for cls in engines:
            monkeypatch.setattr(cls, "search", self._spy_search(cls.search))
        real_translate = Translator.translate

        def translate(tr, texts, options=None, with_attention=False):
            self.seen["hyps"] = real_translate(tr, texts, options, with_attention)
            return self.seen["hyps"]

        monkeypatch.setattr(Translator, "translate", translate)

    def _spy_search(self, real):
        def search(engine, sources, options, with_attention):
            self.seen["engine"] = engine
            self.seen["calls"].append((len(sources), options))
            return real(engine, sources, options, with_attention)

        return search

    def __call__(self, engine: str, flags: list[str]) -> Run:
        import torch

        if engine not in self.models:
            pytest.skip("needs ctranslate2")
        self.seen = {"hyps": [], "calls": [], "engine": None}
        src, out = self.tmp / "in.txt", self.tmp / "out.txt"
        src.write_text("".join(line + "\n" for line in INPUT))
        out.unlink(missing_ok=True)
        args = ["translate", "--model", str(self.models[engine]), "--engine", engine]
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = main([*args, "-i", str(src), "-o", str(out), *flags])
        e = self.seen["engine"]
        if engine == "ctranslate2":
            threads = self.ct2_kwargs.get("intra_threads", -1)
            quantized = e is not None and e.ct2.compute_type.startswith("int8")
        else:
            from torch.ao.nn.quantized import dynamic as qd

            threads = torch.get_num_threads()
            quantized = e is not None and any(isinstance(m, qd.Linear) for m in e.model.modules())
        return Run(
            rc=rc,
            err=err.getvalue(),
            lines=out.read_text().splitlines() if out.exists() else [],
            hyps=self.seen["hyps"],
            options=[o for _, o in self.seen["calls"]],
            batches=[n for n, _ in self.seen["calls"]],
            device=str(e.device) if e is not None else "",
            threads=threads,
            quantized=quantized,
        )


@pytest.fixture
def translate_cli(models, monkeypatch, tmp_path):
    import torch

    threads = torch.get_num_threads()
    yield TranslateCli(models, monkeypatch, tmp_path)
    torch.set_num_threads(threads)  # --threads sets the test process's torch threads


FLAG_CASES = [  # flags, the DecodeOptions fields every engine call must get, a check of the run
    (["--beam", "3"], {"beam": 3}, None),
    (["--n-best", "3"], {"n_best": 3, "beam": 3}, lambda r: len(r.lines) == 3 * len(INPUT)),
    (["--min-len", "5"], {"min_len": 5}, lambda r: all(len(h[0].ids) >= 5 for h in r.hyps)),
    (["--max-len-a", "1.0"], {"max_len_a": 1.0}, None),
    (["--max-len-b", "2"], {"max_len_b": 2}, lambda r: all(len(h[0].ids) <= 2 for h in r.hyps)),
    # Without a penalty a beam's score is its log-probability (the config's alpha is 1.0).
    (["--length-penalty", "0"], {"length_penalty": 0.0},
     lambda r: all(h.score == pytest.approx(h.logprob) for n in r.hyps for h in n)),
    (["--batch-size", "2"], {"batch_size": 2}, lambda r: r.batches == [2, 2, 1]),
    (["--no-repeat-ngram", "1"], {"no_repeat_ngram": 1},
     lambda r: all(len(set(h[0].ids)) == len(h[0].ids) for h in r.hyps)),
    (["--repetition-penalty", "1.5"], {"repetition_penalty": 1.5}, None),
    (["--early-stop", "--length-penalty", "0"], {"early_stop": True, "length_penalty": 0.0}, None),
    (["--device", "cpu"], {}, lambda r: r.device == "cpu"),
    (["--threads", "1"], {}, lambda r: r.threads == 1),
    (["--quantize"], {}, lambda r: r.quantized),
    (["--scores"], {}, lambda r: all(float(line.split("\t")[0]) <= 0 for line in r.lines)),
    ([], {"split_sentences": True}, None),  # issue #13: on by default
    (["--no-split-sentences"], {"split_sentences": False}, None),
]  # fmt: skip


@pytest.mark.parametrize("engine", ["torch", "ctranslate2"])
@pytest.mark.parametrize(
    "flags, fields, check", FLAG_CASES, ids=[" ".join(c[0]) or "no flags" for c in FLAG_CASES]
)
def test_every_translate_flag_works_with_both_engines(translate_cli, engine, flags, fields, check):
    """Bug: with --engine ctranslate2, --min-len, --max-len-a/-b, --length-penalty, --batch-size,
    --device, --threads and --early-stop were silently ignored. Each flag now reaches the engine
    or is refused with an error line (test_early_stop_with_a_length_penalty)."""
    r = translate_cli(engine, flags)
    assert r.rc == 0, r.err
    assert len(r.lines) == len(INPUT) * r.options[0].n_best
    for o in r.options:
        assert {k: getattr(o, k) for k in fields} == fields
    assert check is None or check(r)


@pytest.mark.parametrize("engine", ["torch", "ctranslate2"])
def test_early_stop_with_a_length_penalty(translate_cli, engine):
    # CTranslate2 ends a beam at its best candidate only without a length penalty, and the
    # config's is 1.0: refused there, before any output; the torch engine honours it.
    r = translate_cli(engine, ["--early-stop"])
    if engine == "torch":
        assert r.rc == 0 and all(o.early_stop for o in r.options)
    else:
        assert r.rc == 2 and "error: early_stop: " in r.err and "length_penalty" in r.err
        assert not r.lines and not r.options


@pytest.mark.parametrize("engine", ["torch", "ctranslate2"])
def test_cuda_without_a_gpu_is_an_error(translate_cli, engine):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    r = translate_cli(engine, ["--device", "cuda"])
    assert r.rc == 2 and "no CUDA device" in r.err and not r.lines


@pytest.mark.parametrize("engine", ["torch", "ctranslate2"])
@pytest.mark.parametrize(
    "flags, name",
    [
        (["--beam", "0"], "beam"),
        (["--beam", "2", "--n-best", "3"], "n_best"),
        (["--min-len", "-1"], "min_len"),
        (["--no-repeat-ngram", "-1"], "no_repeat_ngram"),
        (["--repetition-penalty", "0"], "repetition_penalty"),
        (["--batch-size", "0"], "batch_size"),
        (["--max-len-a", "0", "--max-len-b", "0"], "max_len_a/max_len_b"),
    ],
)
def test_bad_decode_flags_name_the_option(translate_cli, engine, flags, name):
    r = translate_cli(engine, flags)
    assert r.rc == 2 and f"error: decode.{name}:" in r.err and not r.lines


# --------------------------------------------------------------------------------------------
# Issue #17: input lines, option values and every user error as one line
# --------------------------------------------------------------------------------------------


def run_main(args: list[str], stdin: bytes = b"") -> tuple[int, str, str]:
    """``main(args)`` in-process with ``stdin`` as its standard input: (exit code, out, err)."""
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(args)
    finally:
        sys.stdin = old
    return rc, out.getvalue(), err.getvalue()


def one_error_line(rc: int, err: str) -> str:
    """The single ``error:`` line a user error must give (exit status 2), without its prefix."""
    lines = err.strip().split("\n")
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), (rc, err)
    return lines[0][len("error: ") :]


@pytest.fixture
def sources(monkeypatch) -> list[list[str]]:
    """The source pieces each Translator.translate call saw, per input line."""
    from attnmt.translate import Translator

    seen: list[list[str]] = []
    real = Translator.translate

    def translate(tr, texts, options=None, with_attention=False):
        found = real(tr, texts, options, with_attention)
        seen.extend(h[0].src_tokens for h in found)
        return found

    monkeypatch.setattr(Translator, "translate", translate)
    return seen


def engine_model(request, engine: str, tokenizer: str) -> str:
    paths = request.getfixturevalue("sp_models" if tokenizer == "sentencepiece" else "models")
    if engine not in paths:
        pytest.skip("needs ctranslate2")
    return str(paths[engine])


@pytest.mark.parametrize("engine", ["torch", "ctranslate2"])
@pytest.mark.parametrize("via", ["stdin", "file"])
def test_one_output_line_per_input_line(request, tmp_path, sources, engine, via):
    """Issue #17, item 2: input was split with str.splitlines(): 3 lines gave 6 outputs."""
    model = engine_model(request, engine, "word")
    # Inside the lines: all that str.splitlines() splits at besides \n, \r and \r\n.
    odd = "I eat\u2028bread.\nWe\x0bsee\x1cthe\x85dog.\nLet's\u2029go\x0c\x1d\x1e.\n".encode()
    plain = b"I eat bread.\nWe see the dog.\nLet's go .\n"
    results = {}
    for name, data in (("odd", odd), ("plain", plain)):
        args = ["translate", "--model", model, "--engine", engine, "--n-best", "2"]
        if via == "file":
            (tmp_path / "in.txt").write_bytes(data)
            args += ["-i", str(tmp_path / "in.txt")]
        rc, out, err = run_main(args, stdin=data if via == "stdin" else b"")
        assert rc == 0, err
        results[name] = (out.split("\n"), list(sources))
        sources.clear()
    lines, seen = results["odd"]
    assert len(lines) == 2 * 3 + 1 and lines[-1] == ""  # n_best lines per input line
    assert results["odd"] == results["plain"]  # the separators are spaces inside a line


@pytest.mark.parametrize("engine", ["torch", "ctranslate2"])
@pytest.mark.parametrize("tokenizer", ["word", "sentencepiece"])
def test_invalid_utf8_is_refused_naming_stdin_or_the_file(request, tmp_path, engine, tokenizer):
    """Issue #17, item 6: invalid UTF-8 on stdin was translated as garbage (word tokenizer) or
    was a raw `RuntimeError: Unable to cast` (SentencePiece), every line lost."""
    model = engine_model(request, engine, tokenizer)
    data = b"I eat bread.\nWe see \xff\xfe the dog.\n"
    rc, out, err = run_main(["translate", "--model", model, "--engine", engine], stdin=data)
    assert one_error_line(rc, err).startswith("<stdin>:2: invalid UTF-8 at byte 7 (ff fe")
    assert out == ""
    bad = tmp_path / "bad.txt"
    bad.write_bytes(data)
    rc, out, err = run_main(["translate", "--model", model, "--engine", engine, "-i", str(bad)])
    assert one_error_line(rc, err).startswith(f"{bad}:2: invalid UTF-8")


@pytest.mark.parametrize("tokenizer", ["word", "sentencepiece"])
def test_a_bom_at_the_start_of_the_input_is_dropped(request, tmp_path, sources, tokenizer):
    """Issue #17, item 6: ``-i`` kept a leading BOM, which became part of the first word."""
    model = engine_model(request, "torch", tokenizer)
    for name, data in (("bom", b"\xef\xbb\xbfI eat bread.\n"), ("plain", b"I eat bread.\n")):
        (tmp_path / f"{name}.txt").write_bytes(data)
        rc, _, err = run_main(["translate", "--model", model, "-i", str(tmp_path / f"{name}.txt")])
        assert rc == 0, err
    assert len(sources) == 2 and sources[0] == sources[1]


@pytest.mark.parametrize("engine", ["torch", "ctranslate2"])
@pytest.mark.parametrize(
    "command, flags, names",
    [
        ("translate", ["--batch-size", "-1"], "decode.batch_size: must be >= 1, got -1"),
        ("translate", ["--batch-size", "0"], "decode.batch_size: must be >= 1, got 0"),
        ("evaluate", ["--batch-size", "-1"], "decode.batch_size: must be >= 1, got -1"),
        ("translate", ["--n-best", "0"], "decode.n_best: must be >= 1, got 0"),
        ("translate", ["--length-penalty", "nan"], "decode.length_penalty: must be a finite"),
        ("translate", ["--threads", "-1"], "--threads: must be >= 0, got -1"),
        ("translate", ["--device", "tpu"], "device 'tpu': unknown"),
        ("translate", ["--max-len-a", "0", "--max-len-b", "1"], "decode.max_len_a/max_len_b:"),
        ("translate", ["--max-len-a", "0.2", "--max-len-b", "0"], "decode.max_len_a/max_len_b:"),
        ("evaluate", ["--limit", "-1"], "--limit: must be >= 0, got -1"),
        ("translate", ["--window", "0"], "--window: must be >= 1, got 0"),
        ("translate", ["--src-lang", "e n"], "--src-lang: 'e n' is not a language code"),
        ("evaluate", ["--src-lang", "1"], "--src-lang: '1' is not a language code"),
        ("explain", ["--top-k", "0"], "--top-k: must be >= 1, got 0"),
        ("serve", ["--port", "99999"], "--port: must be <= 65535, got 99999"),
        ("serve", ["--port", "0"], "--port: must be >= 1, got 0"),
    ],
)
def test_bad_option_values_are_one_error_naming_the_option(
    request, tmp_path, engine, command, flags, names
):
    """Issue #17, item 3: --batch-size -1 wrote nothing and exited 0 (evaluate: IndexError),
    --batch-size 0 said `range() arg 3 must not be zero`, --threads -1 and --port 99999 were
    raw tracebacks."""
    if engine == "ctranslate2" and command != "translate":
        pytest.skip("only translate takes --engine")
    model = engine_model(request, engine, "word")
    args = [command, "--model", model, *flags]
    if command == "translate":
        args += ["--engine", engine]
    elif command == "evaluate":
        test = tmp_path / "test.tsv"
        test.write_text("I eat bread.\tYo como pan.\n")
        args += ["--test", str(test)]
    elif command == "explain":
        args += ["I eat bread."]
    rc, out, err = run_main(args, stdin=b"I eat bread.\n")
    assert one_error_line(rc, err).startswith(names)
    assert out == ""


def damaged_checkpoint(models: dict[str, Path], tmp: Path, damage: str) -> Path:
    import torch

    raw = torch.load(models["torch"], weights_only=True)
    if damage == "config does not fit the weights":
        raw["config"]["model"]["hidden"] = 64
    elif damage == "no model":
        del raw["model"]
    else:  # a bad SentencePiece proto
        raw["src_tokenizer"] = {"kind": "sentencepiece", "model_proto": b"junk"}
    torch.save(raw, tmp / "bad.pt")
    return tmp / "bad.pt"


@pytest.mark.parametrize(
    "case, message",
    [
        ("translate -o DIR", "cannot write {t}/dir: it is a directory"),
        ("translate -o FILE/x", "cannot write {t}/file/x: {t}/file is a file, not a directory"),
        ("evaluate -o DIR", "cannot write {t}/dir: it is a directory"),
        ("train out_dir=FILE", "cannot create directory {t}/file: {t}/file is a file"),
        ("train out_dir=FILE/run", "cannot create directory {t}/file/run: {t}/file is a file"),
        ("train DIR", "{t}/dir: is a directory, expected a YAML config file"),
        ("export --out FILE", "--out {t}/file: is a file, not a directory"),
        ("config does not fit the weights", "{t}/bad.pt: its weights do not fit its model config"),
        ("no model", "{t}/bad.pt: checkpoint lacks model"),
        ("bad SentencePiece proto", "{t}/bad.pt: unusable checkpoint"),
        ("unreadable CT2 tokenizer file", "{t}/ct2/attnmt_tokenizers.pt: unreadable tokenizer"),
    ],
)
def test_user_errors_are_one_line_not_a_traceback(models, tmp_path, case, message):
    """Issue #17, item 9: each of these was a raw traceback."""
    import shutil

    t = tmp_path
    (t / "dir").mkdir()
    (t / "file").write_text("x")
    test = t / "test.tsv"
    test.write_text("I eat bread.\tYo como pan.\n")
    model = str(models["torch"])
    args = {
        "translate -o DIR": ["translate", "--model", model, "-o", str(t / "dir")],
        "translate -o FILE/x": ["translate", "--model", model, "-o", str(t / "file" / "x")],
        "evaluate -o DIR": [
            "evaluate",
            "--model",
            model,
            "--test",
            str(test),
            "-o",
            str(t / "dir"),
        ],
        "train out_dir=FILE": ["train", "--set", f"train.out_dir={t / 'file'}"],
        "train out_dir=FILE/run": ["train", "--set", f"train.out_dir={t / 'file' / 'run'}"],
        "train DIR": ["train", str(t / "dir")],
        "export --out FILE": ["export", "--model", model, "--out", str(t / "file")],
    }.get(case)
    if args is None and case == "unreadable CT2 tokenizer file":
        if "ctranslate2" not in models:
            pytest.skip("needs ctranslate2")
        shutil.copytree(models["ctranslate2"], t / "ct2")
        (t / "ct2" / "attnmt_tokenizers.pt").write_bytes(b"junk\n")
        args = ["translate", "--engine", "ctranslate2", "--model", str(t / "ct2")]
    elif args is None:
        args = ["translate", "--model", str(damaged_checkpoint(models, t, case))]
    rc, out, err = run_main(args, stdin=b"I eat bread.\n")
    assert one_error_line(rc, err).startswith(message.format(t=t))
    if case == "evaluate -o DIR":  # the scores come out before the write fails
        assert "BLEU" in out and "chrF" in out
    else:
        assert out == ""
    assert (t / "file").read_text() == "x" and list((t / "dir").iterdir()) == []


def test_outputs_follow_the_umask_and_keep_their_mode(models, tmp_path):
    """Issue #17, item 8: `-o` outputs and plots were written 0600 whatever the umask."""
    out, curves = tmp_path / "out.txt", tmp_path / "curves.png"
    old = os.umask(0o022)
    try:
        assert run_main(["translate", "--model", str(models["torch"]), "-o", str(out)],
                        stdin=b"I eat bread.\n")[0] == 0  # fmt: skip
        assert out.stat().st_mode & 0o777 == 0o644
        os.chmod(out, 0o640)
        assert run_main(["translate", "--model", str(models["torch"]), "-o", str(out)])[0] == 0
        assert out.stat().st_mode & 0o777 == 0o640 and out.read_text() == ""
        log = tmp_path / "train_log.jsonl"
        log.write_text('{"kind": "train", "step": 1, "loss": 2.0, "lr": 0.1}\n')
        assert run_main(["plot", str(tmp_path), "--out", str(curves)])[0] == 0
        assert curves.stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


def test_alignments_from_translate_align_and_evaluate(tiny_run: Path, tmp_path: Path) -> None:
    from attnmt.align import parse_pharaoh, words

    ckpt = str(tiny_run / "best.pt")
    sources = ["I eat bread.", "They see the dog."]
    stdin = ("\n".join(sources) + "\n").encode()
    code, out, _ = run_main(["translate", "--model", ckpt, "--align", "--beam", "2"], stdin)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2
    for src, line in zip(sources, lines):
        text, links = line.split(" ||| ")
        gold = parse_pharaoh(links)  # well-formed Pharaoh
        assert gold.sure and all(i < len(words(src)) and j < len(words(text)) for i, j in gold.sure)
        assert {j for _, j in gold.sure} == set(range(len(words(text))))  # every output word
    pairs = [tuple(x.split("\t")) for x in (tiny_run / "test.tsv").read_text().splitlines()]
    code, out, _ = run_main(["align", "--model", ckpt, "-i", str(tiny_run / "test.tsv")])
    assert code == 0 and len(out.splitlines()) == len(pairs)
    gold = tmp_path / "test.align"  # each pair's own forced alignment as gold: AER 0
    gold.write_text(out)
    evaluate = ["evaluate", "--model", ckpt, "--test", str(tiny_run / "test.tsv")]
    code, out, _ = run_main([*evaluate, "--align-gold", str(gold)])
    assert code == 0 and "AER 0.00" in out
    gold.write_text("0-0\n")  # one line for several pairs: an error naming the file
    code, _, err = run_main([*evaluate, "--align-gold", str(gold)])
    assert code == 2 and "test.align" in err and "alignment lines" in err


# --------------------------------------------------------------------------------------------
# Issue #14: translate streams its input; issue #13: sentence splitting flags
# --------------------------------------------------------------------------------------------

STREAM_INPUT = b"I eat bread. We see the dog.\n\nThey want a car.\nYou see apples.\nLet's go.\n"


@pytest.mark.parametrize("flags", [[], ["--n-best", "2", "--scores", "--align"]])
def test_translate_output_does_not_depend_on_the_window(models, tmp_path, flags):
    args = ["translate", "--model", str(models["torch"]), *flags]
    rc, whole, err = run_main([*args, "--window", "100"], STREAM_INPUT)
    assert rc == 0, err
    for window in ("1", "2", "3"):
        assert run_main([*args, "--window", window], STREAM_INPUT)[:2] == (0, whole)
    n_best = 2 if flags else 1
    assert len(whole.splitlines()) == 5 * n_best  # the empty line kept, line for line


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_with_o_on_a_terminal_and_on_request(models, tmp_path):
    args = ["translate", "--model", str(models["torch"]), "--window", "2"]
    src, out = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_bytes(STREAM_INPUT)
    with contextlib.redirect_stderr(Terminal()) as err:
        assert main([*args, "-i", str(src), "-o", str(out)]) == 0
    assert re.search(r"translate: .*5 lines \[.* lines/s\]", err.getvalue()), err.getvalue()
    assert len(out.read_text().splitlines()) == 5
    # Not a terminal (a log, a pipe): no bar unless asked for; stdout: none either.
    rc, _, err = run_main([*args, "-o", str(out)], STREAM_INPUT)
    assert rc == 0 and err == ""
    rc, text, err = run_main(args, STREAM_INPUT)
    assert rc == 0 and err == "" and len(text.splitlines()) == 5
    assert "5 lines" in run_main([*args, "--progress"], STREAM_INPUT)[2]
    assert "5 lines" in run_main([*args, "-o", str(out), "--progress"], STREAM_INPUT)[2]


def test_a_bad_line_late_in_the_input_stops_with_its_line_and_writes_no_file(models, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"I eat bread.\nWe see the dog.\nLet's \xff go.\n")
    out = tmp_path / "out.txt"
    args = ["translate", "--model", str(models["torch"]), "-i", str(bad), "--window", "2"]
    rc, _, err = run_main([*args, "-o", str(out), "--no-progress"])
    assert one_error_line(rc, err).startswith(f"{bad}:3: invalid UTF-8")
    assert not out.exists() and not list(tmp_path.glob(".out.txt.*"))  # atomic: nothing left
    rc, text, err = run_main(args)  # stdout: the first window is out before line 3 is read
    assert one_error_line(rc, err).startswith(f"{bad}:3: invalid UTF-8")
    assert len(text.splitlines()) == 2
    missing = tmp_path / "missing.txt"
    rc, _, err = run_main(["translate", "--model", str(models["torch"]), "-i", str(missing)])
    assert one_error_line(rc, err) == f"{missing}: file not found"


def test_evaluate_and_translate_split_sentences_unless_told_not_to(models, tmp_path, monkeypatch):
    from attnmt.translate import TorchEngine

    searched: list[int] = []  # sources per engine call
    real = TorchEngine.search
    monkeypatch.setattr(TorchEngine, "search", lambda engine, sources, *a: (
        searched.append(len(sources)) or real(engine, sources, *a)))  # fmt: skip
    test = tmp_path / "test.tsv"
    test.write_text("I eat bread. We see the dog.\tComo pan. Vemos el perro.\n")
    model = str(models["torch"])
    for command in (["evaluate", "--test", str(test)], ["translate"]):
        for flags, sentences in (([], 2), (["--no-split-sentences"], 1)):
            searched.clear()
            stdin = b"I eat bread. We see it.\n"
            rc, _, err = run_main([*command, "--model", model, *flags], stdin)
            assert rc == 0, err
            assert searched == [sentences], command  # two sentences, or the line whole
