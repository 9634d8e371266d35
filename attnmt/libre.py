"""The LibreTranslate API: a server that LibreTranslate's own clients cannot tell from one.

Pipeline position: ``POST /translate`` or ``/detect`` -> parameters (JSON, a form, or the query
string) -> API key (``apikeys``) -> LibreTranslate's checks, in its order, with its messages
and status codes -> source language (given, or identified: ``langid``) -> the pair's model ->
texts cut into sentences (``sentences``; for ``format: html`` the text runs of the document,
``markup``) -> one batch through that model's ``MicroBatcher`` -> the texts put back together.
``GET /languages`` and ``GET /frontend/settings`` describe the server as LibreTranslate does.

Field names, error bodies (``{"error": ...}``) and statuses follow LibreTranslate's ``app.py``
(read there, not copied). Where it would answer 500 (a ``q`` that is a number, ``alternatives``
that is not a number in JSON) or truncate (``alternatives: 2.7``), this server answers 400; its
own bounds beyond LibreTranslate's (sentences per request, characters per sentence, decoding
work) are 413, as on attnmt's own API.
"""

from __future__ import annotations

import asyncio
import json
import math
import urllib.parse
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel

from attnmt.apikeys import KeyGate
from attnmt.batcher import ServedModel, run_translation
from attnmt.bounds import ApiError, ServeLimits, check_unicode, request_options
from attnmt.langid import LanguageDetector
from attnmt.markup import HtmlDocument
from attnmt.sentences import Split, split_sentences
from attnmt.translate import DecodeOptions, Hypothesis

LANGUAGE_NAMES = {
    "ar": "Arabic", "ca": "Catalan", "cs": "Czech", "da": "Danish", "de": "German",
    "el": "Greek", "en": "English", "es": "Spanish", "eu": "Basque", "fi": "Finnish",
    "fr": "French", "gl": "Galician", "he": "Hebrew", "hi": "Hindi", "hu": "Hungarian",
    "id": "Indonesian", "it": "Italian", "ja": "Japanese", "ko": "Korean", "nl": "Dutch",
    "pl": "Polish", "pt": "Portuguese", "pt-BR": "Portuguese (Brazil)", "ro": "Romanian",
    "ru": "Russian", "sv": "Swedish", "tr": "Turkish", "uk": "Ukrainian", "zh": "Chinese",
    "zh-Hans": "Chinese", "zh-Hant": "Chinese (traditional)",
}  # fmt: skip
LIBRE_PATHS = ("/translate", "/detect", "/languages", "/frontend/settings")
FRONTEND_TIMEOUT_MS = 500  # LibreTranslate's default wait before the web page translates


def error_key(path: str) -> str:
    """The field an error body names its message with: LibreTranslate's, or attnmt's own."""
    return "error" if path in LIBRE_PATHS else "detail"


# ---------------------------------------------------------------------------------------------
# Shapes (for the OpenAPI schema; responses are built as dicts).
# ---------------------------------------------------------------------------------------------


class LibreErrorBody(BaseModel):
    error: str


class Language(BaseModel):
    code: str
    name: str
    targets: list[str]


class Detected(BaseModel):
    confidence: float
    language: str


class LibreResponse(BaseModel):
    # LibreTranslate's field names
    translatedText: str | list[str]
    alternatives: list[str] | list[list[str]] | None = None
    detectedLanguage: Detected | list[Detected] | None = None


class LanguageRef(BaseModel):
    code: str
    name: str


class FrontendLanguages(BaseModel):
    source: LanguageRef
    target: LanguageRef


class FrontendSettings(BaseModel):
    charLimit: int
    frontendTimeout: int
    apiKeys: bool
    keyRequired: bool
    suggestions: bool
    filesTranslation: bool
    supportedFilesFormat: list[str]
    language: FrontendLanguages


# ---------------------------------------------------------------------------------------------
# Parameters.
# ---------------------------------------------------------------------------------------------


def strict_json(body: bytes) -> Any:
    """RFC 8259 JSON: NaN and Infinity are refused, and a body nested too deeply for the parser
    is a 400 like any other bad body (Flask's words for one)."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not a JSON value")

    try:
        return json.loads(body, parse_constant=refuse)
    except RecursionError:
        raise ApiError(400, "Failed to decode JSON object: nested too deeply") from None
    except ValueError as e:  # UnicodeDecodeError included
        raise ApiError(400, f"Failed to decode JSON object: {e}") from None


def _form_value(text: Any) -> Any:
    """A form field read as JSON reads a value ("2" -> 2), so a form and a JSON body that say the
    same thing are treated alike; text that is no JSON value stays text."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


async def _form_fields(request: Request, ctype: str) -> dict[str, list[Any]]:
    if ctype == "multipart/form-data":
        form = await request.form()
        return {k: form.getlist(k) for k in form.keys()}
    body = (await request.body()).decode("utf-8", "replace")
    return urllib.parse.parse_qs(body, keep_blank_values=True)


