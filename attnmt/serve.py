"""HTTP API and web page around one ``Translator`` (FastAPI + uvicorn).

Pipeline position: HTTP request -> validation -> **micro-batcher** -> ``Translator.translate``
(the single inference path) -> JSON. Endpoints: ``POST /v1/translate``, ``POST /v1/explain``,
``GET /health``, the LibreTranslate-compatible ``POST /translate`` and ``GET /languages``, and the
web page at ``/`` (files in ``attnmt/static``, shipped as package data, no CDN).

Micro-batching: one asyncio task gathers the requests that arrive within ``batch_window_ms``,
groups them by decoding options and runs one ``translate`` call at a time on a single model
thread, so the event loop stays free and the model sees full batches. Work is counted as source
tokens x beam: a call does at most ``max_batch_work`` of it, so a heavy request is decoded in
several calls, and requests that arrive meanwhile are served before its next part. A request
that timed out or whose client left gets no further calls. A failing batch is retried request by
request, so one bad input never fails its neighbours.

Every input is bounded (body size, characters, sentences, beam, work, queue length, time), and
so are connections (:func:`server_config`): a connection must deliver each request within
``request_read_s``, at most ``max_connections`` are held, and a repeated warning is logged once
per ``log_every_s``. Bad input gets a JSON 4xx, never a 500; the OpenAPI schema at
``/openapi.json`` describes every request and response, errors included.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import resource
import time
import urllib.parse
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import h11
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.exceptions import HTTPException  # FastAPI's is a subclass; starlette raises this
from uvicorn.protocols.http.h11_impl import H11Protocol

from attnmt.translate import DecodeOptions, Hypothesis, Translator

STATIC_DIR = Path(__file__).parent / "static"
LANGUAGE_NAMES = {"en": "English", "es": "Spanish", "fr": "French", "de": "German",
                  "it": "Italian", "pt": "Portuguese", "nl": "Dutch", "ru": "Russian"}  # fmt: skip
LIBRE_PATHS = ("/translate", "/languages")  # their errors are {"error": ...}, as LibreTranslate's


@dataclass
class ServeLimits:
    max_chars: int = 1000  # characters per sentence
    max_sentences: int = 32  # sentences per request
    max_beam: int = 10  # largest beam (and n-best) a request may ask for
    # Work is source tokens (with <eos>) x beam: decoding time grows with both.
    max_request_work: int = 32_768  # per request; beyond this -> 413
    max_batch_work: int = 4_096  # per model call: a bigger request is decoded in several calls
    max_explain_tokens: int = 100  # source tokens for /v1/explain (its answer grows with S^2)
    timeout_s: float = 30.0  # a request waiting longer than this gets 503
    batch_window_ms: float = 5.0  # how long the batcher waits to gather more requests
    max_batch_sentences: int = 64  # sentences per translate call
    max_queue_sentences: int = 1024  # sentences waiting at once; beyond this -> 503 (busy)
    max_body_bytes: int = 1_000_000  # request body size; beyond this -> 413
    # Connections (server_config): uvicorn times out only idle keep-alive connections.
    max_connections: int = 512  # held at once (lowered to fit `ulimit -n`); beyond: closed
    request_read_s: float = 10.0  # a request's headers and body must arrive within this
    keep_alive_s: int = 5  # an idle keep-alive connection is closed after this
    log_every_s: float = 60.0  # the same warning is logged at most once per this interval


class ApiError(Exception):
    """A client error with its HTTP status; rendered as {"detail": ...} (or {"error": ...})."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


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
    attention: bool = Field(False, strict=True, description="include attention weights")


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(description="one sentence; an empty one gives a trace without steps")
    top_k: Whole = Field(5, ge=1, le=20)


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    detail: str = Field(description="what is wrong, naming the field")
    errors: list[FieldError] | None = Field(None, description="per field, on validation errors")


class LibreErrorBody(BaseModel):
    error: str


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


class ExplainResponse(BaseModel):
    src_tokens: list[str]
    steps: list[TraceStep]
    output_tokens: list[str]
    output_text: str
    stopped_by: Literal["eos", "length_limit"]
    layers: int = Field(description="attention layers per step (0 when there are no steps)")
    heads: int = Field(description="attention heads per layer (0 when there are no steps)")


