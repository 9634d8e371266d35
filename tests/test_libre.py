"""attnmt serve as a LibreTranslate drop-in (attnmt/libre.py and the modules it uses), on a live
uvicorn on 127.0.0.1 with two real models: the session's tiny LSTM (en-es, torch engine) and a
small Transformer exported to CTranslate2 (es-en; untrained: its outputs are only compared with
the same model translating directly).

Checked against LibreTranslate's own source: parameters from JSON, forms and the query string,
its error bodies, messages and statuses, /languages, /detect, /frontend/settings, API keys and
rate limits; then LibreTranslate's real clients, unchanged: libretranslatepy and
deep-translator's LibreTranslator.
"""

from __future__ import annotations

import json
import shutil
import threading
import urllib.error
from pathlib import Path

import httpx
import pytest
import torch

from attnmt.apikeys import INVALID_KEY, MISSING_KEY, ApiKeys
from attnmt.checkpoint import Checkpoint, build_model
from attnmt.langid import LanguageDetector
from attnmt.markup import HtmlDocument
from attnmt.serve import (
    ServeLimits,
    create_app,
    load_models,
    models_from_args,
    parse_pair,
    serve,
)
from attnmt.translate import DecodeOptions, Translator
from tests.test_serve import LiveServer, tiny_model_path

pytest.importorskip("ctranslate2")

LIMITS = ServeLimits(
    max_chars=200, max_sentences=8, max_text_chars=600, max_request_sentences=12, max_beam=6,
    timeout_s=60, batch_window_ms=20, max_body_bytes=20_000,
)  # fmt: skip
EN = ["I eat apples.", "You see the dog.", "We want bread.", "They see a car."]
ES = ["Yo como pan.", "Nosotros queremos el perro.", "Ellos ven un coche."]


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The clients honour proxy settings; loopback must never go through one."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


class Recorder:
    """A real Translator that records the texts of each ``translate`` call."""

    def __init__(self, inner: Translator):
        self.inner = inner
        self.calls: list[list[str]] = []
        self.lock = threading.Lock()

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def translate(self, texts, options=None, with_attention=False):
        with self.lock:
            self.calls.append(list(texts))
        return self.inner.translate(texts, options, with_attention)


def direct(translator: Translator, texts: list[str]) -> list[str]:
    """The model's own best translations at its defaults (what the server decodes with)."""
    options = DecodeOptions.resolve(translator.options, n_best=1)
    return [h[0].text for h in translator.translate(texts, options)]


def es_en_checkpoint(tiny: Path, out: Path) -> Path:
    """A small untrained Transformer from Spanish to English (the tiny corpus's vocabularies,
    reversed), saved as an attnmt checkpoint."""
    ckpt = Checkpoint.load(tiny)
    cfg = ckpt.config
    cfg.model.arch, cfg.model.hidden, cfg.model.layers = "transformer", 32, 1
    cfg.model.heads, cfg.model.ff_dim, cfg.model.dropout = 2, 64, 0.0
    cfg.decode.max_len_a, cfg.decode.max_len_b = 1.0, 5  # an untrained model rambles
    src, tgt = ckpt.tgt_tokenizer, ckpt.src_tokenizer
    torch.manual_seed(0)
    model = build_model(cfg.model, src.vocab_size, tgt.vocab_size)
    Checkpoint(cfg, model.state_dict(), src, tgt).save(out)
    return out


