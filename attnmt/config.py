"""Typed configuration: YAML file + ``--set section.key=value`` overrides -> dataclasses.

Every default lives here once, as a dataclass field with a one-line comment. A YAML config only
states what differs from these defaults; an unknown section or key is an error that names it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from attnmt.atomic import write_text_atomic


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says where and why."""


@dataclass
class DataConfig:
    corpus: str = (
        "demo"  # "demo" (generated), a TSV file (src<TAB>tgt[<TAB>...]), or "SRC_FILE,TGT_FILE"
    )
    valid: str = ""  # optional separate dev corpus (same formats); empty = split from `corpus`
    test: str = ""  # optional separate test corpus; empty = split from `corpus`
    reverse: bool = False  # swap columns: translate the second column into the first
    dev_fraction: float = 0.05  # share of distinct source sentences held out for dev
    test_fraction: float = 0.05  # share of distinct source sentences held out for test
    max_len: int = 50  # drop training pairs with more tokens than this on either side
    lowercase: bool = False  # lowercase both sides before tokenizing
    tokenizer: str = "sentencepiece"  # "sentencepiece" or "word"
    sp_model_type: str = "bpe"  # SentencePiece algorithm: "bpe" or "unigram"
    vocab_size: int = 4000  # subword vocabulary size (per side, or joint when shared)
    shared_vocab: bool = True  # one vocabulary for both languages
    limit: int = 0  # use only the first N pairs of the corpus (0 = all); handy for quick runs
    demo_size: int = 4000  # number of distinct pairs the demo corpus generator writes
    # Prepared data (`attnmt prepare`): read the corpus once into memory-mapped token shards, so
    # training starts fast and in bounded memory however large the corpus is.
    prepared: str = ""  # directory of prepared shards ("" = read the corpus into memory)
    dev_max: int = 5000  # prepared data: most dev pairs (0 = no cap); smallest source hashes stay
    test_max: int = 5000  # prepared data: most test pairs (0 = no cap)
    sp_sample: int = 1_000_000  # prepared data: training pairs sampled to train the tokenizer
    mix: str = ""  # prepared data: more training corpora, "SPEC:WEIGHT;SPEC:WEIGHT"
    weight: float = 1.0  # prepared data: data.corpus's sampling weight against data.mix
    workers: int = 0  # prepare: processes that read and encode (0 = one per CPU core)


@dataclass
class ModelConfig:
    arch: str = "lstm"  # "lstm" (attention encoder-decoder) or "transformer"
    emb_dim: int = 256  # token embedding size
    hidden: int = 256  # LSTM hidden size / Transformer d_model
    layers: int = 1  # encoder and decoder layers
    bidirectional: bool = True  # LSTM: two directions of H/2, concatenated to H
    attention: str = "general"  # LSTM scoring: "dot", "general" (Luong) or "additive" (Bahdanau)
    input_feeding: bool = True  # LSTM: feed the previous attentional vector into the next step
    heads: int = 4  # Transformer attention heads
    ff_dim: int = 1024  # Transformer feed-forward inner size
    dropout: float = 0.2  # dropout on embeddings, between layers and on attentional vectors
    tie_embeddings: bool = False  # tie decoder input embedding and output layer
    tie_src_tgt: bool = (
        False  # Transformer: share source and target embeddings (needs shared vocab)
    )
    # The cross-attention word alignments are read from (`attnmt align`, `evaluate --align-gold`)
    # and guided alignment trains; the LSTM has one layer and one head.
    align_layer: int = -1  # decoder attention layer, Python index (-1 = the last)
    align_head: int = -1  # attention head of that layer (-1 = the mean of its heads)


