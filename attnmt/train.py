"""Training: corpus -> tokenizers -> bucketed batches -> teacher-forced model -> checkpoints.

Pipeline position: the one place that writes checkpoints (through ``checkpoint.Checkpoint``);
everything downstream reads them back with ``Checkpoint.load``.

``train()`` reads top to bottom: lock the run directory, check a resume against the saved config
(before anything is written), prepare data and model, then loop over optimizer steps. Each step is
label-smoothed cross-entropy over real target tokens (padding ignored), gradient accumulation,
clipping and an lr schedule (:class:`Stepper`). Every ``eval_every`` steps it validates (perplexity
and dev BLEU); :func:`after_validation` (a pure function) decides best / plateau / early stop.
``best`` (by dev BLEU) and ``last`` checkpoints are written atomically; :class:`RunLog` writes
``train_log.jsonl`` and TensorBoard curves.

Exact resume: ``last.pt`` holds the model, optimizer, schedule, RNG states and the data position
(epoch, batches consumed). Batch order is a pure function of (seed, epoch), so a run killed at any
moment and started again continues from its last checkpoint and ends with the same weights as a
run that was never interrupted.

Scale-out: under ``torchrun`` each rank trains on its own shard of every epoch's batches with
DistributedDataParallel (gloo on CPU, NCCL on GPU); only rank 0 validates, logs and writes, and
rank 0 alone decides when to stop (the others follow its broadcast).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from attnmt.align import Alignment, guided_alignment_loss, read_corpus_gold, training_links
from attnmt.atomic import append_text, remove_stale_temps, write_text_atomic
from attnmt.checkpoint import (
    Checkpoint,
    ResumeError,
    RunLock,
    TrainingState,
    build_model,
    check_resumable,
)
from attnmt.config import Config, TrainConfig, check_config, save_config
from attnmt.corpus import normalize, read_corpus, split_indices
from attnmt.data import Batch, BucketBatcher, ShardBatcher, encode_kept, encode_pairs
from attnmt.evaluate import bleu_chrf, mean_token_loss, token_loss
from attnmt.interface import AlignWith, Seq2Seq, pick_device
from attnmt.plot import log_records
from attnmt.prepare import build_tokenizers
from attnmt.tokenizer import Tokenizer
from attnmt.translate import DecodeOptions, TorchEngine, Translator

Pairs = list[tuple[str, str]]
Log = Callable[[str], None]


# --------------------------------------------------------------------------------------------
# Data preparation
# --------------------------------------------------------------------------------------------


@dataclass
class Splits:
    train: Pairs
    dev: Pairs
    test: Pairs
    blank_lines: int = 0
    train_gold: list[Alignment] | None = None  # gold word links per training pair (guided)


def read_pairs(cfg: Config) -> tuple[Pairs, int, list[Alignment] | None]:
    """The corpus named by ``data.corpus`` (or the generated demo one), its blank lines, and
    the gold links of its pairs when ``train.guided_alignment`` names them."""
    d, guided = cfg.data, cfg.train.guided_alignment
    if d.corpus == "demo":
        from attnmt.demo_corpus import generate_demo_aligned

        aligned = generate_demo_aligned(d.demo_size, seed=cfg.train.seed)
        pairs, golds = [(p.en, p.es) for p in aligned], [p.gold for p in aligned]
        if d.reverse:
            pairs, golds = [(t, s) for s, t in pairs], [g.transposed() for g in golds]
        if d.lowercase:
            pairs = [(s.lower(), t.lower()) for s, t in pairs]
        return pairs, 0, golds if guided == "demo" else None
    corpus = read_corpus(d.corpus, reverse=d.reverse, lowercase=d.lowercase, limit=d.limit)
    if not guided:
        return corpus.pairs, corpus.blank_lines, None
    golds = read_corpus_gold(guided, corpus.pairs, d.reverse, prefix=d.limit > 0)
    return corpus.pairs, corpus.blank_lines, golds


def load_splits(cfg: Config) -> Splits:
    """Read the corpus and split it; the demo's explained sentence always stays in training."""
    d = cfg.data
    pairs, blank, golds = read_pairs(cfg)
    dev_frac = 0.0 if d.valid else d.dev_fraction
    test_frac = 0.0 if d.test else d.test_fraction
    keys = [normalize(src) for src, _ in pairs]
    # The demo corpus starts with "Let's go.", the sentence the demo explains: never held out.
    pinned = frozenset(keys[:1]) if d.corpus == "demo" else frozenset()
    train_i, dev_i, test_i = split_indices(keys, dev_frac, test_frac, cfg.train.seed, pinned)
    train, dev, test = ([pairs[i] for i in part] for part in (train_i, dev_i, test_i))
    if d.valid:
        dev = read_corpus(d.valid, reverse=d.reverse, lowercase=d.lowercase).pairs
    if d.test:
        test = read_corpus(d.test, reverse=d.reverse, lowercase=d.lowercase).pairs
    train_gold = None if golds is None else [golds[i] for i in train_i]
    return Splits(train, dev, test, blank, train_gold)


