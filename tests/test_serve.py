"""The HTTP server (attnmt/serve.py) against a real uvicorn on 127.0.0.1 and a real tiny model.

The model is the session's tiny model (``tiny_run`` in conftest.py: a few steps of the real
``train(cfg)`` on a toy corpus); test_web.py reuses the helpers defined here.
"""

from __future__ import annotations

import inspect
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
import uvicorn

from attnmt.align import word_attention, word_ids, words
from attnmt.corpus import normalize
from attnmt.serve import MAX_REFERENCE_CHARS, ServeLimits, create_app, serve, server_config
from attnmt.translate import DecodeOptions, Translator

POISON = "__poison__"  # CountingTranslator raises ValueError for a batch containing this
SLOW = "__slow__"  # CountingTranslator sleeps for a batch containing this

# Sentences in the style of the session's tiny corpus (tests/conftest.py: tiny_run).
SENTENCES = [
    f"{s} {v} {o}."
    for s in ("I", "You", "We", "They")
    for v in ("eat", "see", "want")
    for o in ("apples", "bread", "the dog", "a car")
]


def tiny_model_path(request: pytest.FixtureRequest) -> Path:
    """last.pt of the session's tiny model, trained once through the real ``train(cfg)``."""
    return Path(request.getfixturevalue("tiny_run")) / "last.pt"


class CountingTranslator:
    """A real Translator that counts ``translate`` calls and misbehaves on marker inputs."""

    def __init__(self, inner: Translator, delay_s: float = 1.0):
        self.inner, self.delay_s = inner, delay_s
        self.calls = 0
        self.asked: list[DecodeOptions] = []  # what each call was asked to decode with

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def translate(self, texts, options=None, with_attention=False):
        self.calls += 1
        self.asked.append(options)
        if any(POISON in t for t in texts):
            raise ValueError("this input is poisoned")
        if any(SLOW in t for t in texts):
            time.sleep(self.delay_s)
        return self.inner.translate(texts, options, with_attention)


