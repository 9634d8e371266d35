"""Steps 4-5 of run_peers: every model translates the same test set, timed, then scored.

Pipeline position: called by run_peers.run_arch after training (or straight away with
--skip-train). A job is one child process: attnmt rows run ``attnmt_translate.py`` with attnmt's
interpreter; JoeyNMT and CTranslate2 rows run ``peer_translate.py`` with the peers' one;
OpenNMT-py rows run its own ``onmt_translate``, timed from its log. Scores are sacreBLEU BLEU and
chrF of detokenized output against the raw references; ``-fixedN`` rows are timed, not scored.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
from pathlib import Path
from typing import Any

from children import PEERS_PY, attnmt_cmd, check, peers_cmd, result_line, run_checked, run_child

Job = tuple[str, list[str], bool]  # row name (".beamN" for one beam only), command, pieces out


def attnmt_job(
    args: argparse.Namespace, work: Path, cap: int, name: str, run: Path, engine: str, *flags: str
) -> Job:
    """``attnmt_translate.py`` on the raw test sources, output ``hyps/<name>.beamN``."""
    src, out = work / "data" / "test.src.txt", work / "hyps" / name
    cmd = attnmt_cmd(
        "attnmt_translate", run / "last.pt", src, out, "--cap", cap, "--threads", args.threads,
        "--engine", engine, "--device", args.device, *flags,
    )  # fmt: skip
    return name, cmd, False


def peer_job(
    args: argparse.Namespace, work: Path, cap: int, name: str, kind: str, model: Path, *flags: Any
) -> Job:
    """``peer_translate.py`` (joey / ct2) on the test pieces, output ``hyps/<name>.beamN``."""
    src, out = work / "data" / "test.en", work / "hyps" / name
    cmd = peers_cmd(
        "peer_translate", kind, model, src, out, "--cap", cap, "--threads", args.threads
    )
    return name, [*cmd, *map(str, flags)], True


def attnmt_jobs(args: argparse.Namespace, work: Path, res: dict[str, Any], cap: int) -> list[Job]:
    """attnmt rows: fp32 (+ early stop), int8 (CPU), bf16/fp16 runs, forced-length rows."""
    run_dir, gpu, n = work / "attnmt", args.device == "cuda", args.fixed_len
    # name, run directory, engine (torch / int8 = --quantize), flags. int8 (--quantize) is CPU
    # translation: left out on a GPU.
    rows = [("attnmt", run_dir, "torch"), ("attnmt-es", run_dir, "torch", "--early-stop")]
    if not gpu:
        rows += [
            ("attnmt+int8", run_dir, "int8"),
            ("attnmt+int8-es", run_dir, "int8", "--early-stop"),
        ]
    rows += [(name, work / name, "torch") for name in ("attnmt-bf16", "attnmt-fp16") if name in res]
    if n:
        # Every output forced to n tokens (min = max length): equal work per sentence for every
        # toolkit, however far each model learned; timed, not scored.
        rows.append((f"attnmt-fixed{n}", run_dir, "torch", "--fixed", str(n)))
        if not gpu:
            rows.append((f"attnmt+int8-fixed{n}", run_dir, "int8", "--fixed", str(n)))
    return [attnmt_job(args, work, cap, *row) for row in rows]


def onmt_jobs(args: argparse.Namespace, work: Path, res: dict[str, Any], cap: int) -> list[Job]:
    """OpenNMT-py's own CLI per beam; -report_time prints the time spent translating."""
    runs = [(n, n, []) for n in ("opennmt-py", "opennmt-py-fp16") if n in res]
    if (n := args.fixed_len) and "opennmt-py" in res:
        forced = ["-min_length", str(n), "-max_length", str(n)]
        runs.append((f"opennmt-py-fixed{n}", "opennmt-py", forced))
    jobs = []
    for name, trained, extra in runs:
        for beam in (1, 5):
            cmd = [
                PEERS_PY, "-m", "onmt.bin.translate", "-model", res[trained]["checkpoint"],
                "-src", str(work / "data" / "test.en"), "-output",
                str(work / "hyps" / f"{name}.beam{beam}"), "-beam_size", str(beam),
                "-max_length", str(cap), "-batch_size", "64", "-batch_type", "sents",
                "-length_penalty", "wu", "-alpha", "1.0", "-report_time",
                "-gpu", "0" if args.device == "cuda" else "-1",
            ]  # fmt: skip
            jobs.append((f"{name}.beam{beam}", [*cmd, *extra], True))  # the later -max_length wins
    return jobs


