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

The step plan: a run plans to end at ``max_steps``, or with ``train.max_minutes`` at the last
step that fits in the budget. A budget run times its first ``plan_steps`` steps (the very first,
which pays the start-up, left out), one validation and one save, and fixes the plan from them
(:func:`fit_plan`): validation and saves are inside the budget. The plan is fixed once, stored
in ``Progress`` (so in last.pt) and never timed again; the run stops there, and the budget's end
stays a safety net. The lr is a pure function of (step, plan, config): ``linear`` and ``cosine``
warm up for a share of the plan and decay to ``min_lr_ratio`` at its last step (budget-aware
schedules, Li et al. 2020), so a resume may not move their plan (:func:`check_plan_kept`).

Weight averages: with ``train.ema_decay`` an exponential moving average of the weights
(:class:`WeightEma`) is validated and written as best.pt; with ``train.keep_last`` the last saves
are kept as step-N.pt and the run ends by averaging them into avg.pt (``attnmt.average``).

Exact resume: ``last.pt`` holds the model, optimizer, schedule and plan, RNG states, the weights'
moving average and the data position (epoch, batches consumed). Batch order is a pure function of
(seed, epoch), so a run killed at any moment and started again continues from its last
checkpoint and ends with the same weights as a run that was never interrupted (a budget run
killed before its plan was fixed times itself again, so its plan may differ).

