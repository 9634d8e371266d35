"""The checkpoint format, the config -> model adapter, and the run directory's one writer.

Pipeline position: ``train`` -> **Checkpoint.save** -> file -> **Checkpoint.load** ->
``Translator``, ``export``, resume. Nothing else reads or writes checkpoint files.

A checkpoint is one ``torch.save`` dict (format tag ``attnmt-checkpoint-v1``) of plain data that
loads with ``weights_only=True`` (no code runs on load): the resolved config, the model weights,
both tokenizers, and for ``last.pt`` the training state exact resume needs (optimizer, progress,
RNG states, and the weights' moving average when one is kept). Saves are atomic (temp file,
fsync, rename); a failed save leaves the old file.

Resume: :func:`check_resumable` compares the run's config with the checkpoint's and refuses,
naming every key that differs, unless the key is in :data:`RESUMABLE_KEYS`. :class:`RunLock`
keeps a second trainer out of a run directory (an OS lock: it dies with its process).
"""

from __future__ import annotations

import dataclasses
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attnmt.atomic import make_dirs, write_atomic, write_error
from attnmt.config import Config, ConfigError, ModelConfig, config_from_dict, config_to_dict
from attnmt.interface import Seq2Seq
from attnmt.tokenizer import Tokenizer, tokenizer_from_dict

FORMAT = "attnmt-checkpoint-v1"

# Keys a resumed run may change: how long it goes on, how often it reports, where it runs, how dev
# BLEU is measured, and inference defaults. Everything else (data, tokenizer, model, optimizer,
# schedule, seed) shaped the weights already trained, so a change there is refused on resume.
RESUMABLE_KEYS = frozenset(
    {
        "train.out_dir",  # a run directory may be moved
        "data.workers",  # how many processes prepare the shards, not what they hold
        "train.max_steps",
        "train.max_epochs",
        "train.max_minutes",  # but linear / cosine runs keep their plan: train.check_plan_kept
        "train.plan_steps",  # how a budget run times itself before its plan is fixed
        "train.keep_last",  # how many step-N.pt files are kept, not what they hold
        "train.patience",
        "train.eval_every",
        "train.save_every",
        "train.log_every",
        "train.eval_beam",
        "train.eval_max_sents",
        "train.threads",
        "train.device",
        "train.progress",
    }
)
RESUMABLE_SECTIONS = frozenset({"decode"})  # inference defaults only


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, not an attnmt checkpoint, or unusable here."""


class ResumeError(CheckpointError):
    """A run directory whose checkpoint cannot be resumed with the given config."""


class RunDirBusy(CheckpointError):
    """Another process is training in this run directory."""


def build_model(cfg: ModelConfig, src_vocab: int, tgt_vocab: int) -> Seq2Seq:
    """The one place a config becomes a model constructor call."""
    if cfg.arch == "lstm":
        from attnmt.rnn import RNNSeq2Seq

        return RNNSeq2Seq(
            src_vocab=src_vocab,
            tgt_vocab=tgt_vocab,
            emb_dim=cfg.emb_dim,
            hidden=cfg.hidden,
            layers=cfg.layers,
            bidirectional=cfg.bidirectional,
            attention=cfg.attention,
            input_feeding=cfg.input_feeding,
            dropout=cfg.dropout,
            tie_embeddings=cfg.tie_embeddings,
        )
    if cfg.arch == "transformer":
        from attnmt.transformer import TransformerSeq2Seq

        return TransformerSeq2Seq(
            src_vocab=src_vocab,
            tgt_vocab=tgt_vocab,
            d_model=cfg.hidden,
            layers=cfg.layers,
            heads=cfg.heads,
            ff_dim=cfg.ff_dim,
            dropout=cfg.dropout,
            tie_embeddings=cfg.tie_embeddings,
            tie_src_tgt=cfg.tie_src_tgt,
        )
    raise ValueError(f"model.arch: unknown architecture {cfg.arch!r} (use 'lstm' or 'transformer')")


@dataclass(frozen=True)
class TrainingState:
    """What ``last.pt`` adds for exact resume (plain data; ``train`` gives it meaning)."""

    optimizer: dict[str, Any]  # optimizer.state_dict()
    progress: dict[str, Any]  # train.Progress fields
    rng: dict[str, Any]  # torch / python / cuda RNG states
    ema: dict[str, Any] | None = None  # the weights' moving average (train.ema_decay), or None


@dataclass(frozen=True)
class Checkpoint:
    config: Config
    weights: dict[str, torch.Tensor]  # model.state_dict()
    src_tokenizer: Tokenizer
    tgt_tokenizer: Tokenizer
    training: TrainingState | None = None  # None for a weights-only checkpoint
    path: Path | None = None  # where it was loaded from (for error messages)

    def build_model(self) -> Seq2Seq:
        """A model of the checkpoint's architecture with its weights loaded (train mode)."""
        cfg = self.config.model
        model = build_model(cfg, self.src_tokenizer.vocab_size, self.tgt_tokenizer.vocab_size)
        try:
            model.load_state_dict(self.weights)
        except RuntimeError as e:
            first = first_line(e)
            raise CheckpointError(
                f"{self.path or 'checkpoint'}: its weights do not fit its model config "
                f"(model.arch={cfg.arch}, hidden={cfg.hidden}, layers={cfg.layers}): {first}"
            ) from None
        return model

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": FORMAT,
            "config": config_to_dict(self.config),
            "model": self.weights,
            "src_tokenizer": self.src_tokenizer.to_dict(),
            "tgt_tokenizer": self.tgt_tokenizer.to_dict(),
        }
        if self.training is not None:
            d.update(dataclasses.asdict(self.training))
        return d

    def save(self, path: str | Path) -> Path:
        """Write atomically; the file at ``path`` is the old one or the new one, never half."""
        return write_atomic(path, lambda f: torch.save(self.to_dict(), f))

    @classmethod
    def load(cls, path: str | Path) -> Checkpoint:
        """Read a checkpoint file, or a run directory's ``best.pt`` (else ``last.pt``)."""
        path = resolve_path(path)
        raw = _read(path)
        try:
            config = config_from_dict(raw["config"], source=f"{path} (config)")
            src_tok = tokenizer_from_dict(raw["src_tokenizer"])
            tgt_tok = tokenizer_from_dict(raw["tgt_tokenizer"])
        except (ConfigError, ValueError, RuntimeError, TypeError) as e:
            first = first_line(e)
            raise CheckpointError(f"{path}: unusable checkpoint ({first})") from None
        training = None
        if all(k in raw for k in ("optimizer", "progress", "rng")):
            training = TrainingState(raw["optimizer"], raw["progress"], raw["rng"], raw.get("ema"))
        return cls(config, raw["model"], src_tok, tgt_tok, training, path)


