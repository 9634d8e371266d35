"""Training curves from a run directory: loss, learning rate, dev BLEU and validation perplexity.

Pipeline position: ``train.py`` writes ``RUN_DIR/train_log.jsonl`` -> **plot** -> ``curves.png``.
Also home of ``save_figure`` (atomic .png/.svg writes), which explain's heatmaps reuse.
Log lines (one JSON object each, written by ``train.train``)::

    {"kind": "train", "step", "epoch", "loss", "lr", "tokens_per_s", "elapsed_s"}
    {"kind": "valid", "step", "valid_loss", "valid_ppl", "dev_bleu", "dev_chrf"}
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from attnmt.atomic import write_atomic

LOG_NAME = "train_log.jsonl"


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib Figure as .png or .svg (by suffix), atomically."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg"):
        raise ValueError(f"{path}: choose a .png or .svg file name")
    # Atomic: readers (a browser, serve.py) never see half a picture.
    return write_atomic(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi))


def log_records(path: Path) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(line number, line, record) for each whole line of a training log. A last line without
    its newline is a torn write (a crash or a full disk mid-append) and is left out; a line that
    is not an object with an integer 'step' is an error naming file:line. The trainer (dropping
    redone steps on resume) and :func:`read_log` both read the log through this."""
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]  # after the last newline: torn
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
            raise ValueError(f"{path}:{lineno}: expected an object with an integer 'step'")
        yield lineno, line, rec


def read_log(path: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """Log records by kind, then by step; a malformed line is an error naming file:line (but a
    torn last line, a write cut short, is left out)."""
    if not path.is_file():
        raise ValueError(f"{path}: training log not found")
    by_kind: dict[str, dict[int, dict[str, Any]]] = {"train": {}, "valid": {}}
    lines = 0
    for lineno, _, rec in log_records(path):
        lines += 1
        if not isinstance(rec.get("kind"), str):
            raise ValueError(f"{path}:{lineno}: expected a string 'kind'")
        for key, value in rec.items():
            if key != "kind" and not (
                isinstance(value, (int, float)) and not isinstance(value, bool)
            ):
                raise ValueError(f"{path}:{lineno}: {key!r} is not a number: {value!r}")
        # Kinds other than train/valid are not drawn (yet); they are not errors.
        # A resumed run may log a step again; the later line describes the run that went on.
        by_kind.setdefault(rec["kind"], {})[rec["step"]] = rec
    if lines == 0:
        raise ValueError(f"{path}: training log has no lines")
    return by_kind


def _series(records: dict[int, dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    steps = [s for s in sorted(records) if key in records[s]]
    return steps, [float(records[s][key]) for s in steps]


def plot_training(run_dir: str | Path, out_path: str | Path | None = None) -> Path:
    """Draw RUN_DIR/train_log.jsonl as four panels; saves RUN_DIR/curves.png unless told where."""
    from matplotlib.figure import Figure  # object API: no pyplot global backend state
    from matplotlib.ticker import FuncFormatter

    run_dir = Path(run_dir)
    log = read_log(run_dir / LOG_NAME)
    out = Path(out_path) if out_path is not None else run_dir / "curves.png"
    train, valid = log["train"], log["valid"]

    fig = Figure(figsize=(11, 7), layout="constrained")
    (ax_loss, ax_lr), (ax_bleu, ax_ppl) = fig.subplots(2, 2, sharex=True)
    panels = [
        (ax_loss, "loss", [(train, "loss", "train loss"), (valid, "valid_loss", "valid loss")]),
        (ax_lr, "learning rate", [(train, "lr", "lr")]),
        (ax_bleu, "dev score", [(valid, "dev_bleu", "dev BLEU"), (valid, "dev_chrf", "dev chrF")]),
        (ax_ppl, "valid perplexity", [(valid, "valid_ppl", "valid ppl")]),
    ]
    for ax, ylabel, curves in panels:
        drawn = False
        for records, key, label in curves:
            xs, ys = _series(records, key)
            if xs:
                # Validation comes every few hundred steps: markers show where the points are.
                ax.plot(xs, ys, marker="o" if records is valid else None, ms=3, label=label)
                drawn = True
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    ppl = _series(valid, "valid_ppl")[1]
    if ppl and min(ppl) > 0:
        ax_ppl.set_yscale("log")  # perplexity falls by orders of magnitude early on
        plain = FuncFormatter(lambda v, _: f"{v:g}")  # "20", not "2 x 10^1"
        ax_ppl.yaxis.set_major_formatter(plain)
        ax_ppl.yaxis.set_minor_formatter(plain)
    for ax in (ax_bleu, ax_ppl):
        ax.set_xlabel("step")
    fig.suptitle(f"Training curves: {run_dir.name}")

    return save_figure(fig, out)