Scale-out: under ``torchrun`` each rank trains on its own shard of every epoch's batches with
DistributedDataParallel (gloo on CPU, NCCL on GPU); only rank 0 validates, logs and writes, and
rank 0 alone decides when to stop (the others follow its broadcast).
"""

from __future__ import annotations

import bisect
import contextlib
import json
import math
import os
import random
import re
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
from attnmt.average import average_checkpoints
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


PLANNED_SCHEDULES = ("linear", "cosine")  # their lr decays to the run's planned last step


def lr_factor(step: int, plan: int, cfg: Config) -> float:
    """Multiplier on ``train.lr`` at optimizer step ``step`` (1-based) of a run planned to end
    at step ``plan`` (:func:`scheduled_steps`); a pure function, so a resume redoes it exactly."""
    t, warm = cfg.train, max(1, cfg.train.warmup)
    if t.schedule in ("constant", "plateau"):
        return 1.0
    if t.schedule in PLANNED_SCHEDULES:
        return decay_factor(step, plan, t)
    if t.schedule == "inverse_sqrt":
        # Linear warmup to the peak, then decay with 1/sqrt(step) (Vaswani et al. 2017, 5.3).
        return min(step / warm, math.sqrt(warm / step))
    if t.schedule == "noam":
        # Same shape, but the peak is set by d_model: lr * d^-0.5 * min(s^-0.5, s * w^-1.5).
        d = cfg.model.hidden
        return d**-0.5 * min(step**-0.5, step * warm**-1.5)
    raise ValueError(f"train.schedule: unknown schedule {t.schedule!r}")


def decay_factor(step: int, plan: int, t: TrainConfig) -> float:
    """linear / cosine: a linear warmup to 1, then down to ``min_lr_ratio`` exactly at ``plan``
    (and there after it). A schedule that ends where the run ends beats one a budget cuts off
    midway (Li et al. 2020, "Budgeted training")."""
    warm = round(t.warmup_fraction * plan) if t.warmup_fraction else t.warmup
    warm = min(warm, plan - 1)  # a plan shorter than its warmup still decays at its last step
    if step <= warm:
        return step / warm
    done = min(1.0, (step - warm) / (plan - warm))  # share of the decay behind us
    m = t.min_lr_ratio
    if t.schedule == "linear":
        return m + (1 - m) * (1 - done)
    return m + (1 - m) * 0.5 * (1 + math.cos(math.pi * done))


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
    plan_steps: int = 0  # the planned last step (0 = a budget run still timing its first steps)
    step_s: float = 0.0  # a budget run's timings, measured once, behind its plan: seconds a step,
    valid_s: float = 0.0  # a validation,
    save_s: float = 0.0  # and a save of last.pt


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
    ema: dict[str, Any] | None = None,
) -> Checkpoint:
    state = TrainingState(optimizer.state_dict(), dict(progress.__dict__), rng_state(), ema)
    return Checkpoint(cfg, model.state_dict(), data.src_tok, data.tgt_tok, state)


def load_resume(out: Path, cfg: Config, log: Log) -> Checkpoint | None:
    """``out/last.pt`` when the run directory has one; refused if ``cfg`` changed what matters."""
    path = out / "last.pt"
    if not path.exists():
        return None
    ckpt = Checkpoint.load(path)
    check_resumable(ckpt, cfg)
    check_plan_kept(ckpt, cfg)
    log(f"resuming from {path} at step {ckpt.training.progress['step']}")
    return ckpt


class WeightEma:
    """An exponential moving average of the weights (``train.ema_decay``; 0 = off, and then
    :attr:`eval_model` is the model itself).

    torch's ``AveragedModel`` keeps a copy of the model, float32 like its weights (autocast
    never changes their dtype): the first step copies them, each later one moves the copy by
    ``1 - decay`` towards them. Its state (the copy and its update count) travels in last.pt.
    """

    def __init__(self, model: nn.Module, decay: float, state: dict[str, Any] | None = None):
        self.model, self.averaged = model, None
        if decay:
            avg_fn = torch.optim.swa_utils.get_ema_multi_avg_fn(decay)
            self.averaged = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=avg_fn)
            if state is not None:
                self.averaged.load_state_dict(state)

    @property
    def eval_model(self) -> nn.Module:
        """The weights a run validates and delivers as best.pt."""
        return self.model if self.averaged is None else self.averaged.module

    def update(self) -> None:
        if self.averaged is not None:
            self.averaged.update_parameters(self.model)

    def state(self) -> dict[str, Any] | None:
        return None if self.averaged is None else self.averaged.state_dict()

    def best(self, last: Checkpoint) -> Checkpoint:
        """What best.pt holds: ``last``, or with an EMA its weights alone (no resume from it)."""
        if self.averaged is None:
            return last
        return replace(last, weights=self.averaged.module.state_dict(), training=None)


# --------------------------------------------------------------------------------------------
# The step plan: max_steps, or the steps that fit in train.max_minutes (pure parts)
# --------------------------------------------------------------------------------------------


def scheduled_steps(p: Progress, t: TrainConfig) -> int:
    """The last step the lr schedule plans for: the fixed plan, or max_steps while a budget run
    still times its first steps (a provisional plan: its warmup rises more slowly)."""
    return p.plan_steps or t.max_steps


def multiples(after: int, upto: int, every: int) -> int:
    """How many steps in (after, upto] are multiples of ``every``."""
    return upto // every - after // every


def run_seconds(p: Progress, last: int, t: TrainConfig) -> float:
    """Wall-clock seconds from the start of the run to the end of step ``last``, at ``p``'s
    measured costs: its steps, the validations and saves the loop will make up to there (one
    of each at the stop), and with keep_last the average at the end (one validation, and
    reading the checkpoints, counted as saves)."""
    a, e, s = p.step, t.eval_every, t.save_every
    valids = multiples(a, last, e) + (last % e != 0)
    saved = multiples(a, last, e) + multiples(a, last, s) - multiples(a, last, math.lcm(e, s))
    saves = saved + (last % e != 0 and last % s != 0)
    if t.keep_last:
        valids, saves = valids + 1, saves + t.keep_last
    return p.elapsed_s + (last - a) * p.step_s + valids * p.valid_s + saves * p.save_s


def fit_plan(p: Progress, t: TrainConfig) -> int:
    """The last step a budget run can reach inside ``max_minutes`` from ``p`` (at most
    max_steps; ``p.step`` when no further step fits)."""
    budget = t.max_minutes * 60
    later = range(p.step + 1, t.max_steps + 1)
    return p.step + bisect.bisect_left(later, True, key=lambda s: run_seconds(p, s, t) > budget)


def check_plan_kept(ckpt: Checkpoint, cfg: Config) -> None:
    """Refuse a resume that would move the planned end of a linear / cosine run: its lr already
    follows the plan that train.max_steps and train.max_minutes fixed."""
    saved, t, plan = ckpt.config.train, cfg.train, ckpt.training.progress.get("plan_steps", 0)
    changed = [
        f"train.{k}: {getattr(saved, k)!r} -> {getattr(t, k)!r}"
        for k in ("max_steps", "max_minutes")
        if getattr(saved, k) != getattr(t, k)
    ]
    if changed and plan and t.schedule in PLANNED_SCHEDULES:
        raise ResumeError(
            f"{ckpt.path}: train.schedule={t.schedule} decays the lr to this run's planned last "
            f"step, {plan}, fixed from its max_steps and max_minutes; a resume cannot change "
            f"them ({'; '.join(changed)}). Resume with the run's own config.yaml, or train a "
            "new run in another train.out_dir"
        )


def plan_on_start(p: Progress, saved: TrainConfig | None, t: TrainConfig) -> Progress:
    """The plan a (re)started run follows: max_steps without a budget; else the stored plan
    (never timed again), refitted from its stored timings when a resume changed the limits
    (plan-free schedules only: :func:`check_plan_kept` refused the others); else none yet."""
    if not t.max_minutes:
        return replace(p, plan_steps=t.max_steps)
    if saved is None or (saved.max_steps, saved.max_minutes) == (t.max_steps, t.max_minutes):
        return p
    if not p.step_s:  # the run was planned without a budget: it times itself from here
        return replace(p, plan_steps=0)
    return replace(p, plan_steps=fit_plan(p, t))


class Budget:
    """The run's clock (``time.monotonic``, or a test's fake), and the timing of a budget run's
    first steps, from which its plan is fixed.

    The plan is fixed at the end of this process's ``train.plan_steps``-th step. Its first step
    is not timed (it pays the start-up: first batches, lazy kernel set-up), nor are the
    validations and saves in between, which are timed on their own (:meth:`timed`); the plan
    step itself times one of each.
    """

    def __init__(self, t: TrainConfig, clock: Callable[[], float], p: Progress):
        self.t, self.clock = t, clock
        self.start = clock() - p.elapsed_s  # the time before a resume counts too
        self.first = p.step + 1
        self.plan_at = p.step + t.plan_steps if t.max_minutes and not p.plan_steps else -1
        self.spent = {"valid": 0.0, "save": 0.0}  # the latest of each, in seconds
        self.overhead = 0.0  # seconds of everything timed so far
        self.window = [(0.0, 0.0), (0.0, 0.0)]  # (clock, overhead) after the first / plan step

    def elapsed(self) -> float:
        return self.clock() - self.start

    def plans_now(self, p: Progress) -> bool:
        """Whether the step that led to ``p`` is the plan step (and note the timing window)."""
        if p.step in (self.first, self.plan_at):
            self.window[p.step == self.plan_at] = (self.clock(), self.overhead)
        return p.step == self.plan_at

    @contextlib.contextmanager
    def timed(self, what: str) -> Iterator[None]:
        begin = self.clock()
        yield
        self.spent[what] = self.clock() - begin
        self.overhead += self.spent[what]

    def fix_plan(self, p: Progress, rt: Runtime) -> Progress:
        """``p`` with the timings and the plan (rank 0's, on every rank)."""
        (c0, o0), (c1, o1) = self.window
        step_s = (c1 - c0 - (o1 - o0)) / (p.step - self.first)
        timed = replace(p, elapsed_s=self.elapsed(), step_s=step_s, valid_s=self.spent["valid"],
                        save_s=self.spent["save"])  # fmt: skip
        # The plan checkpoint is still to be written at this step.
        plan = fit_plan(replace(timed, elapsed_s=timed.elapsed_s + timed.save_s), self.t)
        return replace(timed, plan_steps=rt.share(plan))


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
    if p.plan_steps and p.step >= p.plan_steps:
        return f"the plan's {p.plan_steps} steps (time budget {t.max_minutes} min)"
    if t.max_minutes and elapsed_s >= t.max_minutes * 60:  # the plan's safety net
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

    def share(self, value: int) -> int:
        """Rank 0's ``value``, on every rank (a budget run's plan: every rank follows one lr)."""
        if self.world == 1:
            return value
        x = torch.tensor(value, dtype=torch.int64, device=self.device)
        dist.broadcast(x, 0)
        return int(x)

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
    """Model and optimizer, fresh or restored from ``resume`` (RNG states and plan included)."""
    t = cfg.train
    random.seed(t.seed)
    torch.manual_seed(t.seed)
    model = build_model(cfg.model, data.src_tok.vocab_size, data.tgt_tok.vocab_size).to(rt.device)
    opt_cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(model.parameters(), lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
    if resume is None:
        return model, optimizer, plan_on_start(Progress(), None, t)
    model.load_state_dict(resume.weights)
    optimizer.load_state_dict(resume.training.optimizer)
    set_rng_state(resume.training.rng)
    progress = Progress(**resume.training.progress)
    return model, optimizer, plan_on_start(progress, resume.config.train, t)


def describe(cfg: Config, data: RunData, model: Seq2Seq, rt: Runtime) -> str:
    s, n_params = data.splits, sum(p.numel() for p in model.parameters())
    return (
        f"data: {len(data.batcher)} train pairs ({data.dropped} over max_len "
        f"{cfg.data.max_len}, {s.blank_lines} blank lines skipped), {len(s.dev)} dev, "
        f"{len(s.test)} test; vocab {data.src_tok.vocab_size}/{data.tgt_tok.vocab_size}; "
        f"device {rt.device}, world {rt.world}\n"
        f"model: {cfg.model.arch}, {n_params / 1e6:.2f}M parameters"
    )


def step_files(out: Path) -> dict[int, Path]:
    """The run's ``step-N.pt`` files (train.keep_last), by step."""
    found = (re.fullmatch(r"step-(\d+)\.pt", f.name) for f in out.glob("step-*.pt"))
    return {int(m[1]): out / m[0] for m in found if m}


def keep_last_steps(out: Path, step: int, keep: int) -> list[Path]:
    """The ``keep`` newest step files up to ``step``, oldest first; the others are removed (and
    those after ``step``, left by a run killed between two of its saves)."""
    files = step_files(out)
    kept = sorted(n for n in files if n <= step)[-keep:]
    for n in files.keys() - set(kept):
        files[n].unlink(missing_ok=True)
    return [files[n] for n in kept]


@dataclass
class Run:
    """The parts a training loop works with; rank 0 alone validates, logs and writes."""

    cfg: Config
    rt: Runtime
    out: Path
    data: RunData
    model: Seq2Seq
    optimizer: torch.optim.Optimizer
    ema: WeightEma
    stepper: Stepper
    translator: Translator  # over the weights validation scores (the EMA's, with one)
    runlog: RunLog
    bar: tqdm

    def report(self, record: dict[str, Any]) -> None:
        """A train log line, mirrored on the progress bar."""
        self.bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}",
                             tok_s=f"{record['tokens_per_s']:.0f}")  # fmt: skip
        self.runlog.write(record)

    def validation_outcome(self, p: Progress) -> Outcome:
        """Validate (rank 0 only), log it, and decide best / plateau / early stop."""
        record = validate(self.translator, self.data, self.cfg.train, self.rt, p.step)
        if "dev_bleu" in record:
            self.bar.write(f"step {p.step}: valid ppl {record['valid_ppl']:.2f}, dev BLEU "
                           f"{record['dev_bleu']:.2f}, chrF {record['dev_chrf']:.2f}")  # fmt: skip
        self.runlog.write(record)
        return after_validation(p, record.get("dev_bleu"), self.cfg.train)

    def save(self, p: Progress, is_best: bool) -> None:
        """last.pt (all a resume needs), best.pt when ``is_best``, and with train.keep_last
        the weights alone as step-N.pt (the oldest beyond keep_last removed)."""
        ckpt = make_checkpoint(self.cfg, self.model, self.optimizer, self.data, p,
                               self.ema.state())  # fmt: skip
        if self.cfg.train.keep_last:
            replace(ckpt, training=None).save(self.out / f"step-{p.step}.pt")
            keep_last_steps(self.out, p.step, self.cfg.train.keep_last)
        ckpt.save(self.out / "last.pt")
        if is_best:
            self.ema.best(ckpt).save(self.out / "best.pt")

    def show_plan(self, p: Progress) -> None:
        """The fixed plan: the progress bar's new total, a line, a log record."""
        self.bar.total = p.plan_steps
        self.bar.refresh()
        if not self.rt.main:
            return
        t, ends = self.cfg.train, run_seconds(p, p.plan_steps, self.cfg.train)
        capped = " (max_steps)" if p.plan_steps == t.max_steps else ""
        self.bar.write(
            f"plan: {p.plan_steps} steps{capped} for the {t.max_minutes:g}-minute budget, "
            f"validation and saves included: a step {p.step_s:.3g} s, a validation "
            f"{p.valid_s:.3g} s (every {t.eval_every} steps), a save {p.save_s:.3g} s; "
            f"expected end {ends / 60:.1f} min"
        )
        self.runlog.write({"kind": "plan", "step": p.step, "plan_steps": p.plan_steps,
                           "step_s": p.step_s, "valid_s": p.valid_s, "save_s": p.save_s,
                           "expected_s": ends})  # fmt: skip