def first_line(e: BaseException) -> str:
    """An exception's first line (libraries' messages run to many), or its type's name."""
    return (str(e).splitlines() or [type(e).__name__])[0]


def resolve_path(path: str | Path) -> Path:
    """A run directory means its ``best.pt`` (or ``last.pt`` before the first validation)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).exists():
                return path / name
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    return path


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated/foreign files
        first = (str(e).splitlines() or [""])[0]  # an empty file raises EOFError("")
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(e).__name__}: {first})"
        ) from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an attnmt checkpoint (missing format tag {FORMAT!r})")
    missing = [k for k in ("config", "model", "src_tokenizer", "tgt_tokenizer") if k not in raw]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return raw


# ---------------------------------------------------------------------------------------------
# Resume: the same run, or a refusal that says what differs
# ---------------------------------------------------------------------------------------------


def _flat(cfg: Config) -> dict[str, Any]:
    return {f"{s}.{k}": v for s, keys in config_to_dict(cfg).items() for k, v in keys.items()}


def config_differences(saved: Config, current: Config) -> list[str]:
    """``section.key: saved -> current`` for every key that differs and may not change."""
    old, new = _flat(saved), _flat(current)
    return [
        f"{key}: {old[key]!r} -> {new[key]!r}"
        for key in old
        if old[key] != new[key]
        and key not in RESUMABLE_KEYS
        and key.split(".")[0] not in RESUMABLE_SECTIONS
    ]


def check_resumable(ckpt: Checkpoint, cfg: Config) -> None:
    """Refuse to resume ``ckpt`` under ``cfg`` when they differ beyond the resumable keys."""
    diffs = config_differences(ckpt.config, cfg)
    if ckpt.training is None:
        raise ResumeError(f"{ckpt.path}: holds no training state; it cannot be resumed")
    if diffs:
        raise ResumeError(
            f"{ckpt.path} was trained with another config; this run differs in "
            f"{len(diffs)} key(s) that cannot change on resume:\n  "
            + "\n  ".join(diffs)
            + "\nuse another train.out_dir, or the run's own config.yaml (keys that may change: "
            + ", ".join(sorted(RESUMABLE_KEYS))
            + ", decode.*)"
        )


# ---------------------------------------------------------------------------------------------
# One writer per run directory
# ---------------------------------------------------------------------------------------------


class RunLock:
    """An exclusive ``flock`` on ``RUN_DIR/train.lock`` for as long as a trainer runs.

    The kernel drops the lock when its process dies, SIGKILL included, so a stale lock file never
    blocks a resume; the file only records the holder's PID for the error message.
    """

    NAME = "train.lock"

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / self.NAME
        self.file: io.TextIOWrapper | None = None

    def __enter__(self) -> RunLock:
        import fcntl

        make_dirs(self.path.parent)
        try:
            f = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 -- held until __exit__
        except OSError as e:
            raise write_error(self.path, e) from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise RunDirBusy(
                f"{self.path.parent}: another attnmt train (PID {holder}) is writing this run "
                "directory; wait for it to finish or use another train.out_dir"
            ) from None
        try:
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")
            f.flush()
        except OSError as e:  # a full disk: the lock is still held, until close
            f.close()
            raise write_error(self.path, e) from None
        self.file = f
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.file is not None:
            self.file.close()  # closing releases the flock
            self.file = None
