"""Language identification for ``source: auto`` and ``POST /detect``.

Pipeline position: a LibreTranslate request's text -> **LanguageDetector.detect** -> ranked
``{"confidence", "language"}`` candidates (LibreTranslate's shape: confidence 0-100) -> the
source language whose model translates the request.

The classifier is py3langid (a maintained fork of langid.py, Lui & Baldwin 2012: a naive Bayes
model over byte n-grams, 97 languages; BSD-3-Clause; its model ships inside the wheel, so it
runs offline). As LibreTranslate does, it chooses among the server's languages only (every
source and target it lists in /languages): restricted to a few languages, short texts are
classified far more reliably than among 97. Codes are matched on their primary subtag ("pt-BR"
is classified as "pt"); a code py3langid does not know is never detected.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from typing import Any

UNDETECTED = "en"  # LibreTranslate's answer, at confidence 0, when nothing can be detected
TOP = 3  # candidates per answer, as LibreTranslate's detector gives


@functools.cache
def _full_identifier() -> Any:
    """py3langid's model, normalised to probabilities; loaded once per process (~1 s)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


@functools.cache
def _identifier(labels: tuple[str, ...]) -> Any:
    """A classifier restricted to ``labels``. ``set_languages`` replaces the copy's tables
    (the full model's arrays are shared, never written), so each copy is independent."""
    ident = copy.copy(_full_identifier())
    ident.set_languages(list(labels))
    return ident


class LanguageDetector:
    """Ranks a server's languages for a text; the model is loaded on first use."""

    def __init__(self, codes: Sequence[str], fallback: str | None = None):
        self.codes = list(dict.fromkeys(codes))
        # What an undetectable text is said to be, at confidence 0: LibreTranslate's "en" if
        # the server has it, else the first code (or the caller's choice).
        if fallback is None:
            fallback = UNDETECTED if UNDETECTED in self.codes or not self.codes else self.codes[0]
        self.fallback = fallback

    def _labels(self) -> dict[str, str]:
        """py3langid label -> the server's code, for the codes py3langid knows."""
        known = set(_full_identifier().labels)
        labels: dict[str, str] = {}
        for code in self.codes:
            label = code.split("-")[0].lower()
            if label in known:
                labels.setdefault(label, code)
        return labels

    def detect(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """The likeliest languages of ``texts`` taken together (each text weighs by its length),
        best first, at most three; ``[{"confidence": 0.0, "language": "en"}]`` when no text has
        a letter to go by or no code can be classified."""
        labels = self._labels()
        readable = [t for t in texts if any(c.isalpha() for c in t)]
        if not labels or not readable:
            return [{"confidence": 0.0, "language": self.fallback}]
        ident = _identifier(tuple(sorted(labels)))
        total: dict[str, float] = dict.fromkeys(labels, 0.0)
        for text in readable:
            for label, prob in ident.rank(text):
                total[label] += prob * len(text)
        weight = sum(len(t) for t in readable)
        ranked = sorted(total.items(), key=lambda kv: kv[1], reverse=True)[:TOP]
        # LibreTranslate rounds to whole percents.
        return [
            {"confidence": float(round(100 * score / weight)), "language": labels[label]}
            for label, score in ranked
        ]
