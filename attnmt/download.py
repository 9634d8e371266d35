"""``attnmt data``: fetch a Tatoeba/Anki sentence-pair corpus from manythings.org and check it.

Pipeline position: before everything else; it writes ``OUT/{pair}/pairs.tsv`` (the archive's
``xxx.txt`` member: English<TAB>Other<TAB>attribution) that ``corpus.read_corpus`` reads. The file
appears only once the archive downloaded completely, passed ``zipfile`` integrity checks and every
line parsed with ``corpus.read_tsv``; on any failure nothing new is left in the output folder.
Standard library only (urllib), plus tqdm for the progress bar.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

from tqdm import tqdm

from attnmt.corpus import CorpusError, read_tsv

ANKI_URL = "https://www.manythings.org/anki/"
# manythings.org answers 403 to urllib's default "Python-urllib/x.y" agent.
USER_AGENT = "Mozilla/5.0 (compatible; attnmt/0.1; +https://www.manythings.org/anki/)"
_PAIR = re.compile(r"^[a-z]{3}-[a-z]{3}$")
_CHUNK = 1 << 16


class DownloadError(RuntimeError):
    """The archive could not be fetched or is not a usable corpus; the message names the URL."""


def _fetch(url: str, dest: Path, timeout: float, progress: bool) -> None:
    """Stream ``url`` into ``dest`` with a progress bar; errors become DownloadError."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            name = url.rsplit("/", 1)[-1]
            bar = tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=not progress)
            with bar:
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
            if total is not None and f.tell() != total:
                raise DownloadError(f"{url}: connection closed after {f.tell()} of {total} bytes")
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, TimeoutError):
            raise DownloadError(f"{url}: timed out after {timeout:g} s") from None
        raise DownloadError(f"{url}: {e.reason}") from None
    except TimeoutError:  # socket.timeout is TimeoutError since Python 3.10
        raise DownloadError(f"{url}: timed out after {timeout:g} s") from None
    except OSError as e:  # connection reset, disk full, ...
        raise DownloadError(f"{url}: {e}") from None


def _member(archive: zipfile.ZipFile, name: str) -> str | None:
    """The member called ``name``, at the top level or in a folder (``spa-eng/spa.txt``)."""
    for info in archive.infolist():
        if not info.is_dir() and info.filename.rsplit("/", 1)[-1] == name:
            return info.filename
    return None


def download_anki(
    pair: str,
    out_dir: str | Path,
    base_url: str = ANKI_URL,
    timeout: float = 60,
    progress: bool = True,
) -> Path:
    """Download ``{base_url}{pair}.zip`` (e.g. pair "spa-eng") to ``out_dir/{pair}/pairs.tsv``.

    Also keeps the archive's ``_about.txt`` (terms of use, attribution) beside it when present.
    Returns the path of ``pairs.tsv``. Raises ValueError for a malformed ``pair``, DownloadError
    for network/HTTP/archive problems and CorpusError (naming the member and line) for a bad line.
    """
    if not isinstance(pair, str) or not _PAIR.match(pair):
        raise ValueError(
            f"pair {pair!r}: expected two three-letter language codes like 'spa-eng' "
            "(see https://www.manythings.org/anki/)"
        )
    url = base_url + ("" if base_url.endswith("/") else "/") + f"{pair}.zip"
    member_name = pair.split("-")[0] + ".txt"
    out_dir = Path(out_dir)
    created = [p for p in (out_dir, *out_dir.parents) if not p.exists()]
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        # Work inside out_dir so the final os.replace stays on one filesystem (atomic).
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{pair}-download-") as tmp_name:
            tmp = Path(tmp_name)
            archive_path = tmp / f"{pair}.zip"
            _fetch(url, archive_path, timeout, progress)
            tsv, about = tmp / "pairs.tsv", tmp / "_about.txt"
            try:
                with zipfile.ZipFile(archive_path) as archive:
                    bad = archive.testzip()  # CRC of every member
                    if bad is not None:
                        raise DownloadError(f"{url}: archive member {bad!r} is corrupt")
                    member = _member(archive, member_name)
                    if member is None:
                        names = ", ".join(archive.namelist()) or "nothing"
                        raise DownloadError(f"{url}: no {member_name} in the archive ({names})")
                    with archive.open(member) as src, open(tsv, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    about_member = _member(archive, "_about.txt")
                    if about_member is not None:
                        with archive.open(about_member) as src, open(about, "wb") as dst:
                            shutil.copyfileobj(src, dst)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError) as e:
                raise DownloadError(f"{url}: not a valid zip archive ({e})") from None
            try:
                read_tsv(tsv)  # every line must parse: reject the file now, not at training time
            except CorpusError as e:
                raise CorpusError(f"{url}!{member}", e.line, e.reason) from None
            target = out_dir / pair
            target.mkdir(exist_ok=True)
            if about.exists():
                os.replace(about, target / "_about.txt")
            os.replace(tsv, target / "pairs.tsv")
            return target / "pairs.tsv"
    except BaseException:
        for p in created:  # folders this call made and that stayed empty
            try:
                p.rmdir()
            except OSError:
                break
        raise
