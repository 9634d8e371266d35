"""Connection guards: the uvicorn settings that bound what a connection may hold, and the two
guards uvicorn lacks (a deadline for receiving each request, a connection cap), a body-size
limit, and logging that a flood of one error cannot fill the disk with.

Pipeline position: socket -> **GuardedH11Protocol** (deadline, cap) -> **BodyLimit** (413) ->
the FastAPI app of ``serve.create_app``. :func:`server_config` assembles the uvicorn settings.
"""

from __future__ import annotations

import asyncio
import logging
import math
import resource
import time
from collections.abc import Callable
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

from attnmt.bounds import ServeLimits

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
    """ASGI middleware: reads at most ``max_bytes`` of a request body, else answers 413 with
    ``{error_key(path): message}`` (each API names its error field its own way)."""

    def __init__(self, app: Any, max_bytes: int, error_key: Callable[[str], str]):
        self.app, self.max_bytes, self.error_key = app, max_bytes, error_key

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
                key = self.error_key(scope["path"])
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