@dataclass
class TrainConfig:
    # Where checkpoints, logs, the splits and the resolved config go. A config file that names
    # none gets runs/<file name without .yaml> (load_config), so two config files never share a
    # run directory by default; with no file at all it is this one. (The demo sets runs/demo.)
    out_dir: str = "runs/default"
    seed: int = 1234  # seeds data order, initialisation and dropout: same seed, same run
    batch_tokens: int = 2000  # target tokens per batch (length-bucketed)
    accum: int = 1  # gradient accumulation: batches per optimizer step
    optimizer: str = "adamw"  # "adam" or "adamw"
    lr: float = 2e-3  # peak learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    betas: tuple[float, float] = (0.9, 0.98)  # Adam betas
    # "constant", "inverse_sqrt" (warmup then 1/sqrt), "noam", "plateau", or "linear" / "cosine":
    # linear warmup, then a linear or cosine decay to min_lr_ratio at the run's planned last step
    # (max_steps, or the steps that fit in max_minutes).
    schedule: str = "inverse_sqrt"
    warmup: int = 200  # warmup steps: inverse_sqrt / noam, linear / cosine when warmup_fraction=0
    warmup_fraction: float = 0.05  # linear / cosine: warmup steps as a share of the planned steps
    min_lr_ratio: float = 0.01  # linear / cosine: the lr at the planned last step, as a share of lr
    plateau_patience: int = 2  # plateau: validations without improvement before decaying lr
    plateau_factor: float = 0.5  # plateau: lr multiplier on decay
    label_smoothing: float = 0.1  # cross-entropy label smoothing (padding ignored)
    # Guided alignment (Chen et al. 2016; Garg et al. 2019): an extra cross-entropy pulling the
    # model.align_layer/align_head attention towards given word links. A Pharaoh file with one
    # line per corpus pair (source word first; `attnmt data align` writes one), or "demo" for
    # the demo corpus's own gold; "" = off.
    guided_alignment: str = ""
    guided_alignment_weight: float = 0.1  # weight of that loss beside the translation loss
    clip_norm: float = 1.0  # gradient clipping by global norm (0 = off)
    max_steps: int = 1000  # stop after this many optimizer steps
    max_epochs: int = 0  # stop after this many epochs (0 = no epoch limit)
    # Wall-clock budget in minutes (0 = none): the run times its first plan_steps steps, one
    # validation and one save, fixes the steps that fit (at most max_steps; kept in last.pt) and
    # stops there; the budget's end also stops it, as a safety net.
    max_minutes: float = 0.0
    plan_steps: int = 30  # budget runs: steps timed before the step plan is fixed
    eval_every: int = 200  # validate (perplexity + dev BLEU) every N steps
    save_every: int = 200  # write the `last` checkpoint every N steps
    # Exponential moving average of the weights, updated after every step (0 = off; e.g. 0.999):
    # validation scores it, and best.pt holds its weights; last.pt keeps the trained ones.
    ema_decay: float = 0.0
    keep_last: int = 0  # keep the last N saves as step-N.pt; at the end avg.pt holds their mean
    patience: int = 0  # early stopping: validations without dev BLEU gain (0 = off)
    eval_beam: int = 1  # beam size for dev BLEU during training
    eval_max_sents: int = 500  # dev sentences used for dev BLEU (0 = all)
    log_every: int = 20  # steps between log lines in train_log.jsonl
    threads: int = 0  # torch intra-op threads (0 = torch default)
    device: str = "auto"  # "auto", "cpu", "cuda"
    precision: str = "fp32"  # "fp32", "bf16" (GPU, or a CPU with AVX512/AMX) or "fp16" autocast
    progress: bool = True  # show a progress bar


@dataclass
class DecodeConfig:
    beam: int = 5  # beam size (1 = greedy)
    n_best: int = 1  # hypotheses returned per sentence
    length_penalty: float = 1.0  # GNMT-style alpha; score / ((5+len)/6)^alpha
    # Beam search ends a sentence once `beam` hypotheses have ended; early_stop ends it as soon
    # as its best candidate ends (what OpenNMT-py and JoeyNMT do): fewer steps, small BLEU risk.
    early_stop: bool = False
    min_len: int = 0  # fewest output tokens before <eos> may end a hypothesis (0 = no floor)
    # Ban any token that would repeat an n-gram of this size already in the hypothesis (fairseq's
    # --no-repeat-ngram-size, OpenNMT-py's block_ngram_repeat); 0 = off.
    no_repeat_ngram: int = 0
    # CTRL penalty on tokens already in the hypothesis: their log-probs are multiplied by it
    # (divided when positive); > 1 discourages repeats, 1 = off. CTranslate2 applies it to logits.
    repetition_penalty: float = 1.0
    max_len_a: float = 1.5  # output length limit: a * source_length + b
    max_len_b: int = 10  # output length limit: a * source_length + b
    batch_size: int = 64  # sentences per translation batch
    # Cut each input line into sentences (sentencex; attnmt.sentences), translate every
    # sentence of a batch together and join them back with the line's spacing: a model trained
    # on one-sentence pairs otherwise stops after a line's first sentence.
    split_sentences: bool = True


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}