class LiveServer:
    """uvicorn.Server in a thread on an already-bound loopback socket (no port race)."""

    def __init__(self, app):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(server_config(app, log_level="warning"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


LIMITS = ServeLimits(
    max_chars=200, max_sentences=8, max_beam=6, timeout_s=60, batch_window_ms=30,
    max_batch_sentences=64, max_body_bytes=20_000,
)  # fmt: skip


@pytest.fixture(scope="module")
def translator(request: pytest.FixtureRequest) -> CountingTranslator:
    return CountingTranslator(Translator.from_checkpoint(tiny_model_path(request)))


@pytest.fixture(scope="module")
def client(translator):
    with LiveServer(create_app(translator, LIMITS)) as live:
        with httpx.Client(base_url=live.url, timeout=60) as c:
            yield c


def expected(translator: CountingTranslator, texts: list[str], beam: int = 3) -> list[str]:
    """What the model itself says, bypassing the server (and the call counter)."""
    options = DecodeOptions.resolve(translator.inner.options, beam=beam, n_best=1)
    return [h[0].text for h in translator.inner.translate(texts, options)]


def test_server_binds_loopback_by_default():
    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"


def test_translate_single_and_list(client, translator):
    r = client.post("/v1/translate", json={"text": SENTENCES[0]})
    assert r.status_code == 200, r.text
    (one,) = r.json()["translations"]
    assert one["text"] == expected(translator, [SENTENCES[0]])[0]
    assert isinstance(one["score"], float) and one["alternatives"] == []
    assert "attention" not in one

    r = client.post("/v1/translate", json={"text": SENTENCES[:4], "beam": 1})
    assert r.status_code == 200, r.text
    got = [t["text"] for t in r.json()["translations"]]
    assert got == expected(translator, SENTENCES[:4], beam=1)


@pytest.mark.parametrize(
    "fields, beam, n_best",
    [
        ({}, 3, 1),  # the model's defaults (the tiny run's decode.beam is 3)
        ({"beam": 1}, 1, 1),
        ({"n_best": 5}, 5, 5),  # the default beam widens to the n_best asked for
        ({"beam": 4, "n_best": 2}, 4, 2),
    ],
)
def test_request_fields_resolve_over_the_models_options(client, translator, fields, beam, n_best):
    r = client.post("/v1/translate", json={"text": SENTENCES[2], **fields})
    assert r.status_code == 200, r.text
    o = translator.asked[-1]
    assert (o.beam, o.n_best) == (beam, n_best)
    assert o == DecodeOptions.resolve(translator.inner.options, beam=beam, n_best=n_best)
    assert len(r.json()["translations"][0]["alternatives"]) <= n_best - 1


def test_repetition_fields_reach_the_translator(client, translator):
    fields = {"no_repeat_ngram": 2, "repetition_penalty": 1.2}
    r = client.post("/v1/translate", json={"text": SENTENCES[2], "beam": 1, **fields})
    assert r.status_code == 200, r.text
    assert translator.asked[-1] == DecodeOptions.resolve(translator.inner.options, beam=1, **fields)
    r = client.post("/v1/translate", json={"text": SENTENCES[2], "repetition_penalty": 2})
    assert r.status_code == 200 and translator.asked[-1].repetition_penalty == 2.0  # an integer


def test_languages_come_from_the_arguments_and_beam_from_the_limits(translator):
    wide = CountingTranslator(translator.inner.with_options(beam=12))
    limits = ServeLimits(max_beam=4, batch_window_ms=1)
    app = create_app(wide, limits, src_lang="fr", tgt_lang="de")
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=60) as c:
        assert [lang["code"] for lang in c.get("/languages").json()] == ["fr", "de"]
        model = c.get("/health").json()["model"]
        assert (model["src_lang"], model["tgt_lang"]) == ("fr", "de")
        assert model["decode"]["beam"] == 4  # the model's 12, within the server's limit
        r = c.post("/v1/translate", json={"text": SENTENCES[0]})
        assert r.status_code == 200, r.text
        assert wide.asked[-1].beam == 4
        body = {"q": SENTENCES[0], "source": "fr", "target": "de", "alternatives": 3}
        assert c.post("/translate", json=body).status_code == 200
        assert (wide.asked[-1].beam, wide.asked[-1].n_best) == (4, 4)


def test_translate_n_best_and_attention(client):
    r = client.post(
        "/v1/translate", json={"text": SENTENCES[3], "beam": 4, "n_best": 3, "attention": True}
    )
    assert r.status_code == 200, r.text
    t = r.json()["translations"][0]
    assert len(t["alternatives"]) == 2
    assert all(t["score"] >= a["score"] for a in t["alternatives"])  # best first
    att = t["attention"]
    assert att["src_tokens"][-1] == "<eos>"
    assert len(att["weights"]) == len(att["tgt_tokens"]) >= 1
    for row in att["weights"]:
        assert len(row) == len(att["src_tokens"])
        assert sum(row) == pytest.approx(1.0, abs=1e-3)


def test_explain(client):
    r = client.post("/v1/explain", json={"text": SENTENCES[1], "top_k": 3})
    assert r.status_code == 200, r.text
    trace = r.json()
    assert trace["src_tokens"][-1] == "<eos>" and trace["steps"]
    assert trace["stopped_by"] in ("eos", "length_limit")
    for i, step in enumerate(trace["steps"], 1):
        assert step["step"] == i
        assert sum(step["weights"]) == pytest.approx(1.0, abs=1e-3)
        assert len(step["scores"]) == len(trace["src_tokens"])
        assert 1 <= len(step["top_k"]) <= 3
    assert trace["steps"][0]["input_token"] == "<bos>"


def test_explain_links_are_the_argmax_of_the_word_attention(client, translator):
    text = SENTENCES[5]
    trace = client.post("/v1/explain", json={"text": text}).json()
    a, out = trace["alignment"], trace["output_text"]
    src = normalize(text, translator.cfg.data.lowercase)  # what the model read
    assert a["src_words"] == words(src) and a["output_words"] == words(out) != []
    src_ids, out_ids = (
        word_ids(src, trace["src_tokens"][:-1]),
        word_ids(out, trace["output_tokens"]),
    )
    assert (a["src_word_ids"], a["output_word_ids"]) == (src_ids, out_ids)
    # The rows the heatmap draws (last layer, heads averaged), pieces combined into words.
    attn = torch.tensor([s["weights"] for s in trace["steps"]])  # (steps, S + 1)
    best = word_attention(attn, src_ids, out_ids).argmax(1).tolist()  # (Tw,)
    assert a["links"] == sorted([i, j] for j, i in enumerate(best))
    assert sorted(j for _, j in a["links"]) == list(range(len(a["output_words"])))
    assert a["pharaoh"] == " ".join(f"{i}-{j}" for i, j in a["links"])
    assert trace["reference"] is None


def test_explain_parses_and_scores_reference_links(client):
    text = SENTENCES[5]
    a = client.post("/v1/explain", json={"text": text}).json()["alignment"]
    model = [tuple(link) for link in a["links"]]
    (i, j), n_src = model[0], len(a["src_words"])
    other = ((i + 1) % n_src, j)  # a sure link the model does not have
    refs = f" {i}-{j}\t{other[0]}-{other[1]}\n{i}?{j} {n_src - 1}p0 "  # i?j repeats a sure link
    r = client.post("/v1/explain", json={"text": text, "reference_links": refs})
    assert r.status_code == 200, r.text
    ref = r.json()["reference"]
    assert ref["sure"] == [list(x) for x in sorted({(i, j), other})]
    assert ref["possible"] == ([[n_src - 1, 0]] if (n_src - 1, 0) not in {(i, j), other} else [])
    possible = {(i, j), other, (n_src - 1, 0)}
    hits = sum(link in possible for link in model)
    assert ref["precision"] == pytest.approx(hits / len(model))
    assert ref["recall"] == pytest.approx(1 / 2)  # (i, j) of the two sure links
    assert ref["aer"] == pytest.approx(1 - (1 + hits) / (len(model) + 2))
    assert r.json()["alignment"] == a  # the reference changes nothing of the model's links


@pytest.mark.parametrize(
    "links, says",
    [
        ("0-0 x", "'x'"),
        ("0-0,1-1", "'0-0,1-1'"),
        ("0-0 1=1", "'1=1'"),
        ("0-0\u00a01-1", "separate links with spaces"),
        ("0-0 " * (MAX_REFERENCE_CHARS // 4 + 1), "at most"),
        (5, "string"),
    ],
)
def test_bad_reference_links(client, links, says):
    r = client.post("/v1/explain", json={"text": SENTENCES[5], "reference_links": links})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith("reference_links") and says in detail


def test_reference_links_outside_the_sentence(client):
    a = client.post("/v1/explain", json={"text": SENTENCES[5]}).json()["alignment"]
    n_src, n_out = len(a["src_words"]), len(a["output_words"])
    for bad in (f"{n_src}-0", f"0?{n_out}"):
        r = client.post("/v1/explain", json={"text": SENTENCES[5], "reference_links": f"0-0 {bad}"})
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert detail.startswith("reference_links: link ") and "outside the sentence" in detail
        assert f"({n_src} source words, {n_out} output words)" in detail
    # An empty text has no words: no link fits, and no links are no links.
    r = client.post("/v1/explain", json={"text": " ", "reference_links": "0-0"})
    assert r.status_code == 422 and "outside" in r.json()["detail"]
    r = client.post("/v1/explain", json={"text": "", "reference_links": ""})
    assert r.status_code == 200, r.text
    assert r.json()["alignment"]["links"] == [] and r.json()["reference"]["sure"] == []


def test_health_openapi_page(client, translator):
    h = client.get("/health").json()
    assert h["status"] == "ok"
    assert h["model"]["arch"] == "lstm"
    assert h["model"]["src_vocab"] == translator.src_tok.vocab_size
    assert h["model"]["tgt_vocab"] == translator.tgt_tok.vocab_size
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/translate", "/v1/explain", "/health", "/translate", "/languages"} <= set(paths)
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and 'id="translate-btn"' in page.text
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200


@pytest.mark.parametrize(
    "payload, status, field",
    [
        ({"text": "a" * (LIMITS.max_chars + 1)}, 413, "text"),
        ({"text": ["a b ."] * (LIMITS.max_sentences + 1)}, 413, "text"),
        ({"text": ["ok .", "b" * (LIMITS.max_chars + 1)]}, 413, "text[1]"),
        ({"text": []}, 422, "text"),
        ({"text": 5}, 422, "text"),
        ({"text": ["ok", 7]}, 422, "text"),
        ({}, 422, "text"),
        ({"text": "ok", "beam": "3"}, 422, "beam"),
        ({"text": "ok", "beam": 0}, 422, "beam"),
        ({"text": "ok", "beam": LIMITS.max_beam + 1}, 422, "beam"),
        ({"text": "ok", "beam": 2, "n_best": 3}, 422, "n_best"),
        ({"text": "ok", "n_best": 0}, 422, "n_best"),
        ({"text": "ok", "no_repeat_ngram": -1}, 422, "no_repeat_ngram"),
        ({"text": "ok", "no_repeat_ngram": 1.5}, 422, "no_repeat_ngram"),
        ({"text": "ok", "repetition_penalty": 0}, 422, "repetition_penalty"),
        ({"text": "ok", "repetition_penalty": "1.2"}, 422, "repetition_penalty"),
        ({"text": "ok", "repetition_penalty": 1e9}, 422, "repetition_penalty"),
        ({"text": "ok", "attention": "yes"}, 422, "attention"),
        ({"text": "ok", "colour": "blue"}, 422, "colour"),
    ],
)
def test_bad_translate_requests(client, payload, status, field):
    r = client.post("/v1/translate", json=payload)
    assert r.status_code == status, r.text
    assert field in r.json()["detail"]


def test_malformed_and_oversized_bodies(client):
    r = client.post(
        "/v1/translate", content=b'{"text": ', headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and "JSON" in r.json()["detail"]
    r = client.post("/v1/translate", json={"text": "x" * (LIMITS.max_body_bytes + 1)})
    assert r.status_code == 413 and "body" in r.json()["detail"]
    r = client.post("/v1/explain", json={"text": "a" * (LIMITS.max_chars + 1)})
    assert r.status_code == 413
    r = client.post("/v1/explain", json={"text": "ok", "top_k": 0})
    assert r.status_code == 422 and "top_k" in r.json()["detail"]
    assert client.get("/v1/translate").status_code == 405
    assert client.get("/no/such/page").json()["detail"]


def test_concurrent_requests_are_micro_batched(client, translator):
    texts = [SENTENCES[i % len(SENTENCES)] for i in range(16)]
    want = dict(zip(texts, expected(translator, texts)))
    calls_before = translator.calls
    barrier = threading.Barrier(len(texts))

    def one(text: str) -> httpx.Response:
        barrier.wait()
        return client.post("/v1/translate", json={"text": text})

    with ThreadPoolExecutor(len(texts)) as pool:
        responses = list(pool.map(one, texts))
    assert [r.status_code for r in responses] == [200] * len(texts)
    assert [r.json()["translations"][0]["text"] for r in responses] == [want[t] for t in texts]
    assert translator.calls - calls_before < len(texts)


def test_failing_request_does_not_fail_its_batch(client, translator):
    texts = SENTENCES[:12]
    want = expected(translator, texts)
    payloads = [{"text": t} for t in texts]
    payloads.insert(6, {"text": f"I see {POISON}."})  # fails inside the translator
    payloads.insert(3, {"text": "z" * (LIMITS.max_chars + 5)})  # rejected before batching
    barrier = threading.Barrier(len(payloads))

    def one(payload: dict) -> httpx.Response:
        barrier.wait()
        return client.post("/v1/translate", json=payload)

    with ThreadPoolExecutor(len(payloads)) as pool:
        responses = list(pool.map(one, payloads))
    bad = {3: 413, 7: 422}
    for i, r in enumerate(responses):
        assert r.status_code == bad.get(i, 200), r.text
    good = [r.json()["translations"][0]["text"] for i, r in enumerate(responses) if i not in bad]
    assert good == want
    assert "poisoned" in responses[7].json()["detail"]


def test_timeout_gives_503(translator):
    slow = CountingTranslator(translator.inner, delay_s=1.5)
    limits = ServeLimits(timeout_s=0.3, batch_window_ms=1)
    with LiveServer(create_app(slow, limits)) as live, httpx.Client(base_url=live.url) as c:
        r = c.post("/v1/translate", json={"text": f"I see {SLOW}."})
        assert r.status_code == 503
        assert "timed out" in r.json()["detail"]
        # The server keeps working once the slow call has finished.
        time.sleep(1.5)
        assert c.post("/v1/translate", json={"text": SENTENCES[0]}).status_code == 200
