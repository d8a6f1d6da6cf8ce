"""`make demo-runs`: run the demo many times, with and without PYTHONUNBUFFERED, and count.

Each run is `python -m tasks.demo` in a fresh process, exactly what `make demo` runs. Half the
runs set PYTHONUNBUFFERED=1 (as containers and CI machines do), half remove it. Prints one line
per run, then the count per mode; for a failed run, the checks it named as failed.

    python -m bench.demo_runs [--runs 20]      # 20 runs in each mode
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = {"PYTHONUNBUFFERED=1": "1", "buffered": None}


def run_once(unbuffered: str | None) -> tuple[bool, float, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered is not None:
        env["PYTHONUNBUFFERED"] = unbuffered
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "tasks.demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    took = time.monotonic() - started
    ok = done.returncode == 0 and "demo OK" in done.stdout
    failed = [line for line in done.stdout.splitlines() if "FAILED" in line]
    why = "; ".join(failed) or (done.stdout + done.stderr)[-400:]
    return ok, took, "" if ok else why


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="runs in each mode")
    args = parser.parse_args()
    passed = dict.fromkeys(MODES, 0)
    for i in range(args.runs):
        for mode, value in MODES.items():  # alternate, so that both modes see the same machine
            ok, took, why = run_once(value)
            passed[mode] += ok
            verdict = "pass" if ok else f"FAIL: {why}"
            print(f"run {i + 1:>3}/{args.runs} {mode:<20} {took:5.1f}s {verdict}", flush=True)
    for mode, count in passed.items():
        print(f"{mode}: {count} of {args.runs} runs passed")
    return 0 if all(count == args.runs for count in passed.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
