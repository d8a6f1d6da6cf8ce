"""`make bench-compare REF=<commit>`: the working tree against an earlier commit, side by side,
alternately, in one run.

REF is checked out into a temporary git worktree. Each round runs bench/compare_side.py (this
tree's copy, so both sides are measured the same way) once with REF's ``notifier`` first on
PYTHONPATH and once with the working tree's, in fresh processes against one redis-server; the
order flips every round (ABBA...), so a drift of the machine falls on both. For each figure:
the median and range of each side over the rounds, and the working tree's median as a ratio of
REF's (below 1 is faster for times, above 1 faster for rates).

    python -m bench.compare --ref COMMIT [--rounds N]
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

from notifier.testing import RedisServer

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent
RESULTS = HERE / "results"


def side(tree: Path, url: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
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


def table(ref: str, rounds: list[dict[str, dict[str, float]]]) -> str:
    lines = [
        f"bench-compare: {ref} (REF) against the working tree, {len(rounds)} rounds, alternating",
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
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    rounds: list[dict[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        worktree = Path(tmp) / "ref"
        subprocess.run(
            ["git", "-C", str(CHECKOUT), "worktree", "add", "--detach", "--quiet", str(worktree),
             args.ref],
            check=True,
        )  # fmt: skip
        try:
            with RedisServer() as redis:
                for i in range(args.rounds):
                    order = ("ref", "tree") if i % 2 == 0 else ("tree", "ref")
                    done: dict[str, dict[str, float]] = {}
                    for name in order:
                        done[name] = side(worktree if name == "ref" else CHECKOUT, redis.url)
                    rounds.append(done)
                    print(f"round {i + 1}/{args.rounds}: {json.dumps(done)}", flush=True)
        finally:
            subprocess.run(
                ["git", "-C", str(CHECKOUT), "worktree", "remove", "--force", str(worktree)],
                check=False,
            )
    text = table(args.ref, rounds)
    print("\n" + text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "compare.md").write_text(text + "\n")
    (RESULTS / "compare.json").write_text(json.dumps({"ref": args.ref, "rounds": rounds}) + "\n")


if __name__ == "__main__":
    main()
