// attnmt web page: calls /v1/translate (with attention) and /v1/explain, renders the results.
// Plain DOM code, no build step, no dependencies. Text from the server always goes through
// textContent, never innerHTML, so translations cannot inject markup.
"use strict";

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
  if (!res.ok) throw new Error(data.detail || data.error || "HTTP " + res.status);
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
  att.src_tokens.forEach((tok) => head.append(el("th", { scope: "col" }, display(tok))));
  table.append(head);
  att.tgt_tokens.forEach((tok, i) => {
    const row = el("tr", { "data-row": i });
    row.append(el("th", { scope: "row" }, display(tok)));
    att.weights[i].forEach((w) => {
      const cell = el("td", { class: "cell", title: pct(w) }, w.toFixed(2));
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
    setStatus("Explaining…");
    renderTrace(await postJSON("/v1/explain", { text }));
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
$("src").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) translate();
});
loadInfo();
