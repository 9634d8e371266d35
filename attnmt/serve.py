"""The HTTP server: the app, attnmt's own API and the models it serves (FastAPI + uvicorn).

Pipeline position: HTTP request -> ``guards`` (connection deadlines and cap, body size) -> a
route: attnmt's ``POST /v1/translate``, ``POST /v1/explain``, ``GET /health`` and the web page at
``/`` (files in ``attnmt/static``, shipped as package data, no CDN), here; LibreTranslate's
``/translate``, ``/detect``, ``/languages`` and ``/frontend/settings`` in ``libre.py`` ->
``bounds`` checks -> the model's ``batcher.MicroBatcher`` -> ``Translator.translate`` (the
single inference path) -> JSON.

A server holds one or more models, one per language pair (:func:`load_models`: attnmt
checkpoints or CTranslate2 exports, named ``SRC-TGT``, or a directory of them), each with its own
batcher and model thread. attnmt's own API uses the first; LibreTranslate's picks by ``source``
and ``target``.

Every input is bounded (body size, characters, sentences, beam, work, queue length, time), and
so are connections (``guards.server_config``). Bad input gets a JSON 4xx, never a 500; the
OpenAPI schema at ``/openapi.json`` describes every request and response, errors included.

``/v1/explain`` also answers the trace's word alignment (``explain.WordAlignment``: the headline
attention read with ``align.py``'s words and rule) and, given ``reference_links`` (Pharaoh links
for that output: gold, or a statistical aligner's), those links parsed and scored against the
model's (AER, Och & Ney 2003), for the web page to draw over them.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.exceptions import HTTPException  # FastAPI's is a subclass; starlette raises this
from starlette.middleware.cors import CORSMiddleware

from attnmt import ct2
from attnmt.align import Alignment, alignment_error, format_links, parse_pharaoh
from attnmt.apikeys import ApiKeys, KeyGate
from attnmt.argos import check_language
from attnmt.batcher import MicroBatcher, ServedModel, run_translation
from attnmt.bounds import ApiError, ServeLimits, check_texts, request_options, server_defaults
from attnmt.config import MIN_REPETITION_PENALTY
from attnmt.guards import BodyLimit, server_config
from attnmt.libre import LibreApi, add_libre_routes, error_key
from attnmt.translate import Hypothesis, Translator

__all__ = ["ServeLimits", "create_app", "load_models", "models_from_args", "parse_pair", "serve",
           "server_config"]  # fmt: skip

STATIC_DIR = Path(__file__).parent / "static"
# Bounds of a request's repetition options: beyond them nothing changes but the cost.
MAX_NO_REPEAT_NGRAM = 32
MAX_REPETITION_PENALTY = 100.0
MAX_REFERENCE_CHARS = 10_000  # reference_links: ~1,000 links, more than a 100-token source needs
# What reference_links may hold, as the schema states it (checked in code, which names the bad
# token): Pharaoh links i-j / i?j / ipj separated by spaces, tabs or line breaks.
_LINK_SPACE = re.compile(r"[ \t\r\n]+")
REFERENCE_PATTERN = r"^[ \t\r\n]*([0-9]+[-?p][0-9]+([ \t\r\n]+[0-9]+[-?p][0-9]+)*)?[ \t\r\n]*$"


# ---------------------------------------------------------------------------------------------
# Request and response shapes (they make the OpenAPI schema; responses are built as dicts).
# ---------------------------------------------------------------------------------------------


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


# JSON Schema's integer: 8 and 8.0 alike, but not "8" or true (strict after the float is read).
Whole = Annotated[int, BeforeValidator(_integral), Field(strict=True)]


class TranslateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str | list[str] = Field(description="one sentence or a list of sentences")
    beam: Whole | None = Field(None, description="beam size (1 = greedy)")
    n_best: Whole | None = Field(None, description="hypotheses per sentence, at most the beam")
    no_repeat_ngram: Whole | None = Field(
        None, ge=0, le=MAX_NO_REPEAT_NGRAM, description="never repeat an n-gram this long (0 = off)"
    )
    repetition_penalty: float | None = Field(
        None, ge=MIN_REPETITION_PENALTY, le=MAX_REPETITION_PENALTY, strict=True,
        allow_inf_nan=False,
        description="CTRL penalty on tokens an output already holds (> 1 penalises, 1 = off)",
    )  # fmt: skip
    attention: bool = Field(False, strict=True, description="include attention weights")


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(description="one sentence; an empty one gives a trace without steps")
    top_k: Whole = Field(5, ge=1, le=20)
    reference_links: (
        Annotated[
            str,
            Field(max_length=MAX_REFERENCE_CHARS, json_schema_extra={"pattern": REFERENCE_PATTERN}),
        ]
        | None
    ) = Field(
        None,
        description="Pharaoh links to compare the model's with, for the output this request "
        "produces (gold, or an aligner's): i-j sure, i?j possible; source word i, output word j, "
        "0-based, counted as in the answer's alignment",
    )


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    detail: str = Field(description="what is wrong, naming the field")
    errors: list[FieldError] | None = Field(None, description="per field, on validation errors")


def _errors(*statuses: int) -> dict[int | str, Any]:
    return {s: {"model": ErrorBody} for s in statuses}


class Alternative(BaseModel):
    text: str
    score: float


class AttentionMap(BaseModel):
    src_tokens: list[str] = Field(description="source pieces + <eos>: the columns")
    tgt_tokens: list[str] = Field(description="output pieces (+ <eos> if it ended there): rows")
    weights: list[list[float]]


class Translation(BaseModel):
    text: str
    score: float
    alternatives: list[Alternative]
    attention: AttentionMap | None = Field(None, description="only when asked for")


class TranslateResponse(BaseModel):
    translations: list[Translation]


class TopToken(BaseModel):
    token: str
    prob: float


class TraceStep(BaseModel):
    step: int
    input_token: str
    scores: list[float]
    weights: list[float]
    layer_head_weights: list[list[list[float]]]
    top_k: list[TopToken]
    chosen: str
    chosen_prob: float


class WordLinks(BaseModel):
    src_words: list[str] = Field(description="the source words links count (align.words)")
    output_words: list[str] = Field(description="the output words links count")
    src_word_ids: list[int] = Field(description="the word of each source piece (no <eos>)")
    output_word_ids: list[int] = Field(description="the word of each output piece")
    links: list[tuple[int, int]] = Field(
        description="(source word i, output word j), 0-based, sorted; one per output word: the "
        "source word the headline attention (last layer, heads averaged, as the steps' weights) "
        "gives most, a source word's pieces summed and an output word's averaged"
    )
    pharaoh: str = Field(description="the links as a Pharaoh line, i-j")


class ReferenceLinks(BaseModel):
    sure: list[tuple[int, int]] = Field(description="the sure links (i-j) given, sorted")
    possible: list[tuple[int, int]] = Field(
        description="the possible-only links (i?j) given, sorted; sure links count as possible "
        "too (S ⊆ P), but are listed under sure only"
    )
    aer: float = Field(description="alignment error rate of the model's links against these")
    precision: float = Field(description="share of the model's links that are possible ones")
    recall: float = Field(description="share of the sure links the model has")


class ExplainResponse(BaseModel):
    src_tokens: list[str]
    steps: list[TraceStep]
    output_tokens: list[str]
    output_text: str
    stopped_by: Literal["eos", "length_limit"]
    layers: int = Field(description="attention layers per step (0 when there are no steps)")
    heads: int = Field(description="attention heads per layer (0 when there are no steps)")
    alignment: WordLinks = Field(description="the headline attention as word links")
    reference: ReferenceLinks | None = Field(
        None, description="reference_links as parsed and scored; null when none were given"
    )


class Health(BaseModel):
    status: Literal["ok"]
    model: dict[str, Any] = Field(description="the model attnmt's own API (/v1) uses")
    models: list[dict[str, Any]] = Field(description="every model, one per language pair")
    limits: dict[str, float]


def _hyp_json(hyps: list[Hypothesis], attention: bool) -> dict[str, Any]:
    best = hyps[0]
    out: dict[str, Any] = {
        "text": best.text,
        "score": best.score,
        "alternatives": [{"text": h.text, "score": h.score} for h in hyps[1:]],
    }
    if attention:
        # Rows are the output pieces, plus "<eos>" when decoding ended there.
        rows = best.tokens + (["<eos>"] if best.finished else [])
        out["attention"] = {
            "src_tokens": best.src_tokens,
            "tgt_tokens": rows,
            "weights": best.attention,
        }
    return out


def _model_info(served: ServedModel) -> dict[str, Any]:
    translator = served.translator
    m = translator.cfg.model
    try:
        parameters = sum(p.numel() for p in translator.model.parameters())
    except ValueError:  # a CTranslate2 export has no PyTorch model to count
        parameters = None
    return {
        "arch": m.arch,
        "hidden": m.hidden,
        "layers": m.layers,
        "heads": m.heads if m.arch == "transformer" else 1,
        "src_vocab": translator.src_tok.vocab_size,
        "tgt_vocab": translator.tgt_tok.vocab_size,
        "parameters": parameters,
        "engine": type(translator.engine).__name__,
        "src_lang": served.src,
        "tgt_lang": served.tgt,
        "decode": asdict(served.defaults),  # what a request gets when it names no options
    }


# ---------------------------------------------------------------------------------------------
# Models: one per language pair.
# ---------------------------------------------------------------------------------------------


def parse_pair(name: str) -> tuple[str, str]:
    """A model's name -> its (source, target) codes: en-es or en_es -> ("en", "es"); the "_"
    form separates codes that hold a "-" (pt-BR_en)."""
    parts = name.split("_") if "_" in name else name.split("-")
    if len(parts) != 2:
        raise ValueError(
            f"{name!r}: name a model by its language pair, SRC-TGT or SRC_TGT (en-es, pt-BR_en)"
        )
    src, tgt = (check_language(f"model {name!r}", code) for code in parts)
    if src == tgt:
        raise ValueError(f"model {name!r}: source and target are both {src!r}")
    return src, tgt


def _model_files(directory: Path) -> dict[str, Path]:
    """A directory of models: ``SRC-TGT.pt`` files and ``SRC-TGT/`` folders (run directories
    or CTranslate2 exports); other files are not models and are passed over."""
    found = {
        p.name.removesuffix(".pt"): p
        for p in sorted(directory.iterdir())
        if p.is_dir() or p.suffix == ".pt"
    }
    if not found:
        raise ValueError(f"{directory}: no models (SRC-TGT.pt files or SRC-TGT folders) in it")
    return found


def load_translator(path: str | Path, device: str = "cpu", quantize: bool = False) -> Translator:
    """A checkpoint (.pt or run dir) on the torch engine, or a CTranslate2 export on its own."""
    path = Path(path)
    if (path / "model.bin").is_file() and (path / ct2.TOKENIZERS_FILE).is_file():
        return ct2.load_translator(path, device, compute_type="int8" if quantize else "default")
    return Translator.from_checkpoint(path, device=device, quantize=quantize)


def load_models(
    models: Mapping[str, str | Path] | str | Path, device: str = "cpu", quantize: bool = False
) -> dict[str, Translator]:
    """``{"en-es": path, ...}`` or a directory of such models -> ``{"en-es": Translator}``.
    Every name is checked before any model loads."""
    files = _model_files(Path(models)) if isinstance(models, (str, Path)) else dict(models)
    if not files:
        raise ValueError("no models to serve")
    pairs = {name: parse_pair(name) for name in files}
    if len(set(pairs.values())) < len(pairs):
        raise ValueError(f"two models for one language pair among {', '.join(pairs)}")
    return {name: load_translator(path, device, quantize) for name, path in files.items()}


def _is_one_model(path: Path) -> bool:
    """A checkpoint file, a run directory or a CTranslate2 export (not a directory of models)."""
    marks = ("best.pt", "last.pt", "model.bin")
    return not path.is_dir() or any((path / name).exists() for name in marks)


def models_from_args(values: Sequence[str], src_lang: str, tgt_lang: str) -> dict[str, str] | Path:
    """What ``attnmt serve --model`` says, for :func:`serve`'s ``models``: ``PAIR=PATH`` (once
    per model), one directory of models, or one model translating ``src_lang`` -> ``tgt_lang``."""
    if not values:
        raise ValueError("--model: give a model")
    pairs = [v.partition("=") for v in values]
    if any(sep for _, sep, _ in pairs):
        if not all(sep and name and path for name, sep, path in pairs):
            raise ValueError("--model: with several models, give each as PAIR=PATH (en-es=CKPT)")
        models = {name: path for name, _, path in pairs}
        if len(models) < len(pairs):
            raise ValueError("--model: a language pair is given twice")
        return models
    if len(values) > 1:
        raise ValueError("--model: with several models, give each as PAIR=PATH (en-es=CKPT)")
    path = Path(values[0])
    if not path.exists():
        raise FileNotFoundError(f"--model: {path}: no such file or directory")
    return {f"{src_lang}_{tgt_lang}": values[0]} if _is_one_model(path) else path


def _served(models: Mapping[str, Translator], limits: ServeLimits) -> list[ServedModel]:
    out = []
    for name, translator in models.items():
        src, tgt = parse_pair(name)
        defaults = server_defaults(translator.options, limits)
        out.append(ServedModel(src, tgt, MicroBatcher(translator, limits), defaults))
    return out


# ---------------------------------------------------------------------------------------------
# The app.
# ---------------------------------------------------------------------------------------------


def create_app(
    translator: Translator | None = None,
    limits: ServeLimits | None = None,
    src_lang: str = "en",
    tgt_lang: str = "es",
    *,
    models: Mapping[str, Translator] | None = None,
    api_keys: ApiKeys | None = None,
) -> FastAPI:
    """The FastAPI app around ``translator`` (its languages named by ``src_lang`` and
    ``tgt_lang``: a checkpoint does not record them) or around ``models`` (``{"en-es":
    Translator, ...}``, the first for attnmt's own API). ``api_keys`` (off when None) guard
    the LibreTranslate endpoints."""
    if (translator is None) == (models is None):
        raise ValueError("create_app: give one translator or models (not both)")
    limits = limits or ServeLimits()
    served = _served(models or {f"{src_lang}_{tgt_lang}": translator}, limits)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        tasks = [asyncio.create_task(m.batcher.run()) for m in served]
        for m, task in zip(served, tasks):
            m.batcher.task = task
        yield
        for m in served:
            m.batcher.task.cancel()
            m.batcher.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="attnmt", version="0.1.0", lifespan=lifespan)
    app.state.models, app.state.limits = served, limits
    app.state.batcher = served[0].batcher  # attnmt's own API's model
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes, error_key=error_key)
    # LibreTranslate answers every origin (its after_request hook); browser clients rely on it.
    # Added last, so it is outermost and a 413 from BodyLimit carries the headers too.
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST"],
                       allow_headers=["Authorization", "Content-Type"], max_age=86_400)  # fmt: skip
    _document_limits(app, limits)
    _add_error_handlers(app)
    _add_api_routes(app, served, limits)
    add_libre_routes(app, LibreApi(served, limits, KeyGate(api_keys)))

    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.add_api_route("/", index, methods=["GET", "HEAD"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _document_limits(app: FastAPI, limits: ServeLimits) -> None:
    """Write this server's limits into the documented request bodies. The request models are
    shared by every server, so the limits are checked in code (413 for too much text, 422 for
    beam and n_best) and only written into the schema here."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            bodies = FastAPI.openapi(app)["components"]["schemas"]  # sets app.openapi_schema
            text = {"type": "string", "maxLength": limits.max_chars}
            texts = {"type": "array", "items": text, "minItems": 1,
                     "maxItems": limits.max_sentences}  # fmt: skip
            beam = {"type": "integer", "minimum": 1, "maximum": limits.max_beam}
            fields = bodies["TranslateRequest"]["properties"]
            fields["text"]["anyOf"] = [text, texts]
            for name in ("beam", "n_best"):
                fields[name]["anyOf"] = [beam, {"type": "null"}]
            bodies["ExplainRequest"]["properties"]["text"].update(text)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _error_line(error: dict[str, Any]) -> str:
    """'text.list[str].1: Input should be a valid string' -- the field first, then the problem."""
    if error["type"] == "json_invalid":
        return f"body: invalid JSON ({error.get('ctx', {}).get('error', error['msg'])})"
    field = ".".join(str(p) for p in error["loc"] if p != "body") or "body"
    return f"{field}: {error['msg']}"


def _add_error_handlers(app: FastAPI) -> None:
    """Every error is JSON: {"detail": ...}, or {"error": ...} on the LibreTranslate paths."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({error_key(request.url.path): exc.detail}, exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # One readable line naming each bad field, plus the structured list (ErrorBody).
        errors = exc.errors()
        lines = [_error_line(e) for e in errors]
        structured = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
        return JSONResponse({"detail": "; ".join(lines), "errors": structured}, 422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # headers: a 405 names the allowed methods in Allow (RFC 9110)
        body = {error_key(request.url.path): str(exc.detail)}
        return JSONResponse(body, exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # A fault of ours (bad input is answered before it gets here); still JSON, never HTML.
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"}, 500)


def _empty_trace() -> dict[str, Any]:
    """The trace of a text with nothing to translate: no steps, as translate gives '' for it."""
    return {"src_tokens": ["<eos>"], "steps": [], "output_tokens": [], "output_text": "",
            "stopped_by": "eos", "layers": 0, "heads": 0,
            "alignment": {"src_words": [], "output_words": [], "src_word_ids": [],
                          "output_word_ids": [], "links": []}}  # fmt: skip


def parse_reference(value: str) -> Alignment:
    """``reference_links`` -> Alignment; a 422 names the first bad token. Links are separated
    by spaces, tabs or line breaks only, as the schema's pattern says."""
    for token in filter(None, _LINK_SPACE.split(value)):
        try:
            if token.split() != [token]:  # other whitespace inside (U+00A0, U+2003, ...)
                raise ValueError(f"bad link {token!r} (separate links with spaces)")
            parse_pharaoh(token)
        except ValueError as e:
            raise ApiError(422, f"reference_links: {e}") from None
    return parse_pharaoh(value)


def _with_reference(answer: dict[str, Any], reference: Alignment | None) -> dict[str, Any]:
    """The explain answer with its Pharaoh line, and the reference checked against its words
    (422 for a link outside the pair) and scored against the model's links."""
    words = answer["alignment"]
    links = [tuple(link) for link in words["links"]]
    words["pharaoh"] = format_links(links)
    if reference is None:
        return answer | {"reference": None}
    n_src, n_out = len(words["src_words"]), len(words["output_words"])
    outside = sorted((i, j) for i, j in reference.possible if i >= n_src or j >= n_out)
    if outside:
        i, j = outside[0]
        raise ApiError(422, f"reference_links: link {i}-{j} is outside the sentence pair "
                            f"({n_src} source words, {n_out} output words)")  # fmt: skip
    score = alignment_error([links], [reference])
    answer["reference"] = {
        "sure": sorted(reference.sure),
        "possible": sorted(reference.possible - reference.sure),
        "aer": score.aer,
        "precision": score.precision,
        "recall": score.recall,
    }
    return answer


def _add_api_routes(app: FastAPI, served: list[ServedModel], limits: ServeLimits) -> None:
    """attnmt's own API on the first model: /v1/translate, /v1/explain, /health."""
    model = served[0]
    translator, batcher, defaults = model.translator, model.batcher, model.defaults
    errors = _errors(400, 413, 422, 503)

    @app.post("/v1/translate", response_model=None,
              responses={200: {"model": TranslateResponse}, **errors})  # fmt: skip
    async def v1_translate(req: TranslateRequest, request: Request) -> dict[str, Any]:
        texts = [req.text] if isinstance(req.text, str) else req.text
        check_texts(texts, limits, "text")
        options = request_options(
            defaults, limits, req.beam, req.n_best,
            no_repeat_ngram=req.no_repeat_ngram, repetition_penalty=req.repetition_penalty,
        )  # fmt: skip
        results = await run_translation(model, texts, options, req.attention, request, "text")
        return {"translations": [_hyp_json(h, req.attention) for h in results]}

    @app.post("/v1/explain", response_model=None,
              responses={200: {"model": ExplainResponse}, **errors})  # fmt: skip
    async def v1_explain(req: ExplainRequest, request: Request) -> dict[str, Any]:
        from attnmt.explain import explain  # imported on first use: it pulls in plotting

        check_texts([req.text], limits, "text")
        refs = parse_reference(req.reference_links) if req.reference_links is not None else None
        ids = translator.encode([req.text])[0]
        if not ids or not req.text.strip():
            return _with_reference(_empty_trace(), refs)
        if len(ids) + 1 > limits.max_explain_tokens:
            raise ApiError(413, f"text: {len(ids) + 1} source tokens, limit "
                                f"{limits.max_explain_tokens} for explain")  # fmt: skip
        try:
            trace = await batcher.call(explain, translator, req.text, req.top_k, request=request)
        except ValueError as e:  # explain rejected this input
            raise ApiError(422, f"text: {e}") from None
        return _with_reference(trace.to_dict() | {"alignment": trace.alignment.to_dict()}, refs)

    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": _model_info(model),
            "models": [_model_info(m) for m in served],
            "limits": asdict(limits),
        }

    app.add_api_route("/health", health, methods=["GET"], response_model=None,
                      responses={200: {"model": Health}})  # fmt: skip
    app.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)


def serve(
    model_path: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    src_lang: str = "en",
    tgt_lang: str = "es",
    limits: ServeLimits | None = None,
    device: str = "cpu",
    quantize: bool = False,
    *,
    models: Mapping[str, str | Path] | str | Path | None = None,
    api_keys: str | Path | None = None,
) -> None:
    """Load the models and serve them with uvicorn (loopback unless ``host`` says otherwise).

    ``model_path`` is one model (``src_lang`` -> ``tgt_lang``); ``models`` several (``{"en-es":
    path}`` or a directory, see :func:`load_models`); ``api_keys`` a keys file (``apikeys``).
    Everything is checked and loaded before the port is opened."""
    if (model_path is None) == (models is None):
        raise ValueError("serve: give one model path or models (not both)")
    keys = ApiKeys.load(api_keys) if api_keys is not None else None
    spec = models if models is not None else {f"{src_lang}_{tgt_lang}": model_path}
    loaded = load_models(spec, device=device, quantize=quantize)
    app = create_app(models=loaded, limits=limits or ServeLimits(), api_keys=keys)
    uvicorn.Server(server_config(app, host, port)).run()
