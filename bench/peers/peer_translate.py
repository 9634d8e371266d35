"""Time a peer's translation for run_peers: greedy and beam 5 on pre-tokenized pieces.

    peer_translate.py joey JOEY_YAML SRC_PIECES OUT --cap N --threads N
    peer_translate.py ct2 CT2_MODEL_DIR SRC_PIECES OUT --cap N --threads N [--fixed N]

Pipeline position: step 4 of bench/peers/run_peers.py, run with the peers' interpreter (which has
no attnmt), one child process per row. OpenNMT-py needs no program here: its own
``onmt_translate -report_time`` is timed from its log. Writes ``OUT.beam1``/``OUT.beam5``
(space-separated pieces) and prints the timings (translation call only, no model loading) as
``RESULT {json}``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from children import time_beams


def joey(cfg_path: str, src: str, out: str, cap: int, threads: int) -> None:
    """Load a JoeyNMT model once and time ``predict`` (the function ``joeynmt translate``
    uses; its ``-o`` option crashes in 2.3.0)."""
    import torch
    from joeynmt.config import load_config, parse_global_args
    from joeynmt.prediction import predict, prepare

    torch.set_num_threads(threads)
    cfg = load_config(Path(cfg_path))
    cfg["testing"]["load_model"] = str(Path(cfg["model_dir"]) / "latest.ckpt")
    args = parse_global_args(cfg, rank=0, mode="translate")
    model, _, _, data = prepare(args, rank=0, mode="translate")
    lines = Path(src).read_text().splitlines()

    def fill(beam: int) -> None:  # untimed: JoeyNMT's stream dataset takes the lines one by one
        data.reset_cache()
        for line in lines:
            data.set_item(line)

    def translate(beam: int) -> list[str]:
        test_args = args.test._replace(
            beam_size=beam, max_output_length=cap, batch_size=64, batch_type="sentence", n_best=1
        )
        _, _, hyps, _, _, _ = predict(
            model=model, data=data, device=args.device, n_gpu=args.n_gpu, rank=0,
            compute_loss=False, normalization="none", num_workers=0, args=test_args,
            autocast=args.autocast,
        )  # fmt: skip
        assert len(hyps) == len(lines), (len(hyps), len(lines))
        return hyps

    time_beams(translate, out, prepare=fill)


def ct2(model_dir: str, src: str, out: str, cap: int, threads: int, fixed: int = 0) -> None:
    """CTranslate2 on pre-tokenized pieces. ``fixed`` > 0: every output is exactly ``fixed``
    tokens (min = max decoding length), so two models of the same size do the same work whatever
    they learned -- an engine-level comparison of two exports."""
    import ctranslate2

    tr = ctranslate2.Translator(model_dir, device="cpu", intra_threads=threads, inter_threads=1)
    batch = [line.split() for line in Path(src).read_text().splitlines()]
    lengths = dict(min_decoding_length=fixed, max_decoding_length=fixed) if fixed else {}

    def translate(beam: int) -> list[str]:
        found = tr.translate_batch(
            batch, beam_size=beam, max_batch_size=64, length_penalty=1.0,
            **(lengths or dict(max_decoding_length=cap)),
        )  # fmt: skip
        return [" ".join(r.hypotheses[0]) for r in found]

    time_beams(translate, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("toolkit", choices=["joey", "ct2"])
    ap.add_argument("model", help="JoeyNMT config (joey) or CTranslate2 model directory (ct2)")
    ap.add_argument("src", help="source pieces, space-separated, one sentence per line")
    ap.add_argument("out", help="output prefix: OUT.beam1, OUT.beam5")
    ap.add_argument("--cap", type=int, required=True, help="output cap in tokens")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--fixed", type=int, default=0, help="ct2: every output exactly N tokens")
    args = ap.parse_args()
    if args.toolkit == "joey":
        if args.fixed:
            ap.error("--fixed is for ct2 only")
        joey(args.model, args.src, args.out, args.cap, args.threads)
    else:
        ct2(args.model, args.src, args.out, args.cap, args.threads, args.fixed)


if __name__ == "__main__":
    main()
