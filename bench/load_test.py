"""Load test for the attnmt HTTP server: throughput, latency percentiles, errors, server memory.

Starts ``attnmt.serve.serve`` on 127.0.0.1 for a checkpoint (or uses a running server via
``--url``), then runs a workload for a bounded time and number of requests:

* ``clients``: N concurrent async clients against ``POST /v1/translate``;
* ``heavy``: light one-sentence clients while other clients send the heaviest request the
  server admits (by default the issue #17 request: 32 sentences of 1,000 characters at beam 10,
  halved until it is not refused with 413);
* ``idle``: light clients while many connections are held open without sending a request (a
  third send nothing, a third half their headers, a third headers and no body);
* ``paragraphs``: N clients against LibreTranslate's ``POST /translate``, each ``q`` a
  paragraph of several sentences, every other one as HTML (``format: html``), so the server
  splits, batches and reassembles; with ``--argos``, the same paragraphs are also translated by
  argostranslate in-process from the checkpoint exported as an Argos package (sentences/s);
* ``all``: clients, heavy and idle in turn on one server.

Each reports errors, p50/p99 latency of the light requests and the server's memory (resident
size before, at its peak, after). ``--engine ctranslate2`` exports the checkpoint (a
Transformer) to CTranslate2 first and serves the export. Example::

    python bench/load_test.py --model runs/demo/best.pt --clients 32 --duration 30
    python bench/load_test.py --model runs/demo/best.pt --workload all --duration 20 --json
    python bench/load_test.py --url http://127.0.0.1:8000 --pid 12345 --workload idle
    python bench/load_test.py --model runs/tf/best.pt --engine ctranslate2 \\
        --workload paragraphs --argos --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # attnmt importable uninstalled (sentence counts, exports)

SENTENCES = [
    "I see the dog.",
    "We want bread.",
    "They eat apples.",
    "You see a car.",
    "Let's go.",
    "The cat sleeps on the warm chair.",
    "She reads a long book every evening.",
    "Where is the train station?",
]
# Paragraphs of the tiny corpus's sentences (tests/conftest.py), so a tiny model knows them.
_TINY = [f"{s} {v} {o}." for s in ("I", "You", "We", "They") for v in ("eat", "see", "want")
         for o in ("apples", "bread", "the dog", "a car")]  # fmt: skip
PARAGRAPHS = [" ".join(_TINY[i : i + 4 + i % 3]) for i in range(0, 40, 5)]
PARAGRAPHS_HTML = [f"<p>{first}. <b>{rest}</b></p>"
                   for first, rest in (p.split(". ", 1) for p in PARAGRAPHS)]  # fmt: skip
IDLE_STARTS = [  # how a held connection starts: nothing, half its headers, headers and no body
    b"",
    b"POST /v1/translate HTTP/1.1\r\nHost: load\r\n",
    b"POST /v1/translate HTTP/1.1\r\nHost: load\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100\r\n\r\n",
]


def rss_mib(pid: int | None) -> float | None:
    """Resident memory of ``pid`` in MiB (psutil when installed, else /proc), None if unknown."""
    if pid is None:
        return None
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except ImportError:
        pass
    except Exception:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, timeout_s: float = 120) -> subprocess.Popen:
    """Run the real server in a child process and wait until /health answers: ``attnmt serve``
    for a checkpoint, :func:`serve_export` (the same ``attnmt.serve.serve``) for a CTranslate2
    export, which ``attnmt serve --model`` does not take yet."""
    if (Path(model) / "model.bin").is_file():
        cmd = [sys.executable, __file__, "--serve-export", model, "--port", str(port)]
    else:
        cmd = [sys.executable, "-m", "attnmt", "serve", "--model", model, "--port", str(port)]
        cmd.append("--device=cpu")  # as serve() defaults: the load test measures the CPU server
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,  # attnmt importable uninstalled
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early:\n{proc.stderr.read().decode(errors='replace')}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"server did not answer /health within {timeout_s:.0f} s")


class Stats:
    """Latencies of successful requests and counts of failed ones, by kind."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}
        self.sentences = 0  # in the requests answered

    def pct(self, p: float) -> float | None:
        lat = sorted(self.latencies)
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else None

    def report(self, elapsed: float) -> dict:
        return {
            "requests_ok": len(self.latencies),
            "errors": sum(self.errors.values()),
            "error_kinds": self.errors,
            "req_per_s": len(self.latencies) / elapsed,
            "sentences_per_s": self.sentences / elapsed,
            "latency_ms": {"p50": self.pct(0.50), "p90": self.pct(0.90), "p99": self.pct(0.99)},
        }