def ct2_jobs(
    arch: str, args: argparse.Namespace, work: Path, res: dict[str, Any], cap: int
) -> list[Job]:
    """Transformer on a CPU: OpenNMT-py's model converted to CTranslate2, and attnmt's export."""
    if arch != "transformer" or args.device == "cuda" or "opennmt-py" not in res:
        return []
    ct2_dir, log = work / "onmt_ct2", work / "logs" / "ct2_convert.log"
    if not (ct2_dir / "model.bin").exists():
        cmd = [PEERS_PY, "-m", "ctranslate2.converters.opennmt_py",
               "--model_path", res["opennmt-py"]["checkpoint"], "--output_dir", str(ct2_dir),
               "--unsafe_deserialization", "--force"]  # fmt: skip
        run_checked(cmd, log, args.threads, "CTranslate2 conversion")
    jobs = [
        peer_job(args, work, cap, "opennmt-py+ct2", "ct2", ct2_dir),
        attnmt_job(args, work, cap, "attnmt+ct2", work / "attnmt", "ct2"),
    ]
    if n := args.fixed_len:
        # Both exports through the same raw CTranslate2 call, every output n tokens long: the
        # same work for both, however far each model has learned (the attnmt export is the one
        # the attnmt+ct2 job writes).
        for name, model in (("opennmt-py", ct2_dir), ("attnmt", work / "hyps" / "attnmt_ct2")):
            jobs.append(
                peer_job(args, work, cap, f"{name}+ct2-fixed{n}", "ct2", model, "--fixed", n)
            )
    return jobs


def detok(piece_file: Path, sp_model: Path, out: Path) -> Path:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(sp_model))
    lines = piece_file.read_text().splitlines()
    out.write_text("".join(sp.decode_pieces(line.split()) + "\n" for line in lines))
    return out


def score(hyp_file: Path, ref_file: Path) -> dict[str, float]:
    import sacrebleu

    hyps = hyp_file.read_text().splitlines()
    refs = ref_file.read_text().splitlines()
    assert len(hyps) == len(refs), (hyp_file, len(hyps), len(refs))
    return {
        "bleu": sacrebleu.metrics.BLEU().corpus_score(hyps, [refs]).score,
        "chrf": sacrebleu.metrics.CHRF().corpus_score(hyps, [refs]).score,
    }


def job_timings(toolkit: str, beam_tag: str, log: Path, n_test: int) -> dict[str, float]:
    """``beamN_s`` seconds: a worker's RESULT line, or OpenNMT-py's own report."""
    if toolkit.startswith("opennmt-py") and "ct2" not in toolkit:
        # "Total translation time" is printed to 0.1 s; the per-sentence mean has 3 digits.
        ms = re.findall(r"Average translation time \(ms\): ([\d.]+)", log.read_text())[-1]
        return {f"{beam_tag}_s": float(ms) * n_test / 1000}
    return result_line(log)


def record(
    entry: dict[str, Any], work: Path, toolkit: str, log: Path, beam_tag: str, pieces: bool
) -> None:
    """Sentences/s per beam into ``entry``, and BLEU/chrF unless the lengths were forced."""
    refs = work / "data" / "test.ref.txt"
    n_test = len(refs.read_text().splitlines())
    for key, secs in job_timings(toolkit, beam_tag, log, n_test).items():
        beam = key.split("_")[0]  # "beam1" / "beam5"
        entry[f"{beam}_sent_s"] = n_test / secs
        if "-fixed" in toolkit:  # forced lengths: a speed, not a translation to score
            continue
        hyp = work / "hyps" / f"{toolkit}.{beam}"
        if pieces:
            hyp = detok(hyp, work / "data" / "sp.model", work / "hyps" / f"{toolkit}.{beam}.detok")
        sc = score(hyp, refs)
        entry[f"{beam}_bleu"], entry[f"{beam}_chrf"] = sc["bleu"], sc["chrf"]


def run_job(arch: str, args: argparse.Namespace, work: Path, res: dict[str, Any], job: Job) -> None:
    name, cmd, pieces = job
    print(f"[{arch}] translating: {name} ...", flush=True)
    log = work / "logs" / f"translate_{name}.log"
    # A time limit per translation job: JoeyNMT's Transformer decodes without a key/value cache
    # (every step re-runs the whole prefix), which an undertrained model that runs to the output
    # cap turns into many minutes.
    limit = args.translate_timeout
    r = run_child(cmd, log, args.threads, limit, "", signal.SIGKILL, grace_s=0.0)
    toolkit, _, beam_tag = name.partition(".")
    entry = res.setdefault(toolkit, {})
    if r["stopped"]:
        entry["translate_timeout_s"] = limit
        print(f"[{arch}] {name}: no result within {limit:.0f} s (killed)", flush=True)
        return
    check(r, log, f"{name} translation")
    entry["translate_peak_rss_mib"] = max(
        entry.get("translate_peak_rss_mib", 0.0), r["peak_rss_mib"]
    )
    record(entry, work, toolkit, log, beam_tag, pieces)


def translate_all(
    arch: str, args: argparse.Namespace, work: Path, res: dict[str, Any], cap: int, joey_cfg: Path
) -> dict[str, Any]:
    """4. Translate the same test set, greedy and beam 5, same cap; 5. score it."""
    (work / "hyps").mkdir(exist_ok=True)
    jobs = attnmt_jobs(args, work, res, cap)
    if "joeynmt" in res:
        jobs.append(peer_job(args, work, cap, "joeynmt", "joey", joey_cfg))
    jobs += onmt_jobs(args, work, res, cap)
    jobs += ct2_jobs(arch, args, work, res, cap)
    if args.rows:
        jobs = [job for job in jobs if re.search(args.rows, job[0])]
    for job in jobs:
        run_job(arch, args, work, res, job)
        # What is measured so far survives a run killed at an outer time limit.
        (work / "partial.json").write_text(json.dumps(res, indent=2, default=str))
    return res
