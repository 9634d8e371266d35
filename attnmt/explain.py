"""Step-by-step greedy decoding trace and attention heatmaps: the "Let's go -> vamos" walkthrough.

Pipeline position: text -> ``Translator.encode_sources`` -> ``model.encode`` -> **explain**
(consumes search's greedy step loop, :func:`attnmt.search.greedy_steps`, recording every step)
-> ``Trace`` -> table / heatmap / JSON.

At each step the decoder reads its previous output (``<bos>`` first), compares its output with the
encoding of every source token (similarity *scores*), turns the scores into shares with a softmax
(the attention *weights*), mixes the encodings by those shares, and predicts a distribution over
the next token; greedy decoding takes the most probable one (Luong et al. 2015, section 3;
Bahdanau et al. 2015, section 3.1). Explain does not decode by itself: the steps, the ``<eos>``
and length-limit stop, ``min_len`` and the tie-breaking are those of ``greedy_search``, with the
decode options of ``translator.options``, so the trace equals ``translate(beam=1)`` of a
one-sentence line. A line of several sentences is explained whole, in one pass: ``translate``
splits it (``decode.split_sentences``), explain shows what one decoding of the line attends to.

Only the model interface is used, never the model type: the LSTM reports (L=1, nh=1) attention,
the Transformer its cross-attention per layer and head. The headline map (scores and weights) is
the last layer with heads averaged, as in ``StepAttention.headline``; the trace's word alignment
(:class:`WordAlignment`) reads that same map with ``align.py``'s words and rule (pieces combined
into words, each output word linked to the source word it attends to most).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from attnmt.align import Link, attention_links, word_ids, words
from attnmt.corpus import normalize
from attnmt.plot import save_figure
from attnmt.search import GreedyStep, greedy_steps, output_limits
from attnmt.translate import Hypothesis, Translator, eval_mode

BAR_WIDTH = 20  # characters for a 100% attention bar in the terminal table
ANNOTATE_MAX = 15  # print values in heatmap cells when both sides have at most this many tokens


@dataclass
class Step:
    index: int  # 1-based step number
    input_token: str  # what the decoder read: "<bos>" first, then its previous choice
    scores: list[float]  # (S,) similarity with each source token (last layer, heads averaged)
    weights: list[float]  # (S,) softmax shares in [0, 1], summing to 1 (last layer, heads averaged)
    layer_head_weights: list[list[list[float]]]  # (L, nh, S) shares for every layer and head
    top_k: list[tuple[str, float]]  # most probable next tokens with probabilities, best first
    chosen: str  # the token greedy decoding picked ("<eos>" on the last step when it ended)
    chosen_prob: float


@dataclass(frozen=True)
class WordAlignment:
    """The headline attention of a trace as word links, counted as ``align.py`` counts words."""

    src_words: list[str]  # words(source text as encoded)
    output_words: list[str]  # words(output text)
    src_word_ids: list[int]  # (S,) the word of each source piece (src_tokens without <eos>)
    output_word_ids: list[int]  # (T,) the word of each output piece (output_tokens)
    links: list[Link]  # (source word, output word), sorted: one per output word

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the ``alignment`` of serve's /v1/explain answer)."""
        return {
            "src_words": list(self.src_words),
            "output_words": list(self.output_words),
            "src_word_ids": list(self.src_word_ids),
            "output_word_ids": list(self.output_word_ids),
            "links": [list(link) for link in self.links],
        }