async def libre_params(request: Request) -> dict[str, Any]:
    """A request's parameters: a JSON object, or form fields and query parameters together (the
    query's first, as Flask's ``request.values`` that LibreTranslate reads); ``q`` may repeat to
    mean a list. Form text gets Unix line ends, as LibreTranslate normalises it."""
    # Media types are case-insensitive (RFC 9110 8.3.1); parameters such as charset are dropped.
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        data = strict_json(await request.body())
        if not isinstance(data, dict):
            raise ApiError(400, "Invalid JSON format")
        return data
    query = urllib.parse.parse_qs(request.url.query, keep_blank_values=True)
    fields = {**(await _form_fields(request, ctype)), **query}
    data = {k: (v if k == "q" and len(v) > 1 else v[0]) for k, v in fields.items() if v}
    if "alternatives" in data:
        data["alternatives"] = _form_value(data["alternatives"])
    q = data.get("q")
    if isinstance(q, str):
        data["q"] = q.replace("\r\n", "\n")
    elif isinstance(q, list):
        data["q"] = [t.replace("\r\n", "\n") if isinstance(t, str) else t for t in q]
    return data


def alternatives(value: Any, limits: ServeLimits) -> int:
    """``alternatives``: a whole number (2.0 is 2; 2.7 is refused), negative meaning 0 as in
    LibreTranslate, at most ``max_beam - 1``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(400, "Invalid request: alternatives parameter is not a number")
    if not math.isfinite(value) or value != int(value):
        raise ApiError(400, f"Invalid request: alternatives parameter is not a whole number, "
                            f"got {value!r}")  # fmt: skip
    top = limits.max_beam - 1
    if value > top:
        raise ApiError(400, f"Invalid request: alternatives parameter must be <= {top}")
    return max(0, int(value))


def require(p: dict[str, Any], *names: str) -> None:
    """LibreTranslate's first check: each parameter named is there and not empty."""
    for name in names:
        if not p.get(name):
            raise ApiError(400, f"Invalid request: missing {name} parameter")


def texts_of(p: dict[str, Any], limits: ServeLimits) -> list[str]:
    """``q`` (present: :func:`require`) as a list of texts, after LibreTranslate's checks:
    strings, at most ``max_sentences`` texts of at most ``max_text_chars`` characters each."""
    q = p["q"]
    if not (isinstance(q, str) or (isinstance(q, list) and all(isinstance(s, str) for s in q))):
        raise ApiError(400, "Invalid request: q must be a string or a list of strings")
    texts = [q] if isinstance(q, str) else q
    if len(texts) > limits.max_sentences and isinstance(q, list):
        raise ApiError(400, f"Invalid request: request ({len(texts)}) exceeds text limit "
                            f"({limits.max_sentences})")  # fmt: skip
    for i, text in enumerate(texts):
        if len(text) > limits.max_text_chars:
            raise ApiError(400, f"Invalid request: request ({len(text)}) exceeds text limit "
                                f"({limits.max_text_chars})")  # fmt: skip
        check_unicode(text, "q" if isinstance(q, str) else f"q[{i}]", 400)
    return texts


def _cost(p: dict[str, Any]) -> int:
    """What a request costs against a rate limit: one per text, as LibreTranslate counts."""
    q = p.get("q")
    return max(1, len(q)) if isinstance(q, list) else 1


# ---------------------------------------------------------------------------------------------
# Texts: what is translated, and how it is put back together.
# ---------------------------------------------------------------------------------------------


@dataclass
class _Text:
    """One ``q`` text: its runs (the whole text, or an HTML document's text runs), each cut
    into sentences."""

    runs: list[Split]
    html: HtmlDocument | None

    @property
    def sentences(self) -> list[str]:
        return [s for run in self.runs for s in run.sentences]

    def render(self, hyps: list[list[Hypothesis]]) -> tuple[str, list[str]]:
        """(translation, alternatives) from the hypotheses of :attr:`sentences`, in order.

        Alternative k joins every sentence's k-th hypothesis (its best where it has fewer),
        as argostranslate does; alternatives repeat neither the translation nor each other.
        HTML gets none, as in LibreTranslate."""
        joined, start = [], 0
        for run in self.runs:
            joined.append(run.join([h[0].text for h in hyps[start : start + len(run.sentences)]]))
            start += len(run.sentences)
        if self.html is not None:
            return self.html.render(joined), []
        (run,) = self.runs
        alts = run.join_nbest([[x.text for x in h] for h in hyps])[1:]
        return joined[0], list(dict.fromkeys(a for a in alts if a not in (joined[0], "")))