@pytest.fixture(scope="module")
def exports(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from attnmt.ct2 import export_ctranslate2

    tmp = tmp_path_factory.mktemp("libre_models")
    es_en = es_en_checkpoint(tiny_model_path(request), tmp / "es-en.pt")
    return {"en-es": tiny_model_path(request), "es-en": export_ctranslate2(es_en, tmp / "ct2")}


@pytest.fixture(scope="module")
def models(exports) -> dict[str, Recorder]:
    return {name: Recorder(t) for name, t in load_models(exports).items()}


@pytest.fixture(scope="module")
def live(models):
    with LiveServer(create_app(models=models, limits=LIMITS)) as server:
        yield server


@pytest.fixture(scope="module")
def client(live):
    with httpx.Client(base_url=live.url, timeout=60) as c:
        yield c


def translate(client: httpx.Client, **fields) -> httpx.Response:
    return client.post("/translate", json=fields)


# ---------------------------------------------------------------------------------------------
# Several models in one server.
# ---------------------------------------------------------------------------------------------


def test_languages_list_each_language_with_its_targets(client):
    assert client.get("/languages").json() == [
        {"code": "en", "name": "English", "targets": ["es"]},
        {"code": "es", "name": "Spanish", "targets": ["en"]},
    ]


def test_each_pair_is_translated_by_its_own_model(client, models):
    en_es, es_en = models["en-es"], models["es-en"]
    r = translate(client, q=EN[0], source="en", target="es")
    assert r.status_code == 200, r.text
    assert r.json() == {"translatedText": direct(en_es.inner, EN[:1])[0]}
    assert en_es.calls[-1] == EN[:1]
    r = translate(client, q=ES, source="es", target="en")
    assert r.json() == {"translatedText": direct(es_en.inner, ES)}
    assert es_en.calls[-1] == ES
    assert type(es_en.inner.engine).__name__ == "CT2Engine"  # a CTranslate2 export, served


def test_health_describes_every_model(client):
    h = client.get("/health").json()
    assert [(m["src_lang"], m["tgt_lang"], m["engine"]) for m in h["models"]] == [
        ("en", "es", "TorchEngine"),
        ("es", "en", "CT2Engine"),
    ]
    assert h["model"] == h["models"][0]  # attnmt's own API (/v1) serves the first
    assert h["models"][1]["parameters"] is None and h["models"][0]["parameters"] > 0


def test_source_auto_identifies_the_language(client, models):
    r = translate(client, q=EN[1], source="auto", target="es")
    body = r.json()
    assert body["translatedText"] == direct(models["en-es"].inner, EN[1:2])[0]
    assert body["detectedLanguage"]["language"] == "en"
    assert 50 < body["detectedLanguage"]["confidence"] <= 100
    r = translate(client, q=ES[:2], source="auto", target="en")
    assert r.json()["translatedText"] == direct(models["es-en"].inner, ES[:2])
    assert [d["language"] for d in r.json()["detectedLanguage"]] == ["es", "es"]
    # Text already in the target language: no model for it, as LibreTranslate answers.
    r = translate(client, q=ES[1], source="auto", target="es")
    assert r.status_code == 400
    assert r.json() == {"error": "Spanish (es) is not available as a target language from "
                                 "Spanish (es)"}  # fmt: skip


def test_detect(client):
    r = client.post("/detect", data={"q": ES[1]})  # a form, as libretranslatepy sends
    assert r.status_code == 200, r.text
    found = r.json()
    assert found[0]["language"] == "es" and found[0]["confidence"] > 50
    assert {d["language"] for d in found} == {"en", "es"}  # every language, best first
    assert found == sorted(found, key=lambda d: -d["confidence"])
    assert client.post("/detect", json={"q": EN}).json()[0]["language"] == "en"
    assert client.post("/detect", json={"q": "12345 !!"}).json() == [
        {"confidence": 0.0, "language": "en"}  # nothing to go by: LibreTranslate's answer
    ]
    r = client.post("/detect", json={})
    assert (r.status_code, r.json()) == (400, {"error": "Invalid request: missing q parameter"})


def test_frontend_settings(client):
    assert client.get("/frontend/settings").json() == {
        "charLimit": LIMITS.max_text_chars,
        "frontendTimeout": 500,
        "apiKeys": False,
        "keyRequired": False,
        "suggestions": False,
        "filesTranslation": False,
        "supportedFilesFormat": [],
        "language": {
            "source": {"code": "auto", "name": "Auto Detect"},
            "target": {"code": "es", "name": "Spanish"},
        },
    }
    assert client.head("/frontend/settings").status_code == 200


def test_cross_origin_requests_are_allowed(client):
    r = translate(client, q=EN[0], source="en", target="es")
    assert r.headers.get("access-control-allow-origin") is None  # no Origin, no CORS headers
    r = client.post("/translate", json={"q": EN[0], "source": "en", "target": "es"},
                    headers={"Origin": "https://example.org"})  # fmt: skip
    assert r.headers["access-control-allow-origin"] == "*"
    pre = client.options(
        "/translate",
        headers={"Origin": "https://example.org", "Access-Control-Request-Method": "POST"},
    )
    assert pre.status_code == 200 and "POST" in pre.headers["access-control-allow-methods"]


# ---------------------------------------------------------------------------------------------
# Parameters, and LibreTranslate's errors.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["json", "urlencoded", "multipart", "query", "query+form"])
def test_parameters_from_json_forms_and_the_query_string(client, models, how):
    fields = {"q": EN[2], "source": "en", "target": "es", "alternatives": "1"}
    if how == "json":
        r = client.post("/translate", json={**fields, "alternatives": 1})
    elif how == "urlencoded":
        r = client.post("/translate", data=fields)
    elif how == "multipart":
        r = client.post("/translate", files={k: (None, v) for k, v in fields.items()})
    elif how == "query":  # deep-translator's way: the fields in the URL, no body
        r = client.post("/translate", params=fields)
    else:  # some in the query, the rest in the form
        r = client.post("/translate", params={"q": EN[2]}, data={"source": "en", "target": "es",
                                                                 "alternatives": "1"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["translatedText"] == direct(models["en-es"].inner, EN[2:3])[0]
    assert isinstance(r.json()["alternatives"], list)


def test_q_as_a_list_and_repeated(client, models):
    want = direct(models["en-es"].inner, EN[:2])
    assert translate(client, q=EN[:2], source="en", target="es").json() == {"translatedText": want}
    r = client.post("/translate", data={"q": EN[:2], "source": "en", "target": "es"})
    assert r.json() == {"translatedText": want}
    r = translate(client, q=EN[:2], source="en", target="es", alternatives=2)
    assert len(r.json()["alternatives"]) == 2
    for best, alts in zip(want, r.json()["alternatives"]):
        assert best not in alts and len(set(alts)) == len(alts)
    # A negative number of alternatives means none, as in LibreTranslate.
    assert translate(client, q=EN[0], source="en", target="es", alternatives=-1).json() == {
        "translatedText": want[0]
    }


TOO_MANY = [EN[0]] * (LIMITS.max_sentences + 1)
TOO_LONG = "I eat apples. " * 43  # 602 characters


@pytest.mark.parametrize(
    "body, message",
    [
        ({"q": None}, "Invalid request: missing q parameter"),
        ({"q": ""}, "Invalid request: missing q parameter"),
        ({"source": None}, "Invalid request: missing source parameter"),
        ({"target": ""}, "Invalid request: missing target parameter"),
        ({"alternatives": "many"}, "Invalid request: alternatives parameter is not a number"),
        ({"alternatives": 99}, "Invalid request: alternatives parameter must be <= 5"),
        ({"q": TOO_MANY}, "Invalid request: request (9) exceeds text limit (8)"),
        ({"q": TOO_LONG}, "Invalid request: request (602) exceeds text limit (600)"),
        ({"source": "fr"}, "fr is not supported"),
        ({"target": "DE"}, "de is not supported"),
        ({"format": "pdf"}, "pdf format is not supported"),
        ({"target": "en"}, "English (en) is not available as a target language from English (en)"),
        ({"q": 5}, "Invalid request: q must be a string or a list of strings"),
    ],
)
def test_errors_are_libretranslates(client, body, message):
    body = {
        k: v
        for k, v in {"q": "hi", "source": "en", "target": "es", **body}.items()
        if v is not None
    }
    r = client.post("/translate", json=body)
    assert (r.status_code, r.json()) == (400, {"error": message})


def test_a_json_body_must_be_an_object(client):
    r = client.post("/translate", content=b"[1]", headers={"content-type": "application/json"})
    assert (r.status_code, r.json()) == (400, {"error": "Invalid JSON format"})
    r = client.post("/translate", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"].startswith("Failed to decode JSON object")


def test_codes_are_matched_without_case(client, models):
    r = translate(client, q=EN[0], source="EN", target="Es")
    assert r.json() == {"translatedText": direct(models["en-es"].inner, EN[:1])[0]}


# ---------------------------------------------------------------------------------------------
# Paragraphs, documents and HTML.
# ---------------------------------------------------------------------------------------------


def test_a_paragraph_is_split_translated_in_one_batch_and_put_back(client, models):
    en_es = models["en-es"]
    q = f"  {EN[0]} {EN[1]}\n\n{EN[2]}\r\n{EN[3]}  "
    r = translate(client, q=q, source="en", target="es")
    assert r.status_code == 200, r.text
    t = direct(en_es.inner, EN)
    assert r.json()["translatedText"] == f"  {t[0]} {t[1]}\n\n{t[2]}\r\n{t[3]}  "
    assert en_es.calls[-1] == EN  # every sentence in one model call
    # Several texts: one batch for all their sentences.
    r = translate(client, q=[f"{EN[0]} {EN[1]}", EN[2]], source="en", target="es")
    assert r.json()["translatedText"] == [f"{t[0]} {t[1]}", t[2]]
    assert en_es.calls[-1] == EN[:3]


def test_a_paragraphs_alternatives_join_its_sentences_alternatives(client, models):
    q = f"{EN[0]} {EN[3]}"
    body = translate(client, q=q, source="en", target="es", alternatives=2).json()
    hyps = models["en-es"].inner.translate(
        [EN[0], EN[3]], DecodeOptions.resolve(models["en-es"].inner.options, n_best=3)
    )
    first_alt = f"{hyps[0][min(1, len(hyps[0]) - 1)].text} {hyps[1][min(1, len(hyps[1]) - 1)].text}"
    assert body["translatedText"] == f"{hyps[0][0].text} {hyps[1][0].text}"
    assert body["alternatives"] and body["alternatives"][0] == first_alt


def test_form_text_gets_unix_line_ends(client, models):
    r = client.post("/translate", data={"q": f"{EN[0]}\r\n{EN[1]}", "source": "en", "target": "es"})
    t = direct(models["en-es"].inner, EN[:2])
    assert r.json()["translatedText"] == f"{t[0]}\n{t[1]}"


def test_html_is_translated_and_its_markup_kept(client, models):
    t = direct(models["en-es"].inner, EN)
    keep = ('<script>var s = "I eat apples.";</script><p translate="no">We want bread.</p>'
            "<!-- They see a car. -->")  # fmt: skip
    q = f'<p class="x">{EN[0]} <b>{EN[1]}</b><br>\n{EN[3]}</p>{keep}'
    r = translate(client, q=q, source="en", target="es", format="html", alternatives=2)
    assert r.status_code == 200, r.text
    assert r.json()["translatedText"] == f'<p class="x">{t[0]} <b>{t[1]}</b><br/>\n{t[3]}</p>{keep}'
    assert r.json()["alternatives"] == []  # none for HTML, as in LibreTranslate
    assert models["en-es"].calls[-1] == [EN[0], EN[1], EN[3]]


def test_a_line_break_in_html_source_is_a_space(client, models):
    r = translate(client, q=f"<p>I eat\n  apples. {EN[1]}</p>", source="en", target="es",
                  format="html")  # fmt: skip
    t = direct(models["en-es"].inner, EN[:2])
    assert r.json()["translatedText"] == f"<p>{t[0]} {t[1]}</p>"
    assert models["en-es"].calls[-1] == ["I eat\n  apples.", EN[1]]  # one sentence, not two


def test_html_text_is_escaped_and_other_nodes_left_alone():
    doc = HtmlDocument('<p title="a &amp; b">x &lt; y<!-- c --></p><style>p {}</style>')
    assert doc.texts == ["x < y"]
    escaped = '<p title="a &amp; b">&lt;i&gt;&amp;&lt;/i&gt;<!-- c --></p><style>p {}</style>'
    assert doc.render(["<i>&</i>"]) == escaped
    with pytest.raises(ValueError, match="1 translations for 0 texts"):
        HtmlDocument("<br>").render(["x"])


@pytest.mark.parametrize(
    "q, status, where",
    [
        (" ".join([EN[0]] * 13), 413, "13 sentences, limit 12"),  # sentences per request
        ("a " * 101, 413, "a sentence of 201 characters, limit 200"),  # characters per sentence
    ],
)
def test_sentences_are_bounded_per_request_and_per_sentence(client, q, status, where):
    r = translate(client, q=q, source="en", target="es")
    assert r.status_code == status and where in r.json()["error"]


# ---------------------------------------------------------------------------------------------
# API keys and rate limits.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed(models, tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "keys.txt"
    path.write_text("# key, requests per minute\nopen-key\nslow-key 2\nlist-key 3  # for lists\n")
    app = create_app(models=models, limits=LIMITS, api_keys=ApiKeys.load(path))
    with LiveServer(app) as server:
        yield server


def test_api_keys_refuse_a_missing_or_unknown_key(keyed):
    body = {"q": EN[0], "source": "en", "target": "es"}
    with httpx.Client(base_url=keyed.url, timeout=60) as c:
        r = c.post("/translate", json=body)
        assert (r.status_code, r.json()) == (400, {"error": MISSING_KEY})
        r = c.post("/translate", json={**body, "api_key": "guess"})
        assert (r.status_code, r.json()) == (403, {"error": INVALID_KEY})
        r = c.post("/detect", data={"q": EN[0], "api_key": "guess"})
        assert (r.status_code, r.json()) == (403, {"error": INVALID_KEY})
        for _ in range(5):
            assert c.post("/translate", json={**body, "api_key": "open-key"}).status_code == 200
        assert c.get("/languages").status_code == 200  # only translation and detection
        settings = c.get("/frontend/settings").json()
        assert settings["apiKeys"] is True and settings["keyRequired"] is True


def test_api_keys_have_rate_limits(keyed):
    body = {"q": EN[0], "source": "en", "target": "es"}
    with httpx.Client(base_url=keyed.url, timeout=60) as c:
        codes = [c.post("/translate", data={**body, "api_key": "slow-key"}).status_code
                 for _ in range(2)]  # fmt: skip
        r = c.post("/translate", data={**body, "api_key": "slow-key"})
        assert codes == [200, 200]
        assert (r.status_code, r.json()) == (429, {"error": "Slowdown: 2 per 1 minute"})
        # A list of texts costs one request per text, as in LibreTranslate.
        r = c.post("/translate", json={**body, "q": EN[:2], "api_key": "list-key"})
        assert r.status_code == 200
        r = c.post("/translate", json={**body, "q": EN[:2], "api_key": "list-key"})
        assert r.status_code == 429
        assert c.post("/detect", json={"q": EN[0], "api_key": "list-key"}).status_code == 200


@pytest.mark.parametrize(
    "text, message",
    [
        ("k1 2 3\n", "keys.txt:1: expected KEY or KEY REQUESTS_PER_MINUTE"),
        ("k1\nk2 0\n", "keys.txt:2: requests per minute must be a whole number >= 1, got '0'"),
        ("k1\n\nk2 x\n", "keys.txt:3: requests per minute must be a whole number"),
        ("k1\n# c\nk1 5\n", "keys.txt:3: key k1... is listed twice"),
        ("# nothing\n", "keys.txt: no API keys in the file"),
    ],
)
def test_a_bad_keys_file_names_its_line(tmp_path, text, message):
    (tmp_path / "keys.txt").write_text(text)
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        ApiKeys.load(tmp_path / "keys.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="bin.txt: not UTF-8"):
        ApiKeys.load(tmp_path / "bin.txt")
    with pytest.raises(ValueError, match="missing.txt: cannot read"):
        ApiKeys.load(tmp_path / "missing.txt")


# ---------------------------------------------------------------------------------------------
# LibreTranslate's clients, unchanged.
# ---------------------------------------------------------------------------------------------


def test_libretranslatepy(live, models):
    from libretranslatepy import LibreTranslateAPI

    lt = LibreTranslateAPI(live.url)
    assert lt.translate(EN[0], "en", "es") == direct(models["en-es"].inner, EN[:1])[0]
    assert lt.translate(ES[0], "es", "en") == direct(models["es-en"].inner, ES[:1])[0]
    assert [lang["code"] for lang in lt.languages()] == ["en", "es"]
    assert lt.detect(ES[1])[0]["language"] == "es"
    with pytest.raises(urllib.error.HTTPError) as e:
        lt.translate(EN[0], "en", "fr")
    assert e.value.code == 400 and json.loads(e.value.read()) == {"error": "fr is not supported"}


def test_libretranslatepy_with_api_keys(keyed, models):
    from libretranslatepy import LibreTranslateAPI

    ok = LibreTranslateAPI(keyed.url, api_key="open-key")
    assert ok.translate(EN[1], "en", "es") == direct(models["en-es"].inner, EN[1:2])[0]
    assert ok.detect(EN[1])[0]["language"] == "en"
    with pytest.raises(urllib.error.HTTPError) as e:
        LibreTranslateAPI(keyed.url, api_key="guess").translate(EN[1], "en", "es")
    assert e.value.code == 403 and json.loads(e.value.read()) == {"error": INVALID_KEY}


def test_deep_translator(live, keyed, models):
    from deep_translator import LibreTranslator
    from deep_translator.exceptions import AuthorizationException

    # deep-translator insists on some key; a server without keys ignores it.
    en_es = LibreTranslator(source="en", target="es", api_key="any", custom_url=live.url + "/")
    assert en_es.translate(EN[2]) == direct(models["en-es"].inner, EN[2:3])[0]
    assert en_es.translate_batch(EN[:2]) == direct(models["en-es"].inner, EN[:2])
    es_en = LibreTranslator(source="Spanish", target="English", api_key="any",
                            custom_url=live.url + "/")  # fmt: skip
    assert es_en.translate(ES[2]) == direct(models["es-en"].inner, ES[2:])[0]
    keyed_url = keyed.url + "/"
    good = LibreTranslator(source="en", target="es", api_key="open-key", custom_url=keyed_url)
    assert good.translate(EN[3]) == direct(models["en-es"].inner, EN[3:])[0]
    with pytest.raises(AuthorizationException):
        LibreTranslator(source="en", target="es", api_key="guess", custom_url=keyed_url).translate(
            EN[3]
        )


# ---------------------------------------------------------------------------------------------
# Models from names and directories; language identification.
# ---------------------------------------------------------------------------------------------


def test_a_directory_of_models(exports, tmp_path):
    shutil.copy(exports["en-es"], tmp_path / "en-es.pt")
    shutil.copytree(exports["es-en"], tmp_path / "es_en")
    (tmp_path / "README.txt").write_text("not a model")
    loaded = load_models(tmp_path)
    assert list(loaded) == ["en-es", "es_en"]
    engines = [type(t.engine).__name__ for t in loaded.values()]
    assert engines == ["TorchEngine", "CT2Engine"]


def test_what_serve_model_flags_mean(exports, tmp_path):
    """`attnmt serve --model`: PAIR=PATH per model, a directory of models, or one model."""
    en_es, es_en = str(exports["en-es"]), str(exports["es-en"])
    assert models_from_args([f"en-es={en_es}", f"es-en={es_en}"], "en", "es") == {
        "en-es": en_es,
        "es-en": es_en,
    }
    assert models_from_args([en_es], "fr", "de") == {"fr_de": en_es}  # a checkpoint
    assert models_from_args([es_en], "es", "en") == {"es_en": es_en}  # a CTranslate2 export
    run = Path(en_es).parent
    assert models_from_args([str(run)], "en", "es") == {"en_es": str(run)}  # a run directory
    (tmp_path / "models").mkdir()
    assert models_from_args([str(tmp_path / "models")], "en", "es") == tmp_path / "models"
    for bad, message in [
        ([en_es, es_en], "give each as PAIR=PATH"),
        ([f"en-es={en_es}", es_en], "give each as PAIR=PATH"),
        ([f"en-es={en_es}", f"en-es={es_en}"], "given twice"),
        ([str(tmp_path / "nothing")], "no such file"),
    ]:
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            models_from_args(bad, "en", "es")


@pytest.mark.parametrize(
    "name, message",
    [
        ("en-es-fr", "name a model by its language pair"),
        ("english-spanish", "'english' is not a language code"),
        ("en-en", "source and target are both 'en'"),
    ],
)
def test_model_names_are_language_pairs(name, message):
    with pytest.raises(ValueError, match=message):
        parse_pair(name)


def test_model_sets_that_cannot_be_served_are_refused_before_loading(tmp_path):
    assert parse_pair("pt-BR_en") == ("pt-BR", "en")
    with pytest.raises(ValueError, match="no models"):
        load_models(tmp_path)
    with pytest.raises(ValueError, match="two models for one language pair"):
        load_models({"en-es": tmp_path / "a.pt", "en_es": tmp_path / "b.pt"})
    with pytest.raises(ValueError, match="not both"):
        serve(tmp_path / "a.pt", models={"en-es": tmp_path / "a.pt"})
    with pytest.raises(ValueError, match="not both"):
        create_app()


def test_language_identification():
    detector = LanguageDetector(["en", "es"])
    assert detector.detect(["They want the dog."])[0]["language"] == "en"
    assert detector.detect(["Ellos quieren el perro."])[0]["language"] == "es"
    mixed = detector.detect(["Ellos quieren el perro y el coche.", "Yes."])  # weighed by length
    assert mixed[0]["language"] == "es" and sum(d["confidence"] for d in mixed) == 100
    # Regional codes are identified by their language; unknown codes are never detected.
    assert LanguageDetector(["pt-BR", "en"]).detect(["Eu quero o pão."])[0]["language"] == "pt-BR"
    assert LanguageDetector(["xx", "yy"]).detect(["hello"]) == [
        {"confidence": 0.0, "language": "xx"}
    ]