class Health(BaseModel):
    status: Literal["ok"]
    model: dict[str, Any]
    limits: dict[str, float]


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


def _errors(*statuses: int, model: type[BaseModel] = ErrorBody) -> dict[int | str, Any]:
    return {s: {"model": model} for s in statuses}


# ---------------------------------------------------------------------------------------------
# The micro-batcher.
# ---------------------------------------------------------------------------------------------


@dataclass
class _Job:
    """One request: its sentences are decoded in order, in one or more model calls."""

    texts: list[str]
    work: list[int]  # source tokens x beam, per sentence
    key: tuple[DecodeOptions, bool]  # (options, attention): jobs sharing it share a call
    future: asyncio.Future
    results: list[list[Hypothesis]] = field(default_factory=list)  # for texts[: len(results)]


@dataclass
class _Part:
    """The sentences ``job.texts[start:end]`` in one model call."""

    job: _Job
    start: int
    end: int


class MicroBatcher:
    """Gathers concurrent requests into batched ``translate`` calls on one model thread."""

    def __init__(self, translator: Translator, limits: ServeLimits):
        self.translator, self.limits = translator, limits
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.pending = 0  # sentences queued or running
        # One thread: torch already parallelises inside an op, and the model is not re-entrant.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attnmt-model")
        self.task: asyncio.Task | None = None

    async def call(self, fn: Any, *args: Any, request: Request | None = None) -> Any:
        """Run ``fn(*args)`` on the model thread, bounded by the request time limit."""
        fut = asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        return await self._wait(fut, request)

    async def translate(
        self,
        texts: list[str],
        work: list[int],
        options: DecodeOptions,
        attention: bool,
        request: Request | None = None,
    ) -> list[list[Hypothesis]]:
        """The hypotheses for ``texts``; ``work[i]`` is text i's tokens x beam."""
        if self.pending + len(texts) > self.limits.max_queue_sentences:
            raise ApiError(503, "server busy: too many sentences waiting; retry later")
        future = asyncio.get_running_loop().create_future()
        job = _Job(texts, work, (options, attention), future)
        self.pending += len(texts)
        future.add_done_callback(lambda _: setattr(self, "pending", self.pending - len(texts)))
        await self.queue.put(job)
        return await self._wait(future, request)

    async def _wait(self, fut: asyncio.Future, request: Request | None) -> Any:
        """``fut``'s result; cancelled (so no more work is done for it) when the time limit
        passes or the client goes away first."""
        gone = asyncio.ensure_future(_client_gone(request)) if request is not None else None
        try:
            waits = {fut} if gone is None else {fut, gone}
            done, _ = await asyncio.wait(waits, timeout=self.limits.timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            if fut in done:
                return fut.result()
            fut.cancel()
            if gone is not None and gone in done:
                raise ApiError(503, "the client went away")  # nobody reads this answer
            raise ApiError(503, f"timed out after {self.limits.timeout_s:g} s; retry later")
        finally:
            if gone is not None:
                gone.cancel()

    async def run(self) -> None:
        turns: deque[_Job] = deque()  # jobs with sentences left, in the order they are served
        while True:
            if not turns:
                turns.append(await self.queue.get())
                await asyncio.sleep(self.limits.batch_window_ms / 1000)  # let a batch gather
            self._take_queued(turns)
            parts = self._next_batch(turns)
            if not parts:
                continue
            try:
                await self._run_parts(parts)
            except Exception as e:  # a bug here must not kill the one batching task
                for part in parts:
                    if not part.job.future.done():
                        part.job.future.set_exception(e)
            # Requests that came during the call go before the rest of the jobs just served,
            # so a light request waits for at most one call of a heavy one.
            self._take_queued(turns)
            turns.extend(p.job for p in parts if not p.job.future.done())

    def _take_queued(self, turns: deque[_Job]) -> None:
        while not self.queue.empty():
            turns.append(self.queue.get_nowait())

    def _next_batch(self, turns: deque[_Job]) -> list[_Part]:
        """The next call: sentences of the first job in line and of the jobs after it that share
        its options, in turn, while they fit the work and sentence budgets (the first sentence
        always fits). Jobs taken leave ``turns``; those timed out or cancelled are dropped."""
        live = [job for job in turns if not job.future.done()]
        turns.clear()
        if not live:
            return []
        key, work, room = live[0].key, self.limits.max_batch_work, self.limits.max_batch_sentences
        parts: list[_Part] = []
        for job in live:
            start = end = len(job.results)
            while job.key == key and end < len(job.texts) and room > 0:
                if job.work[end] > work and (parts or end > start):
                    break
                work, room, end = work - job.work[end], room - 1, end + 1
            if end > start:
                parts.append(_Part(job, start, end))
            else:
                turns.append(job)
        return parts

    async def _run_parts(self, parts: list[_Part]) -> None:
        texts = [t for p in parts for t in p.job.texts[p.start : p.end]]
        options, attention = parts[0].job.key
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(
                self.executor, self.translator.translate, texts, options, attention
            )
        except Exception as e:
            if len(parts) > 1:  # find the culprit: the others still get their answers
                for part in parts:
                    await self._run_parts([part])
            elif not parts[0].job.future.done():
                parts[0].job.future.set_exception(e)
            return
        start = 0
        for p in parts:
            n = p.end - p.start
            p.job.results += results[start : start + n]
            start += n
            if len(p.job.results) == len(p.job.texts) and not p.job.future.done():
                p.job.future.set_result(p.job.results)


async def _client_gone(request: Request) -> None:
    """Returns once the client has disconnected. The body has been read by then, so the next
    ASGI message is ``http.disconnect`` (uvicorn sends it when the connection drops)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


# ---------------------------------------------------------------------------------------------
# Connections: uvicorn's settings, and the two guards it lacks.
# ---------------------------------------------------------------------------------------------

_REQUEST_IN = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR)  # h11: their request has arrived


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for receiving each request, and a connection cap.

    uvicorn closes a connection only when it idles between requests (``timeout_keep_alive``): one
    that sends nothing, trickles its headers, or sends headers and never the body is held for
    ever (uvicorn issue #160), so ~1,000 of them use up the file descriptors. Here a request's
    headers and body must arrive within ``request_read_s`` of the connection opening (or of the
    previous response), and a connection beyond ``max_connections`` is closed at once.
    """

    request_read_s: float = 10.0  # set by server_config on a subclass
    max_connections: int = 512

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        if len(self.connections) > self.max_connections:
            self.logger.warning("more than %d connections: closing new ones", self.max_connections)
            transport.close()
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state in _REQUEST_IN:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state not in _REQUEST_IN:
            self._arm()  # the next request (or the rest of this body) gets its own time

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_read_s, self._too_slow)

    def _disarm(self) -> None:
        if getattr(self, "_deadline", None) is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.logger.warning(
                "closed a connection that sent no complete request within %g s", self.request_read_s
            )
            self.transport.close()