@dataclass
class RunData:
    """The split, the tokenizers and the batchers one run trains and validates on."""

    splits: Splits
    src_tok: Tokenizer
    tgt_tok: Tokenizer
    batcher: BucketBatcher | ShardBatcher
    dev_batcher: BucketBatcher | ShardBatcher | None
    dropped: int  # training pairs over data.max_len


def prepared_run_data(cfg: Config, resume: Checkpoint | None, rt: Runtime) -> RunData:
    """``data.prepared``: shards read lazily (prepared first if missing or out of date)."""
    from attnmt.prepare import open_prepared, prepare  # numpy shards: only when asked for

    t = cfg.train
    if rt.main:
        prepare(cfg, progress=t.progress)
    if rt.world > 1:
        dist.barrier()  # the other ranks open the directory rank 0 has just made sure of
    prep = open_prepared(cfg.data.prepared)
    if resume and (
        resume.src_tokenizer.to_dict() != prep.src_tok.to_dict()
        or resume.tgt_tokenizer.to_dict() != prep.tgt_tok.to_dict()
    ):
        raise ResumeError(
            f"{cfg.data.prepared}: was prepared again with other tokenizers since "
            f"{t.out_dir}/last.pt was written (the corpus changed); use another train.out_dir"
        )
    batcher = ShardBatcher(prep.train, t.batch_tokens, t.seed, weights=prep.weights)
    dev = ShardBatcher([prep.dev], t.batch_tokens, t.seed, shuffle=False) if prep.dev else None
    c = prep.manifest["counts"]
    splits = Splits([], prep.held_out("dev"), prep.held_out("test"), c["blank_lines"])
    return RunData(splits, prep.src_tok, prep.tgt_tok, batcher, dev, c["over_max_len"])


def prepare_data(cfg: Config, resume: Checkpoint | None, rt: Runtime) -> RunData:
    """Split and encode the corpus; a resumed run keeps the tokenizers it was trained with."""
    if cfg.data.prepared:
        return prepared_run_data(cfg, resume, rt)
    t = cfg.train
    splits = load_splits(cfg)
    if resume:
        src_tok, tgt_tok = resume.src_tokenizer, resume.tgt_tokenizer
    else:
        src_tok, tgt_tok = build_tokenizers(cfg, splits.train)
    train_ex, kept = encode_kept(splits.train, src_tok, tgt_tok, cfg.data.max_len)
    links = None
    if splits.train_gold is not None:  # guided alignment: gold links on the kept pairs' pieces
        pairs, golds = [splits.train[i] for i in kept], [splits.train_gold[i] for i in kept]
        links = training_links(pairs, golds, src_tok, tgt_tok)
    dev_ex, _ = encode_pairs(splits.dev, src_tok, tgt_tok)
    batcher = BucketBatcher(train_ex, t.batch_tokens, t.seed, links=links)
    dropped = len(splits.train) - len(kept)
    dev_batcher = BucketBatcher(dev_ex, t.batch_tokens, t.seed, shuffle=False) if dev_ex else None
    return RunData(splits, src_tok, tgt_tok, batcher, dev_batcher, dropped)


