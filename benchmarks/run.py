"""Run the benchmarks, append their rows to benchmarks/results/<name>.jsonl, print a table.

    .venv/bin/python benchmarks/run.py                    # all, at full size (make bench)
    .venv/bin/python benchmarks/run.py --only simulate    # one (repeat or comma-separate)
    .venv/bin/python benchmarks/run.py --quick            # small sizes: checks the harness

A benchmark is a module `bench_<name>.py` beside this file with `run(quick: bool) -> list[dict]`
(rows made with `harness.row`); add its name to BENCHMARKS. This runner adds what makes a row
a claim (docs/design.md, principle 9): the machine, the date, the exact command and pass/fail.
"""

from __future__ import annotations

import argparse
import importlib
import json
import operator
import os
import platform
import shlex
import signal
import subprocess
import sys
import traceback
import uuid
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"  # git-ignored
sys.path.insert(0, str(HERE))  # the bench modules import `harness` whichever cwd we run from

# In run order; a new benchmark adds bench_<name>.py and its name here.
BENCHMARKS = ("simulate", "features", "online", "train", "fit", "service", "stream", "batch",
              "monitor", "cockpit")

OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}


def _cpuinfo_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) * 1024 / 1e9, 1)
    except OSError:
        pass
    return None


def machine() -> dict:
    """Facts that make a number comparable; the load average says how busy the box was
    just before the benchmark started (a shared machine's other work shows up here)."""
    return {
        "cpu_model": _cpuinfo_model(),
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "mem_total_gb": _mem_total_gb(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_1m_before": round(os.getloadavg()[0], 2),
    }


def git_version() -> str | None:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"],
                             check=False, cwd=HERE.parent, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def judge(result: dict) -> str:
    target = result.get("target")
    if not target:
        return "-"
    if not result.get("target_applies", True):
        return "n/a"
    return "pass" if OPS[target["op"]](result["value"], target["value"]) else "fail"


def complete(name: str, result: dict, context: dict) -> dict:
    status = judge(result)
    return {"benchmark": name, **result, "status": status,
            "pass": {"pass": True, "fail": False}.get(status), **context}


def _fmt_target(r: dict) -> str:
    t = r.get("target")
    return f"{t['op']} {t['value']:g} {r['unit']}" if t else ""


def _fmt_reference(r: dict) -> str:
    ref = r.get("reference")
    if not ref:
        return ""
    ratio = f" (x{ref['ratio']:g})" if ref.get("ratio") is not None else ""
    return f"ref {ref['value']:g} {ref['unit']}{ratio}"


def print_table(rows: list[dict]) -> None:
    head = ("benchmark", "metric", "value", "target", "status", "reference")
    body = [(r["benchmark"], r["metric"], f"{r['value']:,g} {r['unit']}", _fmt_target(r),
             r["status"], _fmt_reference(r)) for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    for i, line in enumerate([head, *body]):
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def _names(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown benchmark {', '.join(unknown)} (known: {', '.join(BENCHMARKS)})")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--only", type=_names, action="append", metavar="NAME",
                        help=f"run only these ({', '.join(BENCHMARKS)}); repeat or comma-separate")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: checks the harness; targets are not judged")
    args = parser.parse_args(argv)
    # a SIGTERM (e.g. a CI timeout) unwinds like Ctrl-C: the measured process tree is stopped
    # and the scratch directories are deleted
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    chosen = [n for n in BENCHMARKS if args.only is None or any(n in o for o in args.only)]
    # Worlds are built and read in plaintext, as before encryption at rest existed, so rows stay
    # comparable over time; the stream and service benchmarks add rows on encrypted twins.
    os.environ.setdefault("SHIPDELAY_ENCRYPTION", "false")

    run = {
        "run_id": uuid.uuid4().hex[:12],
        "command": shlex.join([sys.executable, *sys.argv] if argv is None
                              else [sys.executable, str(HERE / "run.py"), *argv]),
        "cwd": os.getcwd(),
        "git": git_version(),
        "quick": args.quick,
    }
    RESULTS.mkdir(exist_ok=True)
    rows, failed = [], []
    for name in chosen:
        print(f"== {name}{' (quick)' if args.quick else ''} ...", flush=True)
        context = {**run, "date": datetime.now(UTC).isoformat(timespec="seconds"),
                   "machine": machine()}
        try:
            results = importlib.import_module(f"bench_{name}").run(args.quick)
        except Exception:  # noqa: BLE001 - one broken benchmark must not stop the others
            traceback.print_exc()
            failed.append(name)
            continue
        done = [complete(name, r, context) for r in results]
        with open(RESULTS / f"{name}.jsonl", "a") as out:
            out.writelines(json.dumps(r, default=str) + "\n" for r in done)
        rows.extend(done)

    print()
    if rows:
        print_table(rows)
        m = rows[0]["machine"]
        print(f"\nmachine: {m['cpu_model']}, {m['nproc']} cpus, {m['mem_total_gb']} GB, "
              f"Python {m['python']}, load before {m['load_avg_1m_before']} | "
              f"date {rows[0]['date']} | git {run['git']}")
        print(f"command: {run['command']}")
        files = sorted({str(RESULTS / f"{r['benchmark']}.jsonl") for r in rows})
        print(f"rows appended to {', '.join(files)}")
    if failed:
        print(f"\nfailed to run: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
