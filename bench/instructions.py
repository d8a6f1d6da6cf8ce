"""Instructions per event, counted by callgrind: a figure the machine's load does not move.

Runs ``publish_failed`` N1 and N2 times in a process under ``valgrind --tool=callgrind`` and
divides the difference in instructions by N2 - N1, so that start-up cancels; with ``--ref``, does
the same for an earlier commit (in a temporary git worktree) beside the working tree. For each
side: instructions per event in all, then by shared object (libpython, orjson, libc, ...).
``--caller-only`` points the notifier at a closed port, so that nothing is sent and only the
caller's thread works (its thread reconnects, which costs the same for N1 and N2).

    python -m bench.instructions [--ref COMMIT] [--caller-only]

Needs valgrind (Debian: apt-get install valgrind). Each run takes a minute or two.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from notifier.testing import RedisServer, free_port

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent
COUNTS = (10_000, 30_000)

SIDE = """
import sys
import notifier as package
from notifier import Notifier, NotifierConfig
from notifier.config import QueueConfig, RedisConfig
url, n, send = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "send"
event = {"step": "review", "attempt": 3, "note": "réexamen demandé"}
error = TimeoutError("review service did not answer")
notifier = Notifier(NotifierConfig(redis=RedisConfig(url=url), queue=QueueConfig(maxsize=n + 10)))
notifier.start()
for i in range(n):
    notifier.publish_failed("tp", error, **event, i=i)
if send:
    notifier.flush(300)
notifier.close(timeout=0)
print(package.__file__)
"""


def count(tree: Path, url: str, events: int, out: Path, send: bool) -> collections.Counter[str]:
    """Instructions by shared object for one run."""
    # -P: the current directory (this checkout) must not come before the side's PYTHONPATH.
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
         sys.executable, "-P", "-c", SIDE, url, str(events), "send" if send else "keep"],
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )  # fmt: skip
    imported = Path(done.stdout.strip().splitlines()[-1]).resolve()
    if not imported.is_relative_to(tree.resolve()):
        raise SystemExit(f"{tree}: imported notifier from {imported}, not from the tree")
    report = subprocess.run(
        ["callgrind_annotate", "--threshold=100", str(out)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    by_object: collections.Counter[str] = collections.Counter()
    for line in report.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(.*)", line)
        if m and "PROGRAM TOTALS" not in line:
            found = re.search(r"\[([^\]]*)\]\s*$", m.group(2))
            name = found.group(1).rsplit("/", 1)[-1] if found else "(inlined, no object)"
            by_object[name] += int(m.group(1).replace(",", ""))
    return by_object


def per_event(tree: Path, url: str, tmp: Path, label: str, send: bool) -> None:
    low, high = (count(tree, url, n, tmp / f"{label}.{n}.out", send) for n in COUNTS)
    spread = COUNTS[1] - COUNTS[0]
    diff = {k: (high[k] - low[k]) / spread for k in set(low) | set(high)}
    total = sum(diff.values())
    print(f"{label}: {total:,.0f} instructions per event")
    for name, value in sorted(diff.items(), key=lambda kv: -kv[1])[:6]:
        print(f"  {value:9,.0f}  {value / total:6.1%}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ref", help="an earlier commit to count beside the working tree")
    parser.add_argument("--caller-only", action="store_true")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as name, RedisServer() as redis:
        tmp = Path(name)
        url = f"redis://127.0.0.1:{free_port()}" if args.caller_only else redis.url
        sides = [("tree", CHECKOUT)]
        if args.ref:
            worktree = tmp / "ref"
            subprocess.run(
                ["git", "-C", str(CHECKOUT), "worktree", "add", "--detach", "--quiet",
                 str(worktree), args.ref],
                check=True,
            )  # fmt: skip
            sides.insert(0, (args.ref, worktree))
        try:
            for label, tree in sides:
                per_event(tree, url, tmp, label, not args.caller_only)
        finally:
            if args.ref:
                subprocess.run(
                    ["git", "-C", str(CHECKOUT), "worktree", "remove", "--force", str(tmp / "ref")],
                    check=False,
                )


if __name__ == "__main__":
    main()
