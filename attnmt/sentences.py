"""Text longer than a sentence, cut into sentences for the model and put back together around
their translations with the text's own spacing and line breaks.

Pipeline position: a paragraph or a document (a LibreTranslate ``q``, the text of an HTML
element, a line of ``attnmt translate`` or ``evaluate`` input: ``Translator`` splits it when
``decode.split_sentences`` is on) -> **split_sentences** -> the sentences, translated as one
batch -> **Split.join** (the best translation) or **Split.join_nbest** (the n-best list) -> the
translated text.

Sentence boundaries come from sentencex (Wikimedia's rule-based segmenter: MIT, ~300 languages,
abbreviation lists per language, falling back along a chain of related languages for the
others). Plain text is cut into lines first, on ``\\n`` alone (as ``attnmt.corpus`` reads lines),
so a sentence never spans a line break and every line break survives; the whitespace around
each sentence goes into the gaps between them, so a sentence handed to the model carries none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sentencex


@dataclass(frozen=True)
class Split:
    """``gaps[0] + sentences[0] + gaps[1] + ... + sentences[-1] + gaps[-1]`` is the text."""

    sentences: tuple[str, ...]  # no leading or trailing whitespace, never empty
    gaps: tuple[str, ...]  # one more than sentences: whitespace and line breaks between them

    def join(self, translations: Sequence[str]) -> str:
        """The text with each sentence replaced by its translation, in order."""
        if len(translations) != len(self.sentences):
            raise ValueError(
                f"{len(translations)} translations for {len(self.sentences)} sentences"
            )
        out = [self.gaps[0]]
        for translation, gap in zip(translations, self.gaps[1:]):
            out += [translation, gap]
        return "".join(out)

    def join_nbest(self, nbests: Sequence[Sequence[str]]) -> list[str]:
        """The text's n-best list from each sentence's (non-empty) n-best list: the k-th text
        joins every sentence's k-th translation, or its last where it has fewer (as
        argostranslate builds alternatives), for k up to the longest list. Joining each
        sentence's ranks in step keeps the list ranked when the sentences' scores are added."""
        if any(not n for n in nbests):
            raise ValueError("join_nbest: a sentence without translations")
        n = max((len(t) for t in nbests), default=1)
        return [self.join([t[min(k, len(t) - 1)] for t in nbests]) for k in range(n)]


def split_sentences(text: str, lang: str, line_breaks: bool = True) -> Split:
    """Cut ``text`` into sentences by the rules of language ``lang`` (an ISO 639 code such as
    "en" or "pt-BR"; an unknown one gets a related language's rules, else generic ones).

    ``line_breaks``: every ``\n`` ends a sentence (plain text); when False, a single line
    break is whitespace a sentence may hold (HTML source, where it means a space), and only
    the splitter's own paragraph breaks (blank lines) end one.

    ``split_sentences(t, lang).join(s)`` rebuilds ``t`` from its own sentences ``s`` exactly.
    """
    code = lang.split("-")[0].lower()  # sentencex's rules are per language, not per region
    sentences: list[str] = []
    gaps: list[str] = []
    gap = ""  # whitespace since the last sentence
    for i, line in enumerate(text.split("\n") if line_breaks else [text]):
        if i:
            gap += "\n"
        segments = list(sentencex.segment(code, line))
        if "".join(segments) != line:  # the segments always cover the line; never lose text
            segments = [line]
        for segment in segments:
            core = segment.strip()
            if not core:
                gap += segment
                continue
            start = segment.index(core)
            gaps.append(gap + segment[:start])
            sentences.append(core)
            gap = segment[start + len(core) :]
    gaps.append(gap)
    return Split(tuple(sentences), tuple(gaps))
