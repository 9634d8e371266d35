"""The micro-batcher: concurrent requests for one model gathered into batched ``translate`` calls
on that model's own thread.

Pipeline position: route (``serve.py``, ``libre.py``) -> ``bounds`` checks -> **MicroBatcher**
-> ``Translator.translate`` (the single inference path). A server holds one :class:`ServedModel`
(a language pair, its batcher and decoding defaults) per model.

One asyncio task gathers the requests that arrive within ``batch_window_ms``, groups them by
decoding options and runs one ``translate`` call at a time on a single model thread, so the event
loop stays free and the model sees full batches. Work is counted as source tokens x beam: a call
does at most ``max_batch_work`` of it, so a heavy request is decoded in several calls, and
requests that arrive meanwhile are served before its next part. A request that timed out or whose
client left gets no further calls. A failing batch is retried request by request, so one bad
input never fails its neighbours.
"""

from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from attnmt.bounds import ApiError, ServeLimits, work_of
from attnmt.translate import DecodeOptions, Hypothesis, Translator


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


@dataclass
class ServedModel:
    """One model of a server: its language pair, its batcher and its decoding defaults (the
    model's own, within the server's limits)."""

    src: str
    tgt: str
    batcher: MicroBatcher
    defaults: DecodeOptions

    @property
    def translator(self) -> Translator:
        return self.batcher.translator


async def run_translation(
    model: ServedModel,
    texts: list[str],
    options: DecodeOptions,
    attention: bool,
    request: Request,
    field: str,
    bad: int = 422,
) -> list[list[Hypothesis]]:
    """The hypotheses for ``texts`` through ``model``'s batcher; the work is bounded first, and
    input the translator rejects is an ApiError with status ``bad`` naming ``field``."""
    batcher = model.batcher
    work = work_of(batcher.translator, texts, options.beam, batcher.limits, field)
    try:
        return await batcher.translate(texts, work, options, attention, request)
    except ValueError as e:  # the translator rejected this input
        raise ApiError(bad, f"{field}: {e}") from None
    except ApiError:
        raise
    except Exception as e:  # a fault of ours, reported as JSON rather than a bare 500
        raise ApiError(500, f"translation failed: {type(e).__name__}: {e}") from None