@dataclass
class Trace:
    src_tokens: list[str]  # source pieces + "<eos>": the attention columns
    steps: list[Step]
    output_tokens: list[str]  # target pieces, no specials
    output_text: str
    stopped_by: str  # "eos" or "length_limit"
    layers: int  # attention layers reported per step (1 for the LSTM)
    heads: int  # attention heads per layer (1 for the LSTM)
    output_ids: list[int] = field(default_factory=list)  # target ids, no specials
    max_len: int = 0  # the output length limit that applied
    source_text: str = ""  # the input as given
    alignment: WordAlignment | None = None  # the headline attention as word links (explain sets it)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the shape serve.py returns over HTTP)."""
        return {
            "src_tokens": list(self.src_tokens),
            "steps": [
                {
                    "step": s.index,
                    "input_token": s.input_token,
                    "scores": s.scores,
                    "weights": s.weights,
                    "layer_head_weights": s.layer_head_weights,
                    "top_k": [{"token": t, "prob": p} for t, p in s.top_k],
                    "chosen": s.chosen,
                    "chosen_prob": s.chosen_prob,
                }
                for s in self.steps
            ],
            "output_tokens": list(self.output_tokens),
            "output_text": self.output_text,
            "stopped_by": self.stopped_by,
            "layers": self.layers,
            "heads": self.heads,
        }


def _finite(values: list[float]) -> list[float]:
    # -inf only marks padding, which a single sentence has none of; guard anyway so the dict
    # stays valid JSON (json.dumps would write the non-standard "-Infinity").
    return [v if math.isfinite(v) else -1e30 for v in values]


