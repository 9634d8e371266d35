"""Argos Translate packages: the layout argostranslate reads, refusals before anything is written,
and (with argostranslate installed) install + translate with the network unreachable, giving
`attnmt translate --engine ctranslate2`'s output."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from attnmt.argos import ARGOS_VERSION, export_argos, sbd_candidates
from attnmt.checkpoint import Checkpoint
from attnmt.cli import main
from attnmt.config import Config, load_config
from attnmt.ct2 import ExportError, export_ctranslate2
from attnmt.tokenizer import SPECIALS, SentencePieceTokenizer, WordTokenizer
from tests.conftest import TINY_OVERRIDES, tiny_pairs, write_tiny_tsv

pytest.importorskip("ctranslate2")

HAVE_ARGOS = importlib.util.find_spec("argostranslate") is not None
# Sentences of the tiny corpus (the tiny model has learned most of them).
SENTENCES = ["I eat apples.", "They want the dog.", "We see a car.", "You eat bread.", "Let's go."]
PKG = "translate-en_es-1_0"


@pytest.fixture(scope="module")
def sp_run(tmp_path_factory) -> Path:
    """A tiny Transformer with a shared SentencePiece vocabulary, trained for a few seconds."""
    from attnmt.train import train

    tmp = tmp_path_factory.mktemp("argos_run")
    corpus = write_tiny_tsv(tmp / "tiny.tsv")
    overrides = [o for o in TINY_OVERRIDES if not o.startswith(("data.tokenizer", "train.max"))]
    cfg = load_config(
        None,
        [
            f"data.corpus={corpus}",
            f"train.out_dir={tmp / 'run'}",
            *overrides,
            "data.tokenizer=sentencepiece",
            "data.shared_vocab=true",
            "data.vocab_size=120",
            "data.dev_fraction=0.02",
            "data.test_fraction=0.02",
            "model.arch=transformer",
            "model.layers=2",
            "model.heads=4",
            "model.ff_dim=64",
            "model.tie_embeddings=true",
            "model.tie_src_tgt=true",
            "train.max_steps=300",
            "train.eval_every=300",
            "train.save_every=300",
            "train.lr=0.005",
        ],
    )
    return train(cfg, log=lambda *_: None)


def fake_sbd(path: Path) -> Path:
    """Any bytes ending in .onnx: enough where argostranslate does not run."""
    path.write_bytes(b"not a model")
    return path


def toy_splitter(path: Path) -> Path:
    """A stand-in for a MiniSBD model (the real ones are downloads): an ONNX graph in MiniSBD's
    format (inputs ``units`` and ``features``, per-character logits over MiniSBD's 5 classes,
    its config and vocabulary in the metadata) that ends a sentence at every '.', '!' and '?'."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    units = ["<PAD>", "<UNK>", ".", "!", "?"]
    # MiniSBD's classes: 0 inside a token, 1 token end, 2 sentence end, 3/4 multi-word token ends
    classes = ["inside", "zero", "end", "zero", "zero"]
    nodes = [helper.make_node("Constant", [], ["axis"], value_ints=[2])]
    for i in (2, 3, 4):
        nodes.append(
            helper.make_node(
                "Constant", [], [f"id{i}"], value=helper.make_tensor("", TensorProto.INT64, [], [i])
            )
        )
        nodes.append(helper.make_node("Equal", ["units", f"id{i}"], [f"eq{i}"]))
    nodes += [
        helper.make_node("Or", ["eq2", "eq3"], ["or1"]),
        helper.make_node("Or", ["or1", "eq4"], ["end_b"]),
        helper.make_node("Cast", ["end_b"], ["end"], to=TensorProto.FLOAT),  # (B, T) 1 at ends
        helper.make_node(
            "Constant", [], ["one"], value=helper.make_tensor("", TensorProto.FLOAT, [], [1.0])
        ),
        helper.make_node("Sub", ["one", "end"], ["inside"]),
        helper.make_node("Sub", ["end", "end"], ["zero"]),
        *[helper.make_node("Unsqueeze", [x, "axis"], [f"{x}3"]) for x in ("inside", "end", "zero")],
        helper.make_node("Concat", [f"{x}3" for x in classes], ["output"], axis=2),
    ]
    graph = helper.make_graph(
        nodes,
        "toy_sbd",
        [
            helper.make_tensor_value_info("units", TensorProto.INT64, ["B", "T"]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["B", "T", 1]),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["B", "T", 5])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    config = {"feat_funcs": ["space_before"], "max_seqlen": 1000, "batch_size": 1}
    vocab = {"lang": "en", "idx": 0, "cutoff": 0, "lower": False, "_id2unit": units}
    vocab["_unit2id"] = {u: i for i, u in enumerate(units)}
    meta = {"lang_code": "en", "config": config, "vocab": vocab, "lexicon": None}
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def export(run: Path, out: Path, sbd: Path, **kw) -> Path:
    args = dict(from_code="en", to_code="es", from_name="English", to_name="Spanish")
    return export_argos(run, out, sbd_model=sbd, **{**args, **kw})


def test_package_layout(sp_run, tmp_path):
    path = export(sp_run, tmp_path / "dist", fake_sbd(tmp_path / "en.onnx"))
    assert path == tmp_path / "dist" / f"{PKG}.argosmodel"
    assert [p.name for p in (tmp_path / "dist").iterdir()] == [path.name]  # no temp left behind
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert {n.split("/")[0] for n in names} == {PKG}  # one top-level folder
        files = {n.split("/", 1)[1] for n in names}
        assert {"metadata.json", "README.md", "sentencepiece.model", "minisbd/en.onnx"} <= files
        assert {"model/model.bin", "model/config.json"} <= files
        meta = json.loads(zf.read(f"{PKG}/metadata.json"))
        ct2 = json.loads(zf.read(f"{PKG}/model/config.json"))
        sp = zf.read(f"{PKG}/sentencepiece.model")
        readme = zf.read(f"{PKG}/README.md").decode()
    assert meta == {
        "package_version": "1.0",
        "argos_version": ARGOS_VERSION,
        "from_code": "en",
        "from_name": "English",
        "to_code": "es",
        "to_name": "Spanish",
    }
    ckpt = Checkpoint.load(sp_run)
    assert sp == ckpt.src_tokenizer.model_proto
    # argostranslate sends pieces without </s>: CTranslate2 must add attnmt's <eos> itself.
    assert ct2["add_source_eos"] is True and ct2["add_source_bos"] is False
    assert ct2["decoder_start_token"] == "<bos>" and ct2["eos_token"] == "<eos>"
    assert readme.startswith("# English - Spanish version 1.0") and "minisbd/en.onnx" in readme
    # The same checkpoint gives the same bytes (fixed zip times), so re-exporting replaces it.
    before = path.read_bytes()
    assert export(sp_run, tmp_path / "dist", tmp_path / "en.onnx") == path
    assert path.read_bytes() == before


def test_names_default_to_codes_and_version_names_the_package(sp_run, tmp_path):
    sbd = fake_sbd(tmp_path / "es.onnx")
    path = export_argos(
        sp_run, tmp_path, "es", "en", sbd_model=sbd, package_version="1.2", quantization="int8"
    )
    assert path.name == "translate-es_en-1_2.argosmodel"
    with zipfile.ZipFile(path) as zf:
        meta = json.loads(zf.read("translate-es_en-1_2/metadata.json"))
    assert (meta["from_name"], meta["to_name"], meta["package_version"]) == ("es", "en", "1.2")


def save(path: Path, cfg: Config, src, tgt) -> Path:
    Checkpoint(cfg, {}, src, tgt).save(path)
    return path


def sp_tokenizer(text: str) -> SentencePieceTokenizer:
    return SentencePieceTokenizer.train([text] * 20, 40)


@pytest.mark.parametrize(
    "kind, match",
    [
        ("lstm", "CTranslate2 has no RNN/LSTM decoder"),
        ("word", "needs a SentencePiece tokenizer"),
        ("separate", "separate source and target vocabularies"),
    ],
)
def test_unpackageable_checkpoints_are_refused(tmp_path, kind, match):
    cfg = Config()
    cfg.model.arch = "lstm" if kind == "lstm" else "transformer"
    word = WordTokenizer(SPECIALS + ["a"])
    src = word if kind == "word" else sp_tokenizer("the cat sat on the mat")
    tgt = sp_tokenizer("el gato se sentó") if kind == "separate" else src
    ckpt = save(tmp_path / "m.pt", cfg, src, tgt)
    with pytest.raises(ExportError, match=match):
        export(ckpt, tmp_path / "dist", fake_sbd(tmp_path / "en.onnx"))
    assert not (tmp_path / "dist").exists()


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"from_code": None}, "--from-code: a language code is required"),
        ({"to_code": ""}, "--to-code: a language code is required"),
        ({"to_code": "es/../x"}, "not a language code"),
        ({"to_code": "en"}, "both 'en'"),
        ({"package_version": "one"}, "not a version"),
    ],
)
def test_bad_languages_and_versions_are_refused(sp_run, tmp_path, kw, match):
    with pytest.raises(ExportError, match=match):
        export(sp_run, tmp_path / "dist", fake_sbd(tmp_path / "en.onnx"), **kw)
    assert not (tmp_path / "dist").exists()


