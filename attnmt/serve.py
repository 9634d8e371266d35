"""HTTP API and web page around one ``Translator`` (FastAPI + uvicorn).

Pipeline position: HTTP request -> validation -> **micro-batcher** -> ``Translator.translate``
(the single inference path) -> JSON. Endpoints: ``POST /v1/translate``, ``POST /v1/explain``,
``GET /health``, the LibreTranslate-compatible ``POST /translate`` and ``GET /languages``, and the
web page at ``/`` (files in ``attnmt/static``, shipped as package data, no CDN).

Micro-batching: one asyncio task gathers the requests that arrive within ``batch_window_ms``,
groups them by decoding options and runs one ``translate`` call per group on a single model thread,
so the event loop stays free and the model sees full batches. A failing batch is retried request
by request, so one bad input never fails its neighbours. Every input is bounded (body size,
characters, sentences, beam, queue length, time); bad input gets a JSON 4xx, never a 500.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from attnmt.translate import DecodeOptions, Hypothesis, Translator

STATIC_DIR = Path(__file__).parent / "static"
LANGUAGE_NAMES = {"en": "English", "es": "Spanish", "fr": "French", "de": "German",
                  "it": "Italian", "pt": "Portuguese", "nl": "Dutch", "ru": "Russian"}  # fmt: skip


@dataclass
class ServeLimits:
    max_chars: int = 1000  # characters per sentence
    max_sentences: int = 32  # sentences per request
    max_beam: int = 10  # largest beam (and n-best) a request may ask for
    timeout_s: float = 30.0  # a request waiting longer than this gets 503
    batch_window_ms: float = 5.0  # how long the batcher waits to gather more requests
    max_batch_sentences: int = 64  # sentences per translate call
    max_queue_sentences: int = 1024  # sentences waiting at once; beyond this -> 503 (busy)
    max_body_bytes: int = 1_000_000  # request body size; beyond this -> 413


class ApiError(Exception):
    """A client error with its HTTP status; rendered as {"detail": ...} (or {"error": ...})."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


class TranslateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str | list[str] = Field(description="one sentence or a list of sentences")
    beam: int | None = Field(None, strict=True, description="beam size (1 = greedy)")
    n_best: int | None = Field(None, strict=True, description="hypotheses per sentence")
    attention: bool = Field(False, strict=True, description="include attention weights")


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    top_k: int = Field(5, strict=True, ge=1, le=20)


@dataclass
class _Job:
    texts: list[str]
    key: tuple[DecodeOptions, bool]  # (options, attention): jobs sharing it share a call
    future: asyncio.Future


