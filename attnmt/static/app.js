// attnmt web page: calls /v1/translate (with attention) and /v1/explain, renders the results.
// Plain DOM code, no build step, no dependencies. Text from the server always goes through
// textContent, never innerHTML, so translations cannot inject markup.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// SentencePiece marks a word start with U+2581; show it as a plain word for people.
const display = (piece) => piece.replace(/\u2581/g, "") || piece;
const pct = (x) => (100 * x).toFixed(1) + "%";
const OPEN_STEPS = 4; // trace steps shown expanded; later ones start collapsed

// The same, for SVG elements (createElement would make HTML elements that SVG does not draw).
function svgEl(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function setStatus(text, isError) {
  const s = $("status");
  s.textContent = text;
  s.className = isError ? "error" : "";
}

async function postJSON(path, body) {
  const res = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(String(data.detail || data.error || "HTTP " + res.status));
  return data;
}

function renderTranslation(t) {
  $("output").textContent = t.text;
  const alts = $("alternatives");
  alts.replaceChildren();
  for (const a of t.alternatives) {
    const li = el("li", {}, a.text);
    li.append(el("span", { class: "score" }, "score " + a.score.toFixed(3)));
    alts.append(li);
  }
  if (!t.alternatives.length) alts.append(el("li", { class: "muted" }, "none"));
  renderAttention(t.attention);
}

function renderAttention(att) {
  const tgt = $("tgt-tokens");
  const src = $("src-tokens");
  const table = $("heatmap");
  tgt.replaceChildren();
  src.replaceChildren();
  table.replaceChildren();
  if (!att || !att.weights) return;

  att.src_tokens.forEach((tok, j) => {
    const span = el("span", { class: "src-tok", "data-index": j }, display(tok));
    span.append(el("small", { class: "share" }, ""));
    src.append(span);
  });

  // Heatmap: one row per output token, one column per source token, value in each cell.
  const head = el("tr");
  head.append(el("th", { scope: "col" }, ""));
  att.src_tokens.forEach((tok, j) => {
    head.append(el("th", { scope: "col", "data-col": j }, display(tok)));
  });
  table.append(head);
  att.tgt_tokens.forEach((tok, i) => {
    const row = el("tr", { "data-row": i });
    row.append(el("th", { scope: "row" }, display(tok)));
    att.weights[i].forEach((w, j) => {
      const cell = el("td", { class: "cell", title: pct(w), "data-col": j }, w.toFixed(2));
      cell.style.backgroundColor = `rgba(var(--heat), ${w.toFixed(3)})`;
      if (w > 0.55) cell.style.color = "#fff";
      row.append(cell);
    });
    table.append(row);
  });

  att.tgt_tokens.forEach((tok, i) => {
    const span = el("span", {
      class: "tgt-tok",
      tabindex: "0",
      role: "button",
      "data-index": i,
      "aria-label": `output token ${display(tok)}: show its attention`,
    }, display(tok));
    const show = () => highlight(att, i);
    span.addEventListener("mouseenter", show);
    span.addEventListener("focus", show);
    span.addEventListener("click", show);
    tgt.append(span);
  });
}

// Shade each source token by how much output token i attended to it.
function highlight(att, i) {
  document.querySelectorAll(".tgt-tok").forEach((t) => {
    t.classList.toggle("active", Number(t.dataset.index) === i);
  });
  document.querySelectorAll(".src-tok").forEach((s) => {
    const w = att.weights[i][Number(s.dataset.index)];
    s.dataset.weight = w.toFixed(4);
    s.style.backgroundColor = `rgba(var(--heat), ${w.toFixed(3)})`;
    s.style.color = w > 0.55 ? "#fff" : "";
    s.title = pct(w);
    s.querySelector(".share").textContent = (100 * w).toFixed(0) + "%";
  });
  document.querySelectorAll("#heatmap tr[data-row]").forEach((r) => {
    r.classList.toggle("active", Number(r.dataset.row) === i);
  });
}

// ---------------------------------------------------------------------------------------------
// Word alignment: source words on top, output words below, one line per link (from /v1/explain).
// ---------------------------------------------------------------------------------------------

const ALIGN = { pad: 14, gap: 30, top: 24, bottom: 134, height: 150, minWidth: 280 }; // px
const LINK_NAMES = {
  model: "model link",
  "model agree": "model link, in the reference",
  "ref sure": "reference link, sure",
  "ref possible": "reference link, possible",
};

// Place a row of words, centred in `width`; returns each word's centre x.
function placeRow(svg, words, side, y) {
  const groups = words.map((w, k) => {
    const g = svgEl("g", {
      class: `word ${side}`,
      tabindex: "0",
      "data-side": side,
      "data-index": k,
      "aria-label": `${side === "src" ? "source" : "output"} word ${k} ${w}: show its links`,
    });
    const rect = svgEl("rect", { y: y - 15, height: 21, rx: 4 });
    const text = svgEl("text", { y, "text-anchor": "middle" }, w);
    g.append(rect, text);
    svg.append(g);
    return { g, rect, text, w: text.getComputedTextLength() || 8 * w.length };
  });
  const total = groups.reduce((sum, x) => sum + x.w, 0) + ALIGN.gap * Math.max(0, groups.length - 1);
  return { groups, total };
}

function centre(row, width) {
  let x = (width - row.total) / 2;
  return row.groups.map(({ rect, text, w }) => {
    const mid = x + w / 2;
    text.setAttribute("x", mid);
    rect.setAttribute("x", mid - w / 2 - 4);
    rect.setAttribute("width", w + 8);
    x += w + ALIGN.gap;
    return mid;
  });
}

// The translation's heatmap rows are the trace's output pieces only when beam and greedy agree.
function sameOutput(att, trace) {
  if (!att) return false;
  const rows = att.tgt_tokens.slice();
  if (rows.length === trace.output_tokens.length + 1 && rows[rows.length - 1] === "<eos>") rows.pop();
  return rows.length === trace.output_tokens.length && rows.every((t, i) => t === trace.output_tokens[i]);
}

function renderAlignment(trace, att) {
  const svg = $("alignment-svg");
  svg.replaceChildren();
  svg.classList.remove("focus");
  const a = trace.alignment;
  const ref = trace.reference;
  const matches = sameOutput(att, trace);
  $("alignment-note").textContent = !a.output_words.length
    ? "No output words to link."
    : matches
      ? ""
      : `These links are of the greedy output “${trace.output_text}” (the step-by-step trace ` +
        "below), not of the beam translation above; its heatmap shows source columns only.";

  // Words first (to measure them), lines behind them: the reference bands, then model links.
  const lines = svgEl("g", { class: "links" });
  svg.append(lines);
  const src = placeRow(svg, a.src_words, "src", ALIGN.top);
  const out = placeRow(svg, a.output_words, "out", ALIGN.bottom);
  const width = Math.max(src.total + 2 * ALIGN.pad, out.total + 2 * ALIGN.pad, ALIGN.minWidth);
  svg.setAttribute("width", width);
  svg.setAttribute("height", ALIGN.height);
  svg.setAttribute("viewBox", `0 0 ${width} ${ALIGN.height}`);
  const xs = centre(src, width);
  const xo = centre(out, width);

  const line = (i, j, cls) => {
    const l = svgEl("line", {
      class: `link ${cls}`, "data-src": i, "data-out": j,
      x1: xs[i], y1: ALIGN.top + 7, x2: xo[j], y2: ALIGN.bottom - 17,
    });
    l.append(svgEl("title", {}, `${a.src_words[i]} (${i}) – ${a.output_words[j]} (${j}): ${LINK_NAMES[cls]}`));
    lines.append(l);
  };
  const inRef = new Set();
  if (ref) {
    ref.sure.forEach(([i, j]) => { line(i, j, "ref sure"); inRef.add(`${i}-${j}`); });
    ref.possible.forEach(([i, j]) => { line(i, j, "ref possible"); inRef.add(`${i}-${j}`); });
  }
  a.links.forEach(([i, j]) => line(i, j, inRef.has(`${i}-${j}`) ? "model agree" : "model"));

  svg.querySelectorAll("g.word").forEach((g) => {
    const show = () => focusWord(a, g.dataset.side, Number(g.dataset.index), matches);
    g.addEventListener("mouseenter", show);
    g.addEventListener("focus", show);
    g.addEventListener("mouseleave", unfocusWords);
    g.addEventListener("blur", unfocusWords);
  });
  if (ref) {
    const agree = a.links.filter(([i, j]) => inRef.has(`${i}-${j}`)).length;
    setRefStatus(
      `Reference: ${ref.sure.length} sure, ${ref.possible.length} possible links; ` +
      `${agree} of the model's ${a.links.length} links are in it. AER ${pct(ref.aer)} ` +
      `(precision ${pct(ref.precision)}, recall ${pct(ref.recall)}).`,
    );
  }
}

// Light up a word's links, the words at their other ends and, in the heatmap, their pieces.
function focusWord(a, side, k, rowsMatch) {
  const svg = $("alignment-svg");
  svg.classList.add("focus");
  const srcWords = new Set(side === "src" ? [k] : []);
  const outWords = new Set(side === "out" ? [k] : []);
  svg.querySelectorAll("line.link").forEach((l) => {
    const on = Number(l.dataset[side]) === k;
    l.classList.toggle("hl", on);
    if (on) {
      srcWords.add(Number(l.dataset.src));
      outWords.add(Number(l.dataset.out));
    }
  });
  svg.querySelectorAll("g.word").forEach((g) => {
    const words = g.dataset.side === "src" ? srcWords : outWords;
    g.classList.toggle("hl", words.has(Number(g.dataset.index)));
  });
  const cols = new Set();
  a.src_word_ids.forEach((w, p) => { if (srcWords.has(w)) cols.add(p); });
  const rows = new Set();
  if (rowsMatch) a.output_word_ids.forEach((w, p) => { if (outWords.has(w)) rows.add(p); });
  document.querySelectorAll("#heatmap [data-col]").forEach((c) => {
    c.classList.toggle("word-col", cols.has(Number(c.dataset.col)));
  });
  document.querySelectorAll("#heatmap tr[data-row]").forEach((r) => {
    r.classList.toggle("word-row", rows.has(Number(r.dataset.row)));
  });
}

function unfocusWords() {
  $("alignment-svg").classList.remove("focus");
  document.querySelectorAll("#alignment-svg .hl, #heatmap .word-col, #heatmap .word-row")
    .forEach((n) => n.classList.remove("hl", "word-col", "word-row"));
}

function setRefStatus(text, isError) {
  const s = $("ref-status");
  s.textContent = text;
  s.className = "ref-status" + (isError ? " error" : "");
}

function renderTrace(trace) {
  const root = $("trace");
  root.replaceChildren();
  for (const step of trace.steps) {
    // Long traces stay readable: the first steps are open, the rest one click away.
    const box = el("details", { class: "step" });
    box.open = step.step <= OPEN_STEPS;
    const head = el("summary", { class: "step-head" }, `Step ${step.step}: read `);
    head.append(el("code", {}, display(step.input_token)), " → chose ");
    head.append(el("code", {}, display(step.chosen)));
    head.append(el("span", { class: "score" }, pct(step.chosen_prob)));
    box.append(head);

    const table = el("table", { "aria-label": `attention at step ${step.step}` });
    const header = el("tr");
    header.append(el("th", { scope: "col" }, ""));
    trace.src_tokens.forEach((t) => header.append(el("th", { scope: "col" }, display(t))));
    const scores = el("tr");
    scores.append(el("th", { scope: "row" }, "score"));
    step.scores.forEach((v) => scores.append(el("td", {}, v < -1e29 ? "−∞" : v.toFixed(2))));
    const shares = el("tr");
    shares.append(el("th", { scope: "row" }, "softmax"));
    step.weights.forEach((w) => {
      const cell = el("td", { class: "cell" }, pct(w));
      cell.style.backgroundColor = `rgba(var(--heat), ${w.toFixed(3)})`;
      if (w > 0.55) cell.style.color = "#fff";
      shares.append(cell);
    });
    table.append(header, scores, shares);
    box.append(el("div", { class: "table-wrap" }));
    box.lastChild.append(table);

    const topk = el("ul", { class: "topk", "aria-label": "most likely next tokens" });
    for (const c of step.top_k) {
      const li = el("li", {}, `${display(c.token)} ${pct(c.prob)}`);
      if (c.token === step.chosen) li.classList.add("chosen");
      topk.append(li);
    }
    box.append(topk);
    root.append(box);
  }
  const why = trace.stopped_by === "eos" ? "the model chose <eos>" : "the output length limit";
  root.append(el("p", { class: "stopped" }, `Stopped by ${why}.`));
}

let shown = null; // the last translation: { text, attention }, what reference links refer to

// /v1/explain with the pasted reference links. When the server refuses them, say so beside the
// field and draw the model's links alone, so a bad paste never hides the rest of the page.
async function explainWithReference(text) {
  const refs = $("ref-links").value.trim();
  setRefStatus("");
  if (refs) {
    try {
      return await postJSON("/v1/explain", { text, reference_links: refs });
    } catch (err) {
      if (!err.message.startsWith("reference_links")) throw err;
      setRefStatus(err.message, true);
    }
  }
  return postJSON("/v1/explain", { text });
}

async function explainShown() {
  const trace = await explainWithReference(shown.text);
  renderAlignment(trace, shown.attention);
  renderTrace(trace);
}

async function overlay() {
  if (!shown) {
    setRefStatus("Translate a sentence first: reference links count its words.", true);
    return;
  }
  const btn = $("ref-btn");
  btn.disabled = true;
  try {
    await explainShown();
  } catch (err) {
    setRefStatus(err.message, true);
  } finally {
    btn.disabled = false;
  }
}

async function translate() {
  const text = $("src").value.trim();
  if (!text) {
    setStatus("Type something to translate.", true);
    return;
  }
  const beam = Math.max(1, Number($("beam").value) || 1);
  const nBest = Math.min(beam, Math.max(1, Number($("nbest").value) || 1));
  const btn = $("translate-btn");
  btn.disabled = true;
  setStatus("Translating…");
  try {
    const res = await postJSON("/v1/translate", { text, beam, n_best: nBest, attention: true });
    renderTranslation(res.translations[0]);
    shown = { text, attention: res.translations[0].attention };
    setStatus("Explaining…");
    await explainShown();
    setStatus("");
  } catch (err) {
    setStatus(err.message, true);
  } finally {
    btn.disabled = false;
  }
}

async function loadInfo() {
  try {
    const health = await (await fetch("/health")).json();
    const info = health.model;
    $("model-info").textContent =
      `Model: ${info.arch}, ${info.src_lang} → ${info.tgt_lang}, ${info.parameters.toLocaleString()} parameters.`;
    $("beam").value = info.decode.beam;
    $("beam").max = $("nbest").max = health.limits.max_beam;
    $("src").maxLength = health.limits.max_chars;
  } catch (err) {
    /* the page still works without the model summary */
  }
}

$("translate-btn").addEventListener("click", translate);
$("ref-btn").addEventListener("click", overlay);
$("ref-links").addEventListener("keydown", (e) => {
  if (e.key === "Enter") overlay();
});
$("src").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) translate();
});
loadInfo();