def sentences_in(body: dict) -> int:
    """Sentences a request asks for: /v1's texts, or those the server splits a /translate q
    into (attnmt.sentences; for HTML, the text runs of the document)."""
    if "text" in body:
        return len(body["text"])
    return _split_count(body["q"], body.get("format", "text"), body["source"])


@functools.cache  # counted once per paragraph: the load generator shares the server's CPUs
def _split_count(q: str, fmt: str, lang: str) -> int:
    from attnmt.markup import HtmlDocument
    from attnmt.sentences import split_sentences

    runs = HtmlDocument(q).texts if fmt == "html" else [q]
    return sum(len(split_sentences(r, lang).sentences) for r in runs)


async def post(http: httpx.AsyncClient, body: dict, stats: Stats) -> int | None:
    """One request (to /translate when it has a ``q``); its latency (if 200) or its failure goes
    to ``stats``; returns the status."""
    t0 = time.perf_counter()
    try:
        r = await http.post("/translate" if "q" in body else "/v1/translate", json=body)
    except httpx.HTTPError as e:
        stats.errors[type(e).__name__] = stats.errors.get(type(e).__name__, 0) + 1
        return None
    if r.status_code == 200:
        stats.latencies.append(time.perf_counter() - t0)
        stats.sentences += sentences_in(body)
    else:
        stats.errors[f"HTTP {r.status_code}"] = stats.errors.get(f"HTTP {r.status_code}", 0) + 1
    return r.status_code


async def clients_loop(
    http: httpx.AsyncClient, n: int, until: float, budget: list[int], make_body, stats: Stats
) -> None:
    """``n`` clients sending ``make_body()`` back to back until ``until`` or the budget is spent."""

    async def client() -> None:
        while time.monotonic() < until and budget[0] > 0:
            budget[0] -= 1
            await post(http, make_body(), stats)

    await asyncio.gather(*(client() for _ in range(n)))


@contextlib.asynccontextmanager
async def memory_watch(pid: int | None, out: dict):
    """Samples the server's resident memory while the block runs: before, peak, after."""
    out["rss_mib_before"] = rss_mib(pid)
    peak = [out["rss_mib_before"] or 0.0]

    async def sample() -> None:
        while True:
            peak[0] = max(peak[0], rss_mib(pid) or 0.0)
            await asyncio.sleep(0.25)

    task = asyncio.create_task(sample())
    try:
        yield
    finally:
        task.cancel()
        out["rss_mib_after"] = rss_mib(pid)
        out["rss_mib_peak"] = max(peak[0], out["rss_mib_after"] or 0.0) if pid else None


def light_body(rng: random.Random, per_request: int, beam: int | None) -> dict:
    body: dict = {"text": [rng.choice(SENTENCES) for _ in range(per_request)]}
    if beam is not None:
        body["beam"] = beam
    return body


def client_for(url: str, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=url, timeout=120, limits=limits)


async def run_clients(url: str, pid: int | None, args: argparse.Namespace) -> dict:
    """The ``clients`` workload: --clients concurrent light clients."""
    stats, out, rng = Stats(), {"workload": "clients", "clients": args.clients}, random.Random(0)
    start = time.perf_counter()
    async with memory_watch(pid, out), client_for(url, args.clients) as http:
        await clients_loop(
            http, args.clients, time.monotonic() + args.duration, [args.max_requests],
            lambda: light_body(rng, args.sentences, args.beam), stats,
        )  # fmt: skip
    elapsed = time.perf_counter() - start
    return {**out, "elapsed_s": elapsed, **stats.report(elapsed)}