def tsv_text(pairs: Pairs) -> str:
    return "".join(f"{s}\t{t}\n" for s, t in pairs)


def check_splits_unchanged(splits: Splits, out: Path) -> None:
    """A resumed run must hold out what it held out before: a corpus edited since the run began
    would move training sentences into the new dev/test files (and theirs into training)."""
    for name, pairs in (("dev.tsv", splits.dev), ("test.tsv", splits.test)):
        path = out / name
        if path.exists() and path.read_text(encoding="utf-8") != tsv_text(pairs):
            raise ResumeError(
                f"{path}: the corpus no longer splits as it did when this run began (its "
                f"{name} would change, and held-out sentences would meet training ones); "
                "restore the corpus, or train the new one in another train.out_dir"
            )


def write_run_files(cfg: Config, data: RunData, out: Path) -> None:
    """The resolved config and the held-out splits, so the run can be evaluated and resumed."""
    save_config(cfg, out / "config.yaml")
    write_text_atomic(out / "dev.tsv", tsv_text(data.splits.dev))
    write_text_atomic(out / "test.tsv", tsv_text(data.splits.test))


# --------------------------------------------------------------------------------------------
# Learning-rate schedule
# --------------------------------------------------------------------------------------------


def lr_factor(step: int, cfg: Config) -> float:
    """Multiplier on ``train.lr`` at optimizer step ``step`` (1-based)."""
    t, warm = cfg.train, max(1, cfg.train.warmup)
    if t.schedule in ("constant", "plateau"):
        return 1.0
    if t.schedule == "inverse_sqrt":
        # Linear warmup to the peak, then decay with 1/sqrt(step) (Vaswani et al. 2017, 5.3).
        return min(step / warm, math.sqrt(warm / step))
    if t.schedule == "noam":
        # Same shape, but the peak is set by d_model: lr * d^-0.5 * min(s^-0.5, s * w^-1.5).
        d = cfg.model.hidden
        return d**-0.5 * min(step**-0.5, step * warm**-1.5)
    raise ValueError(f"train.schedule: unknown schedule {t.schedule!r}")


# --------------------------------------------------------------------------------------------
# Run state: everything exact resume needs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    step: int = 0  # optimizer steps taken
    epoch: int = 0  # current epoch
    batch_in_epoch: int = 0  # batches of this epoch already consumed
    best_bleu: float = -1.0
    bad_evals: int = 0  # validations since the last dev BLEU gain (early stopping)
    elapsed_s: float = 0.0  # training wall-clock time up to the last save
    plateau_scale: float = 1.0  # lr multiplier applied by the plateau schedule


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_checkpoint(
    cfg: Config,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: RunData,
    progress: Progress,
) -> Checkpoint:
    state = TrainingState(optimizer.state_dict(), dict(progress.__dict__), rng_state())
    return Checkpoint(cfg, model.state_dict(), data.src_tok, data.tgt_tok, state)


def load_resume(out: Path, cfg: Config, log: Log) -> Checkpoint | None:
    """``out/last.pt`` when the run directory has one; refused if ``cfg`` changed what matters."""
    path = out / "last.pt"
    if not path.exists():
        return None
    ckpt = Checkpoint.load(path)
    check_resumable(ckpt, cfg)
    log(f"resuming from {path} at step {ckpt.training.progress['step']}")
    return ckpt


# --------------------------------------------------------------------------------------------
# What happens after a validation (pure: tested without a training run)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    progress: Progress  # best score, patience counter and plateau scale updated
    is_best: bool  # this model becomes best.pt
    stop: str  # why training stops now ("" = go on)


