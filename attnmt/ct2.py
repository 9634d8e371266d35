"""CTranslate2 export and inference for Transformer checkpoints.

Pipeline position: a trained checkpoint -> **export_ctranslate2** -> a CTranslate2 model directory
-> **CT2Translator** (the fast CPU/GPU inference path; same ``Hypothesis`` results as
:class:`attnmt.translate.Translator`).

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

import os
import shutil
from pathlib import Path

import numpy as np
import torch

from attnmt.checkpoint import Checkpoint
from attnmt.config import load_config, save_config
from attnmt.corpus import normalize
from attnmt.search import length_penalty, max_output_len
from attnmt.tokenizer import SPECIALS, UNK_ID, Tokenizer, tokenizer_from_dict
from attnmt.transformer import sinusoidal_encoding
from attnmt.translate import Hypothesis, check_search_options

MAX_POSITIONS = 1024  # rows of the exported position table: longest source and output, in tokens
TOKENIZERS_FILE = "attnmt_tokenizers.pt"  # {"src": dict, "tgt": dict} for tokenizer_from_dict
CONFIG_FILE = "attnmt_config.yaml"  # the checkpoint's resolved attnmt config (decode defaults)


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
    ckpt_path: str | Path, out_dir: str | Path, quantization: str | None = None
) -> Path:
    """Write a CTranslate2 model directory for a Transformer checkpoint; returns ``out_dir``.

    ``quantization``: None (float32), "int8", "int8_float16", "int16", "float16", "bfloat16", ...
    (any CTranslate2 quantization). The directory also holds the tokenizers and the attnmt config,
    so :class:`CT2Translator` needs nothing else. Written to a temp dir, then renamed into place.
    """
    ckpt = Checkpoint.load(ckpt_path)
    cfg = ckpt.config
    if cfg.model.arch != "transformer":
        raise ExportError(
            f"{ckpt_path}: model.arch is {cfg.model.arch!r}; CTranslate2 has no RNN/LSTM decoder "
            "support, so only Transformer models (model.arch: transformer) can be exported"
        )
    src_tok, tgt_tok = ckpt.src_tokenizer, ckpt.tgt_tokenizer
    sd = {k: v.detach().float().cpu().numpy() for k, v in ckpt.weights.items()}
    try:
        spec = _build_spec(sd, cfg.model.layers, cfg.model.heads, cfg.model.hidden)
    except KeyError as e:
        raise ExportError(f"{ckpt_path}: state_dict lacks {e}; not a TransformerSeq2Seq") from None
    spec.register_source_vocabulary(_vocabulary(src_tok, "source"))
    spec.register_target_vocabulary(_vocabulary(tgt_tok, "target"))
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

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "model.bin").exists():
        raise ExportError(
            f"{out_dir}: exists and is not a CTranslate2 model; refusing to replace it"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        spec.save(str(tmp))
        torch.save({"src": src_tok.to_dict(), "tgt": tgt_tok.to_dict()}, tmp / TOKENIZERS_FILE)
        save_config(cfg, tmp / CONFIG_FILE)
        # A directory cannot be renamed over a non-empty one: move the old export aside first.
        old = out_dir.with_name(f".{out_dir.name}.old{os.getpid()}")
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


class CT2Translator:
    """Translate with an exported model; returns the same ``Hypothesis`` lists as ``Translator``.

    Greedy search gives the same ids, tokens, attention and ``finished`` flags as attnmt's (and
    log-probs to ~1e-4: CT2's search kernels round a little differently). Differences, by
    CTranslate2's design: beam search ranks with CT2's own length normalisation
    (logprob / steps^alpha), so n-best lists past the winner can differ; ``score`` is recomputed
    with attnmt's definition so the numbers are comparable. CT2 takes one length limit per batch;
    per-sentence limits are applied by cutting longer outputs (exact for greedy search).
    """

    def __init__(
        self,
        model_dir: str | Path,
        device: str = "cpu",
        compute_type: str = "default",
        inter_threads: int = 1,
        intra_threads: int = 0,
    ):
        import ctranslate2

        model_dir = Path(model_dir)
        if not (model_dir / "model.bin").exists() or not (model_dir / TOKENIZERS_FILE).exists():
            raise FileNotFoundError(f"{model_dir}: not an attnmt CTranslate2 export")
        self.cfg = load_config(model_dir / CONFIG_FILE)
        toks = torch.load(model_dir / TOKENIZERS_FILE, weights_only=True)
        self.src_tok = tokenizer_from_dict(toks["src"])
        self.tgt_tok = tokenizer_from_dict(toks["tgt"])
        self.tgt_ids = {self.tgt_tok.id_to_piece(i): i for i in range(self.tgt_tok.vocab_size)}
        self.translator = ctranslate2.Translator(
            str(model_dir),
            device=device,
            compute_type=compute_type,
            inter_threads=inter_threads,
            intra_threads=intra_threads,
        )

    def translate(
        self,
        texts: list[str],
        beam: int | None = None,
        n_best: int | None = None,
        with_attention: bool = False,
    ) -> list[list[Hypothesis]]:
        """Translate ``texts``; returns the n-best hypotheses per text, best first."""
        dc = self.cfg.decode
        alpha = dc.length_penalty
        beam = dc.beam if beam is None else beam
        n_best = dc.n_best if n_best is None else n_best
        check_search_options(beam, n_best, dc.min_len)
        ids = [self.src_tok.encode(normalize(t, self.cfg.data.lowercase)) for t in texts]
        pieces = [[self.src_tok.id_to_piece(i) for i in s] for s in ids]
        # As in attnmt.search: the source length counts its <eos>, the limit counts output
        # steps including <eos>; capped by the exported position table.
        limits = [
            min(max_output_len(len(s) + 1, dc.max_len_a, dc.max_len_b), MAX_POSITIONS) for s in ids
        ]
        results: list[list[Hypothesis]] = [[] for _ in texts]
        # CT2 does not decode an empty source at all; attnmt's contract is one empty hypothesis.
        for i in (i for i, s in enumerate(ids) if not s):
            attention = [[1.0]] if with_attention else None
            results[i] = [Hypothesis("", [], [], 0.0, 0.0, ["<eos>"], attention, True)]
        # Sort by length so each batch pads little and has similar length limits.
        order = sorted((i for i, s in enumerate(ids) if s), key=lambda i: len(ids[i]))
        for start in range(0, len(order), dc.batch_size):
            chunk = order[start : start + dc.batch_size]
            # CT2 takes one max_decoding_length per batch, not one per sentence: use the
            # largest limit in the batch, then cut each longer output back to its own limit
            # (exactly what attnmt's greedy search returns; an approximation for beams).
            found = self.translator.translate_batch(
                [pieces[i] for i in chunk],
                beam_size=beam,
                num_hypotheses=n_best,
                length_penalty=alpha,
                max_decoding_length=max(limits[i] for i in chunk),
                min_decoding_length=dc.min_len,
                max_input_length=MAX_POSITIONS - 1,  # the position table's length, with <eos>
                return_scores=True,
                return_end_token=True,  # tells finished hypotheses from cut ones
                return_attention=with_attention,
            )
            outputs = {  # (sentence, rank) -> tokens cut to the sentence's own limit
                (i, k): list(hyp)[: limits[i]]
                for i, res in zip(chunk, found)
                for k, hyp in enumerate(res.hypotheses)
            }
            # CT2's score is logprob / steps^alpha (greedy included, steps counting <eos>) for
            # outputs that end in <eos>, but not for ones the length limit stopped, and a cut
            # output needs its prefix's log-prob anyway: rescore those (one batched call).
            cut = [key for key, tokens in outputs.items() if tokens[-1:] != ["<eos>"]]
            rescored = self.translator.score_batch(
                [pieces[i] for i, _ in cut],
                [outputs[key] for key in cut],
                max_input_length=MAX_POSITIONS - 1,
            )  # per-token log-probs; the last entry is an <eos> we do not use
            logprobs = {
                key: float(sum(r.log_probs[: len(outputs[key])])) for key, r in zip(cut, rescored)
            }
            for i, res in zip(chunk, found):
                results[i] = [
                    self._hypothesis(
                        outputs[i, k],
                        logprobs.get((i, k), res.scores[k] * len(outputs[i, k]) ** alpha),
                        res.attention[k] if with_attention else None,
                        pieces[i],
                        beam,
                    )
                    for k in range(len(res.hypotheses))
                ]
        return results

    def _hypothesis(
        self,
        tokens: list[str],
        logprob: float,
        attention: list[list[float]] | None,
        src_pieces: list[str],
        beam: int,
    ) -> Hypothesis:
        finished = tokens[-1:] == ["<eos>"]
        steps = len(tokens)  # output steps, <eos> included when finished
        ids = [self.tgt_ids.get(t, UNK_ID) for t in (tokens[:-1] if finished else tokens)]
        if attention is not None:
            # CT2 drops the column of the <eos> it appended to the source; every row summed
            # to 1 over the real source positions, so that column is what the others leave.
            attention = [[*row, max(0.0, 1.0 - sum(row))] for row in attention[:steps]]
        alpha = self.cfg.decode.length_penalty
        return Hypothesis(
            text=self.tgt_tok.decode(ids),
            tokens=[self.tgt_tok.id_to_piece(i) for i in ids],
            ids=ids,
            # attnmt.search's definition: greedy is unnormalised, beams use the GNMT penalty.
            score=logprob if beam == 1 else logprob / length_penalty(steps, alpha),
            logprob=logprob,
            src_tokens=src_pieces + ["<eos>"],
            attention=attention,
            finished=finished,
        )