async def admitted_heavy(http: httpx.AsyncClient, args: argparse.Namespace) -> tuple[dict, dict]:
    """The heaviest request the server admits, from --heavy-sentences down by halves, and what
    asking for it looked like (shape asked for, shape admitted, seconds for one)."""
    text = " ".join(SENTENCES)
    sentence = (text * (args.heavy_chars // len(text) + 1))[: args.heavy_chars]
    n, shape = args.heavy_sentences, {}
    while n >= 1:
        body = {"text": [sentence] * n, "beam": args.heavy_beam}
        t0 = time.perf_counter()
        r = await http.post("/v1/translate", json=body)
        if r.status_code != 413:
            shape.update(status=r.status_code, seconds_alone=time.perf_counter() - t0)
            break
        n //= 2
    asked = f"{args.heavy_sentences} x {args.heavy_chars} chars at beam {args.heavy_beam}"
    shape.update(asked=asked, admitted_sentences=n)
    return {"text": [sentence] * max(n, 1), "beam": args.heavy_beam}, shape


async def run_heavy(url: str, pid: int | None, args: argparse.Namespace) -> dict:
    """The ``heavy`` workload: light clients while --heavy-clients send the heavy request."""
    light, heavy, rng = Stats(), Stats(), random.Random(0)
    out: dict = {"workload": "heavy", "clients": args.clients, "heavy_clients": args.heavy_clients}
    async with client_for(url, args.clients + args.heavy_clients) as http:
        heavy_body, out["heavy_request"] = await admitted_heavy(http, args)
        start = time.perf_counter()
        until, budget = time.monotonic() + args.duration, [args.max_requests]
        async with memory_watch(pid, out):
            await asyncio.gather(
                clients_loop(http, args.heavy_clients, until, budget, lambda: heavy_body, heavy),
                clients_loop(http, args.clients, until, budget,
                             lambda: light_body(rng, args.sentences, args.beam), light),
            )  # fmt: skip
    elapsed = time.perf_counter() - start
    return {**out, "elapsed_s": elapsed, **light.report(elapsed),
            "heavy": heavy.report(elapsed)}  # fmt: skip


def raise_own_fd_limit(need: int) -> None:
    """This process holds --idle sockets: lift its soft ``ulimit -n`` towards the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        top = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))


async def hold_connection(host: str, port: int, start: bytes, until: float) -> float | str:
    """Open a connection, send ``start`` and wait: the seconds until the server closed it, or
    "open" (still open at ``until``) or "refused" (could not connect)."""
    t0 = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return "refused"
    try:
        writer.write(start)
        await asyncio.wait_for(reader.read(), max(0.0, until - time.monotonic()))
        return time.monotonic() - t0
    except (TimeoutError, asyncio.TimeoutError):
        return "open"
    except OSError:  # reset by the server: closed too
        return time.monotonic() - t0
    finally:
        writer.close()


async def run_idle(url: str, pid: int | None, args: argparse.Namespace) -> dict:
    """The ``idle`` workload: light clients while --idle connections are held open."""
    raise_own_fd_limit(args.idle + args.clients + 64)
    host, port = url.removeprefix("http://").split(":")
    light, rng = Stats(), random.Random(0)
    out: dict = {"workload": "idle", "clients": args.clients, "idle_connections": args.idle}
    start = time.perf_counter()
    until = time.monotonic() + args.duration
    async with memory_watch(pid, out), client_for(url, args.clients) as http:
        # The light clients connect first: beyond the server's connection cap new connections
        # are closed, and this measures whether clients already connected are still served.
        await asyncio.gather(*(post(http, light_body(rng, 1, None), Stats())
                               for _ in range(args.clients)))  # fmt: skip
        holders = [hold_connection(host, int(port), IDLE_STARTS[i % 3], until)
                   for i in range(args.idle)]  # fmt: skip
        closed, _ = await asyncio.gather(
            asyncio.gather(*holders),
            clients_loop(http, args.clients, until, [args.max_requests],
                         lambda: light_body(rng, args.sentences, args.beam), light),
        )  # fmt: skip
    elapsed = time.perf_counter() - start
    times = sorted(t for t in closed if not isinstance(t, str))
    out["idle"] = {
        "closed_by_server": len(times),
        "still_open_at_end": closed.count("open"),
        "refused": closed.count("refused"),
        "seconds_to_close_p50": times[len(times) // 2] if times else None,
        "seconds_to_close_max": times[-1] if times else None,
    }
    return {**out, "elapsed_s": elapsed, **light.report(elapsed)}


def paragraph_body(i: int) -> dict:
    """The i-th paragraph request: plain text and HTML in turn."""
    html = i % 2 == 1
    q = (PARAGRAPHS_HTML if html else PARAGRAPHS)[(i // 2) % len(PARAGRAPHS)]
    return {"q": q, "source": "en", "target": "es", "format": "html" if html else "text"}


async def run_paragraphs(url: str, pid: int | None, args: argparse.Namespace) -> dict:
    """The ``paragraphs`` workload: --clients clients sending paragraphs to /translate."""
    stats, out, counter = Stats(), {"workload": "paragraphs", "clients": args.clients}, [0]

    def next_body() -> dict:
        counter[0] += 1
        return paragraph_body(counter[0])

    start = time.perf_counter()
    async with memory_watch(pid, out), client_for(url, args.clients) as http:
        await clients_loop(http, args.clients, time.monotonic() + args.duration,
                           [args.max_requests], next_body, stats)  # fmt: skip
    elapsed = time.perf_counter() - start
    return {**out, "elapsed_s": elapsed, **stats.report(elapsed)}


def serve_export(model_dir: str, port: int) -> None:
    """``--serve-export``: serve a CTranslate2 export as en-es, in this (child) process."""
    from attnmt.serve import serve

    serve(models={"en-es": model_dir}, port=port)


def export_for(args: argparse.Namespace, tmp: Path) -> str:
    """The model the server loads: the checkpoint, or its CTranslate2 export."""
    if args.engine == "torch" or (Path(args.model) / "model.bin").is_file():
        return args.model
    from attnmt.ct2 import export_ctranslate2

    return str(export_ctranslate2(args.model, tmp / "ct2"))


def argos_package(args: argparse.Namespace, tmp: Path) -> Path:
    """The checkpoint as an Argos package, with --sbd-model or the tests' toy splitter (a real
    MiniSBD model is a download)."""
    from attnmt.argos import export_argos

    sbd = args.sbd_model
    if sbd is None:
        from tests.test_argos import toy_splitter

        sbd = toy_splitter(tmp / "en.onnx")
    return export_argos(args.model, tmp / "argos", "en", "es", sbd_model=sbd)


def run_argos(args: argparse.Namespace, tmp: Path) -> dict:
    """argostranslate translating the paragraphs in-process, in a child whose package and data
    directories are all under ``tmp`` (argostranslate reads them when imported)."""
    from attnmt.checkpoint import Checkpoint

    beam = Checkpoint.load(args.model).config.decode.beam  # the server's default search
    home = tmp / "argos_home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARGOS_", "XDG_"))}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"),
               XDG_CONFIG_HOME=str(home / "config"), XDG_CACHE_HOME=str(home / "cache"),
               ARGOS_PACKAGES_DIR=str(home / "packages"), ARGOS_DEVICE_TYPE="cpu",
               ARGOS_COMPUTE_TYPE="default", ARGOS_BEAM_SIZE=str(beam))  # fmt: skip
    cmd = [sys.executable, __file__, "--argos-child", str(argos_package(args, tmp)),
           "--duration", str(args.duration), "--max-requests", str(args.max_requests)]  # fmt: skip
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"argostranslate child failed:\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "beam": beam}


def argos_child(package: str, duration: float, max_requests: int) -> None:
    """``--argos-child``: install ``package`` and translate PARAGRAPHS in turn; prints JSON."""
    from argostranslate import package as argos_package_api
    from argostranslate import translate

    argos_package_api.install_from_path(package)
    translate.translate(PARAGRAPHS[0], "en", "es")  # loads the model and the splitter
    before, sentences, n = rss_mib(os.getpid()), 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < duration and n < max_requests:
        q = PARAGRAPHS[n % len(PARAGRAPHS)]
        translate.translate(q, "en", "es")
        sentences += _split_count(q, "text", "en")
        n += 1
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"paragraphs": n, "sentences": sentences, "elapsed_s": elapsed,
                      "sentences_per_s": sentences / elapsed, "rss_mib_before": before,
                      "rss_mib_after": rss_mib(os.getpid()), "rss_mib_peak": peak}))  # fmt: skip


def print_table(report: dict) -> None:
    def fmt(v: float | None, unit: str = "") -> str:
        return "n/a" if v is None else f"{v:,.1f}{unit}"

    lat = report["latency_ms"]
    rows = [
        ("server", f"{report['url']} ({report['engine']} engine)"),
        ("workload", report["workload"]),
        ("light clients", str(report["clients"])),
        ("duration", fmt(report["elapsed_s"], " s")),
        ("light requests ok", str(report["requests_ok"])),
        ("light errors", f"{report['errors']} {report['error_kinds'] or ''}".strip()),
        ("throughput",
         f"{fmt(report['req_per_s'])} req/s, {fmt(report['sentences_per_s'])} sent/s"),
        ("light latency p50", fmt(lat["p50"], " ms")),
        ("light latency p99", fmt(lat["p99"], " ms")),
    ]  # fmt: skip
    if "heavy" in report:
        h = report["heavy"]
        rows += [
            ("heavy request", json.dumps(report["heavy_request"])),
            ("heavy ok / errors", f"{h['requests_ok']} / {h['errors']} {h['error_kinds'] or ''}"),
            ("heavy latency p50", fmt(h["latency_ms"]["p50"], " ms")),
        ]
    if "idle" in report:
        rows.append(("held connections", json.dumps(report["idle"])))
    if "argos" in report:
        a = report["argos"]
        rows += [
            ("argos in-process", f"{a['paragraphs']} paragraphs, {fmt(a['sentences_per_s'])} "
                                 f"sent/s at beam {a['beam']}"),
            ("argos RSS before/peak/after", f"{fmt(a['rss_mib_before'])} / "
             f"{fmt(a['rss_mib_peak'])} / {fmt(a['rss_mib_after'])} MiB"),
        ]  # fmt: skip
    rows += [
        ("server RSS before", fmt(report["rss_mib_before"], " MiB")),
        ("server RSS peak", fmt(report["rss_mib_peak"], " MiB")),
        ("server RSS after", fmt(report["rss_mib_after"], " MiB")),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print()


WORKLOADS = {"clients": run_clients, "heavy": run_heavy, "idle": run_idle,
             "paragraphs": run_paragraphs}  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="checkpoint (.pt or run dir): start a server for it")
    src.add_argument("--url", help="base URL of a running server, e.g. http://127.0.0.1:8000")
    p.add_argument("--pid", type=int, help="with --url: server process id, for its memory use")
    p.add_argument("--workload", choices=[*WORKLOADS, "all"], default="clients")
    p.add_argument("--clients", type=int, default=32, help="concurrent light clients (32)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds per workload (30)")
    p.add_argument("--max-requests", type=int, default=20_000, help="hard cap on requests")
    p.add_argument("--sentences", type=int, default=1, help="sentences per light request (1)")
    p.add_argument("--beam", type=int, help="beam of light requests (default: the model's)")
    p.add_argument("--heavy-clients", type=int, default=1, help="clients sending heavy ones (1)")
    p.add_argument("--heavy-sentences", type=int, default=32, help="heavy request sentences (32)")
    p.add_argument("--heavy-chars", type=int, default=1000, help="characters per sentence (1000)")
    p.add_argument("--heavy-beam", type=int, default=10, help="heavy request beam (10)")
    p.add_argument("--idle", type=int, default=1030, help="connections held open (1030)")
    engines = ["torch", "ctranslate2"]
    p.add_argument("--engine", choices=engines, default="torch", help="ctranslate2: its export")
    p.add_argument("--argos", action="store_true", help="paragraphs: argostranslate too")
    p.add_argument("--sbd-model", help="--argos: the package's MiniSBD model (default: a toy)")
    p.add_argument("--json", action="store_true", help="print the reports as JSON")
    args = p.parse_args(argv)
    if args.argos and not (args.model and args.workload == "paragraphs"):
        p.error("--argos needs --model and --workload paragraphs")
    counts = (args.clients, args.max_requests, args.sentences, args.heavy_clients,
              args.heavy_sentences, args.heavy_chars, args.heavy_beam, args.idle)  # fmt: skip
    if min(counts) < 1 or args.duration <= 0:
        p.error("--duration and every count option must be positive")
    return args


def run_child(argv: list[str]) -> int:
    """The child processes this script starts itself: a server, or argostranslate."""
    p = argparse.ArgumentParser()
    p.add_argument("--serve-export")
    p.add_argument("--argos-child")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--max-requests", type=int, default=20_000)
    a = p.parse_args(argv)
    if a.serve_export:
        serve_export(a.serve_export, a.port)
    else:
        argos_child(a.argos_child, a.duration, a.max_requests)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["--serve-export"], ["--argos-child"]):
        return run_child(argv)
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="load_test.") as tmp:
        return run(args, Path(tmp))


def run(args: argparse.Namespace, tmp: Path) -> int:
    proc = None
    if args.model:
        port = free_port()
        proc = start_server(export_for(args, tmp), port)
        url, pid = f"http://127.0.0.1:{port}", proc.pid
    else:
        url, pid = args.url.rstrip("/"), args.pid
    names = ["clients", "heavy", "idle"] if args.workload == "all" else [args.workload]
    reports = []
    try:
        for name in names:
            report = asyncio.run(WORKLOADS[name](url, pid, args))
            reports.append({**report, "url": url, "engine": args.engine})
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    if args.argos:  # after the server has gone: the two do not share the CPUs
        reports[0]["argos"] = run_argos(args, tmp)
    if args.json:
        print(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
    else:
        for report in reports:
            print_table(report)
    return 0 if all(r["errors"] == 0 for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