class OncePerInterval(logging.Filter):
    """Lets a message (by logger and first line) through at most once per ``interval_s`` and
    tells how many like it were held back: a flood of one error (say "Too many open files" at
    every accept) costs one line per interval instead of filling the disk."""

    def __init__(self, interval_s: float, clock: Any = time.monotonic):
        super().__init__()
        self.interval_s, self.clock = interval_s, clock
        self.seen: dict[tuple[str, str], tuple[float, int]] = {}  # key -> (last shown, held)

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg).split("\n", 1)[0])
        now = self.clock()
        shown, held = self.seen.get(key, (-math.inf, 0))
        if now - shown < self.interval_s:
            self.seen[key] = (shown, held + 1)
            return False
        self.seen[key] = (now, 0)
        if held:
            note = f" ({held} more like it in the last {self.interval_s:g} s)"
            record.msg = f"{record.msg}{note.replace('%', '%%')}"
        return True


THROTTLED_LOGGERS = ("asyncio", "uvicorn.error")  # accept() failures; uvicorn's warnings


def throttle_logs(interval_s: float) -> None:
    """Install :class:`OncePerInterval` on the server's loggers (replacing an earlier one)."""
    for name in THROTTLED_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, OncePerInterval)]:
            logger.removeFilter(old)
        logger.addFilter(OncePerInterval(interval_s))