def start_run(
    cfg: Config, data: RunData, model: Seq2Seq, optimizer: torch.optim.Optimizer,
    resume: Checkpoint | None, rt: Runtime, out: Path, p: Progress,
) -> Run:  # fmt: skip
    """The loop's parts, at position ``p`` (the EMA restored, on rank 0 only)."""
    t = cfg.train
    ema = WeightEma(model, t.ema_decay if rt.main else 0.0, resume and resume.training.ema)
    engine = TorchEngine(ema.eval_model, rt.device)
    translator = Translator(engine, data.src_tok, data.tgt_tok, cfg)
    stepper = Stepper(model, optimizer, t, rt, (cfg.model.align_layer, cfg.model.align_head))
    # smoothing=0: the ETA divides by the mean speed since the start, validations included.
    bar = tqdm(total=scheduled_steps(p, t), initial=p.step, disable=not (rt.main and t.progress),
               desc="train", unit="step", dynamic_ncols=True, smoothing=0)  # fmt: skip
    runlog = RunLog(out, p.step, rt.main)
    return Run(cfg, rt, out, data, model, optimizer, ema, stepper, translator, runlog, bar)


def plan_step(run: Run, budget: Budget, p: Progress) -> Outcome:
    """A budget run's plan step: one validation and one save timed (rank 0), then the plan."""
    outcome = Outcome(p, False, "")
    if run.rt.main:
        with budget.timed("valid"):
            outcome = run.validation_outcome(p)
        with budget.timed("save"):
            run.save(replace(outcome.progress, elapsed_s=budget.elapsed()), False)
    planned = budget.fix_plan(outcome.progress, run.rt)
    run.show_plan(planned)
    return replace(outcome, progress=planned)