def after_validation(p: Progress, dev_bleu: float | None, t: TrainConfig) -> Outcome:
    """Best checkpoint, plateau lr decay and early stopping, from one dev BLEU."""
    if dev_bleu is None:
        return Outcome(p, True, "")  # no dev set: the latest model is the best we know
    if dev_bleu > p.best_bleu:
        return Outcome(replace(p, best_bleu=dev_bleu, bad_evals=0), True, "")
    bad = p.bad_evals + 1
    scale = p.plateau_scale
    if t.schedule == "plateau" and bad % t.plateau_patience == 0:
        scale *= t.plateau_factor
    stop = ""
    if t.patience and bad >= t.patience:
        stop = f"early stopping after {t.patience} validations without gain"
    return Outcome(replace(p, bad_evals=bad, plateau_scale=scale), False, stop)


def budget_stop(p: Progress, t: TrainConfig, elapsed_s: float, epoch_done: bool) -> str:
    """Why training stops after the step that led to ``p`` ("" = go on)."""
    if p.step >= t.max_steps:
        return f"max_steps {t.max_steps}"
    if t.max_minutes and elapsed_s >= t.max_minutes * 60:
        return f"time budget {t.max_minutes} min"
    if epoch_done and t.max_epochs and p.epoch >= t.max_epochs:
        return f"max_epochs {t.max_epochs}"
    return ""


# --------------------------------------------------------------------------------------------
# Runtime: device, ranks and the collectives DDP needs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over ranks (the values themselves in one process)."""
        if self.world == 1:
            return values
        x = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(x)
        return x.tolist()

    def agree_stop(self, stop: str) -> str:
        """Rank 0 decides when to stop; every rank must agree or the collectives hang."""
        if self.world == 1:
            return stop
        flag = torch.tensor(1 if stop else 0, device=self.device)
        dist.broadcast(flag, 0)
        return stop if self.main else ("rank 0 stopped" if int(flag) else "")


def cpu_supports(precision: str) -> bool:
    """Whether this CPU has oneDNN kernels for ``precision`` ("bf16" or "fp16")."""
    if precision == "bf16":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())


def check_precision(precision: str, device: torch.device) -> None:
    """Reject ``train.precision`` values the device cannot run, before any data is read."""
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"train.precision: unknown {precision!r} (use fp32, bf16 or fp16)")
    # On a CPU, autocast sends the LSTM and the matmuls to oneDNN, which has bf16 kernels only
    # with AVX512 (or AMX) and fp16 kernels only with AVX512-FP16 (or AMX-FP16). Without them
    # the LSTM dies at its first step with "could not create a primitive descriptor", so say
    # it here, in terms of the config key.
    if device.type == "cpu" and precision != "fp32" and not cpu_supports(precision):
        needs = "AVX512 or AMX" if precision == "bf16" else "AVX512-FP16 or AMX-FP16"
        raise ValueError(
            f"train.precision={precision}: this CPU has no {precision} kernels in PyTorch's "
            f"oneDNN backend (they need {needs} instructions); use train.precision=fp32"
        )


