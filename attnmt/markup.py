"""HTML documents: the text to translate, and the markup kept around its translation.

Pipeline position: a LibreTranslate request with ``format: html`` -> **HtmlDocument** (its text
runs) -> each run cut into sentences (``attnmt.sentences``) and translated -> **render** -> the
same document with each run replaced by its translation.

Parsing is BeautifulSoup's with Python's own ``html.parser`` (no compiled parser needed; it keeps
the document's structure as written rather than repairing it into a full page). A text run is a
plain string node: script and style bodies, comments, doctypes and CDATA are other node types and
are left alone, and so is everything inside an element marked ``translate="no"`` (the HTML
standard's attribute, inherited by descendants). Text is escaped again on output (``&``, ``<``,
``>``), so translated text can never become markup.
"""

from __future__ import annotations

from collections.abc import Sequence

from bs4 import BeautifulSoup, NavigableString


def _translatable(node: NavigableString) -> bool:
    """Plain text (not a comment, script, style...) with something to translate, outside any
    element whose nearest ``translate`` attribute says "no"."""
    if type(node) is not NavigableString or not node.strip():  # subclasses are the non-text
        return False
    for parent in node.parents:
        flag = parent.get("translate")
        if isinstance(flag, str):  # the nearest ancestor that says decides
            return flag.strip().lower() != "no"
    return True


class HtmlDocument:
    """An HTML document or fragment, parsed once; :attr:`texts` are its text runs in order."""

    def __init__(self, html: str):
        self.soup = BeautifulSoup(html, "html.parser")
        self.nodes = [n for n in self.soup.find_all(string=True) if _translatable(n)]
        self.texts = [str(n) for n in self.nodes]

    def text(self) -> str:
        """The text runs, one per line (what language identification reads)."""
        return "\n".join(self.texts)

    def render(self, translations: Sequence[str]) -> str:
        """The document with text run i replaced by ``translations[i]`` and its markup kept
        (once: the runs are replaced in the parsed tree)."""
        if len(translations) != len(self.nodes):
            raise ValueError(f"{len(translations)} translations for {len(self.nodes)} texts")
        for node, translation in zip(self.nodes, translations):
            node.replace_with(NavigableString(translation))
        return self.soup.decode(formatter="minimal")
