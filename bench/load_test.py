"""Load test for the attnmt HTTP server: throughput, latency percentiles, errors, server memory.

Starts ``attnmt.serve.serve`` on 127.0.0.1 for a checkpoint (or uses a running server via
``--url``), then runs N concurrent async clients against ``POST /v1/translate`` for a bounded
time and number of requests. Example::

    python bench/load_test.py --model runs/demo/best.pt --clients 32 --duration 30
    python bench/load_test.py --url http://127.0.0.1:8000 --pid 12345 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

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
    """Run the real server in a child process and wait until /health answers."""
    cmd = [sys.executable, "-m", "attnmt", "serve", "--model", model, "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--device", "cpu"],  # as serve() defaults: the load test measures the CPU server
        cwd=Path(__file__).resolve().parents[1],  # the repo root: attnmt importable uninstalled
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


async def run_clients(
    url: str, clients: int, duration: float, max_requests: int, per_request: int, beam: int | None
) -> dict:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    sent = 0
    deadline = time.monotonic() + duration
    rng = random.Random(0)

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal sent
        while time.monotonic() < deadline and sent < max_requests:
            sent += 1
            body: dict = {"text": [rng.choice(SENTENCES) for _ in range(per_request)]}
            if beam is not None:
                body["beam"] = beam
            t0 = time.perf_counter()
            try:
                r = await http.post("/v1/translate", json=body)
                key = None if r.status_code == 200 else f"HTTP {r.status_code}"
            except httpx.HTTPError as e:
                key = type(e).__name__
            if key is None:
                latencies.append(time.perf_counter() - t0)
            else:
                errors[key] = errors.get(key, 0) + 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float | None:
        return (
            latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000
            if latencies
            else None
        )

    return {
        "clients": clients,
        "elapsed_s": elapsed,
        "requests_ok": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "req_per_s": len(latencies) / elapsed,
        "sentences_per_s": len(latencies) * per_request / elapsed,
        "latency_ms": {"p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99)},
    }


def print_table(report: dict) -> None:
    def fmt(v: float | None, unit: str = "") -> str:
        return "n/a" if v is None else f"{v:,.1f}{unit}"

    lat = report["latency_ms"]
    rows = [
        ("server", report["url"]),
        ("clients", str(report["clients"])),
        ("duration", fmt(report["elapsed_s"], " s")),
        ("requests ok", str(report["requests_ok"])),
        ("errors", f"{report['errors']} {report['error_kinds'] or ''}".strip()),
        (
            "throughput",
            f"{fmt(report['req_per_s'])} req/s, {fmt(report['sentences_per_s'])} sent/s",
        ),
        ("latency p50", fmt(lat["p50"], " ms")),
        ("latency p90", fmt(lat["p90"], " ms")),
        ("latency p99", fmt(lat["p99"], " ms")),
        ("server RSS before", fmt(report["rss_mib_before"], " MiB")),
        ("server RSS after", fmt(report["rss_mib_after"], " MiB")),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="checkpoint (.pt or run dir): start a server for it")
    src.add_argument("--url", help="base URL of a running server, e.g. http://127.0.0.1:8000")
    p.add_argument("--pid", type=int, help="with --url: server process id, for its memory use")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds to run (default 30)")
    p.add_argument("--max-requests", type=int, default=20_000, help="hard cap on requests")
    p.add_argument("--sentences", type=int, default=1, help="sentences per request (default 1)")
    p.add_argument("--beam", type=int, help="beam size to request (default: the model's)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    if args.clients < 1 or args.duration <= 0 or args.max_requests < 1 or args.sentences < 1:
        p.error("--clients, --duration, --max-requests and --sentences must be positive")

    proc = None
    if args.model:
        port = free_port()
        proc = start_server(args.model, port)
        url, pid = f"http://127.0.0.1:{port}", proc.pid
    else:
        url, pid = args.url.rstrip("/"), args.pid
    try:
        before = rss_mib(pid)
        report = asyncio.run(
            run_clients(
                url, args.clients, args.duration, args.max_requests, args.sentences, args.beam
            )
        )
        report.update(url=url, rss_mib_before=before, rss_mib_after=rss_mib(pid))
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0 if report["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