def test_sentence_splitter_is_found_or_clearly_missing(sp_run, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    with pytest.raises(ExportError, match="no sentence splitter for source language 'en'.*--sbd"):
        export(sp_run, tmp_path / "dist", None)
    with pytest.raises(ExportError, match="no such file"):
        export(sp_run, tmp_path / "dist", tmp_path / "missing.onnx")
    with pytest.raises(ExportError, match="ending in .onnx"):
        export(sp_run, tmp_path / "dist", fake_sbd(tmp_path / "en.pt"))
    assert not (tmp_path / "dist").exists()
    # One that argostranslate/LibreTranslate (or MiniSBD) already cached is used.
    for cached in reversed(sbd_candidates("en")):
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(str(cached).encode())
    assert sbd_candidates("en")[0].is_relative_to(tmp_path / "data")
    path = export(sp_run, tmp_path / "dist", None)
    with zipfile.ZipFile(path) as zf:
        assert zf.read(f"{PKG}/minisbd/en.onnx") == str(sbd_candidates("en")[0]).encode()


# Runs in a fresh interpreter: argostranslate reads its directories from the environment when
# imported. Every connection attempt fails and is recorded.
ARGOS_SCRIPT = """
import json, socket, sys
attempts = []
def blocked(*args, **kwargs):
    attempts.append(repr(args)[:200])
    raise OSError("network unreachable (blocked by the test)")
socket.socket.connect = socket.socket.connect_ex = blocked
socket.create_connection = socket.getaddrinfo = blocked
from argostranslate import package, translate
package.install_from_path(sys.argv[1])
texts = json.loads(sys.argv[2])
try:
    out = [translate.translate(q, "en", "es") for q in texts]
except Exception as e:
    out = f"{type(e).__name__}: {e}"
print(json.dumps({"out": out, "attempts": attempts,
                  "installed": [p.package_path.name for p in package.get_installed_packages()]}))
"""


def argos_translate(package_file: Path, texts: list[str], home: Path, **settings: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARGOS_", "XDG_"))}
    env.update(
        HOME=str(home),
        XDG_DATA_HOME=str(home / "data"),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_CACHE_HOME=str(home / "cache"),
        ARGOS_PACKAGES_DIR=str(home / "packages"),
        ARGOS_DEVICE_TYPE="cpu",
        ARGOS_INTRA_THREADS="1",
        **settings,
    )
    done = subprocess.run(
        [sys.executable, "-c", ARGOS_SCRIPT, str(package_file), json.dumps(texts)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def attnmt_ct2(run: Path, texts: list[str], tmp: Path, quantization: str | None) -> list[str]:
    """`attnmt translate --engine ctranslate2` with argostranslate's search settings."""
    model = export_ctranslate2(run, tmp / "ct2", quantization)
    (tmp / "in.txt").write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    argv = ["translate", "--engine", "ctranslate2", "--model", str(model)]
    argv += ["--beam", "4", "--length-penalty", "0.2", "-i", str(tmp / "in.txt")]
    assert main([*argv, "-o", str(tmp / "out.txt")]) == 0
    return (tmp / "out.txt").read_text(encoding="utf-8").splitlines()


@pytest.mark.skipif(not HAVE_ARGOS, reason="argostranslate not installed (pip install .[argos])")
@pytest.mark.parametrize(
    "quantization, settings",
    [
        # int8, as LibreTranslate's own packages: argostranslate's compute_type "auto" and
        # attnmt's "default" both run it in int8 (or both fall back to float32).
        ("int8", {}),
        # float32: "auto" would quantize it to int8 on most CPUs, so ask for the stored type.
        (None, {"ARGOS_COMPUTE_TYPE": "default"}),
    ],
)
def test_argostranslate_installs_and_translates_offline(sp_run, tmp_path, quantization, settings):
    sbd = toy_splitter(tmp_path / "en.onnx")
    path = export(sp_run, tmp_path / "dist", sbd, quantization=quantization)
    paragraph = " ".join(SENTENCES[:3])  # one line, three sentences for the splitter
    texts = [*SENTENCES, paragraph, "\n".join(SENTENCES[3:])]
    got = argos_translate(path, texts, tmp_path, **settings)
    assert got["attempts"] == [] and got["installed"] == [PKG]
    assert (tmp_path / "packages" / PKG / "minisbd" / "en.onnx").is_file()
    ours = attnmt_ct2(sp_run, SENTENCES, tmp_path, quantization)
    assert got["out"][: len(SENTENCES)] == ours
    # argostranslate splits a line into sentences and joins their translations with a space,
    # and keeps line breaks.
    assert got["out"][len(SENTENCES)] == " ".join(ours[:3])
    assert got["out"][-1] == "\n".join(ours[3:])
    # The model learned something: most training sentences come out as in the corpus.
    reference = dict(tiny_pairs())
    assert sum(reference[s] == t for s, t in zip(SENTENCES, ours)) >= 3


@pytest.mark.skipif(not HAVE_ARGOS, reason="argostranslate not installed (pip install .[argos])")
def test_without_a_packaged_splitter_argostranslate_needs_the_network(sp_run, tmp_path):
    # What the packaged minisbd/ is for, and proof that the test above really ran offline: the
    # same package less its splitter makes argostranslate try to download a MiniSBD model.
    path = export(sp_run, tmp_path / "dist", fake_sbd(tmp_path / "en.onnx"))
    bare = tmp_path / "bare.argosmodel"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bare, "w") as dst:
        for item in src.infolist():
            if "/minisbd/" not in item.filename:
                dst.writestr(item, src.read(item))
    got = argos_translate(bare, SENTENCES[:1], tmp_path)
    assert got["attempts"] and isinstance(got["out"], str)
