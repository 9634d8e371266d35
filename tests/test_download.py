"""``download_anki`` against a local HTTP server: success, HTTP errors, bad archives, bad lines."""

from __future__ import annotations

import io
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from attnmt.corpus import CorpusError, read_corpus
from attnmt.download import DownloadError, download_anki

SPA_TXT = (
    "Go.\tVe.\tCC-BY 2.0 (France) Attribution: tatoeba.org #2877272 (CM) & #4986655 (cueyayotl)\n"
    "Let's go.\tVamos.\tCC-BY 2.0 (France) Attribution: tatoeba.org #2007903 (CK) & #2017301 (x)\n"
    "I like cafe\u0301.\tMe gusta el café.\tCC-BY 2.0 (France) Attribution: tatoeba.org #1 (a)\n"
)
ABOUT = "** Info **\nThis data is from the sentences_detailed.csv file from tatoeba.org.\n"


def make_zip(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in members.items():
            z.writestr(name, text.encode("utf-8"))
    return buf.getvalue()


class Server:
    """A ThreadingHTTPServer on 127.0.0.1 serving ``files`` (path -> bytes); 404 otherwise."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.user_agents: list[str] = []
        self.delay = 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 -- the name http.server calls
                server.user_agents.append(self.headers.get("User-Agent", ""))
                time.sleep(server.delay)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:  # keep the test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/anki/"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def test_download_unpacks_and_validates(server, tmp_path):
    server.files["/anki/spa-eng.zip"] = make_zip({"spa.txt": SPA_TXT, "_about.txt": ABOUT})
    path = download_anki("spa-eng", tmp_path / "data", base_url=server.url, progress=False)
    assert path == tmp_path / "data" / "spa-eng" / "pairs.tsv"
    assert sorted(p.name for p in path.parent.iterdir()) == ["_about.txt", "pairs.tsv"]
    assert (path.parent / "_about.txt").read_text(encoding="utf-8") == ABOUT
    pairs = read_corpus(str(path)).pairs
    assert pairs == [("Go.", "Ve."), ("Let's go.", "Vamos."), ("I like café.", "Me gusta el café.")]
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["spa-eng"]  # no temp files left
    assert server.user_agents and not server.user_agents[0].startswith("Python-urllib")


def test_download_member_in_a_folder_and_no_about(server, tmp_path):
    # the TensorFlow copy of the archive keeps spa.txt inside a spa-eng/ folder
    server.files["/anki/spa-eng.zip"] = make_zip({"spa-eng/spa.txt": SPA_TXT})
    path = download_anki("spa-eng", tmp_path, base_url=server.url.rstrip("/"), progress=False)
    assert [p.name for p in path.parent.iterdir()] == ["pairs.tsv"]
    assert len(read_corpus(str(path)).pairs) == 3


def test_download_overwrites_an_earlier_copy(server, tmp_path):
    server.files["/anki/spa-eng.zip"] = make_zip({"spa.txt": SPA_TXT})
    download_anki("spa-eng", tmp_path, base_url=server.url, progress=False)
    server.files["/anki/spa-eng.zip"] = make_zip({"spa.txt": "Hi.\tHola.\tCC-BY\n"})
    path = download_anki("spa-eng", tmp_path, base_url=server.url, progress=False)
    assert read_corpus(str(path)).pairs == [("Hi.", "Hola.")]


def test_404_is_a_download_error_and_leaves_nothing(server, tmp_path):
    out = tmp_path / "new" / "data"
    with pytest.raises(DownloadError, match=r"spa-eng\.zip: HTTP 404") as info:
        download_anki("spa-eng", out, base_url=server.url, progress=False)
    assert server.url in str(info.value)
    assert list(tmp_path.iterdir()) == []  # the folders it created are gone again


def test_timeout_is_a_download_error(server, tmp_path):
    server.delay = 2.0
    server.files["/anki/spa-eng.zip"] = make_zip({"spa.txt": SPA_TXT})
    with pytest.raises(DownloadError, match="timed out"):
        download_anki("spa-eng", tmp_path, base_url=server.url, timeout=0.3, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_is_a_download_error(tmp_path):
    with pytest.raises(DownloadError, match="127.0.0.1:9"):
        download_anki("spa-eng", tmp_path, base_url="http://127.0.0.1:9/", progress=False)


def test_corrupt_zip(server, tmp_path):
    server.files["/anki/spa-eng.zip"] = b"PK\x03\x04 this is not really a zip archive"
    with pytest.raises(DownloadError, match="not a valid zip"):
        download_anki("spa-eng", tmp_path, base_url=server.url, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_zip_with_a_damaged_member(server, tmp_path):
    data = bytearray(make_zip({"spa.txt": SPA_TXT * 50}))
    data[60:70] = b"\x00" * 10  # inside the compressed data of spa.txt: CRC / inflate fails
    server.files["/anki/spa-eng.zip"] = bytes(data)
    with pytest.raises(DownloadError):
        download_anki("spa-eng", tmp_path, base_url=server.url, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_zip_without_the_member(server, tmp_path):
    server.files["/anki/spa-eng.zip"] = make_zip({"fra.txt": SPA_TXT, "_about.txt": ABOUT})
    with pytest.raises(DownloadError, match=r"no spa\.txt in the archive \(fra\.txt, _about\.txt"):
        download_anki("spa-eng", tmp_path, base_url=server.url, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_bad_line_names_member_and_line(server, tmp_path):
    bad = SPA_TXT + "This line has no tab\n"
    server.files["/anki/spa-eng.zip"] = make_zip({"spa.txt": bad, "_about.txt": ABOUT})
    with pytest.raises(CorpusError, match=r"spa-eng\.zip!spa\.txt:4: no tab") as info:
        download_anki("spa-eng", tmp_path, base_url=server.url, progress=False)
    assert info.value.line == 4
    assert list(tmp_path.iterdir()) == []


def test_invalid_utf8_line(server, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("spa.txt", b"Go.\tVe.\nCoffee.\tCaf\xe9.\n")
    server.files["/anki/spa-eng.zip"] = buf.getvalue()
    with pytest.raises(CorpusError, match=r"spa\.txt:2: invalid UTF-8"):
        download_anki("spa-eng", tmp_path, base_url=server.url, progress=False)


@pytest.mark.parametrize("pair", ["spa", "SPA-ENG", "spa_eng", "../x-eng", "spa-eng.zip", ""])
def test_pair_is_validated(pair, tmp_path):
    with pytest.raises(ValueError, match="three-letter"):
        download_anki(pair, tmp_path, base_url="http://127.0.0.1:9/", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_existing_out_dir_is_kept_on_failure(server, tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(DownloadError):
        download_anki("deu-eng", tmp_path, base_url=server.url, progress=False)
    assert [p.name for p in Path(tmp_path).iterdir()] == ["keep.txt"]


def test_cli_data_command(server, tmp_path, capsys):
    from attnmt.cli import main

    server.files["/anki/spa-eng.zip"] = make_zip({"spa.txt": SPA_TXT, "_about.txt": ABOUT})
    assert main(["data", "spa-eng", "--out", str(tmp_path), "--base-url", server.url]) == 0
    assert (tmp_path / "spa-eng" / "pairs.tsv").exists()
    assert main(["data", "fra-eng", "--out", str(tmp_path), "--base-url", server.url]) == 2
    assert "HTTP 404" in capsys.readouterr().err
