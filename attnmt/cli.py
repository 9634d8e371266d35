"""Command line: ``attnmt SUBCOMMAND`` (also ``python -m attnmt``). Parsing and dispatch only.

Every failure a user can cause (bad config, corpus line, checkpoint, input) prints one clear
``error:`` line naming the file and line or the option, and exits non-zero.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # cli imports lazily so `attnmt --help` stays fast
    from collections.abc import Callable, Iterator
    from typing import BinaryIO

    import torch

    from attnmt.translate import Translator

DEMO_CONFIG = Path(__file__).parent / "configs" / "lstm_demo.yaml"


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set model.hidden=512 (repeatable)",
    )


def _add_decode_args(p: argparse.ArgumentParser) -> None:
    # dest names are DecodeOptions fields: _translator passes them on by name.
    p.add_argument("--beam", type=int, help="beam size (1 = greedy); default from the checkpoint")
    p.add_argument("--batch-size", type=int, help="sentences per batch")
    p.add_argument("--max-len-a", type=float, help="output length limit a*src_len+b: a")
    p.add_argument("--max-len-b", type=int, help="output length limit a*src_len+b: b")
    p.add_argument("--min-len", type=int, help="fewest output tokens before <eos> may end one")
    p.add_argument("--length-penalty", type=float, help="GNMT length penalty alpha")
    p.add_argument(
        "--no-repeat-ngram",
        type=int,
        metavar="N",
        help="never repeat an n-gram of N tokens within an output (0 = off)",
    )
    p.add_argument(
        "--repetition-penalty",
        type=float,
        metavar="X",
        help="lower the scores of tokens an output already holds (CTRL; >1 penalises, 1 = off)",
    )
    p.add_argument(
        "--early-stop",
        action="store_true",
        default=None,
        help="beam: end a sentence when its best candidate ends (as OpenNMT-py, JoeyNMT)",
    )
    _add_device_args(p)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = default)")


def _add_device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (GPU if available), cpu or cuda")
    p.add_argument(
        "--quantize", action="store_true", help="int8 weights (CPU for torch; ~2x faster)"
    )


def _device(args: argparse.Namespace) -> torch.device:
    from attnmt.interface import pick_device

    # int8 quantization is a CPU feature of torch, so "auto" means the CPU with --quantize.
    return pick_device("cpu" if args.quantize and args.device == "auto" else args.device)


def _translator(args: argparse.Namespace) -> Translator:
    """The Translator the flags ask for: engine, device and threads, then decode options."""
    import dataclasses

    from attnmt.translate import DecodeOptions, Translator

    if getattr(args, "engine", "torch") == "ctranslate2":
        from attnmt.ct2 import load_translator

        tr = load_translator(
            args.model,
            device=_device(args),
            threads=args.threads,
            compute_type="int8" if args.quantize else "default",
        )
    else:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        tr = Translator.from_checkpoint(args.model, device=_device(args), quantize=args.quantize)
    flags = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(DecodeOptions)}
    return tr.with_options(**flags)


# --------------------------------------------------------------------------------------------
# Subcommands
# --------------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from attnmt.config import load_config
    from attnmt.train import train

    minutes = [] if args.minutes is None else [f"train.max_minutes={args.minutes}"]
    train(load_config(args.config, [*args.overrides, *minutes]))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from attnmt.config import load_config
    from attnmt.prepare import prepare

    cfg = load_config(args.config, args.overrides)
    if not cfg.data.prepared:
        raise ValueError(
            "prepare: set data.prepared to the directory to write (--set data.prepared=DIR)"
        )
    prepare(cfg, progress=cfg.train.progress)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from attnmt.demo import run_demo

    return run_demo(args.out, args.overrides, args.config)


def iter_input(path: str | None) -> Iterator[str]:
    """The lines to translate, from ``-i FILE`` or stdin, read alike and as they are needed: one
    per ``\\n`` (never split at U+2028 and the like), strict UTF-8 naming the file or
    ``<stdin>`` and the line, a leading BOM dropped (``corpus.iter_lines``)."""
    from attnmt.corpus import iter_lines

    return iter_lines(path) if path else iter_lines(sys.stdin.buffer, "<stdin>")


def _with_src_lang(tr: Translator, args: argparse.Namespace) -> Translator:
    """``tr`` splitting sentences by the rules of ``--src-lang``, when it is given."""
    if not args.src_lang:
        return tr
    from attnmt.argos import check_language

    return tr.with_src_lang(check_language("--src-lang", args.src_lang))


def cmd_translate(args: argparse.Namespace) -> int:
    """Streams: the input is translated a window of lines at a time (``attnmt.stream``), so
    memory is bounded by the window; stdout gets each window as soon as it is done, and ``-o``
    is written atomically (the file appears, whole, at the end)."""
    from attnmt.atomic import prepare_target, write_atomic
    from attnmt.stream import DEFAULT_WINDOW, write_translations

    window = DEFAULT_WINDOW if args.window is None else args.window
    if window < 1:
        raise ValueError(f"--window: must be >= 1, got {window}")
    if args.output:
        prepare_target(args.output)  # a directory in the way is refused before any work
    tr = _with_src_lang(_translator(args), args)
    # Default: a bar when the output goes to a file and stderr is a terminal (not a log file,
    # a pipe or a test's capture, where it would only be noise beside an error message).
    progress = bool(args.output) and sys.stderr.isatty()
    progress = progress if args.progress is None else args.progress

    def run(write: Callable[[str], object]) -> None:
        lines = iter_input(args.input)
        write_translations(tr, lines, write, window, args.scores, args.align, progress)

    def to_stdout(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()  # each window is out as soon as it is translated

    def to_file(f: BinaryIO) -> None:
        run(lambda text: (f.write(text.encode("utf-8")), f.flush()))  # held by the OS, not us

    if args.output:
        write_atomic(args.output, to_file)
    else:
        run(to_stdout)
    return 0


def cmd_align(args: argparse.Namespace) -> int:
    from attnmt.align import align_pairs, format_links, write_pharaoh
    from attnmt.atomic import prepare_target
    from attnmt.corpus import read_corpus

    if args.output:
        prepare_target(args.output)
    tr = _translator(args)
    pairs = read_corpus(args.input, reverse=args.reverse).pairs
    links = align_pairs(tr, pairs, layer=args.layer, head=args.head)
    if args.output:
        write_pharaoh(args.output, links)
    else:
        sys.stdout.write("".join(format_links(x) + "\n" for x in links))
    return 0


def _alignment_report(tr: Translator, pairs: list[tuple[str, str]], gold_path: str, n: int) -> str:
    """AER of the model's attention, forced to read the first ``n`` references, against gold
    links (one line per pair of the whole test file)."""
    from attnmt.align import align_pairs, alignment_error, read_pharaoh, words

    golds = read_pharaoh(gold_path, [(len(words(s)), len(words(t))) for s, t in pairs])
    return alignment_error(align_pairs(tr, pairs[:n]), golds[:n]).report()


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from attnmt.atomic import write_text_atomic
    from attnmt.corpus import read_corpus
    from attnmt.evaluate import evaluate

    tr = _with_src_lang(_translator(args), args)
    every = read_corpus(args.test, reverse=args.reverse).pairs
    pairs = every[: args.limit] if args.limit else every
    result = evaluate(tr, pairs)
    if args.json:
        fields = ["bleu", "chrf", "bleu_signature", "chrf_signature", "perplexity", "sentences"]
        print(json.dumps({k: getattr(result, k) for k in fields}, indent=2))
    else:
        print(result.report())
    if args.align_gold:
        print(_alignment_report(tr, every, args.align_gold, len(pairs)))
    sys.stdout.flush()  # the scores are out even if the hypotheses cannot be written
    if args.output:
        write_text_atomic(args.output, "".join(h + "\n" for h in result.hypotheses))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    import json

    from attnmt.explain import explain, plot_attention, render_table

    tr = _translator(args)
    trace = explain(tr, args.text, top_k=args.top_k)
    if args.json:
        print(json.dumps(trace.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(render_table(trace))
    if args.plot:
        plot_attention(trace, args.plot, per_head=args.per_head)
        print(f"heatmap written to {args.plot}", file=sys.stderr)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from attnmt.plot import plot_training

    print(f"curves written to {plot_training(args.run_dir, args.out)}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from attnmt.serve import models_from_args, serve

    serve(
        models=models_from_args(args.model, args.src_lang, args.tgt_lang),
        host=args.host,
        port=args.port,
        device=str(_device(args)),
        quantize=args.quantize,
        api_keys=args.api_keys,
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if args.format == "argos":
        from attnmt.argos import export_argos

        path = export_argos(
            args.model,
            args.out,
            from_code=args.from_code,
            to_code=args.to_code,
            from_name=args.from_name,
            to_name=args.to_name,
            sbd_model=args.sbd_model,
            package_version=args.package_version,
            quantization=args.quantization,
        )
        print(f"wrote Argos Translate package {path}")
        return 0
    from attnmt.ct2 import export_ctranslate2

    path = export_ctranslate2(
        args.model, args.out, quantization=args.quantization, force=args.force
    )
    print(f"exported CTranslate2 model to {path}")
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    from attnmt.average import average_checkpoints

    done = average_checkpoints(args.checkpoints, args.out)
    print(
        f"averaged {done.checkpoints} checkpoints ({done.parameters:,} parameters) into "
        f"{done.path}: weights, config and tokenizers, no training state (not resumable)"
    )
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == "align":
        return _data_align(args)
    from attnmt.download import download_anki

    path = download_anki(args.pair, args.out, base_url=args.base_url)
    print(f"corpus written to {path}")
    return 0


def _data_align(args: argparse.Namespace) -> int:
    from attnmt.wordalign import EflomalMissing, align_corpus

    try:
        path = align_corpus(
            args.input,
            args.output,
            method=args.symmetrize,
            reverse=args.reverse,
            lowercase=args.lowercase,
            verbose=args.verbose,
        )
    except EflomalMissing as e:  # an optional extra: say how to install it, as for bad input
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"alignments written to {path}")
    return 0


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnmt", description="Attention encoder-decoder machine translation."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    commands = (_add_demo, _add_prepare, _add_train, _add_translate, _add_evaluate, _add_align,
                _add_explain, _add_plot, _add_serve, _add_export, _add_average,
                _add_data)  # fmt: skip
    for add in commands:
        add(sub)
    return parser


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train on the embedded English-Spanish demo corpus and explain")
    p.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    p.add_argument("--config", default=str(DEMO_CONFIG), help="demo config (default: LSTM)")
    _add_config_args(p)
    p.set_defaults(func=cmd_demo)


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="read, split and tokenize a corpus once into memory-mapped shards (data.prepared); "
        "`attnmt train` with data.prepared set does this on first use",
    )
    p.add_argument("config", nargs="?", help="YAML config whose data section names the corpus")
    _add_config_args(p)
    p.set_defaults(func=cmd_prepare)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train (or resume) a model from a YAML config")
    p.add_argument(
        "config",
        nargs="?",
        help="YAML config (see configs/); default: all defaults. The run goes to train.out_dir, "
        "or runs/CONFIG_NAME when the config names none",
    )
    _add_config_args(p)
    p.add_argument(
        "--minutes",
        type=float,
        metavar="N",
        help="plan the run for N minutes on this machine, validation included "
        "(= --set train.max_minutes=N)",
    )
    p.set_defaults(func=cmd_train)


def _add_translate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("translate", help="translate lines from stdin or -i FILE")
    p.add_argument("--model", required=True, help="checkpoint (.pt or run dir), or CT2 dir")
    p.add_argument("-i", "--input", help="input file (default stdin)")
    p.add_argument("-o", "--output", help="output file (default stdout)")
    p.add_argument("--n-best", type=int, help="hypotheses per sentence, one per line")
    p.add_argument("--scores", action="store_true", help="prefix each line with its score")
    p.add_argument(
        "--align",
        action="store_true",
        help="add word alignments from attention after ' ||| ' (Pharaoh i-j: source word i, "
        "output word j, 0-based)",
    )
    p.add_argument(
        "--engine",
        choices=["torch", "ctranslate2"],
        default="torch",
        help="torch (a checkpoint) or ctranslate2 (a directory from attnmt export)",
    )
    p.add_argument(
        "--window",
        type=int,
        metavar="N",
        help="lines read, sorted by length and translated at a time; memory grows with it "
        "(default 4096)",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar on stderr (lines, lines/s); default: on with -o when stderr is a "
        "terminal, off for stdout",
    )
    _add_split_args(p)
    _add_decode_args(p)
    p.set_defaults(func=cmd_translate)


def _add_split_args(p: argparse.ArgumentParser) -> None:
    # dest split_sentences is a DecodeOptions field: _translator passes it on by name.
    p.add_argument(
        "--no-split-sentences",
        dest="split_sentences",
        action="store_false",
        default=None,
        help="translate each line whole, not sentence by sentence (decode.split_sentences)",
    )
    p.add_argument(
        "--src-lang",
        metavar="CODE",
        help="source language (ISO 639: en, es, pt-BR) whose rules split sentences; "
        "default: generic rules",
    )


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="BLEU, chrF and perplexity on a test set")
    p.add_argument("--model", required=True, help="checkpoint (.pt or run dir)")
    p.add_argument("--test", required=True, help="test pairs: TSV file or SRC_FILE,TGT_FILE")
    p.add_argument("--reverse", action="store_true", help="the test TSV's columns are tgt, src")
    p.add_argument("--limit", type=int, default=0, help="use the first N pairs only")
    p.add_argument("-o", "--output", help="also write the hypotheses to this file")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.add_argument(
        "--align-gold",
        help="gold word alignments, one Pharaoh line per test pair (i-j sure, i?j possible): "
        "also report the attention's AER, precision and recall",
    )
    _add_split_args(p)
    _add_decode_args(p)
    p.set_defaults(func=cmd_evaluate)


def _add_align(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "align", help="word alignments of given translations, from the model's attention"
    )
    p.add_argument("--model", required=True, help="checkpoint (.pt or run dir)")
    p.add_argument("-i", "--input", required=True, help="pairs: TSV file or SRC_FILE,TGT_FILE")
    p.add_argument("-o", "--output", help="Pharaoh alignment file (default stdout)")
    p.add_argument("--reverse", action="store_true", help="the TSV's columns are tgt, src")
    p.add_argument("--layer", type=int, help="Transformer layer (default: model.align_layer)")
    p.add_argument(
        "--head",
        type=int,
        help="Transformer head, -1 = the layer's mean (default: model.align_head)",
    )
    _add_decode_args(p)
    p.set_defaults(func=cmd_align)


def _add_explain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="show decoding step by step, with attention")
    p.add_argument("--model", required=True, help="checkpoint (.pt or run dir)")
    p.add_argument("text", help="the sentence to translate and explain")
    p.add_argument("--top-k", type=int, default=5, help="next-word candidates shown per step")
    p.add_argument("--json", action="store_true", help="print the trace as JSON")
    p.add_argument("--plot", help="write an attention heatmap (.png or .svg)")
    p.add_argument("--per-head", action="store_true", help="heatmap per layer and head")
    _add_decode_args(p)
    p.set_defaults(func=cmd_explain)


def _add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="draw training curves from a run directory")
    p.add_argument("run_dir")
    p.add_argument("--out", help="image path (default RUN_DIR/curves.png)")
    p.set_defaults(func=cmd_plot)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="HTTP API, LibreTranslate API and web page around models")
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="[PAIR=]PATH",
        help="a checkpoint (.pt or run dir) or CTranslate2 export for --src-lang -> --tgt-lang; "
        "or PAIR=PATH once per model (--model en-es=CKPT --model es-en=DIR); or a directory of "
        "models named by their pairs (en-es.pt, es-en/)",
    )
    p.add_argument(
        "--api-keys",
        metavar="FILE",
        help="require an API key on /translate and /detect: one KEY [REQUESTS_PER_MINUTE] a line",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--src-lang", default="en", help="source language code (LibreTranslate API)")
    p.add_argument("--tgt-lang", default="es", help="target language code (LibreTranslate API)")
    _add_device_args(p)
    p.set_defaults(func=cmd_serve)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a Transformer to CTranslate2 or Argos Translate")
    p.add_argument("--model", required=True, help="checkpoint (.pt or run dir)")
    p.add_argument(
        "--format",
        choices=["ctranslate2", "argos"],
        default="ctranslate2",
        help="ctranslate2 (a model directory) or argos (a .argosmodel for LibreTranslate)",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--quantization", help="CTranslate2 weight type: int8, int8_float32, float16, ..."
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty folder that is not an earlier export (its other files stay)",
    )
    a = p.add_argument_group("argos")
    a.add_argument("--from-code", help="source language code, e.g. en (required for argos)")
    a.add_argument("--to-code", help="target language code, e.g. es (required for argos)")
    a.add_argument("--from-name", help="source language name, e.g. English (default: the code)")
    a.add_argument("--to-name", help="target language name, e.g. Spanish (default: the code)")
    a.add_argument(
        "--sbd-model",
        help="MiniSBD sentence splitter (.onnx) for the source language (default: a cached one)",
    )
    a.add_argument("--package-version", default="1.0", help="package version (default 1.0)")
    p.set_defaults(func=cmd_export)


def _add_average(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "average",
        help="average the parameters of checkpoints of one run into one checkpoint",
        description="The mean of the checkpoints' parameters (tokenizers and config must be "
        "the same), written as a checkpoint without training state: it translates, evaluates "
        "and exports like any other.",
    )
    p.add_argument("checkpoints", nargs="+", metavar="CKPT", help="checkpoints (.pt or run dir)")
    p.add_argument("--out", required=True, help="the averaged checkpoint to write (.pt)")
    p.set_defaults(func=cmd_average)


class _DataParser(argparse.ArgumentParser):
    """``attnmt data`` takes a sub-command; a bare PAIR (``attnmt data spa-eng``, the form from
    before ``align`` existed) still means ``attnmt data download PAIR``, options in any order."""

    COMMANDS = ("download", "align", "-h", "--help")

    def parse_known_args(
        self, args: list[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        args = list(sys.argv[1:] if args is None else args)
        if args and args[0] not in self.COMMANDS:
            args.insert(0, "download")
        return super().parse_known_args(args, namespace)


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="download a Tatoeba corpus (data PAIR), or word-align a corpus (data align)",
        description="`attnmt data PAIR ...` is short for `attnmt data download PAIR ...`.",
    )
    p.__class__ = _DataParser  # the top-level sub-parsers make plain parsers; this one adds PAIR
    data = p.add_subparsers(
        dest="data_command",
        required=True,
        metavar="{download,align}",
        parser_class=argparse.ArgumentParser,  # not _DataParser: only `data` takes a bare PAIR
    )
    d = data.add_parser("download", help="download a ManyThings/Tatoeba Anki corpus, e.g. spa-eng")
    d.add_argument("pair", help="language pair as named by manythings.org, e.g. spa-eng")
    d.add_argument("--out", default="data", help="directory to unpack into (default data/)")
    d.add_argument("--base-url", default="https://www.manythings.org/anki/", help="mirror URL")
    a = data.add_parser(
        "align",
        help="word-align a corpus with eflomal (pip install 'attnmt[eflomal]'; GPL-3.0)",
        description="Word alignments of a parallel corpus without gold, by eflomal run both "
        "ways and symmetrised: one Pharaoh line (i-j, source word first) per pair.",
    )
    a.add_argument("-i", "--input", required=True, help="pairs: TSV file or SRC_FILE,TGT_FILE")
    a.add_argument("-o", "--output", required=True, help="Pharaoh alignment file to write")
    a.add_argument(
        "--symmetrize",
        default="grow-diag-final-and",
        metavar="METHOD",
        help="grow-diag-final-and (default), grow-diag-final, grow-diag, intersection or union",
    )
    a.add_argument("--reverse", action="store_true", help="the TSV's columns are tgt, src")
    a.add_argument("--lowercase", action="store_true", help="lowercase both sides first")
    a.add_argument("--verbose", action="store_true", help="eflomal's own log on stderr")
    p.set_defaults(func=cmd_data)


# Numeric flags that are not decode options (DecodeOptions checks those): smallest, largest.
FLAG_BOUNDS: dict[str, tuple[int, int | None]] = {
    "threads": (0, None),
    "port": (1, 65535),
    "limit": (0, None),
    "top_k": (1, None),
}


def check_flags(args: argparse.Namespace) -> None:
    """Refuse an out-of-range numeric flag by name, before anything is loaded."""
    for dest, (low, high) in FLAG_BOUNDS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        flag = "--" + dest.replace("_", "-")
        if value < low:
            raise ValueError(f"{flag}: must be >= {low}, got {value}")
        if high is not None and value > high:
            raise ValueError(f"{flag}: must be <= {high}, got {value}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from attnmt.atomic import WriteError
    from attnmt.checkpoint import CheckpointError
    from attnmt.config import ConfigError
    from attnmt.download import DownloadError

    user_errors: tuple[type[BaseException], ...] = (
        ConfigError,
        CheckpointError,
        DownloadError,
        WriteError,
        ValueError,
        FileNotFoundError,
    )
    try:
        check_flags(args)
        return args.func(args)
    except user_errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