def write_average(run: Run, p: Progress, log: Log) -> None:
    """avg.pt: the last train.keep_last saves averaged (attnmt.average), validated and logged."""
    paths = keep_last_steps(run.out, p.step, run.cfg.train.keep_last)
    averaged = average_checkpoints(paths, run.out / "avg.pt")
    model = Checkpoint.load(averaged.path).build_model().to(run.rt.device)
    translator = Translator(TorchEngine(model, run.rt.device), run.data.src_tok,
                            run.data.tgt_tok, run.cfg)  # fmt: skip
    record = validate(translator, run.data, run.cfg.train, run.rt, p.step)
    run.runlog.write({**record, "kind": "average", "checkpoints": len(paths)})
    score = f"; dev BLEU {record['dev_bleu']:.2f}" if "dev_bleu" in record else ""
    log(f"avg.pt: the mean of {', '.join(f.name for f in paths)}{score}")


def train(cfg: Config, log: Log = print, clock: Callable[[], float] = time.monotonic) -> Path:
    """Train (or resume) the run in ``cfg.train.out_dir``; returns the run directory.
    ``clock`` is the time source of ``train.max_minutes`` (tests give a fake one)."""
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
        done = budget_stop(progress, t, progress.elapsed_s, epoch_done=False)
        if done:  # a finished run, started again
            log(f"stopped: {done} (already reached); run dir {out}")
            return out
        run = start_run(cfg, data, model, optimizer, resume, rt, out, progress)
        budget, meter = Budget(t, clock, progress), Meter()
        model.train()
        for group, epoch_done in training_groups(data.batcher, progress, t.accum, rt):
            factor = lr_factor(progress.step + 1, scheduled_steps(progress, t), cfg)
            lr = t.lr * factor * progress.plateau_scale
            meter.add(run.stepper.step([data.batcher.batch(i) for i in group], lr))
            run.ema.update()
            progress = advance(progress, t.accum, epoch_done)
            run.bar.update(1)
            outcome = plan_step(run, budget, progress) if budget.plans_now(progress) else None
            progress = progress if outcome is None else outcome.progress
            stop = budget_stop(progress, t, budget.elapsed(), epoch_done)
            if progress.step % t.log_every == 0 or progress.step == progress.plan_steps:
                run.report(meter.record(progress, lr, rt, budget.elapsed()))
            if rt.main and outcome is None and (progress.step % t.eval_every == 0 or stop):
                with budget.timed("valid"):
                    outcome = run.validation_outcome(progress)
            if outcome is not None:
                progress, stop = outcome.progress, stop or outcome.stop
            stop = rt.agree_stop(stop)
            if rt.main and (outcome is not None or progress.step % t.save_every == 0):
                progress = replace(progress, elapsed_s=budget.elapsed())
                with budget.timed("save"):
                    run.save(progress, bool(outcome and outcome.is_best))
            if stop:
                break
        if rt.main and t.keep_last:
            write_average(run, progress, log)
        run.bar.close()
        run.runlog.close()
        if rt.main:
            log(f"stopped: {stop}; best dev BLEU {progress.best_bleu:.2f}; run dir {out}")
    if rt.world > 1:
        dist.barrier()
    return out