def connection_cap(wanted: int) -> int:
    """``wanted``, lowered so that held connections leave file descriptors for the rest of the
    process (model files, logs, the listening socket): beyond the soft ``ulimit -n``, accept()
    fails and the server stops answering anyone."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - 64))


def server_config(
    app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info"
) -> uvicorn.Config:
    """uvicorn settings for ``app`` (made by :func:`create_app`) that bound its connections."""
    limits: ServeLimits = app.state.limits
    cap = connection_cap(limits.max_connections)
    protocol = type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {"request_read_s": limits.request_read_s, "max_connections": cap},
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        # No limit_concurrency: uvicorn would answer 503 to every request, kept-alive clients'
        # too, while idle connections fill it; the protocol closes surplus connections instead,
        # and the batcher bounds the work waiting (max_queue_sentences).
        http=protocol,
        timeout_keep_alive=limits.keep_alive_s,
        lifespan="on",
    )
    throttle_logs(limits.log_every_s)  # after uvicorn.Config, which configures logging
    return config


class BodyLimit:
    """ASGI middleware: reads at most ``max_bytes`` of a request body, else answers 413."""

    def __init__(self, app: Any, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                key = _error_key(scope["path"])
                body = {key: f"request body larger than {self.max_bytes} bytes"}
                return await JSONResponse(body, 413)(scope, receive, send)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


# ---------------------------------------------------------------------------------------------
# Validation.
# ---------------------------------------------------------------------------------------------


def _error_key(path: str) -> str:
    return "error" if path in LIBRE_PATHS else "detail"


def _error_line(error: dict[str, Any]) -> str:
    """'text.list[str].1: Input should be a valid string' -- the field first, then the problem."""
    if error["type"] == "json_invalid":
        return f"body: invalid JSON ({error.get('ctx', {}).get('error', error['msg'])})"
    field = ".".join(str(p) for p in error["loc"] if p != "body") or "body"
    return f"{field}: {error['msg']}"


def _check_texts(texts: list[str], limits: ServeLimits, field: str, bad: int = 422) -> None:
    """Count, length and Unicode of the sentences; ``bad`` is the status for invalid text."""
    if not texts:
        raise ApiError(bad, f"{field}: give at least one sentence")
    if len(texts) > limits.max_sentences:
        raise ApiError(413, f"{field}: {len(texts)} sentences, limit {limits.max_sentences}")
    for i, t in enumerate(texts):
        where = f"{field}[{i}]"
        if len(t) > limits.max_chars:
            raise ApiError(413, f"{where}: {len(t)} characters, limit {limits.max_chars}")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:  # JSON can spell a lone surrogate ("\ud800"); text can't
            what = f"lone surrogate U+{ord(t[e.start]):04X} at character {e.start}"
            raise ApiError(bad, f"{where}: not Unicode text: {what}") from None


def _work(
    translator: Translator, texts: list[str], beam: int, limits: ServeLimits, field: str
) -> list[int]:
    """Each sentence's work (source tokens with <eos>, times the beam); 413 beyond the limit."""
    work = [(len(ids) + 1) * beam for ids in translator.encode(texts)]
    if sum(work) > limits.max_request_work:
        raise ApiError(
            413,
            f"{field}: {sum(work) // beam} source tokens at beam {beam} is {sum(work)} units of "
            f"work, limit {limits.max_request_work}: send fewer or shorter sentences, or a "
            "smaller beam",
        )
    return work


def _server_defaults(options: DecodeOptions, limits: ServeLimits) -> DecodeOptions:
    """The model's decode options with beam and n_best brought within the server's limits."""
    top = limits.max_beam
    return replace(options, beam=min(options.beam, top), n_best=min(options.n_best, top))


def _request_options(
    defaults: DecodeOptions, limits: ServeLimits, beam: int | None, n_best: int | None
) -> DecodeOptions:
    """A request's beam and n_best over the server's defaults, bounded by the limits."""
    for name, value in (("n_best", n_best), ("beam", beam)):
        if value is not None and not 1 <= value <= limits.max_beam:
            raise ApiError(422, f"{name}: must be between 1 and {limits.max_beam}, got {value}")
    try:
        return DecodeOptions.resolve(defaults, beam=beam, n_best=n_best)
    except ValueError as e:  # e.g. n_best above the beam asked for; the message names it
        raise ApiError(422, str(e)) from None


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


