"""Child processes for run_peers: the two interpreters, a time limit, a start marker, peak RSS.

Pipeline position: the lowest layer of bench/peers; every training, data preparation and
translation job of run_peers runs through :func:`run_child` in its own process, so the peak RSS
that ``os.wait4`` reports is that job's alone. Runs in the peers' interpreter: no attnmt import.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HERE = REPO / "bench" / "peers"
# attnmt's interpreter: its own venv here; on a GPU machine (bench/gpu/run_device.sh) one Python
# holds attnmt and the peers, named by ATTNMT_PYTHON.
ATTNMT_PY = Path(os.environ.get("ATTNMT_PYTHON", REPO / ".venv" / "bin" / "python"))
PEERS_PY = sys.executable


def attnmt_cmd(program: str, *args: Any) -> list[str]:
    """Run ``bench/peers/<program>.py`` with attnmt's interpreter."""
    return [str(ATTNMT_PY), str(HERE / f"{program}.py"), *map(str, args)]


def peers_cmd(program: str, *args: Any) -> list[str]:
    """Run ``bench/peers/<program>.py`` with the peers' interpreter."""
    return [PEERS_PY, str(HERE / f"{program}.py"), *map(str, args)]


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        # torch>=2.6 loads with weights_only=True; OpenNMT-py and JoeyNMT checkpoints hold
        # pickled option objects, so their own loaders need the old behaviour.
        TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1",
        PYTHONUNBUFFERED="1",
        # The repo first; keep a PYTHONPATH the caller set (wheels unpacked on a GPU machine).
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
    )
    return env


def run_child(
    cmd: list[str],
    log_path: Path,
    threads: int,
    budget_s: float = 0.0,
    start_marker: str = "",
    stop_signal: int = signal.SIGINT,
    grace_s: float = 120.0,
) -> dict[str, Any]:
    """Run ``cmd`` with stdout+stderr in ``log_path``; returns rc, wall time and peak RSS.

    With ``budget_s``: the budget starts when ``start_marker`` first appears in the log (the
    toolkit's training loop began; setup is not charged, as attnmt's own max_minutes does not
    charge it) and ``stop_signal`` is sent when it runs out; SIGKILL after ``grace_s``.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        t0 = time.time()
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=child_env(threads)
        )
        loop_start = 0.0 if start_marker else t0
        stopped_at = 0.0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = time.time()
            if budget_s and not loop_start and start_marker in log_path.read_text(errors="ignore"):
                loop_start = now
            if budget_s and loop_start and not stopped_at and now - loop_start >= budget_s:
                proc.send_signal(stop_signal)
                stopped_at = now
            if stopped_at and now - stopped_at > grace_s:
                proc.kill()
            time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "rc": proc.returncode,
        "wall_s": time.time() - t0,
        "loop_s": (stopped_at or time.time()) - (loop_start or t0),
        "stopped": bool(stopped_at),
        "peak_rss_mib": usage.ru_maxrss / 1024,  # KiB on Linux
    }


def check(result: dict[str, Any], log_path: Path, what: str, allow_stop: bool = False) -> None:
    """Stop the benchmark with the log's tail when a child failed (a budget stop is no failure)."""
    if result["rc"] != 0 and not (allow_stop and result["stopped"]):
        tail = "\n".join(log_path.read_text(errors="ignore").splitlines()[-25:])
        raise SystemExit(f"{what} failed (rc {result['rc']}), log {log_path}:\n{tail}")


def run_checked(cmd: list[str], log_path: Path, threads: int, what: str) -> dict[str, Any]:
    """:func:`run_child` without a budget, then :func:`check`."""
    result = run_child(cmd, log_path, threads)
    check(result, log_path, what)
    return result


def result_line(log_path: Path) -> dict[str, Any]:
    """The ``RESULT {json}`` line a worker prints last."""
    for line in reversed(log_path.read_text(errors="ignore").splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"no RESULT line in {log_path}")


# --------------------------------------------------------------------------------------------
# The worker side (the translation programs import this module, nothing else of run_peers)
# --------------------------------------------------------------------------------------------


def time_beams(
    translate: Callable[[int], list[str]],
    out: str,
    prepare: Callable[[int], None] = lambda beam: None,
) -> None:
    """Translate greedy and beam 5, timing ``translate(beam)`` only; write ``OUT.beam{1,5}``.

    ``prepare(beam)`` runs before the clock starts (an engine's per-run set-up). The timings are
    printed as the ``RESULT`` line :func:`result_line` reads.
    """
    res = {}
    for beam in (1, 5):
        prepare(beam)
        t0 = time.perf_counter()
        texts = translate(beam)
        res[f"beam{beam}_s"] = time.perf_counter() - t0
        Path(f"{out}.beam{beam}").write_text("".join(t + "\n" for t in texts))
    print_result(res)


def print_result(result: dict[str, Any]) -> None:
    """The last line of a worker's output, for :func:`result_line`."""
    print("RESULT " + json.dumps(result), flush=True)
