"""CTranslate2 export and inference for Transformer checkpoints.

Pipeline position: a trained checkpoint -> **export_ctranslate2** -> a CTranslate2 model directory
-> **load_translator** -> a :class:`attnmt.translate.Translator` over **CT2Engine** (the fast
CPU/GPU inference path; the same ``Hypothesis`` results as the PyTorch engine).

CTranslate2 (Klein et al. 2020) re-implements the Transformer in C++ with int8/float16 kernels;
it has no RNN/LSTM decoder, so only ``model.arch: transformer`` checkpoints can be exported.

Mapping from :class:`attnmt.transformer.TransformerSeq2Seq` onto ``TransformerSpec``:

- ``TransformerSpec.from_config(num_layers=(L, L), num_heads=nh, pre_norm=True, activation=RELU)``
  -- pre-norm layers with a final LayerNorm on both stacks, ReLU feed-forward; LayerNorm eps 1e-5
  (PyTorch's default) is written into the config.
- Embeddings: ``scale_embeddings = True`` (CT2 multiplies by sqrt(d_model), as we do).
- Positions: CT2's built-in sinusoids are tensor2tensor's, not section 3.5 of Vaswani et al.
  (checked: concatenated sin|cos halves, positions from 1, frequencies 10000^(-i/(H/2-1))), so
  our exact table ``sinusoidal_encoding(0..N-1)`` is written into ``position_encodings.encodings``
  (N = ``MAX_POSITIONS``).
- Self-attention: q, k, v are fused into ``linear[0]`` (3H x H, order q|k|v), ``linear[1]`` = W_O.
  Cross-attention: ``linear[0]`` = q, ``linear[1]`` = fused k|v, ``linear[2]`` = W_O.
  Sublayer LayerNorms: encoder ln1 -> self_attention.layer_norm, ln2 -> ffn.layer_norm; decoder
  ln1 -> self_attention, ln2 -> attention (cross), ln3 -> ffn.
- Output layer -> ``decoder.projection`` (weight and bias). Tied weights are simply written twice;
  ``spec.optimize`` aliases identical variables, so the file stores them once.
- Returned attention: ``alignment_layer=-1, alignment_heads=nh`` -> CT2 averages all heads of the
  last layer, which is exactly ``StepAttention.headline()``.
- Vocabularies are the tokenizers' pieces in id order (``<pad> <bos> <eos> <unk>`` = 0..3) and the
  config names our specials (``bos_token="<bos>"``, ``eos_token="<eos>"``, ``unk_token="<unk>"``,
  ``decoder_start_token="<bos>"``) with ``add_source_eos=True, add_source_bos=False``: CT2 then
  feeds the source as attnmt does (ids + <eos>) and starts the target from <bos>.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnmt.atomic import make_dirs, write_atomic, write_text_atomic
from attnmt.checkpoint import Checkpoint, CheckpointError, first_line
from attnmt.config import load_config, save_config
from attnmt.data import source_tensor
from attnmt.search import Candidate, length_penalty, output_limits
from attnmt.tokenizer import SPECIALS, UNK_ID, Tokenizer, tokenizer_from_dict
from attnmt.transformer import sinusoidal_encoding
from attnmt.translate import DecodeOptions, Translator

MAX_POSITIONS = 1024  # rows of the exported position table: longest source and output, in tokens
TOKENIZERS_FILE = "attnmt_tokenizers.pt"  # {"src": dict, "tgt": dict} for tokenizer_from_dict
CONFIG_FILE = "attnmt_config.yaml"  # the checkpoint's resolved attnmt config (decode defaults)
MANIFEST_FILE = "attnmt_export.json"  # the files the export wrote: all a later export may remove


class ExportError(ValueError):
    """A checkpoint that cannot become a CTranslate2 model (a ValueError: a user error the CLI
    reports in one line); the message says why."""


def _vocabulary(tok: Tokenizer, side: str) -> list[str]:
    pieces = [tok.id_to_piece(i) for i in range(tok.vocab_size)]
    if pieces[: len(SPECIALS)] != SPECIALS:
        raise ExportError(f"{side} vocabulary must start with {SPECIALS}, got {pieces[:4]}")
    if len(set(pieces)) != len(pieces):
        # CT2 maps tokens by string, so two ids with one spelling would be ambiguous.
        raise ExportError(f"{side} vocabulary has duplicate pieces; CTranslate2 needs unique ones")
    return pieces


def _build_spec(sd: dict[str, np.ndarray], layers: int, heads: int, d_model: int):
    from ctranslate2.specs import common_spec, transformer_spec

    spec = transformer_spec.TransformerSpec.from_config(
        num_layers=(layers, layers),
        num_heads=heads,
        pre_norm=True,
        activation=common_spec.Activation.RELU,
        alignment_layer=-1,
        alignment_heads=heads,
    )

    def linear(dst, name: str) -> None:
        dst.weight = sd[f"{name}.weight"]
        dst.bias = sd[f"{name}.bias"]

    def fused(dst, names: list[str]) -> None:
        dst.weight = np.concatenate([sd[f"{n}.weight"] for n in names])  # (k*H, H)
        dst.bias = np.concatenate([sd[f"{n}.bias"] for n in names])  # (k*H,)

    def norm(dst, name: str) -> None:
        dst.gamma = sd[f"{name}.weight"]
        dst.beta = sd[f"{name}.bias"]

    table = sinusoidal_encoding(torch.arange(MAX_POSITIONS), d_model).numpy()  # (N, H)
    enc, dec = spec.encoder, spec.decoder
    enc.embeddings[0].weight = sd["src_emb.weight"]
    enc.scale_embeddings = True
    enc.position_encodings.encodings = table
    for i, ls in enumerate(enc.layer):
        p = f"enc_layers.{i}"
        norm(ls.self_attention.layer_norm, f"{p}.ln1")
        fused(ls.self_attention.linear[0], [f"{p}.self_attn.{x}" for x in "qkv"])
        linear(ls.self_attention.linear[1], f"{p}.self_attn.o")
        norm(ls.ffn.layer_norm, f"{p}.ln2")
        linear(ls.ffn.linear_0, f"{p}.ff.w1")
        linear(ls.ffn.linear_1, f"{p}.ff.w2")
    norm(enc.layer_norm, "enc_ln")

    dec.embeddings.weight = sd["tgt_emb.weight"]
    dec.scale_embeddings = True
    dec.position_encodings.encodings = table
    for i, ls in enumerate(dec.layer):
        p = f"dec_layers.{i}"
        norm(ls.self_attention.layer_norm, f"{p}.ln1")
        fused(ls.self_attention.linear[0], [f"{p}.self_attn.{x}" for x in "qkv"])
        linear(ls.self_attention.linear[1], f"{p}.self_attn.o")
        norm(ls.attention.layer_norm, f"{p}.ln2")
        linear(ls.attention.linear[0], f"{p}.cross_attn.q")
        fused(ls.attention.linear[1], [f"{p}.cross_attn.{x}" for x in "kv"])
        linear(ls.attention.linear[2], f"{p}.cross_attn.o")
        norm(ls.ffn.layer_norm, f"{p}.ln3")
        linear(ls.ffn.linear_0, f"{p}.ff.w1")
        linear(ls.ffn.linear_1, f"{p}.ff.w2")
    norm(dec.layer_norm, "dec_ln")
    linear(dec.projection, "out")
    return spec


def export_ctranslate2(
    ckpt_path: str | Path,
    out_dir: str | Path,
    quantization: str | None = None,
    force: bool = False,
) -> Path:
    """Write a CTranslate2 model directory for a Transformer checkpoint; returns ``out_dir``.

    ``quantization``: None (float32), "int8", "int8_float16", "int16", "float16", "bfloat16", ...
    (any CTranslate2 quantization). The directory also holds the tokenizers and the attnmt config,
    so :func:`load_translator` needs nothing else. Written to a temp dir, then moved into place
    (:func:`_install`): an earlier export is replaced, a non-empty folder export did not write is
    refused unless ``force``, and a file export did not write is never removed.
    """
    ckpt = Checkpoint.load(ckpt_path)
    cfg = ckpt.config
    if cfg.model.arch != "transformer":
        raise ExportError(
            f"{ckpt_path}: model.arch is {cfg.model.arch!r}; CTranslate2 has no RNN/LSTM decoder "
            "support, so only Transformer models (model.arch: transformer) can be exported"
        )
    ckpt.build_model()  # weights that do not fit the config would export a broken model
    out_dir = Path(out_dir)
    foreign = _foreign_files(out_dir)  # refuse before the (slow) conversion
    if foreign and not force:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise ExportError(
            f"--out {out_dir}: not empty and not an earlier attnmt export (it holds {shown}); "
            "choose an empty or new folder, or pass --force to write into it (files of the same "
            "names are replaced, the others kept)"
        )
    spec = _converted(ckpt, str(ckpt_path), quantization)
    make_dirs(out_dir.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        spec.save(str(tmp))
        tokenizers = {"src": ckpt.src_tokenizer.to_dict(), "tgt": ckpt.tgt_tokenizer.to_dict()}
        write_atomic(tmp / TOKENIZERS_FILE, lambda f: torch.save(tokenizers, f))
        save_config(cfg, tmp / CONFIG_FILE)
        files = sorted(p.name for p in tmp.iterdir()) + [MANIFEST_FILE]
        write_text_atomic(tmp / MANIFEST_FILE, json.dumps({"files": files}, indent=1) + "\n")
        _install(tmp, out_dir, keep=foreign)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _converted(ckpt: Checkpoint, name: str, quantization: str | None) -> Any:
    """The checkpoint as a validated, optimized ``TransformerSpec`` with its vocabularies."""
    cfg = ckpt.config
    sd = {k: v.detach().float().cpu().numpy() for k, v in ckpt.weights.items()}
    try:
        spec = _build_spec(sd, cfg.model.layers, cfg.model.heads, cfg.model.hidden)
    except KeyError as e:
        raise ExportError(f"{name}: state_dict lacks {e}; not a TransformerSeq2Seq") from None
    spec.register_source_vocabulary(_vocabulary(ckpt.src_tokenizer, "source"))
    spec.register_target_vocabulary(_vocabulary(ckpt.tgt_tokenizer, "target"))
    c = spec.config
    c.unk_token, c.bos_token, c.eos_token = "<unk>", "<bos>", "<eos>"
    c.decoder_start_token = "<bos>"  # tgt_in starts with <bos>
    c.add_source_bos, c.add_source_eos = False, True  # sources are ids + <eos>
    c.layer_norm_epsilon = 1e-5  # torch.nn.LayerNorm's default
    spec.validate()
    try:
        spec.optimize(quantization=quantization)
    except ValueError as e:  # CT2 names the accepted quantization types
        raise ExportError(f"quantization {quantization!r}: {e}") from None
    return spec


def _exported_files(out_dir: Path) -> set[str]:
    """What an earlier export wrote into ``out_dir``, by its manifest (nothing without one)."""
    try:
        files = json.loads((out_dir / MANIFEST_FILE).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    return {f for f in files if isinstance(f, str) and "/" not in f and f not in ("", ".", "..")}


def _foreign_files(out_dir: Path) -> list[str]:
    """The entries of ``out_dir`` that no earlier export wrote."""
    if not out_dir.exists():
        return []
    if not out_dir.is_dir():
        raise ExportError(f"--out {out_dir}: is a file, not a directory")
    ours = _exported_files(out_dir)
    return sorted(p.name for p in out_dir.iterdir() if p.name not in ours)


def _install(tmp: Path, out_dir: Path, keep: list[str]) -> None:
    """Move the finished export in ``tmp`` to ``out_dir``, removing only what exports wrote."""
    if not keep:
        # Nothing foreign: swap whole directories, so a reader sees the old export or the new.
        old = None
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=tmp.parent))
            os.replace(out_dir, old)  # rename over the empty placeholder mkdtemp made
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return
    # --force into a folder with other files: file by file; files of the old export that this
    # one does not write (a shared vocabulary file, say) go, everything else stays.
    previous = _exported_files(out_dir)
    new = {p.name for p in tmp.iterdir()}
    for name in sorted(new):
        os.replace(tmp / name, out_dir / name)
    for name in sorted(previous - new - set(keep)):
        (out_dir / name).unlink(missing_ok=True)


class CT2Engine:
    """CTranslate2's search on an exported model, behind ``Translator`` like ``TorchEngine``.

    Greedy search gives the same ids, tokens, attention and ``finished`` flags as attnmt's (and
    log-probs to ~1e-4: CT2's search kernels round a little differently). Differences, by
    CTranslate2's design: beam search ranks with CT2's own length normalisation
    (logprob / steps^alpha), so n-best lists past the winner can differ; ``score`` is recomputed
    with attnmt's definition so the numbers are comparable. CT2 takes one length limit per batch;
    per-sentence limits are applied by cutting longer outputs (exact for greedy search).

    Ending a beam early: CT2 ends a sentence when ``beam`` hypotheses have ended (attnmt's
    default) unless there is no length penalty, when it ends once the best candidate has ended
    (attnmt's ``early_stop``; with alpha 0 no later hypothesis can outscore it, so the winner is
    the same either way). So ``early_stop`` with a length penalty is refused (:meth:`check`).

    Repetition control: ``no_repeat_ngram`` bans the same tokens as attnmt's search (greedy gives
    the same ids). CT2 applies ``repetition_penalty`` (and the bans and ``min_len``) to logits
    before its softmax, attnmt to log-probs after it, so with a penalty the outputs can differ,
    and CT2's log-probs are those of its renormalised distribution.
    """

    def __init__(self, translator: Any, src_tok: Tokenizer, tgt_tok: Tokenizer):
        self.ct2 = translator  # a ctranslate2.Translator
        self.device = torch.device(translator.device)
        # CT2 reads and writes token strings; attnmt's ids map onto them one to one.
        self.src_pieces = [src_tok.id_to_piece(i) for i in range(src_tok.vocab_size)]
        self.tgt_ids = {tgt_tok.id_to_piece(i): i for i in range(tgt_tok.vocab_size)}

    @property
    def model(self) -> Any:
        raise ValueError(
            "this needs a PyTorch checkpoint (.pt or run dir): a CTranslate2 export has no "
            "PyTorch model to explain or score"
        )

    def check(self, options: DecodeOptions) -> None:
        if options.early_stop and options.beam > 1 and options.length_penalty != 0:
            raise ValueError(
                "early_stop: CTranslate2 ends a beam at its best candidate only without a length "
                f"penalty; set length_penalty to 0 (it is {options.length_penalty:g}) or use "
                "the torch engine"
            )

    def search(
        self, sources: list[list[int]], options: DecodeOptions, with_attention: bool
    ) -> list[list[Candidate]]:
        pieces = [[self.src_pieces[i] for i in s] for s in sources]
        # The torch engine's limits (search.output_limits over the <eos>-ended sources), capped
        # by the exported position table.
        _, src_mask = source_tensor(sources)  # (B, S)
        a, b = options.max_len_a, options.max_len_b
        limits = [min(n, MAX_POSITIONS) for n in output_limits(src_mask, a, b)]
        # CT2 takes one max_decoding_length per batch, not one per sentence: use the largest
        # limit in the batch, then cut each longer output back to its own limit (exactly what
        # attnmt's greedy search returns; an approximation for beams).
        found = self.ct2.translate_batch(
            pieces,
            beam_size=options.beam,
            num_hypotheses=options.n_best,
            length_penalty=options.length_penalty,
            max_decoding_length=max(limits),
            # A floor above the limit means "decode up to the limit" in attnmt's search; CT2
            # refuses it, so it gets the limit.
            min_decoding_length=min(options.min_len, max(limits)),
            # The same bans as attnmt's search; CT2 applies the penalty to logits, not log-probs.
            no_repeat_ngram_size=options.no_repeat_ngram,
            repetition_penalty=options.repetition_penalty,
            max_input_length=MAX_POSITIONS - 1,  # the position table's length, with <eos>
            return_scores=True,
            return_end_token=True,  # tells finished hypotheses from cut ones
            return_attention=with_attention,
        )
        outputs = [[list(h)[:limit] for h in r.hypotheses] for r, limit in zip(found, limits)]
        logprobs = self._logprobs(pieces, outputs, [r.scores for r in found], options)
        return [
            [
                self._candidate(out, lp, r.attention[k] if with_attention else None, options)
                for k, (out, lp) in enumerate(zip(outs, lps))
            ]
            for r, outs, lps in zip(found, outputs, logprobs)
        ]

    def _logprobs(
        self,
        pieces: list[list[str]],
        outputs: list[list[list[str]]],
        scores: list[list[float]],
        options: DecodeOptions,
    ) -> list[list[float]]:
        """Total log-probability of each output (sentence, rank)."""
        # CT2's score is logprob / steps^alpha (greedy included, steps counting <eos>) for
        # outputs that end in <eos>, but not for ones the length limit stopped, and a cut output
        # needs its prefix's log-prob anyway: rescore those (one batched call).
        alpha = options.length_penalty
        logprobs = [
            [score * len(out) ** alpha for score, out in zip(ss, outs)]
            for ss, outs in zip(scores, outputs)
        ]
        cut = [
            (i, k)
            for i, outs in enumerate(outputs)
            for k, o in enumerate(outs)
            if o[-1:] != ["<eos>"]
        ]
        if cut:
            rescored = self.ct2.score_batch(
                [pieces[i] for i, _ in cut],
                [outputs[i][k] for i, k in cut],
                max_input_length=MAX_POSITIONS - 1,
            )  # per-token log-probs; the last entry is an <eos> we do not use
            for (i, k), r in zip(cut, rescored):
                logprobs[i][k] = float(sum(r.log_probs[: len(outputs[i][k])]))
        return logprobs

    def _candidate(
        self,
        tokens: list[str],
        logprob: float,
        attention: list[list[float]] | None,
        options: DecodeOptions,
    ) -> Candidate:
        finished = tokens[-1:] == ["<eos>"]
        steps = len(tokens)  # output steps, <eos> included when finished
        ids = [self.tgt_ids.get(t, UNK_ID) for t in (tokens[:-1] if finished else tokens)]
        weights = torch.empty(0, 0)  # (0, 0): not asked for, never read
        if attention is not None:
            # CT2 drops the column of the <eos> it appended to the source; every row summed
            # to 1 over the real source positions, so that column is what the others leave.
            rows = [[*row, max(0.0, 1.0 - sum(row))] for row in attention[:steps]]
            weights = torch.tensor(rows, dtype=torch.float64)  # (steps, S)
        # attnmt.search's definition: greedy is unnormalised, beams use the GNMT penalty.
        beam = options.beam > 1
        score = logprob / length_penalty(steps, options.length_penalty) if beam else logprob
        return Candidate(ids, score, logprob, weights, finished)


def load_translator(
    model_dir: str | Path,
    device: str | torch.device = "cpu",
    threads: int = 0,
    compute_type: str = "default",
) -> Translator:
    """A ``Translator`` on a CTranslate2 export (:func:`export_ctranslate2` writes one).

    ``threads``: CTranslate2's threads per translation (0 = its default); ``compute_type``:
    CTranslate2's weight and compute type ("int8" quantizes a float export as it loads).
    """
    import ctranslate2

    model_dir = Path(model_dir)
    if not (model_dir / "model.bin").exists() or not (model_dir / TOKENIZERS_FILE).exists():
        raise FileNotFoundError(f"{model_dir}: not an attnmt CTranslate2 export")
    cfg = load_config(model_dir / CONFIG_FILE)
    src_tok, tgt_tok = _read_tokenizers(model_dir / TOKENIZERS_FILE)
    dev = torch.device(device)
    try:
        translator = ctranslate2.Translator(
            str(model_dir),
            device=dev.type,
            device_index=dev.index or 0,
            compute_type=compute_type,
            inter_threads=1,  # Translator sends one batch at a time
            intra_threads=threads,
        )
    except RuntimeError as e:  # a truncated or foreign model.bin, among others
        raise CheckpointError(
            f"{model_dir}: cannot load the CTranslate2 model ({first_line(e)})"
        ) from None
    return Translator(CT2Engine(translator, src_tok, tgt_tok), src_tok, tgt_tok, cfg)


def _read_tokenizers(path: Path) -> tuple[Tokenizer, Tokenizer]:
    """The export's tokenizer file; anything unreadable is one error naming it."""
    try:
        toks = torch.load(path, weights_only=True)
        return tokenizer_from_dict(toks["src"]), tokenizer_from_dict(toks["tgt"])
    except Exception as e:  # torch and sentencepiece raise many types for a damaged file
        raise CheckpointError(
            f"{path}: unreadable tokenizer file ({type(e).__name__}: {first_line(e)}); export the "
            "model again"
        ) from None