def _model_info(
    translator: Translator, defaults: DecodeOptions, src_lang: str, tgt_lang: str
) -> dict[str, Any]:
    m = translator.cfg.model
    return {
        "arch": m.arch,
        "hidden": m.hidden,
        "layers": m.layers,
        "heads": m.heads if m.arch == "transformer" else 1,
        "src_vocab": translator.src_tok.vocab_size,
        "tgt_vocab": translator.tgt_tok.vocab_size,
        "parameters": sum(p.numel() for p in translator.model.parameters()),
        "src_lang": src_lang,
        "tgt_lang": tgt_lang,
        "decode": asdict(defaults),  # what a request gets when it names no options
    }


def create_app(
    translator: Translator,
    limits: ServeLimits | None = None,
    src_lang: str = "en",
    tgt_lang: str = "es",
) -> FastAPI:
    """The FastAPI app around ``translator``. A checkpoint does not record its languages, so
    ``src_lang`` and ``tgt_lang`` name them (for /health and the LibreTranslate endpoints)."""
    limits = limits or ServeLimits()
    batcher = MicroBatcher(translator, limits)
    defaults = _server_defaults(translator.options, limits)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.task = asyncio.create_task(batcher.run())
        yield
        batcher.task.cancel()
        batcher.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="attnmt", version="0.1.0", lifespan=lifespan)
    app.state.batcher, app.state.limits = batcher, limits
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    _document_limits(app, limits)
    _add_error_handlers(app)
    _add_api_routes(app, batcher, defaults, src_lang, tgt_lang)
    _add_libre_routes(app, batcher, defaults, src_lang, tgt_lang)

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


def _add_error_handlers(app: FastAPI) -> None:
    """Every error is JSON: {"detail": ...}, or {"error": ...} on the LibreTranslate paths."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({_error_key(request.url.path): exc.detail}, exc.status)

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
        body = {_error_key(request.url.path): str(exc.detail)}
        return JSONResponse(body, exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # A fault of ours (bad input is answered before it gets here); still JSON, never HTML.
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"}, 500)


async def _translate(
    batcher: MicroBatcher,
    texts: list[str],
    options: DecodeOptions,
    attention: bool,
    request: Request,
    field: str,
) -> list[list[Hypothesis]]:
    work = _work(batcher.translator, texts, options.beam, batcher.limits, field)
    try:
        return await batcher.translate(texts, work, options, attention, request)
    except ValueError as e:  # the translator rejected this input
        raise ApiError(422, f"{field}: {e}") from None
    except ApiError:
        raise
    except Exception as e:  # a fault of ours, reported as JSON rather than a bare 500
        raise ApiError(500, f"translation failed: {type(e).__name__}: {e}") from None


def _empty_trace() -> dict[str, Any]:
    """The trace of a text with nothing to translate: no steps, as translate gives '' for it."""
    return {"src_tokens": ["<eos>"], "steps": [], "output_tokens": [], "output_text": "",
            "stopped_by": "eos", "layers": 0, "heads": 0}  # fmt: skip


def _add_api_routes(
    app: FastAPI, batcher: MicroBatcher, defaults: DecodeOptions, src_lang: str, tgt_lang: str
) -> None:
    """attnmt's own API: /v1/translate, /v1/explain, /health."""
    translator, limits = batcher.translator, batcher.limits
    errors = _errors(400, 413, 422, 503)

    @app.post("/v1/translate", response_model=None,
              responses={200: {"model": TranslateResponse}, **errors})  # fmt: skip
    async def v1_translate(req: TranslateRequest, request: Request) -> dict[str, Any]:
        texts = [req.text] if isinstance(req.text, str) else req.text
        _check_texts(texts, limits, "text")
        options = _request_options(defaults, limits, req.beam, req.n_best)
        results = await _translate(batcher, texts, options, req.attention, request, "text")
        return {"translations": [_hyp_json(h, req.attention) for h in results]}

    @app.post("/v1/explain", response_model=None,
              responses={200: {"model": ExplainResponse}, **errors})  # fmt: skip
    async def v1_explain(req: ExplainRequest, request: Request) -> dict[str, Any]:
        from attnmt.explain import explain  # imported on first use: it pulls in plotting

        _check_texts([req.text], limits, "text")
        ids = translator.encode([req.text])[0]
        if not ids or not req.text.strip():
            return _empty_trace()
        if len(ids) + 1 > limits.max_explain_tokens:
            raise ApiError(413, f"text: {len(ids) + 1} source tokens, limit "
                                f"{limits.max_explain_tokens} for explain")  # fmt: skip
        try:
            trace = await batcher.call(explain, translator, req.text, req.top_k, request=request)
        except ValueError as e:  # explain rejected this input
            raise ApiError(422, f"text: {e}") from None
        return trace.to_dict()

    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": _model_info(translator, defaults, src_lang, tgt_lang),
            "limits": asdict(limits),
        }

    app.add_api_route("/health", health, methods=["GET"], response_model=None,
                      responses={200: {"model": Health}})  # fmt: skip
    app.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)


