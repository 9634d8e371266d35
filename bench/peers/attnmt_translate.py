"""Time attnmt's translation for run_peers: greedy and beam 5 under the shared fixed output cap.

    attnmt_translate.py CKPT SRC OUT --cap N --threads N [--engine torch|int8|ct2]
                        [--device cpu] [--early-stop] [--fixed N]

Pipeline position: step 4 of bench/peers/run_peers.py, run with attnmt's interpreter, one child
process per row. Engines: ``torch`` (``Translator``), ``int8`` (``Translator`` with
``--quantize``), ``ct2`` (attnmt's CTranslate2 export, written next to OUT as ``attnmt_ct2/``).
Every engine decodes with the same options the peers get: one fixed output cap (no a*S+b rule),
64 sentences per batch, GNMT length penalty 1. Writes ``OUT.beam1``/``OUT.beam5`` (detokenized
text) and prints the timings (translation call only, no model loading) as ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from children import time_beams

if TYPE_CHECKING:
    from attnmt.translate import Translator


def bench_options(tr: Translator, cap: int, early_stop: bool, fixed: int) -> Translator:
    """``tr`` decoding as the peers do: one output cap, 64 sentences a batch, GNMT alpha 1.

    ``fixed`` > 0 forces every output to exactly ``fixed`` tokens (min = max length): the same
    work whatever the model learned. Options left None keep the checkpoint's defaults."""
    return tr.with_options(
        max_len_a=0.0,
        max_len_b=fixed or cap,
        min_len=fixed or None,
        batch_size=64,
        length_penalty=1.0,
        early_stop=True if early_stop else None,
    )


def open_translator(ckpt: str, engine: str, device: str, threads: int, out: str) -> Translator:
    """attnmt's ``Translator`` for the checkpoint on the engine asked for."""
    if engine == "ct2":
        from attnmt import ct2

        model_dir = ct2.export_ctranslate2(ckpt, Path(out).parent / "attnmt_ct2")
        return ct2.load_translator(model_dir, device, threads)
    from attnmt.translate import Translator

    return Translator.from_checkpoint(ckpt, device=device, quantize=engine == "int8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("ckpt", help="attnmt checkpoint (last.pt)")
    ap.add_argument("src", help="raw source text, one sentence per line")
    ap.add_argument("out", help="output prefix: OUT.beam1, OUT.beam5")
    ap.add_argument("--cap", type=int, required=True, help="output cap in tokens")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--engine", choices=["torch", "int8", "ct2"], default="torch")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--early-stop", action="store_true", help="beam ends when its best ends")
    ap.add_argument("--fixed", type=int, default=0, help="every output exactly N tokens")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tr = open_translator(args.ckpt, args.engine, args.device, args.threads, args.out)
    tr = bench_options(tr, args.cap, args.early_stop, args.fixed)
    by_beam = {beam: tr.with_options(beam=beam, n_best=1) for beam in (1, 5)}
    lines = Path(args.src).read_text().splitlines()
    time_beams(lambda beam: [h[0].text for h in by_beam[beam].translate(lines)], args.out)


if __name__ == "__main__":
    main()
