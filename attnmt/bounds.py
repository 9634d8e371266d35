"""What every part of the HTTP server shares: its limits, its error type, and the checks of text,
work and decoding options that every route applies before anything reaches the model.

Pipeline position: HTTP request -> route (``serve.py`` for attnmt's API, ``libre.py`` for
LibreTranslate's) -> **these checks** -> ``batcher.MicroBatcher`` -> ``Translator``. The
connection-level bounds (read deadlines, connection cap) are applied in ``guards.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from attnmt.translate import DecodeOptions, Translator


@dataclass
class ServeLimits:
    max_chars: int = 1000  # characters per sentence
    max_sentences: int = 32  # sentences per /v1 request; texts (q items) per /translate request
    max_text_chars: int = 5000  # characters per /translate text (q item): a paragraph, a page
    max_request_sentences: int = 256  # sentences per /translate request, once its texts are split
    max_beam: int = 10  # largest beam (and n-best) a request may ask for
    # Work is source tokens (with <eos>) x beam: decoding time grows with both.
    max_request_work: int = 32_768  # per request; beyond this -> 413
    max_batch_work: int = 4_096  # per model call: a bigger request is decoded in several calls
    max_explain_tokens: int = 100  # source tokens for /v1/explain (its answer grows with S^2)
    timeout_s: float = 30.0  # a request waiting longer than this gets 503
    batch_window_ms: float = 5.0  # how long the batcher waits to gather more requests
    max_batch_sentences: int = 64  # sentences per translate call
    max_queue_sentences: int = 1024  # sentences waiting at once, per model; beyond -> 503 (busy)
    max_body_bytes: int = 1_000_000  # request body size; beyond this -> 413
    # Connections (guards.server_config): uvicorn times out only idle keep-alive connections.
    max_connections: int = 512  # held at once (lowered to fit `ulimit -n`); beyond: closed
    request_read_s: float = 10.0  # a request's headers and body must arrive within this
    keep_alive_s: int = 5  # an idle keep-alive connection is closed after this
    log_every_s: float = 60.0  # the same warning is logged at most once per this interval


class ApiError(Exception):
    """A client error with its HTTP status; rendered as {"detail": ...} (or {"error": ...})."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def check_texts(texts: list[str], limits: ServeLimits, field: str, bad: int = 422) -> None:
    """Count, length and Unicode of the sentences; ``bad`` is the status for invalid text."""
    if not texts:
        raise ApiError(bad, f"{field}: give at least one sentence")
    if len(texts) > limits.max_sentences:
        raise ApiError(413, f"{field}: {len(texts)} sentences, limit {limits.max_sentences}")
    for i, t in enumerate(texts):
        if len(t) > limits.max_chars:
            raise ApiError(413, f"{field}[{i}]: {len(t)} characters, limit {limits.max_chars}")
        check_unicode(t, f"{field}[{i}]", bad)


def check_unicode(text: str, where: str, bad: int) -> None:
    """JSON can spell a lone surrogate ("\\ud800"); text cannot, and the tokenizers fail on it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        what = f"lone surrogate U+{ord(text[e.start]):04X} at character {e.start}"
        raise ApiError(bad, f"{where}: not Unicode text: {what}") from None


def work_of(
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


def server_defaults(options: DecodeOptions, limits: ServeLimits) -> DecodeOptions:
    """The model's decode options with beam and n_best brought within the server's limits."""
    top = limits.max_beam
    return replace(options, beam=min(options.beam, top), n_best=min(options.n_best, top))


def request_options(
    defaults: DecodeOptions,
    limits: ServeLimits,
    beam: int | None,
    n_best: int | None,
    no_repeat_ngram: int | None = None,
    repetition_penalty: float | None = None,
) -> DecodeOptions:
    """A request's beam and n_best over the server's defaults, bounded by the limits; and its
    repetition options (None = the default), which the request model bounds."""
    for name, value in (("n_best", n_best), ("beam", beam)):
        if value is not None and not 1 <= value <= limits.max_beam:
            raise ApiError(422, f"{name}: must be between 1 and {limits.max_beam}, got {value}")
    try:
        return DecodeOptions.resolve(
            defaults, beam=beam, n_best=n_best, no_repeat_ngram=no_repeat_ngram,
            repetition_penalty=repetition_penalty,
        )  # fmt: skip
    except ValueError as e:  # e.g. n_best above the beam asked for; the message names it
        raise ApiError(422, str(e)) from None