# ---------------------------------------------------------------------------------------------
# LibreTranslate.
# ---------------------------------------------------------------------------------------------


def _strict_json(body: bytes) -> Any:
    """RFC 8259 JSON: NaN and Infinity are refused, and a body nested too deeply for the parser
    is a 400 like any other bad body."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not a JSON value")

    try:
        return json.loads(body, parse_constant=refuse)
    except RecursionError:
        raise ApiError(400, "Invalid request: JSON body nested too deeply") from None
    except ValueError as e:  # UnicodeDecodeError included
        raise ApiError(400, f"Invalid request: body is not valid JSON ({e})") from None


def _form_value(text: Any) -> Any:
    """A form field read as JSON reads a value ("2" -> 2), so a form and a JSON body that say the
    same thing are treated alike; text that is no JSON value stays text."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


async def _libre_params(request: Request) -> dict[str, Any]:
    """LibreTranslate clients send JSON or form data; ``q`` may repeat to mean a list."""
    # Media types are case-insensitive (RFC 9110 8.3.1); parameters such as charset are dropped.
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        data = _strict_json(await request.body())
        if not isinstance(data, dict):
            raise ApiError(400, "Invalid request: JSON body must be an object")
        return data
    if ctype == "multipart/form-data":
        form = await request.form()
        fields = {k: form.getlist(k) for k in form.keys()}
    else:  # urlencoded form, or query parameters when there is no body
        body = (await request.body()).decode("utf-8", "replace")
        fields = urllib.parse.parse_qs(body or request.url.query, keep_blank_values=True)
    data = {k: (v if k == "q" and len(v) > 1 else v[0]) for k, v in fields.items() if v}
    if "alternatives" in data:
        data["alternatives"] = _form_value(data["alternatives"])
    return data


def _alternatives(value: Any, limits: ServeLimits) -> int:
    """``alternatives``: a whole number 0 .. max_beam - 1 (2.0 is 2; 2.7 is refused)."""
    whole = (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and value == int(value)
    )
    if not whole:
        raise ApiError(400, f"Invalid request: alternatives must be a whole number, got {value!r}")
    if not 0 <= value < limits.max_beam:
        raise ApiError(400, f"Invalid request: alternatives must be 0 to {limits.max_beam - 1}")
    return int(value)


def _check_libre_params(
    p: dict[str, Any], limits: ServeLimits, src_lang: str, tgt_lang: str
) -> int:
    """Validate LibreTranslate parameters; returns the number of alternatives asked for."""
    for name in ("q", "source", "target"):
        if not p.get(name):
            raise ApiError(400, f"Invalid request: missing {name} parameter")
    q, source, target = p["q"], p["source"], p["target"]
    if not (isinstance(q, str) or (isinstance(q, list) and all(isinstance(s, str) for s in q))):
        raise ApiError(400, "Invalid request: q must be a string or a list of strings")
    if source not in (src_lang, "auto"):
        raise ApiError(400, f"{source} is not supported (this model reads {src_lang})")
    if target != tgt_lang:
        raise ApiError(400, f"{target} is not supported (this model writes {tgt_lang})")
    if p.get("format", "text") not in ("text", "html"):
        raise ApiError(400, f"{p['format']} format is not supported")
    n_alt = _alternatives(p.get("alternatives", 0), limits)
    _check_texts([q] if isinstance(q, str) else q, limits, "q", bad=400)
    return n_alt