@torch.inference_mode()
def explain(translator: Translator, text: str, top_k: int = 5) -> Trace:
    """Greedy-decode ``text`` one step at a time and record what every step saw and chose."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if not text.strip():
        # translate() answers "" without decoding; there are no steps to show.
        raise ValueError("nothing to explain: the text is empty")
    model, tgt_tok, opts = translator.model, translator.tgt_tok, translator.options
    src, src_mask, pieces = translator.encode_sources([text])  # (1, S), (1, S)
    limits = output_limits(src_mask, opts.max_len_a, opts.max_len_b)  # as translate's search

    def piece(i: int) -> str:
        # Specials by name: a SentencePiece vocabulary may spell them differently.
        specials = {model.bos_id: "<bos>", model.eos_id: "<eos>", model.pad_id: "<pad>"}
        return specials.get(i, tgt_tok.id_to_piece(i))

    # The very loop greedy_search runs, so the trace equals translate(beam=1) by construction.
    steps: list[Step] = []
    chosen: list[int] = []
    with eval_mode(model):  # dropout off, as in translate; the caller's mode comes back after
        repeats = (opts.no_repeat_ngram, opts.repetition_penalty)
        for step in greedy_steps(model, src, src_mask, limits, opts.min_len, *repeats):
            steps.append(_record(step, piece, top_k))
            chosen.append(int(step.chosen[0]))
    ended = chosen[-1] == model.eos_id  # <eos> can only be the last choice: it ends the loop
    ids = chosen[:-1] if ended else chosen
    lhw = steps[-1].layer_head_weights  # (L, nh, S)
    trace = Trace(
        src_tokens=pieces[0],
        steps=steps,
        output_tokens=[tgt_tok.id_to_piece(i) for i in ids],
        output_text=tgt_tok.decode(ids),
        stopped_by="eos" if ended else "length_limit",
        layers=len(lhw),
        heads=len(lhw[0]),
        output_ids=ids,
        max_len=limits[0],
        source_text=text,
    )
    trace.alignment = word_alignment(trace, translator.cfg.data.lowercase)
    return trace


def word_alignment(trace: Trace, lowercase: bool = False) -> WordAlignment:
    """The trace's headline attention (the rows its heatmap draws) as word links, with
    ``align.attention_links``: the same words and rule as ``translate --align``. ``lowercase``:
    whether the model reads lowercased text (``data.lowercase``), so its words are those read."""
    src_text = normalize(trace.source_text, lowercase)  # the text the source pieces spell
    src_pieces, out_pieces = trace.src_tokens[:-1], trace.output_tokens  # no <eos>
    src_words, out_words = words(src_text), words(trace.output_text)
    # An output of no words (at once <eos>, or pieces that decode to nothing) has no links.
    src_ids = word_ids(src_text, src_pieces) if src_words and src_pieces else []
    out_ids = word_ids(trace.output_text, out_pieces) if out_words and out_pieces else []
    links: list[Link] = []
    if src_ids and out_ids:
        attn = torch.tensor([s.weights for s in trace.steps])  # (steps, S + 1)
        found = attention_links(attn, src_text, src_pieces, trace.output_text, out_pieces)
        links = sorted(found)
    return WordAlignment(src_words, out_words, src_ids, out_ids, links)


def _record(step: GreedyStep, piece: Callable[[int], str], top_k: int) -> Step:
    """One greedy step of a single sentence (row 0) as the trace shows it."""
    attn = step.attention
    top_logp, top_ids = step.logp[0].float().topk(min(top_k, step.logp.size(-1)))  # (k,), (k,)
    return Step(
        index=step.t + 1,
        input_token=piece(int(step.input_ids[0])),
        scores=_finite(attn.scores[0, -1].float().mean(0).tolist()),  # (S,)
        weights=attn.headline()[0].float().tolist(),  # (S,)
        layer_head_weights=attn.weights[0].float().tolist(),  # (L, nh, S)
        top_k=[(piece(int(i)), math.exp(float(lp))) for lp, i in zip(top_logp, top_ids)],
        chosen=piece(int(step.chosen[0])),
        chosen_prob=math.exp(float(step.chosen_logp[0])),
    )


def _bar(share: float) -> str:
    """A horizontal bar of block characters, in eighths of a character."""
    eighths = round(max(0.0, min(1.0, share)) * BAR_WIDTH * 8)
    return "█" * (eighths // 8) + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[eighths % 8]


def render_table(trace: Trace) -> str:
    """The trace as a teacher would tell it, one small table per decoding step."""
    width = max([len(t) for t in trace.src_tokens] + [6])
    averaged = trace.layers > 1 or trace.heads > 1
    lines = [f"Source tokens: {' '.join(trace.src_tokens)}"]
    if averaged:
        lines.append(
            f"({trace.layers} layers x {trace.heads} heads; the table shows the last layer, "
            "heads averaged: score and softmax are averaged separately, so they need not match)"
        )
    for s in trace.steps:
        lines += ["", f"Step {s.index}: input '{s.input_token}'"]
        lines.append(f"  {'source':<{width}}  {'score':>8}  {'softmax':>7}")
        for tok, score, w in zip(trace.src_tokens, s.scores, s.weights):
            lines.append(f"  {tok:<{width}}  {score:>8.2f}  {100 * w:>6.1f}%  {_bar(w)}")
        nxt = ", ".join(f"{tok} {100 * p:.1f}%" for tok, p in s.top_k)
        lines.append(f"  top-{len(s.top_k)} next: {nxt}")
        lines.append(f"  -> chose '{s.chosen}' ({100 * s.chosen_prob:.1f}%)")
    lines.append("")
    if trace.stopped_by == "eos":
        lines.append(f"Stopped: <eos> after {len(trace.steps)} steps")
    else:
        lines.append(f"Stopped: length limit of {trace.max_len} tokens reached before <eos>")
    lines.append(f"Output: {trace.output_text}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Heatmaps (matplotlib's object API, no pyplot: no global backend state, safe inside a server).
# ---------------------------------------------------------------------------------------------


def _source_title(src_tokens: list[str]) -> str:
    toks = [t for t in src_tokens if t != "<eos>"]
    if any("▁" in t for t in toks):  # SentencePiece marks word starts with U+2581
        return "".join(toks).replace("▁", " ").strip()
    return " ".join(toks)


def _heatmap_data(data: Trace | Hypothesis | dict[str, Any]) -> tuple[list[str], list[str], Any]:
    """(source labels, output labels, matrix rows=outputs x cols=sources) from any trace shape."""
    if isinstance(data, Trace):
        data = data.to_dict()
    if isinstance(data, Hypothesis):
        data = {"src_tokens": data.src_tokens, "tokens": data.tokens, "attention": data.attention}
    if "steps" in data:  # a Trace dict
        rows = [s["chosen"] for s in data["steps"]]
        return data["src_tokens"], rows, [s["weights"] for s in data["steps"]]
    matrix = data.get("attention")
    if not matrix:
        raise ValueError("plot_attention: no attention (translate with with_attention=True)")
    # A finished hypothesis has one more row than tokens: the step that chose <eos>.
    rows = list(data["tokens"]) + ["<eos>"] * (len(matrix) - len(data["tokens"]))
    return data["src_tokens"], rows, matrix


def _draw(ax: Any, matrix: Any, cols: list[str], rows: list[str], annotate: bool, size: float):
    im = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=size)
    ax.set_yticks(range(len(rows)), rows, fontsize=size)
    if annotate:
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                colour = "white" if v > 0.6 else "black"  # stay readable on dark cells
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", color=colour, fontsize=size - 1)
    return im


def plot_attention(
    data: Trace | Hypothesis | dict[str, Any],
    path: str | Path,
    per_head: bool = False,
    title: str | None = None,
) -> Path:
    """Attention heatmap: source tokens across, output tokens (+ <eos>) down; .png or .svg.

    ``data`` is a Trace, a Hypothesis translated with ``with_attention=True``, or either's dict.
    ``per_head=True`` (Trace only) draws every layer x head, plus each layer's head average.
    """
    from matplotlib.figure import Figure

    path = Path(path)
    cols, rows, matrix = _heatmap_data(data)
    if title is None:
        title = _source_title(cols)
        if isinstance(data, Trace):
            cut = data.stopped_by == "length_limit"
        elif isinstance(data, Hypothesis):
            cut = not data.finished
        else:
            cut = data.get("stopped_by") == "length_limit" or data.get("finished") is False
        if cut:
            title += "  (stopped by the length limit)"
    annotate = len(rows) <= ANNOTATE_MAX and len(cols) <= ANNOTATE_MAX
    cell = 0.5  # inches per token, so labels and values have room
    if not per_head:
        fig = Figure(figsize=(2.5 + cell * len(cols), 1.8 + cell * len(rows)), layout="constrained")
        ax = fig.add_subplot()
        im = _draw(ax, matrix, cols, rows, annotate, 9)
        ax.set_xlabel("source")
        ax.set_ylabel("output")
        fig.colorbar(im, ax=ax, label="attention weight", shrink=0.8)
        fig.suptitle(title)
        return save_figure(fig, path)

    if not isinstance(data, Trace):
        raise ValueError("plot_attention(per_head=True) needs a Trace (from explain)")
    lhw = torch.tensor([s.layer_head_weights for s in data.steps])  # (T, L, nh, S)
    L, nh = lhw.size(1), lhw.size(2)
    w, h = 1.2 + 0.35 * len(cols), 1.0 + 0.35 * len(rows)
    fig = Figure(figsize=(w * (nh + 1) + 1, h * L + 0.8), layout="constrained")
    axes = fig.subplots(L, nh + 1, squeeze=False)
    small = annotate and len(rows) <= 8 and len(cols) <= 8
    for layer in range(L):
        for head in range(nh + 1):
            ax = axes[layer][head]
            if head < nh:
                m, name = lhw[:, layer, head], f"layer {layer + 1} head {head + 1}"  # (T, S)
            else:
                m, name = lhw[:, layer].mean(1), f"layer {layer + 1} average"  # (T, S)
            im = _draw(ax, m.tolist(), cols, rows, small, 7)
            ax.set_title(name, fontsize=8)
    fig.colorbar(im, ax=axes, label="attention weight", shrink=0.6)
    fig.suptitle(f"{title}  (cross-attention per layer and head)")
    return save_figure(fig, path)
