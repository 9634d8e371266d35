"""Optional API keys for the LibreTranslate endpoints, with a rate limit per key.

Pipeline position: a ``POST /translate`` or ``/detect`` request (``libre.py``) -> its
``api_key`` parameter -> **KeyGate.admit** (or a 400/403/429 in LibreTranslate's ``{"error"}``
shape) -> the request is served. Off unless the server is given a keys file.

The keys file is text, one key per line: ``KEY`` (no rate limit) or ``KEY N`` (at most N
requests in any 60 seconds); ``#`` starts a comment, blank lines are skipped. A bad line is an
error naming the file and line. As in LibreTranslate, a request with a list of ``q`` costs one
request per text, and the window moves (``limits``' moving-window strategy, the one
LibreTranslate configures Flask-Limiter with), so its 429 reads "Slowdown: N per 1 minute".
Answers follow LibreTranslate's ``access_check``: an unknown key is 403 "Invalid API key"; no
key, where keys are required, is 400 "Please contact the server operator to get an API key".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from attnmt.bounds import ApiError

MISSING_KEY = "Please contact the server operator to get an API key"  # LibreTranslate's words
INVALID_KEY = "Invalid API key"


@dataclass(frozen=True)
class ApiKeys:
    """Key -> requests per minute (None: unlimited)."""

    per_minute: dict[str, int | None]

    @classmethod
    def load(cls, path: str | Path) -> ApiKeys:
        """Read a keys file (module docstring); ValueError naming FILE:LINE for a bad line."""
        path = Path(path)
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 text (byte {e.start})") from None
        except OSError as e:
            raise ValueError(f"{path}: cannot read the API keys file ({e.strerror})") from None
        keys: dict[str, int | None] = {}
        for number, line in enumerate(text.split("\n"), 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            where = f"{path}:{number}"
            if len(fields) > 2:
                raise ValueError(f"{where}: expected KEY or KEY REQUESTS_PER_MINUTE, got {line!r}")
            key, limit = fields[0], _per_minute(fields[1:], where)
            if key in keys:
                raise ValueError(f"{where}: key {key[:4]}... is listed twice")
            keys[key] = limit
        if not keys:
            raise ValueError(f"{path}: no API keys in the file")
        return cls(keys)


def _per_minute(fields: list[str], where: str) -> int | None:
    if not fields:
        return None
    if not fields[0].isdigit() or int(fields[0]) < 1:
        raise ValueError(f"{where}: requests per minute must be a whole number >= 1, "
                         f"got {fields[0]!r}")  # fmt: skip
    return int(fields[0])


class KeyGate:
    """Admits requests by their key and the key's rate limit; with no keys, admits all."""

    def __init__(self, keys: ApiKeys | None):
        self.keys = keys
        self.items: dict[str, RateLimitItemPerMinute] = {}
        self.limiter: MovingWindowRateLimiter | None = None
        if keys is not None:
            self.items = {k: RateLimitItemPerMinute(n) for k, n in keys.per_minute.items() if n}
            self.limiter = MovingWindowRateLimiter(MemoryStorage())  # counts in this process

    @property
    def enabled(self) -> bool:
        return self.keys is not None

    def admit(self, key: Any, cost: int = 1) -> None:
        """Pass, or raise the ApiError LibreTranslate would answer with."""
        if self.keys is None or self.limiter is None:
            return
        if key is None or key == "":
            raise ApiError(400, MISSING_KEY)
        if not isinstance(key, str) or key not in self.keys.per_minute:
            raise ApiError(403, INVALID_KEY)
        item = self.items.get(key)
        if item is not None and not self.limiter.hit(item, key, cost=cost):
            raise ApiError(429, f"Slowdown: {item}")