def setup_runtime(t: TrainConfig) -> Runtime:
    """Pick the device, join the process group under torchrun, set the thread count."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = pick_device(t.device)
    check_precision(t.precision, device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if t.threads:
        torch.set_num_threads(t.threads)
    return Runtime(device, rank, world)


# --------------------------------------------------------------------------------------------
# One optimizer step
# --------------------------------------------------------------------------------------------


class Stepper:
    """One optimizer step over a group of ``train.accum`` batches (DDP, autocast, clipping)."""

    def __init__(self, model: Seq2Seq, optimizer: torch.optim.Optimizer, t: TrainConfig,
                 rt: Runtime, align: AlignWith = (-1, -1)):  # fmt: skip
        self.model, self.optimizer, self.t, self.rt = model, optimizer, t, rt
        self.ddp = nn.parallel.DistributedDataParallel(model) if rt.world > 1 else model
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.precision)
        self.scaler = torch.amp.GradScaler(rt.device.type, enabled=t.precision == "fp16")
        self.align = align  # (layer, head) guided alignment trains

    def step(self, batches: list[Batch], lr: float) -> tuple[float, int, float]:
        """Update the weights; returns the group's summed translation loss, its target tokens
        and its summed guided-alignment loss (0 without guidance)."""
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        tokens = sum(b.n_tokens for b in batches)
        # Normalise by the global token count, so DDP's gradient mean equals the per-token mean
        # of one big batch.
        denom = self.rt.all_sum([float(tokens)])[0] / self.rt.world
        loss_sum = align_sum = 0.0
        for b in batches:
            loss, align = self.losses(b.to(self.rt.device))
            total = loss if align is None else loss + self.t.guided_alignment_weight * align
            self.scaler.scale(total / denom).backward()
            loss_sum += float(loss.detach())
            align_sum += 0.0 if align is None else float(align.detach())
        self.scaler.unscale_(self.optimizer)
        if self.t.clip_norm > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.t.clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum, tokens, align_sum

    def losses(self, b: Batch) -> tuple[Tensor, Tensor | None]:
        """Summed translation loss of a batch, and with gold links its summed alignment loss
        (Chen et al. 2016: one cross-entropy per gold row, on the align layer and head)."""
        amp = self.amp_dtype
        with torch.autocast(self.rt.device.type, dtype=amp, enabled=amp is not None):
            if b.gold is None:
                logits, log_attn = self.ddp(b.src, b.src_mask, b.tgt_in), None  # (B, T, V)
            else:
                logits, log_attn = self.ddp(b.src, b.src_mask, b.tgt_in, align=self.align)
        loss = token_loss(logits, b.tgt_out, self.t.label_smoothing)
        if log_attn is None:
            return loss, None
        return loss, guided_alignment_loss(log_attn, b.gold, reduction="sum")


def training_groups(
    batcher: BucketBatcher | ShardBatcher, p: Progress, accum: int, rt: Runtime
) -> Iterator[tuple[list[list[int]], bool]]:
    """The groups of batches still to train on, from position ``p``, epoch after epoch.

    Yields (group, epoch_done). Whole optimizer steps only: a trailing partial accumulation
    group of an epoch is skipped.
    """
    epoch, start = p.epoch, p.batch_in_epoch
    while True:
        batches = batcher.batches(epoch, rt.rank, rt.world)
        usable = len(batches) - len(batches) % accum
        if usable == 0:
            raise ValueError(
                f"an epoch has {len(batches)} batches per process, fewer than train.accum "
                f"({accum}): lower train.batch_tokens or train.accum"
            )
        for i in range(start, usable, accum):
            yield batches[i : i + accum], i + accum >= usable
        epoch, start = epoch + 1, 0


def advance(p: Progress, accum: int, epoch_done: bool) -> Progress:
    if epoch_done:
        return replace(p, step=p.step + 1, epoch=p.epoch + 1, batch_in_epoch=0)
    return replace(p, step=p.step + 1, batch_in_epoch=p.batch_in_epoch + accum)


# --------------------------------------------------------------------------------------------
# The run log: train_log.jsonl and TensorBoard, rank 0 only
# --------------------------------------------------------------------------------------------


class RunLog:
    """Appends one JSON object per line to ``train_log.jsonl`` and mirrors numbers to TensorBoard.

    On resume the steps after the checkpoint are redone, so their old lines are dropped first
    (and a torn last line, left by a crash or a full disk mid-write, with them).
    """

    def __init__(self, out: Path, step: int, enabled: bool):
        self.enabled = enabled
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.path = out / "train_log.jsonl"
        if self.path.exists():
            write_text_atomic(
                self.path,
                "".join(line + "\n" for _, line, r in log_records(self.path) if r["step"] <= step),
            )
        self.writer = SummaryWriter(str(out / "tb"), purge_step=step + 1)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        append_text(self.path, json.dumps(record) + "\n")
        for k, v in record.items():
            if k not in ("kind", "step", "epoch") and isinstance(v, (int, float)):
                self.writer.add_scalar(f"{record['kind']}/{k}", v, record["step"])

    def close(self) -> None:
        if self.enabled:
            self.writer.close()


class Meter:
    """Loss and throughput since the last log line (summed over ranks when logged)."""

    def __init__(self) -> None:
        self.loss, self.tokens, self.align, self.since = 0.0, 0, 0.0, time.time()

    def add(self, step: tuple[float, int, float]) -> None:
        """One ``Stepper.step`` result: summed loss, target tokens, summed alignment loss."""
        self.loss += step[0]
        self.tokens += step[1]
        self.align += step[2]

    def record(self, p: Progress, lr: float, rt: Runtime, elapsed_s: float) -> dict[str, Any]:
        now = time.time()
        loss, tokens, align = rt.all_sum([self.loss, float(self.tokens), self.align])
        rec = {"kind": "train", "step": p.step, "epoch": p.epoch, "loss": loss / max(1, tokens),
               "lr": lr, "tokens_per_s": tokens / max(1e-9, now - self.since),
               "elapsed_s": elapsed_s}  # fmt: skip
        if align:  # guided alignment: its cross-entropy per target token
            rec["align_loss"] = align / max(1, tokens)
        self.loss, self.tokens, self.align, self.since = 0.0, 0, 0.0, now
        return rec


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def validate(
    translator: Translator, data: RunData, t: TrainConfig, rt: Runtime, step: int
) -> dict[str, Any]:
    """Dev perplexity and dev BLEU/chrF (on the first ``eval_max_sents`` dev pairs)."""
    record: dict[str, Any] = {"kind": "valid", "step": step}
    if data.dev_batcher is None:
        return record
    loss = mean_token_loss(translator.model, data.dev_batcher, rt.device)
    dev = data.splits.dev[: t.eval_max_sents] if t.eval_max_sents else data.splits.dev
    options = DecodeOptions.resolve(translator.options, beam=t.eval_beam, n_best=1)
    found = translator.translate([s for s, _ in dev], options)
    bleu, chrf = bleu_chrf([h[0].text for h in found], [r for _, r in dev])
    record.update(valid_loss=loss, valid_ppl=math.exp(min(loss, 50)), dev_bleu=bleu, dev_chrf=chrf)
    return record


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def build_training(
    cfg: Config, data: RunData, resume: Checkpoint | None, rt: Runtime
) -> tuple[Seq2Seq, torch.optim.Optimizer, Progress]:
    """Model and optimizer, fresh or restored from ``resume`` (RNG states included)."""
    t = cfg.train
    random.seed(t.seed)
    torch.manual_seed(t.seed)
    model = build_model(cfg.model, data.src_tok.vocab_size, data.tgt_tok.vocab_size).to(rt.device)
    opt_cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(model.parameters(), lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
    if resume is None:
        return model, optimizer, Progress()
    model.load_state_dict(resume.weights)
    optimizer.load_state_dict(resume.training.optimizer)
    set_rng_state(resume.training.rng)
    return model, optimizer, Progress(**resume.training.progress)


def describe(cfg: Config, data: RunData, model: Seq2Seq, rt: Runtime) -> str:
    s, n_params = data.splits, sum(p.numel() for p in model.parameters())
    return (
        f"data: {len(data.batcher)} train pairs ({data.dropped} over max_len "
        f"{cfg.data.max_len}, {s.blank_lines} blank lines skipped), {len(s.dev)} dev, "
        f"{len(s.test)} test; vocab {data.src_tok.vocab_size}/{data.tgt_tok.vocab_size}; "
        f"device {rt.device}, world {rt.world}\n"
        f"model: {cfg.model.arch}, {n_params / 1e6:.2f}M parameters"
    )


def sized_bar_total(p: Progress, t: TrainConfig, elapsed_s: float) -> int:
    """Steps the run will reach: max_steps, or fewer when the time budget binds first."""
    if not t.max_minutes:
        return t.max_steps
    steps_per_s = p.step / max(1e-9, elapsed_s)
    return int(min(t.max_steps, p.step + steps_per_s * (t.max_minutes * 60 - elapsed_s)))


def report(record: dict[str, Any], bar: tqdm, runlog: RunLog, p: Progress, t: TrainConfig) -> None:
    """A train log line, mirrored on the progress bar (whose total follows the time budget)."""
    bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}",
                    tok_s=f"{record['tokens_per_s']:.0f}")  # fmt: skip
    bar.total = sized_bar_total(p, t, record["elapsed_s"])
    bar.refresh()
    runlog.write(record)


def validation_outcome(
    translator: Translator, data: RunData, t: TrainConfig, rt: Runtime, p: Progress,
    bar: tqdm, runlog: RunLog,
) -> Outcome:  # fmt: skip
    """Validate (rank 0 only), log it, and decide best / plateau / early stop."""
    record = validate(translator, data, t, rt, p.step)
    if "dev_bleu" in record:
        bar.write(f"step {p.step}: valid ppl {record['valid_ppl']:.2f}, "
                  f"dev BLEU {record['dev_bleu']:.2f}, chrF {record['dev_chrf']:.2f}")  # fmt: skip
    runlog.write(record)
    return after_validation(p, record.get("dev_bleu"), t)


def train(cfg: Config, log: Log = print) -> Path:
    """Train (or resume) the run in ``cfg.train.out_dir``; returns the run directory."""
    check_config(cfg)
    t, rt, out = cfg.train, setup_runtime(cfg.train), Path(cfg.train.out_dir)
    with RunLock(out) if rt.main else contextlib.nullcontext():
        if rt.main:
            remove_stale_temps(out)  # left by a trainer killed mid-save
        resume = load_resume(out, cfg, log)  # refuses a changed config before any write
        data = prepare_data(cfg, resume, rt)
        model, optimizer, progress = build_training(cfg, data, resume, rt)
        if rt.main:
            if resume is not None:
                check_splits_unchanged(data.splits, out)
            write_run_files(cfg, data, out)
            log(describe(cfg, data, model, rt))
        if progress.step >= t.max_steps:
            log(f"stopped: max_steps {t.max_steps} (already reached); run dir {out}")
            return out
        runlog, meter, stepper = (
            RunLog(out, progress.step, rt.main),
            Meter(),
            Stepper(model, optimizer, t, rt, (cfg.model.align_layer, cfg.model.align_head)),
        )
        translator = Translator(TorchEngine(model, rt.device), data.src_tok, data.tgt_tok, cfg)
        bar = tqdm(total=t.max_steps, initial=progress.step, disable=not (rt.main and t.progress),
                   desc="train", unit="step", dynamic_ncols=True)  # fmt: skip
        start = time.time() - progress.elapsed_s
        model.train()
        for group, epoch_done in training_groups(data.batcher, progress, t.accum, rt):
            lr = t.lr * lr_factor(progress.step + 1, cfg) * progress.plateau_scale
            meter.add(stepper.step([data.batcher.batch(i) for i in group], lr))
            progress = advance(progress, t.accum, epoch_done)
            bar.update(1)
            stop = budget_stop(progress, t, time.time() - start, epoch_done)
            if progress.step % t.log_every == 0 or progress.step == t.max_steps:
                report(
                    meter.record(progress, lr, rt, time.time() - start), bar, runlog, progress, t
                )
            evaluate_now = progress.step % t.eval_every == 0 or bool(stop)
            is_best = False
            if rt.main and evaluate_now:
                outcome = validation_outcome(translator, data, t, rt, progress, bar, runlog)
                progress, is_best, stop = outcome.progress, outcome.is_best, stop or outcome.stop
            stop = rt.agree_stop(stop)
            if rt.main and (evaluate_now or progress.step % t.save_every == 0):
                progress = replace(progress, elapsed_s=time.time() - start)
                ckpt = make_checkpoint(cfg, model, optimizer, data, progress)
                ckpt.save(out / "last.pt")
                if is_best:
                    ckpt.save(out / "best.pt")
            if stop:
                break
        bar.close()
        runlog.close()
        if rt.main:
            log(f"stopped: {stop}; best dev BLEU {progress.best_bleu:.2f}; run dir {out}")
    if rt.world > 1:
        dist.barrier()
    return out