def _libre_schema(limits: ServeLimits, src_lang: str, tgt_lang: str, form: bool) -> dict:
    """The /translate body as JSON or a form. In a form one ``q`` is a string and a repeated
    ``q`` a list, so a form's list has at least two items; a JSON list may have one."""
    text = {"type": "string", "maxLength": limits.max_chars}
    many = {"type": "array", "items": text, "minItems": 2 if form else 1,
            "maxItems": limits.max_sentences}  # fmt: skip
    return {
        "type": "object",
        "required": ["q", "source", "target"],
        "properties": {
            "q": {"anyOf": [{**text, "minLength": 1}, many], "description": "text to translate"},
            "source": {"enum": [src_lang, "auto"]},
            "target": {"enum": [tgt_lang]},
            "format": {"enum": ["text", "html"], "default": "text"},
            "alternatives": {
                "type": "integer",
                "minimum": 0,
                "maximum": limits.max_beam - 1,
                "default": 0,
            },  # fmt: skip
            "api_key": {"description": "accepted and ignored"},
        },
    }


def _libre_openapi(limits: ServeLimits, src_lang: str, tgt_lang: str) -> dict[str, Any]:
    form = _libre_schema(limits, src_lang, tgt_lang, form=True)
    content = {
        "application/json": {"schema": _libre_schema(limits, src_lang, tgt_lang, form=False)},
        "application/x-www-form-urlencoded": {"schema": form},
        "multipart/form-data": {"schema": form},
    }
    return {"requestBody": {"required": True, "content": content}}


def _add_libre_routes(
    app: FastAPI, batcher: MicroBatcher, defaults: DecodeOptions, src_lang: str, tgt_lang: str
) -> None:
    """The LibreTranslate-compatible API: POST /translate and GET /languages."""
    limits = batcher.limits

    async def languages() -> list[dict[str, Any]]:
        return [
            {
                "code": src_lang,
                "name": LANGUAGE_NAMES.get(src_lang, src_lang),
                "targets": [tgt_lang],
            },
            {"code": tgt_lang, "name": LANGUAGE_NAMES.get(tgt_lang, tgt_lang), "targets": []},
        ]

    app.add_api_route("/languages", languages, methods=["GET"], response_model=None,
                      responses={200: {"model": list[Language]}})  # fmt: skip
    app.add_api_route("/languages", languages, methods=["HEAD"], include_in_schema=False)

    @app.post("/translate", response_model=None,
              responses={200: {"model": LibreResponse},
                         **_errors(400, 413, 422, 503, model=LibreErrorBody)},
              openapi_extra=_libre_openapi(limits, src_lang, tgt_lang))  # fmt: skip
    async def libre_translate(request: Request) -> dict[str, Any]:
        """LibreTranslate-compatible: q, source, target, format, alternatives, api_key (ignored)."""
        p = await _libre_params(request)
        n_alt = _check_libre_params(p, limits, src_lang, tgt_lang)
        q, one = p["q"], isinstance(p["q"], str)
        options = _request_options(defaults, limits, None, n_alt + 1)
        results = await _translate(batcher, [q] if one else q, options, False, request, "q")
        best = [h[0].text for h in results]
        # Alternatives differ from the main translation and from each other, as LibreTranslate's.
        alts = [list(dict.fromkeys(a.text for a in h[1:] if a.text != h[0].text)) for h in results]
        out: dict[str, Any] = {"translatedText": best[0] if one else best}
        if n_alt > 0:
            out["alternatives"] = alts[0] if one else alts
        if p["source"] == "auto":  # a one-language model: its source language is the only answer
            detected = {"confidence": 100.0, "language": src_lang}
            out["detectedLanguage"] = detected if one else [detected] * len(q)
        return out


def serve(
    model_path: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    src_lang: str = "en",
    tgt_lang: str = "es",
    limits: ServeLimits | None = None,
    device: str = "cpu",
    quantize: bool = False,
) -> None:
    """Load a checkpoint and serve it with uvicorn (loopback unless ``host`` says otherwise)."""
    translator = Translator.from_checkpoint(model_path, device=device, quantize=quantize)
    app = create_app(translator, limits or ServeLimits(), src_lang, tgt_lang)
    uvicorn.Server(server_config(app, host, port)).run()