def _read_texts(texts: list[str], fmt: str) -> list[tuple[list[str], HtmlDocument | None]]:
    """Each text's runs before splitting (and its parsed document for HTML)."""
    if fmt == "html":
        docs = [HtmlDocument(t) for t in texts]
        return [(d.texts, d) for d in docs]
    return [([t], None) for t in texts]


def _split(
    read: list[tuple[list[str], HtmlDocument | None]], lang: str, limits: ServeLimits
) -> list[_Text]:
    """The texts cut into sentences, within the per-request and per-sentence bounds (413). In
    HTML a line break is a space, so it ends no sentence there."""
    out = [
        _Text([split_sentences(r, lang, line_breaks=doc is None) for r in runs], doc)
        for runs, doc in read
    ]
    count = sum(len(t.sentences) for t in out)
    if count > limits.max_request_sentences:
        raise ApiError(413, f"q: {count} sentences, limit {limits.max_request_sentences} per "
                            "request")  # fmt: skip
    for i, t in enumerate(out):
        for s in t.sentences:
            if len(s) > limits.max_chars:
                raise ApiError(413, f"q[{i}]: a sentence of {len(s)} characters, limit "
                                    f"{limits.max_chars}: {s[:40]!r}...")  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------
# The API.
# ---------------------------------------------------------------------------------------------


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)


class LibreApi:
    """The LibreTranslate endpoints over a server's models (one per language pair)."""

    def __init__(self, models: list[ServedModel], limits: ServeLimits, gate: KeyGate):
        self.models = {(m.src, m.tgt): m for m in models}
        self.limits, self.gate = limits, gate
        # Every language once, sources first: LibreTranslate lists (and detects among) all.
        self.codes = list(dict.fromkeys([m.src for m in models] + [m.tgt for m in models]))
        self.detector = LanguageDetector(self.codes)

    def languages(self) -> list[dict[str, Any]]:
        return [
            {"code": c, "name": language_name(c),
             "targets": sorted(t for s, t in self.models if s == c)}
            for c in self.codes
        ]  # fmt: skip

    def frontend_settings(self) -> dict[str, Any]:
        target = next(iter(self.models))[1]
        return {
            "charLimit": self.limits.max_text_chars,
            "frontendTimeout": FRONTEND_TIMEOUT_MS,
            "apiKeys": self.gate.enabled,
            "keyRequired": self.gate.enabled,
            "suggestions": False,
            "filesTranslation": False,
            "supportedFilesFormat": [],
            "language": {
                "source": {"code": "auto", "name": "Auto Detect"},
                "target": {"code": target, "name": language_name(target)},
            },
        }

    def code(self, value: Any) -> str:
        """A served language code, matched without regard to case; 400 for any other."""
        wanted = str(value).lower()
        for code in self.codes:
            if code.lower() == wanted:
                return code
        raise ApiError(400, f"{wanted} is not supported")

    def model_for(self, src: str, tgt: str) -> ServedModel:
        model = self.models.get((src, tgt))
        if model is None:
            raise ApiError(400, f"{language_name(tgt)} ({tgt}) is not available as a target "
                                f"language from {language_name(src)} ({src})")  # fmt: skip
        return model

    async def detect(
        self, texts: list[str], detector: LanguageDetector | None = None
    ) -> list[dict[str, Any]]:
        """Candidates (default: among every language), off the event loop."""
        return await asyncio.to_thread((detector or self.detector).detect, texts)

    async def detect_route(self, request: Request) -> list[dict[str, Any]]:
        p = await libre_params(request)
        self.gate.admit(p.get("api_key"), _cost(p))
        require(p, "q")
        return await self.detect(texts_of(p, self.limits))

    async def translate_route(self, request: Request) -> dict[str, Any]:
        p = await libre_params(request)
        self.gate.admit(p.get("api_key"), _cost(p))
        require(p, "q", "source", "target")
        n_alt = alternatives(p.get("alternatives", 0), self.limits)
        texts = texts_of(p, self.limits)
        auto = str(p["source"]).lower() == "auto"
        source = None if auto else self.code(p["source"])
        target = self.code(p["target"])
        fmt = p.get("format")
        fmt = "text" if fmt is None or fmt == "" else fmt  # LibreTranslate's default
        if fmt not in ("text", "html"):
            raise ApiError(400, f"{fmt} format is not supported")
        read = _read_texts(texts, fmt)
        detected = None
        if source is None:
            # Among the languages with a model into the target, and the target itself (text
            # already in it gets LibreTranslate's "not available" answer, not a garbled copy).
            sources = [s for s, t in self.models if t == target]
            among = LanguageDetector([*sources, target], fallback=(sources or [target])[0])
            detected = (await self.detect([r for runs, _ in read for r in runs], among))[0]
            source = detected["language"]
        model = self.model_for(source, target)
        parts = _split(read, source, self.limits)
        results = await self._translate(model, parts, n_alt, request)
        one = isinstance(p["q"], str)
        out: dict[str, Any] = {"translatedText": results[0][0] if one else [r[0] for r in results]}
        if n_alt > 0:
            out["alternatives"] = results[0][1] if one else [r[1] for r in results]
        if detected is not None:
            out["detectedLanguage"] = detected if one else [detected] * len(texts)
        return out

    async def _translate(
        self, model: ServedModel, parts: list[_Text], n_alt: int, request: Request
    ) -> list[tuple[str, list[str]]]:
        """Every sentence of every text in one batch; (translation, alternatives) per text."""
        sentences = [s for t in parts for s in t.sentences]
        hyps: list[list[Hypothesis]] = []
        if sentences:
            options = request_options(model.defaults, self.limits, None, n_alt + 1)
            # The texts are cut into sentences here already (with the bounds above, and HTML's
            # rules); the Translator must not cut them again.
            options = DecodeOptions.resolve(options, split_sentences=False)
            hyps = await run_translation(model, sentences, options, False, request, "q", bad=400)
        results, start = [], 0
        for t in parts:
            n = len(t.sentences)
            results.append(t.render(hyps[start : start + n]))
            start += n
        return results


