"""Argos Translate packages (``.argosmodel``): the model format LibreTranslate serves.

Pipeline position: a Transformer checkpoint -> :func:`attnmt.ct2.export_ctranslate2` ->
**export_argos** -> one zip that ``argostranslate.package.install_from_path`` installs and
``argostranslate.translate.translate`` (so LibreTranslate) runs, offline.

What argostranslate does with a package (read in its source: argostranslate 1.11 and
LibreTranslate's fork argos-translate-lt 1.12, which both install as ``argostranslate``), and
what follows for the package written here:

- Layout: a zip of one folder, extracted as is into the packages directory. The folder holds
  ``metadata.json`` (codes and names, ``package_version``), ``model/`` (opened with
  ``ctranslate2.Translator``), ``sentencepiece.model`` (the one tokenizer for both sides),
  ``README.md`` and a sentence splitter.
- Source: each sentence goes to ``translate_batch`` as SentencePiece pieces (``encode(out_type=
  str)``) with no ``</s>``; CTranslate2 appends the end token itself because our export's
  ``config.json`` says ``add_source_eos`` (attnmt sources are ids + ``<eos>``), and it starts the
  output at ``decoder_start_token`` ``<bos>``, so no ``target_prefix`` is written.
- Vocabulary: CTranslate2 maps pieces by string, and argostranslate has one SentencePiece model,
  so the checkpoint must have one SentencePiece tokenizer shared by source and target
  (``data.tokenizer: sentencepiece`` with ``data.shared_vocab: true``); others are refused.
- Output: the pieces of all sentences of a line are joined, ``decode_pieces``-ed, then every
  ``▁`` and ``_`` becomes a space and one leading space is dropped. Search is CTranslate2's beam
  (``ARGOS_BEAM_SIZE``, default 4) with ``length_penalty=0.2`` and ``replace_unknowns=True``, so
  argostranslate's text is ``attnmt translate --engine ctranslate2 --beam 4 --length-penalty
  0.2``'s, except where an output holds ``_`` or ``<unk>``.
- Sentence splitter: a package's ``minisbd/`` folder is looked for first, then ``stanza/``, then
  ``spacy/``. Only ``minisbd/*.onnx`` (a MiniSBD model: Stanza's tokenizer exported to ONNX,
  one per language) loads with no network: with ``stanza/``, ``stanza.Pipeline`` fetches
  ``resources.json`` on every load (its default download method) and argos-translate-lt ignores
  the folder; ``spacy/`` is read only under ``ARGOS_CHUNK_TYPE=SPACY``; and with no splitter
  MiniSBD downloads its model on first use. So every package carries a MiniSBD model for its
  source language: a file the caller names, or the one MiniSBD, argostranslate or LibreTranslate
  already cached.

attnmt never imports argostranslate or minisbd (AGPL): the package is files, written here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

from attnmt.atomic import write_atomic
from attnmt.checkpoint import Checkpoint
from attnmt.ct2 import ExportError, export_ctranslate2
from attnmt.tokenizer import SentencePieceTokenizer

ARGOS_VERSION = "1.11.0"  # the argostranslate whose loader this layout follows (packaged MiniSBD)
SBD_DIR = "minisbd"  # the splitter folder argostranslate looks for first
# A code is also part of the package's folder name, so it is kept to ISO 639 letters and
# BCP 47-style subtags ("en", "pt-BR", "zh-Hans"); argostranslate's own codes ("zt", "pb") fit.
_CODE_RE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")
_VERSION_RE = re.compile(r"\d+(\.\d+)*")  # what LibreTranslate's packaging.version compares
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed entry times: the same checkpoint gives the same zip


def shared_sentencepiece(ckpt: Checkpoint, where: str | Path) -> bytes:
    """The serialized SentencePiece model source and target share; ExportError if there is none."""
    src, tgt = ckpt.src_tokenizer, ckpt.tgt_tokenizer
    if not isinstance(src, SentencePieceTokenizer) or not isinstance(tgt, SentencePieceTokenizer):
        raise ExportError(
            f"{where}: an Argos package needs a SentencePiece tokenizer (data.tokenizer: "
            f"sentencepiece); this checkpoint's tokenizers are {src.kind!r} and {tgt.kind!r}"
        )
    if src.model_proto != tgt.model_proto:
        raise ExportError(
            f"{where}: an Argos package has one sentencepiece.model for both languages; this "
            "checkpoint has separate source and target vocabularies (train with "
            "data.shared_vocab: true)"
        )
    return src.model_proto


def check_language(flag: str, code: str | None) -> str:
    if not code:
        raise ExportError(f"{flag}: a language code is required for an Argos package (e.g. en, es)")
    if not _CODE_RE.fullmatch(code):
        raise ExportError(
            f"{flag}: {code!r} is not a language code (ISO 639 letters, optional -subtags: "
            "en, es, pt-BR, zh-Hans)"
        )
    return code


def sbd_candidates(code: str) -> list[Path]:
    """Where a MiniSBD model for ``code`` may already be cached, in the order searched."""
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return [
        data_home / "argos-translate" / SBD_DIR / f"{code}.onnx",  # argostranslate, LibreTranslate
        Path.home() / ".cache" / "minisbd" / f"{code}.onnx",  # MiniSBD's own cache
    ]


def find_sbd_model(code: str, given: str | Path | None) -> Path:
    """The MiniSBD model (.onnx) the package carries as its sentence splitter."""
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise ExportError(f"--sbd-model: {path}: no such file")
        if path.suffix != ".onnx":
            # argostranslate loads only files ending in .onnx from minisbd/.
            raise ExportError(f"--sbd-model: {path}: expected a MiniSBD model ending in .onnx")
        return path
    for path in sbd_candidates(code):
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in sbd_candidates(code))
    raise ExportError(
        f"no sentence splitter for source language {code!r}: pass --sbd-model FILE.onnx, a "
        f'MiniSBD model for {code!r} (one download: pip install minisbd; python -c "from '
        f"minisbd.models import get_model_file as g; print(g('{code}'))\"); looked in {looked}"
    )


def package_name(from_code: str, to_code: str, version: str) -> str:
    """argospm's name for a package plus its version, as LibreTranslate's Locomotive names them."""
    return f"translate-{from_code}_{to_code}-{version.replace('.', '_')}"


def _readme(ckpt: Checkpoint, meta: dict[str, str], sbd: Path, quantization: str | None) -> str:
    m, d = ckpt.config.model, ckpt.config.data
    corpus = Path(d.corpus).name if d.corpus != "demo" else "demo"
    return (
        f"# {meta['from_name']} - {meta['to_name']} version {meta['package_version']}\n\n"
        f"Translates {meta['from_name']} ({meta['from_code']}) into {meta['to_name']} "
        f"({meta['to_code']}). Trained with attnmt: a pre-norm Transformer, d_model {m.hidden}, "
        f"{m.layers}+{m.layers} layers, {m.heads} heads, feed-forward {m.ff_dim}, a shared "
        f"SentencePiece vocabulary of {ckpt.src_tokenizer.vocab_size} pieces; corpus {corpus}"
        f"{' (columns reversed)' if d.reverse else ''}.\n\n"
        f"- model/: CTranslate2 ({quantization or 'float32'} weights); it also opens with "
        "`attnmt translate --engine ctranslate2 --model model`\n"
        "- sentencepiece.model: the tokenizer of both languages\n"
        f"- {SBD_DIR}/{sbd.name}: the MiniSBD sentence splitter for {meta['from_code']} "
        "(loaded from the package, so nothing is downloaded at run time)\n"
    )


def _write_zip(path: Path, entries: list[tuple[str, bytes | Path]]) -> None:
    def write(f) -> None:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, content in entries:
                info = zipfile.ZipInfo(name, _ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16  # rw-r--r-- when unzipped
                with zf.open(info, "w") as dst:
                    if isinstance(content, Path):
                        with open(content, "rb") as src:
                            shutil.copyfileobj(src, dst, 1 << 20)
                    else:
                        dst.write(content)

    write_atomic(path, write)


def export_argos(
    ckpt_path: str | Path,
    out_dir: str | Path,
    from_code: str | None,
    to_code: str | None,
    from_name: str | None = None,
    to_name: str | None = None,
    sbd_model: str | Path | None = None,
    package_version: str = "1.0",
    quantization: str | None = None,
) -> Path:
    """Write ``out_dir/translate-{from}_{to}-{version}.argosmodel``; returns its path.

    ``from_name``/``to_name`` default to the codes; ``sbd_model`` is a MiniSBD ``.onnx`` model
    for the source language (default: one already cached, see :func:`sbd_candidates`);
    ``quantization`` is CTranslate2's (None = float32, "int8" as LibreTranslate's own models).
    Everything is checked before anything is written; the zip appears whole or not at all.
    """
    ckpt = Checkpoint.load(ckpt_path)
    if ckpt.config.model.arch != "transformer":
        raise ExportError(
            f"{ckpt_path}: model.arch is {ckpt.config.model.arch!r}; an Argos package holds a "
            "CTranslate2 model and CTranslate2 has no RNN/LSTM decoder, so only Transformer "
            "checkpoints (model.arch: transformer) can be packaged"
        )
    sp_model = shared_sentencepiece(ckpt, ckpt_path)
    from_code = check_language("--from-code", from_code)
    to_code = check_language("--to-code", to_code)
    if from_code == to_code:
        raise ExportError(f"--from-code and --to-code are both {from_code!r}")
    if not _VERSION_RE.fullmatch(package_version):
        raise ExportError(f"--package-version: {package_version!r} is not a version like 1.0")
    sbd = find_sbd_model(from_code, sbd_model)
    meta = {
        "package_version": package_version,
        "argos_version": ARGOS_VERSION,
        "from_code": from_code,
        "from_name": from_name or from_code,
        "to_code": to_code,
        "to_name": to_name or to_code,
    }
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"--out: {out_dir} exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    top = package_name(from_code, to_code, package_version)
    with tempfile.TemporaryDirectory(prefix=f".{top}.", dir=out_dir) as tmp:
        model_dir = export_ctranslate2(ckpt_path, Path(tmp) / "model", quantization)
        entries: list[tuple[str, bytes | Path]] = [
            (f"{top}/metadata.json", (json.dumps(meta, indent=2) + "\n").encode()),
            (f"{top}/README.md", _readme(ckpt, meta, sbd, quantization).encode()),
            (f"{top}/sentencepiece.model", sp_model),
            (f"{top}/{SBD_DIR}/{sbd.name}", sbd),
        ]
        entries += [
            (f"{top}/model/{p.relative_to(model_dir).as_posix()}", p)
            for p in sorted(model_dir.rglob("*"))
            if p.is_file()
        ]
        path = out_dir / f"{top}.argosmodel"
        _write_zip(path, entries)
    return path
