"""`make bench-compare REF=<commit>`: the working tree against an earlier commit, side by side,
alternately, in one run.

REF is checked out into a temporary git worktree. Each round runs bench/compare_side.py (this
tree's copy, so both sides are measured the same way) once with REF's ``notifier`` first on
PYTHONPATH and once with the working tree's, in fresh processes against one redis-server; the
order flips every round (ABBA...), so a drift of the machine falls on both. Each round also
measures the ceiling, ``redis-benchmark PUBLISH -P 256`` with a live subscriber, as ``make bench``
does. For each figure: the median and range of each side over the rounds, and the working tree's
median as a ratio of REF's (below 1 is faster for times, above 1 faster for rates). The "x floor"
and "of ceiling" rows are ratios taken within each round and side, then their median.

``--tree COMMIT`` puts a second commit in the working tree's place (what one change cost, long
after it landed); ``--queue KEY=VALUE`` sets a ``[queue]`` key on both sides where that side's
QueueConfig has it (``progress_interval=0``: coalescing off).

    python -m bench.compare --ref COMMIT [--tree COMMIT] [--rounds N] [--queue KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.delivery import redis_benchmark_ceiling
from notifier.testing import RedisServer

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent
RESULTS = HERE / "results"


def side(tree: Path, url: str, queue: dict[str, float]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree), "BENCH_QUEUE": json.dumps(queue)}
    done = subprocess.run(
        [sys.executable, str(HERE / "compare_side.py"), url],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(
            f"{tree}: compare_side failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    imported = Path(figures.pop("notifier")).resolve()
    if not imported.is_relative_to(tree.resolve()):
        raise SystemExit(f"{tree}: imported notifier from {imported}, not from the tree")
    return figures


CEILING_EVENTS = 300_000
# Read against the floor or the ceiling of the same round: (row, figure, what it is divided by).
RATIOS = (
    ("progress_burst_x_floor", "progress_burst_p50_us", "floor_burst_p50_us"),
    ("failed_burst_x_floor", "failed_burst_p50_us", "floor_burst_p50_us"),
    ("failed_steady_x_floor", "failed_steady_p50_us", "floor_steady_p50_us"),
    ("events_per_s_of_ceiling", "events_per_s", "ceiling_events_per_s"),
)


def with_ratios(figures: dict[str, float], ceiling: float) -> dict[str, float]:
    out = {**figures, "ceiling_events_per_s": ceiling}
    for row, figure, base in RATIOS:
        out[row] = out[figure] / out[base]
    return out


def table(ref: str, tree: str, rounds: list[dict[str, dict[str, float]]]) -> str:
    lines = [
        f"bench-compare: {ref} (REF) against {tree}, {len(rounds)} rounds, alternating",
        "",
        "| figure | REF median (range) | tree median (range) | tree / REF |",
        "| --- | ---: | ---: | ---: |",
    ]
    for field in rounds[0]["ref"]:
        cells, medians = [], []
        for name in ("ref", "tree"):
            values = [r[name][field] for r in rounds]
            medians.append(statistics.median(values))
            cells.append(f"{medians[-1]:,.2f} ({min(values):,.2f}-{max(values):,.2f})")
        lines.append(f"| {field} | {cells[0]} | {cells[1]} | {medians[1] / medians[0]:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ref", required=True, help="the commit to compare against")
    parser.add_argument("--tree", help="a commit in the working tree's place")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--queue", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    try:
        queue = {k: float(v) for k, v in (item.split("=", 1) for item in args.queue)}
    except ValueError:
        raise SystemExit("--queue takes KEY=NUMBER, such as progress_interval=0") from None
    rounds: list[dict[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        worktree = Path(tmp) / "ref"
        other = Path(tmp) / "tree" if args.tree else CHECKOUT
        added = [(worktree, args.ref)] + ([(other, args.tree)] if args.tree else [])
        for path, commit in added:
            subprocess.run(
                ["git", "-C", str(CHECKOUT), "worktree", "add", "--detach", "--quiet", str(path),
                 commit],
                check=True,
            )  # fmt: skip
        try:
            # No output-buffer limit: Redis would disconnect a subscriber that falls behind.
            with RedisServer(extra=["--client-output-buffer-limit", "pubsub 0 0 0"]) as redis:
                for i in range(args.rounds):
                    order = ("ref", "tree") if i % 2 == 0 else ("tree", "ref")
                    ceiling = redis_benchmark_ceiling(redis.port, CEILING_EVENTS)
                    done: dict[str, dict[str, float]] = {}
                    for name in order:
                        figures = side(worktree if name == "ref" else other, redis.url, queue)
                        done[name] = with_ratios(figures, ceiling)
                    rounds.append(done)
                    print(f"round {i + 1}/{args.rounds}: {json.dumps(done)}", flush=True)
        finally:
            for path, _ in added:
                subprocess.run(
                    ["git", "-C", str(CHECKOUT), "worktree", "remove", "--force", str(path)],
                    check=False,
                )
    settings = "".join(f", queue.{k} = {v:g}" for k, v in queue.items())
    text = table(args.ref, (args.tree or "the working tree") + settings, rounds)
    print("\n" + text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "compare.md").write_text(text + "\n")
    record = {"ref": args.ref, "tree": args.tree, "queue": queue, "rounds": rounds}
    (RESULTS / "compare.json").write_text(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