class MicroBatcher:
    """Gathers concurrent requests into batched ``translate`` calls on one model thread."""

    def __init__(self, translator: Translator, limits: ServeLimits):
        self.translator, self.limits = translator, limits
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.pending = 0  # sentences queued or running
        # One thread: torch already parallelises inside an op, and the model is not re-entrant.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attnmt-model")
        self.task: asyncio.Task | None = None

    async def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the model thread, bounded by the request time limit."""
        fut = asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        return await self._wait(fut)

    async def translate(self, texts: list[str], options: DecodeOptions, attention: bool):
        if self.pending + len(texts) > self.limits.max_queue_sentences:
            raise ApiError(503, "server busy: too many sentences waiting; retry later")
        job = _Job(texts, (options, attention), asyncio.get_running_loop().create_future())
        self.pending += len(texts)
        job.future.add_done_callback(lambda _: setattr(self, "pending", self.pending - len(texts)))
        await self.queue.put(job)
        return await self._wait(job.future)

    async def _wait(self, fut: asyncio.Future) -> Any:
        try:
            return await asyncio.wait_for(fut, self.limits.timeout_s)
        except asyncio.TimeoutError:  # wait_for cancels fut, so the batcher skips the job
            raise ApiError(
                503, f"timed out after {self.limits.timeout_s:g} s; retry later"
            ) from None

    async def run(self) -> None:
        carry: _Job | None = None
        while True:
            jobs = [carry or await self.queue.get()]
            carry = None
            await asyncio.sleep(self.limits.batch_window_ms / 1000)  # let a batch gather
            size = len(jobs[0].texts)
            while not self.queue.empty():
                job = self.queue.get_nowait()
                if size + len(job.texts) > self.limits.max_batch_sentences:
                    carry = job  # first in line for the next batch
                    break
                jobs.append(job)
                size += len(job.texts)
            groups: dict[tuple[DecodeOptions, bool], list[_Job]] = defaultdict(list)
            for job in jobs:
                if not job.future.done():  # skip requests that already timed out
                    groups[job.key].append(job)
            for key, group in groups.items():
                try:
                    await self._run_group(key, group)
                except Exception as e:  # a bug here must not kill the one batching task
                    for job in group:
                        if not job.future.done():
                            job.future.set_exception(e)

    async def _run_group(self, key: tuple[DecodeOptions, bool], group: list[_Job]) -> None:
        texts = [t for job in group for t in job.texts]
        options, attention = key
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(
                self.executor, self.translator.translate, texts, options, attention
            )
        except Exception as e:
            if len(group) > 1:  # find the culprit: the others still get their answers
                for job in group:
                    await self._run_group(key, [job])
            elif not group[0].future.done():
                group[0].future.set_exception(e)
            return
        start = 0
        for job in group:
            if not job.future.done():
                job.future.set_result(results[start : start + len(job.texts)])
            start += len(job.texts)


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
                detail = f"request body larger than {self.max_bytes} bytes"
                return await JSONResponse({"detail": detail}, 413)(scope, receive, send)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


def _error_line(error: dict[str, Any]) -> str:
    """'text.list[str].1: Input should be a valid string' -- the field first, then the problem."""
    if error["type"] == "json_invalid":
        return f"body: invalid JSON ({error.get('ctx', {}).get('error', error['msg'])})"
    field = ".".join(str(p) for p in error["loc"] if p != "body") or "body"
    return f"{field}: {error['msg']}"


def _check_texts(texts: list[str], limits: ServeLimits, field: str) -> None:
    if not texts:
        raise ApiError(422, f"{field}: give at least one sentence")
    if len(texts) > limits.max_sentences:
        raise ApiError(413, f"{field}: {len(texts)} sentences, limit {limits.max_sentences}")
    for i, t in enumerate(texts):
        if len(t) > limits.max_chars:
            raise ApiError(413, f"{field}[{i}]: {len(t)} characters, limit {limits.max_chars}")


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


async def _libre_params(request: Request) -> dict[str, Any]:
    """LibreTranslate clients send JSON or form data; ``q`` may repeat to mean a list."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        try:
            data = json.loads(await request.body())
        except ValueError:
            raise ApiError(400, "Invalid request: body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ApiError(400, "Invalid request: JSON body must be an object")
        return data
    if ctype.startswith("multipart/form-data"):
        form = await request.form()
        data = {k: form.getlist(k) for k in form.keys()}
    else:  # urlencoded form, or query parameters when there is no body
        body = (await request.body()).decode("utf-8", "replace")
        data = urllib.parse.parse_qs(body or request.url.query, keep_blank_values=True)
    return {k: (v if k == "q" and len(v) > 1 else v[0]) for k, v in data.items() if v}


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
    app.state.batcher = batcher
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    _add_error_handlers(app)
    _add_api_routes(app, batcher, defaults, src_lang, tgt_lang)
    _add_libre_routes(app, batcher, defaults, src_lang, tgt_lang)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error is JSON: {"detail": ...}, or {"error": ...} on the LibreTranslate paths."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        key = "error" if request.url.path in ("/translate", "/languages") else "detail"
        return JSONResponse({key: exc.detail}, exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # One readable line naming each bad field, plus FastAPI's structured list.
        errors = exc.errors()
        lines = [_error_line(e) for e in errors]
        structured = [{"loc": e["loc"], "msg": e["msg"], "type": e["type"]} for e in errors]
        return JSONResponse({"detail": "; ".join(lines), "errors": structured}, 422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, exc.status_code)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # A fault of ours (bad input is answered before it gets here); still JSON, never HTML.
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"}, 500)


async def _translate(
    batcher: MicroBatcher, texts: list[str], options: DecodeOptions, attention: bool
) -> list[list[Hypothesis]]:
    try:
        return await batcher.translate(texts, options, attention)
    except ValueError as e:  # the translator rejected this input
        raise ApiError(422, f"text: {e}") from None
    except ApiError:
        raise
    except Exception as e:  # a fault of ours, reported as JSON rather than a bare 500
        raise ApiError(500, f"translation failed: {type(e).__name__}: {e}") from None


def _add_api_routes(
    app: FastAPI, batcher: MicroBatcher, defaults: DecodeOptions, src_lang: str, tgt_lang: str
) -> None:
    """attnmt's own API: /v1/translate, /v1/explain, /health."""
    translator, limits = batcher.translator, batcher.limits

    @app.post("/v1/translate")
    async def v1_translate(req: TranslateRequest) -> dict[str, Any]:
        texts = [req.text] if isinstance(req.text, str) else req.text
        _check_texts(texts, limits, "text")
        options = _request_options(defaults, limits, req.beam, req.n_best)
        results = await _translate(batcher, texts, options, req.attention)
        return {"translations": [_hyp_json(h, req.attention) for h in results]}

    @app.post("/v1/explain")
    async def v1_explain(req: ExplainRequest) -> dict[str, Any]:
        from attnmt.explain import explain  # imported on first use: it pulls in plotting

        _check_texts([req.text], limits, "text")
        try:
            trace = await batcher.call(explain, translator, req.text, req.top_k)
        except ValueError as e:  # explain rejected this input
            raise ApiError(422, f"text: {e}") from None
        return trace.to_dict()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": _model_info(translator, defaults, src_lang, tgt_lang),
            "limits": asdict(limits),
        }


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
    try:
        n_alt = int(p.get("alternatives", 0))
    except (TypeError, ValueError):
        raise ApiError(400, "Invalid request: alternatives must be an integer") from None
    if not 0 <= n_alt < limits.max_beam:
        raise ApiError(400, f"Invalid request: alternatives must be 0 to {limits.max_beam - 1}")
    _check_texts([q] if isinstance(q, str) else q, limits, "q")
    return n_alt


def _add_libre_routes(
    app: FastAPI, batcher: MicroBatcher, defaults: DecodeOptions, src_lang: str, tgt_lang: str
) -> None:
    """The LibreTranslate-compatible API: POST /translate and GET /languages."""

    @app.get("/languages")
    async def languages() -> list[dict[str, Any]]:
        return [
            {
                "code": src_lang,
                "name": LANGUAGE_NAMES.get(src_lang, src_lang),
                "targets": [tgt_lang],
            },
            {"code": tgt_lang, "name": LANGUAGE_NAMES.get(tgt_lang, tgt_lang), "targets": []},
        ]

    @app.post("/translate")
    async def libre_translate(request: Request) -> dict[str, Any]:
        """LibreTranslate-compatible: q, source, target, format, alternatives, api_key (ignored)."""
        p = await _libre_params(request)
        n_alt = _check_libre_params(p, batcher.limits, src_lang, tgt_lang)
        q, one = p["q"], isinstance(p["q"], str)
        options = _request_options(defaults, batcher.limits, None, n_alt + 1)
        results = await _translate(batcher, [q] if one else q, options, False)
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
    import uvicorn

    translator = Translator.from_checkpoint(model_path, device=device, quantize=quantize)
    app = create_app(translator, limits or ServeLimits(), src_lang, tgt_lang)
    uvicorn.run(app, host=host, port=port, log_level="info")