def _coerce(value: Any, default: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the type of the field's default, or raise ConfigError."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):  # YAML reads `1`/`0` as ints
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, (list, tuple)) or len(value) != len(default):
            raise ConfigError(f"{where}: expected a list of {len(default)} numbers, got {value!r}")
        return tuple(_coerce(v, d, where) for v, d in zip(value, default))
    for typ in (int, float, str):
        if isinstance(default, typ):
            if isinstance(value, bool) and typ is not str:  # int(True) == 1 would hide a typo
                raise ConfigError(f"{where}: expected {typ.__name__}, got {value!r}")
            try:
                if typ is int and isinstance(value, float) and not value.is_integer():
                    raise ValueError
                return typ(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: expected {typ.__name__}, got {value!r}") from None
    return value


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    """Build a Config from nested dicts, rejecting unknown sections and keys."""
    cfg = Config()
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections")
    for section, values in raw.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"{source}: unknown section {section!r} (known: {', '.join(SECTIONS)})"
            )
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {section!r} must be a mapping")
        sub = getattr(cfg, section)
        known = {f.name for f in dataclasses.fields(sub)}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(
                    f"{source}: unknown key {section}.{key} (known: {', '.join(sorted(known))})"
                )
            setattr(sub, key, _coerce(value, getattr(sub, key), f"{source}: {section}.{key}"))
    return cfg


# ---------------------------------------------------------------------------------------------
# Value checks: every key whose value could break a run later is refused here, by name.
# ---------------------------------------------------------------------------------------------

CHOICES = {
    "data.tokenizer": ("sentencepiece", "word"),
    "data.sp_model_type": ("bpe", "unigram"),
    "model.arch": ("lstm", "transformer"),
    "model.attention": ("dot", "general", "additive"),
    "train.optimizer": ("adam", "adamw"),
    "train.schedule": ("constant", "inverse_sqrt", "noam", "plateau", "linear", "cosine"),
    "train.precision": ("fp32", "bf16", "fp16"),
}
AT_LEAST = {  # key -> smallest allowed value
    "data.max_len": 0, "data.limit": 0, "data.demo_size": 1,
    "data.dev_max": 0, "data.test_max": 0, "data.sp_sample": 1, "data.weight": 0.0,
    "data.workers": 0,
    "data.vocab_size": 5,  # the four special tokens and at least one real one
    "model.emb_dim": 1, "model.hidden": 1, "model.layers": 1, "model.heads": 1,
    "model.ff_dim": 1, "model.align_head": -1, "train.guided_alignment_weight": 0.0,
    "train.batch_tokens": 1, "train.accum": 1, "train.lr": 0.0, "train.weight_decay": 0.0,
    "train.warmup": 0, "train.plateau_patience": 1, "train.clip_norm": 0.0,
    "train.max_steps": 0, "train.max_epochs": 0, "train.max_minutes": 0.0,
    "train.plan_steps": 2, "train.keep_last": 0,  # plan_steps: a step or more is timed
    "train.eval_every": 1, "train.save_every": 1, "train.log_every": 1, "train.patience": 0,
    "train.eval_beam": 1, "train.eval_max_sents": 0, "train.threads": 0,
    "decode.beam": 1, "decode.n_best": 1, "decode.min_len": 0, "decode.no_repeat_ngram": 0,
    "decode.max_len_a": 0.0, "decode.max_len_b": 0, "decode.batch_size": 1,
}  # fmt: skip
# decode.repetition_penalty's floor: it must be > 0, and much smaller values are 0 to
# CTranslate2 (float32), which refuses them.
MIN_REPETITION_PENALTY = 1e-6
FRACTIONS = {  # key -> (low, high), half-open [low, high)
    "data.dev_fraction": (0.0, 1.0), "data.test_fraction": (0.0, 1.0),
    "model.dropout": (0.0, 1.0), "train.label_smoothing": (0.0, 1.0),
    "train.warmup_fraction": (0.0, 1.0), "train.min_lr_ratio": (0.0, 1.0),
    "train.ema_decay": (0.0, 1.0),
}  # fmt: skip