# ---------------------------------------------------------------------------------------------
# Routes and their OpenAPI description.
# ---------------------------------------------------------------------------------------------


def _q_schema(limits: ServeLimits, form: bool) -> dict[str, Any]:
    """``q``: one text, or a list. In a form one ``q`` is a string and a repeated ``q`` a list,
    so a form's list has at least two items; a JSON list may have one."""
    text = {"type": "string", "maxLength": limits.max_text_chars}
    many = {"type": "array", "items": text, "minItems": 2 if form else 1,
            "maxItems": limits.max_sentences}  # fmt: skip
    return {"anyOf": [{**text, "minLength": 1}, many], "description": "text(s)"}


def _body(properties: dict[str, Any], required: list[str], extra: dict | None = None) -> dict:
    key = {"description": "API key (where the server has a keys file)"}
    return {"type": "object", "required": required,
            "properties": {**properties, "api_key": key}, **(extra or {})}  # fmt: skip


def _translate_body(api: LibreApi, form: bool) -> dict[str, Any]:
    """The /translate parameters. The pairs a server has are stated per target language: its
    sources, or "auto" (which must then detect one of them)."""
    limits = api.limits
    targets = list(dict.fromkeys(t for _, t in api.models))
    pairs = [
        {"properties": {"source": {"enum": [*(s for s, t in api.models if t == target), "auto"]},
                        "target": {"enum": [target]}}}
        for target in targets
    ]  # fmt: skip
    properties = {
        "q": _q_schema(limits, form),
        "source": {"type": "string", "description": "language code, or auto"},
        "target": {"type": "string", "description": "language code"},
        # Empty (and JSON's null) mean text, as in LibreTranslate.
        "format": {"enum": ["text", "html", "", *([] if form else [None])], "default": "text"},
        "alternatives": {"type": "integer", "maximum": limits.max_beam - 1, "default": 0},
    }
    return _body(properties, ["q", "source", "target"], {"anyOf": pairs})


def _openapi_body(schema: Any) -> dict[str, Any]:
    """The same parameters as JSON, an urlencoded form or a multipart form."""
    content = {
        "application/json": {"schema": schema(False)},
        "application/x-www-form-urlencoded": {"schema": schema(True)},
        "multipart/form-data": {"schema": schema(True)},
    }
    return {"requestBody": {"required": True, "content": content}}


def add_libre_routes(app: FastAPI, api: LibreApi) -> None:
    """POST /translate and /detect, GET (and HEAD) /languages and /frontend/settings."""
    describe = [("/languages", api.languages, list[Language]),
                ("/frontend/settings", api.frontend_settings, FrontendSettings)]  # fmt: skip
    for path, endpoint, shape in describe:
        app.add_api_route(path, endpoint, methods=["GET"], response_model=None,
                          responses={200: {"model": shape}})  # fmt: skip
        app.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)
    errors = {s: {"model": LibreErrorBody} for s in (400, 403, 413, 429, 503)}
    app.add_api_route(
        "/translate", api.translate_route, methods=["POST"], response_model=None,
        responses={200: {"model": LibreResponse}, **errors},
        openapi_extra=_openapi_body(lambda form: _translate_body(api, form)),
        summary="Translate text (LibreTranslate)",
    )  # fmt: skip
    app.add_api_route(
        "/detect", api.detect_route, methods=["POST"], response_model=None,
        responses={200: {"model": list[Detected]}, **errors},
        openapi_extra=_openapi_body(lambda form: _body({"q": _q_schema(api.limits, form)}, ["q"])),
        summary="Detect the language of text (LibreTranslate)",
    )  # fmt: skip
