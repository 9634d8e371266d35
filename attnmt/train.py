"""Training: corpus -> tokenizers -> bucketed batches -> teacher-forced model -> checkpoints.

Pipeline position: the one place that writes checkpoints; everything downstream reads them
through ``Translator.from_checkpoint``.

The loop, in order: label-smoothed cross-entropy over real target tokens (padding ignored),
gradient accumulation, clipping, an lr schedule, validation perplexity and dev BLEU every N steps,
``best`` (by dev BLEU) and ``last`` checkpoints written atomically, early stopping, a progress bar,
``train_log.jsonl`` and TensorBoard curves.

Exact resume: ``last.pt`` holds the model, optimizer, schedule, RNG states and the data position
(epoch, batches consumed). Batch order is a pure function of (seed, epoch), so a run killed at any
moment and started again continues from its last checkpoint and ends with the same weights as a
run that was never interrupted.

Scale-out: under ``torchrun`` each rank trains on its own shard of every epoch's batches with
DistributedDataParallel (gloo on CPU, NCCL on GPU); only rank 0 validates, logs and writes.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from attnmt.atomic import write_text_atomic
from attnmt.checkpoint import Checkpoint, TrainingState, build_model, check_resumable
from attnmt.config import Config, save_config
from attnmt.corpus import read_corpus, split_pairs
from attnmt.data import BucketBatcher, encode_pairs
from attnmt.evaluate import bleu_chrf, mean_token_loss, token_loss
from attnmt.interface import pick_device
from attnmt.tokenizer import Tokenizer, train_tokenizer
from attnmt.translate import Translator

Pairs = list[tuple[str, str]]


# --------------------------------------------------------------------------------------------
# Data preparation
# --------------------------------------------------------------------------------------------


@dataclass
class Splits:
    train: Pairs
    dev: Pairs
    test: Pairs
    blank_lines: int = 0


def load_splits(cfg: Config) -> Splits:
    """Read the corpus named by ``data.corpus`` (or generate the demo one) and split it."""
    d = cfg.data
    if d.corpus == "demo":
        from attnmt.demo_corpus import generate_demo_corpus

        pairs, blank = generate_demo_corpus(d.demo_size, seed=cfg.train.seed), 0
        if d.reverse:
            pairs = [(t, s) for s, t in pairs]
        if d.lowercase:
            pairs = [(s.lower(), t.lower()) for s, t in pairs]
    else:
        corpus = read_corpus(d.corpus, reverse=d.reverse, lowercase=d.lowercase, limit=d.limit)
        pairs, blank = corpus.pairs, corpus.blank_lines
    dev_frac = 0.0 if d.valid else d.dev_fraction
    test_frac = 0.0 if d.test else d.test_fraction
    train, dev, test = split_pairs(pairs, dev_frac, test_frac, cfg.train.seed)
    if d.valid:
        dev = read_corpus(d.valid, reverse=d.reverse, lowercase=d.lowercase).pairs
    if d.test:
        test = read_corpus(d.test, reverse=d.reverse, lowercase=d.lowercase).pairs
    return Splits(train, dev, test, blank)


def build_tokenizers(cfg: Config, train: Pairs) -> tuple[Tokenizer, Tokenizer]:
    """Train tokenizers on the training split only (dev/test text never shapes the vocabulary)."""
    d = cfg.data
    srcs, tgts = [s for s, _ in train], [t for _, t in train]
    if d.shared_vocab:
        tok = train_tokenizer(d.tokenizer, srcs + tgts, d.vocab_size, d.sp_model_type)
        return tok, tok
    return (
        train_tokenizer(d.tokenizer, srcs, d.vocab_size, d.sp_model_type),
        train_tokenizer(d.tokenizer, tgts, d.vocab_size, d.sp_model_type),
    )


def write_tsv(pairs: Pairs, path: Path) -> None:
    write_text_atomic(path, "".join(f"{s}\t{t}\n" for s, t in pairs))


# --------------------------------------------------------------------------------------------
# Loss and learning-rate schedule
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


@dataclass
class Progress:
    step: int = 0  # optimizer steps taken
    epoch: int = 0  # current epoch
    batch_in_epoch: int = 0  # batches of this epoch already consumed
    best_bleu: float = -1.0
    bad_evals: int = 0  # validations since the last dev BLEU gain (early stopping)
    elapsed_s: float = 0.0  # training wall-clock time before this process started
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
    src_tok: Tokenizer,
    tgt_tok: Tokenizer,
    progress: Progress,
) -> Checkpoint:
    state = TrainingState(optimizer.state_dict(), dict(progress.__dict__), rng_state())
    return Checkpoint(cfg, model.state_dict(), src_tok, tgt_tok, state)


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


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


def train(cfg: Config, log: Any = print) -> Path:
    """Train (or resume) the run in ``cfg.train.out_dir``; returns the run directory."""
    t = cfg.train
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
    main = rank == 0
    if t.threads:
        torch.set_num_threads(t.threads)
    out = Path(t.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    last_path = out / "last.pt"

    # Resume if this run directory already has a checkpoint: same data, same tokenizers.
    resume = None
    if last_path.exists():
        resume = Checkpoint.load(last_path)
        check_resumable(resume, cfg)
        log(f"resuming from {last_path} at step {resume.training.progress['step']}")

    random.seed(t.seed)
    torch.manual_seed(t.seed)
    splits = load_splits(cfg)
    if resume:
        src_tok, tgt_tok = resume.src_tokenizer, resume.tgt_tokenizer
    else:
        src_tok, tgt_tok = build_tokenizers(cfg, splits.train)
    train_ex, dropped = encode_pairs(splits.train, src_tok, tgt_tok, cfg.data.max_len)
    dev_ex, _ = encode_pairs(splits.dev, src_tok, tgt_tok)
    batcher = BucketBatcher(train_ex, t.batch_tokens, t.seed)
    dev_batcher = BucketBatcher(dev_ex, t.batch_tokens, t.seed, shuffle=False) if dev_ex else None
    if main:
        save_config(cfg, out / "config.yaml")
        write_tsv(splits.dev, out / "dev.tsv")
        write_tsv(splits.test, out / "test.tsv")
        log(
            f"data: {len(train_ex)} train pairs ({dropped} over max_len {cfg.data.max_len}, "
            f"{splits.blank_lines} blank lines skipped), {len(splits.dev)} dev, "
            f"{len(splits.test)} test; vocab {src_tok.vocab_size}/{tgt_tok.vocab_size}; "
            f"device {device}, world {world}"
        )

    model = build_model(cfg.model, src_tok.vocab_size, tgt_tok.vocab_size).to(device)
    opt_cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(model.parameters(), lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
    progress = Progress()
    if resume:
        model.load_state_dict(resume.weights)
        optimizer.load_state_dict(resume.training.optimizer)
        progress = Progress(**resume.training.progress)
        set_rng_state(resume.training.rng)
    if main:
        n_params = sum(p.numel() for p in model.parameters())
        log(f"model: {cfg.model.arch}, {n_params / 1e6:.2f}M parameters")
    ddp_model: nn.Module = model
    if world > 1:
        ddp_model = nn.parallel.DistributedDataParallel(model)

    writer = None
    log_file = None
    if main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"), purge_step=progress.step + 1)
        log_path = out / "train_log.jsonl"
        if resume and log_path.exists():
            # Steps after the checkpoint are redone on resume: drop their old log lines.
            kept = [
                line
                for line in log_path.read_text(encoding="utf-8").splitlines(keepends=True)
                if line.strip() and json.loads(line)["step"] <= progress.step
            ]
            write_text_atomic(log_path, "".join(kept))
        log_file = open(log_path, "a", encoding="utf-8")  # noqa: SIM115

    def write_log(record: dict[str, Any]) -> None:
        if not main:
            return
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()
        for k, v in record.items():
            if k not in ("kind", "step", "epoch") and isinstance(v, (int, float)):
                writer.add_scalar(f"{record['kind']}/{k}", v, record["step"])

    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=t.precision == "fp16")
    translator = Translator(model, src_tok, tgt_tok, cfg, device)

    def validate() -> dict[str, Any]:
        record: dict[str, Any] = {"kind": "valid", "step": progress.step}
        if dev_batcher is None:
            return record
        loss = mean_token_loss(model, dev_batcher, device)
        dev = splits.dev[: t.eval_max_sents] if t.eval_max_sents else splits.dev
        hyps = [
            h[0].text for h in translator.translate([s for s, _ in dev], beam=t.eval_beam, n_best=1)
        ]
        model.train()
        bleu, chrf = bleu_chrf(hyps, [r for _, r in dev])
        record.update(
            valid_loss=loss, valid_ppl=math.exp(min(loss, 50)), dev_bleu=bleu, dev_chrf=chrf
        )
        return record

    def save(best: bool) -> None:
        ckpt = make_checkpoint(cfg, model, optimizer, src_tok, tgt_tok, progress)
        ckpt.save(last_path)
        if best:
            ckpt.save(out / "best.pt")

    def set_lr() -> float:
        lr = t.lr * lr_factor(max(1, progress.step + 1), cfg) * progress.plateau_scale
        for g in optimizer.param_groups:
            g["lr"] = lr
        return lr

    start = time.time() - progress.elapsed_s
    bar = tqdm(
        total=t.max_steps, initial=progress.step, disable=not (main and t.progress),
        desc="train", unit="step", dynamic_ncols=True,
    )  # fmt: skip
    model.train()
    stop_reason = ""
    tokens_since, time_since, loss_sum, loss_tokens = 0, time.time(), 0.0, 0
    while not stop_reason:
        if progress.step >= t.max_steps:
            stop_reason = f"max_steps {t.max_steps} (already reached)"
            break
        if t.max_epochs and progress.epoch >= t.max_epochs:
            stop_reason = f"max_epochs {t.max_epochs}"
            break
        epoch_batches = batcher.batches(progress.epoch, rank, world)
        # Whole optimizer steps only: a trailing partial accumulation group is skipped.
        usable = len(epoch_batches) - len(epoch_batches) % t.accum
        if usable == 0:
            raise ValueError(
                f"an epoch has {len(epoch_batches)} batches per process, fewer than train.accum "
                f"({t.accum}): lower train.batch_tokens or train.accum"
            )
        while progress.batch_in_epoch < usable:
            lr = set_lr()
            group = epoch_batches[progress.batch_in_epoch : progress.batch_in_epoch + t.accum]
            batches = [batcher.batch(i).to(device) for i in group]
            step_tokens = torch.tensor(sum(b.n_tokens for b in batches), device=device)
            if world > 1:
                # Normalise by the global token count, so DDP's gradient mean equals the
                # per-token mean of one big batch.
                dist.all_reduce(step_tokens)
            denom = float(step_tokens) / world
            for b in batches:
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits = ddp_model(b.src, b.src_mask, b.tgt_in)  # (B, T, V)
                loss = token_loss(logits, b.tgt_out, t.label_smoothing)
                scaler.scale(loss / denom).backward()
                loss_sum += float(loss.detach())
                loss_tokens += b.n_tokens
                tokens_since += b.n_tokens
            scaler.unscale_(optimizer)
            if t.clip_norm > 0:
                nn.utils.clip_grad_norm_(model.parameters(), t.clip_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            progress.step += 1
            progress.batch_in_epoch += t.accum
            bar.update(1)

            if progress.step % t.log_every == 0 or progress.step == t.max_steps:
                now = time.time()
                if world > 1:
                    # Log the global loss and throughput, not rank 0's share of them.
                    sums = torch.tensor(
                        [loss_sum, loss_tokens, tokens_since], dtype=torch.float64, device=device
                    )
                    dist.all_reduce(sums)
                    loss_sum, loss_tokens, tokens_since = sums.tolist()
                tps = tokens_since / max(1e-9, now - time_since)
                mean_loss = loss_sum / max(1, loss_tokens)
                bar.set_postfix(loss=f"{mean_loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tps:.0f}")
                if t.max_minutes:
                    # When the time budget binds first, size the bar by it so the ETA is true.
                    left_s = t.max_minutes * 60 - (now - start)
                    steps_per_s = progress.step / max(1e-9, now - start)
                    bar.total = int(min(t.max_steps, progress.step + steps_per_s * left_s))
                    bar.refresh()
                write_log(
                    {"kind": "train", "step": progress.step, "epoch": progress.epoch,
                     "loss": mean_loss, "lr": lr, "tokens_per_s": tps,
                     "elapsed_s": now - start}
                )  # fmt: skip
                tokens_since, time_since, loss_sum, loss_tokens = 0, now, 0.0, 0

            if progress.step >= t.max_steps:
                stop_reason = f"max_steps {t.max_steps}"
            elif t.max_minutes and time.time() - start >= t.max_minutes * 60:
                stop_reason = f"time budget {t.max_minutes} min"
            evaluate_now = progress.step % t.eval_every == 0 or bool(stop_reason)
            save_now = progress.step % t.save_every == 0 or evaluate_now
            is_best = False
            if evaluate_now and main:
                record = validate()
                if "dev_bleu" in record:
                    bar.write(
                        f"step {progress.step}: valid ppl {record['valid_ppl']:.2f}, "
                        f"dev BLEU {record['dev_bleu']:.2f}, chrF {record['dev_chrf']:.2f}"
                    )
                    if record["dev_bleu"] > progress.best_bleu:
                        progress.best_bleu, progress.bad_evals, is_best = (
                            record["dev_bleu"],
                            0,
                            True,
                        )
                    else:
                        progress.bad_evals += 1
                        if t.schedule == "plateau" and progress.bad_evals % t.plateau_patience == 0:
                            progress.plateau_scale *= t.plateau_factor
                    if t.patience and progress.bad_evals >= t.patience:
                        stop_reason = f"early stopping after {t.patience} validations without gain"
                else:
                    is_best = True  # no dev set: the latest model is the best we know
                write_log(record)
            if world > 1:
                # Rank 0 decides about stopping; everyone must agree or collectives hang.
                flag = torch.tensor(1 if stop_reason else 0, device=device)
                dist.broadcast(flag, 0)
                if int(flag) and not stop_reason:
                    stop_reason = "rank 0 stopped"
            if save_now and main:
                progress.elapsed_s = time.time() - start
                save(is_best)
            if stop_reason:
                break
        else:
            progress.epoch += 1
            progress.batch_in_epoch = 0
    bar.close()
    if main:
        log(f"stopped: {stop_reason}; best dev BLEU {progress.best_bleu:.2f}; run dir {out}")
        writer.close()
        log_file.close()
    if world > 1:
        dist.barrier()
    return out