def _value(cfg: Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def check_decode(dc: DecodeConfig, where: str = "decode") -> None:
    """Decode values, one by one and those that depend on each other; the one check of them,
    for config files, CLI flags and HTTP requests alike (``translate.DecodeOptions``)."""
    for key, low in AT_LEAST.items():
        section, name = key.split(".")
        v = getattr(dc, name) if section == "decode" else low
        if not (v >= low and math.isfinite(v)):
            raise ConfigError(f"{where}.{name}: must be >= {low:g}, got {v}")
    if not math.isfinite(dc.length_penalty):
        raise ConfigError(
            f"{where}.length_penalty: must be a finite number, got {dc.length_penalty}"
        )
    if not (
        dc.repetition_penalty >= MIN_REPETITION_PENALTY and math.isfinite(dc.repetition_penalty)
    ):
        raise ConfigError(
            f"{where}.repetition_penalty: must be a number >= {MIN_REPETITION_PENALTY:g} "
            f"(1 = off, > 1 penalises repeats), got {dc.repetition_penalty}"
        )
    if not isinstance(dc.split_sentences, bool):
        raise ConfigError(
            f"{where}.split_sentences: must be true or false, got {dc.split_sentences!r}"
        )
    if not 1 <= dc.n_best <= dc.beam:
        raise ConfigError(
            f"{where}.n_best: must be between 1 and beam ({dc.beam}), got {dc.n_best}"
        )
    # A one-word source is 2 steps long with its <eos>: the limit must allow a word and <eos>.
    if int(dc.max_len_a * 2 + dc.max_len_b) < 2:
        raise ConfigError(
            f"{where}.max_len_a/max_len_b: the output limit a * source_length + b "
            f"({dc.max_len_a:g} * n + {dc.max_len_b}) allows no output for a one-word source"
        )


def check_config(cfg: Config, source: str = "<config>") -> Config:
    """Refuse out-of-range values and unknown choices, naming the key; returns ``cfg``."""
    for key, options in CHOICES.items():
        if _value(cfg, key) not in options:
            raise ConfigError(
                f"{source}: {key}: unknown {_value(cfg, key)!r} (use {', '.join(options)})"
            )
    for key, low in AT_LEAST.items():
        if key.startswith("decode."):
            continue  # check_decode, below
        v = _value(cfg, key)
        if not (v >= low and math.isfinite(v)):
            raise ConfigError(f"{source}: {key}: must be >= {low:g}, got {v}")
    for key, (low, high) in FRACTIONS.items():
        v = _value(cfg, key)
        if not low <= v < high:
            raise ConfigError(f"{source}: {key}: must be in [{low:g}, {high:g}), got {v}")
    d, t = cfg.data, cfg.train
    if not t.out_dir.strip():
        raise ConfigError(f"{source}: train.out_dir: empty; name the run directory")
    if d.dev_fraction + d.test_fraction >= 1:
        raise ConfigError(f"{source}: data.dev_fraction + data.test_fraction must be < 1")
    if not all(0.0 <= b < 1.0 for b in t.betas):
        raise ConfigError(f"{source}: train.betas: each must be in [0, 1), got {list(t.betas)}")
    if not 0.0 < t.plateau_factor <= 1.0:
        raise ConfigError(
            f"{source}: train.plateau_factor: must be in (0, 1], got {t.plateau_factor}"
        )
    if t.guided_alignment == "demo" and d.corpus != "demo":
        raise ConfigError(
            f"{source}: train.guided_alignment: 'demo' is the demo corpus's gold, but data.corpus "
            f"is {d.corpus!r}; name a Pharaoh file of links for it (attnmt data align)"
        )
    if t.guided_alignment and d.prepared:
        raise ConfigError(
            f"{source}: train.guided_alignment works on in-memory data only, not with "
            "data.prepared (prepared shards carry no alignments yet)"
        )
    if t.device != "auto" and t.device.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{source}: train.device: unknown {t.device!r} (use auto, cpu or cuda)")
    try:
        check_decode(cfg.decode)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return cfg


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` strings (values parsed as YAML scalars)."""
    raw: dict[str, dict[str, Any]] = {}
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        dotted, value = item.split("=", 1)
        section, key = dotted.split(".", 1)
        try:
            raw.setdefault(section, {})[key] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None
    patched = config_from_dict(raw, source="--set")
    for section, values in raw.items():
        for key in values:
            setattr(getattr(cfg, section), key, getattr(getattr(patched, section), key))
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or start from defaults when path is None) and apply overrides.

    A config file that sets no ``train.out_dir`` (nor ``--set train.out_dir=...``) runs in
    ``runs/<file stem>``: a run directory belongs to one config, never to every file that
    forgot to name one.
    """
    overrides = overrides or []
    if path is None:
        cfg, raw = Config(), {}
    else:
        path = Path(path)
        raw = _read_yaml(path)
        cfg = config_from_dict(raw, source=str(path))
    named = "out_dir" in (raw.get("train") or {}) or any(
        o.split("=", 1)[0].strip() == "train.out_dir" for o in overrides
    )
    if path is not None and not named:
        cfg.train.out_dir = str(Path("runs") / path.stem)
    where = (str(path) if path else "config") + (" + --set" if overrides else "")
    return check_config(apply_overrides(cfg, overrides), where)


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a YAML config file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); is it a YAML file?") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) for YAML output and checkpoints."""

    def plain(v: Any) -> Any:
        return list(v) if isinstance(v, tuple) else v

    return {
        s: {k: plain(v) for k, v in dataclasses.asdict(getattr(cfg, s)).items()} for s in SECTIONS
    }


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    write_text_atomic(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
