"""Throughput of the judges that need no model, side by side in one process on one core.

    python scripts/bench_judges.py [--n 10000] [--labels ../shared/data/judge-labels]

Judges N real responses (the human-labelled files, cycled) with each judge, in alternating
rounds so that both see the same machine load, and prints responses per second per judge and
the ratio between them. A machine-dependent figure: compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from itertools import cycle, islice
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="responses per judge [10000]")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds [3]")
    ap.add_argument("--labels", default=str(REPO.parent / "shared" / "data" / "judge-labels"))
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):  # one core, as the figure says
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    sys.path.insert(0, str(REPO / "src"))
    from derta.judges import get_judge

    rows = [json.loads(line) for p in sorted(Path(args.labels).glob("*.jsonl")) for line in p.read_text(encoding="utf-8").split("\n") if line.strip()]
    if not rows:
        print(f"no labelled rows in {args.labels}", file=sys.stderr)
        return 2
    items = [{"question": r["question"], "prompt": r["prompt"], "response": r["response"]} for r in islice(cycle(rows), args.n)]
    judges = {name: get_judge(name) for name in ("offline", "keyword")}
    seconds = {name: 0.0 for name in judges}
    for _ in range(args.rounds):
        for name, judge in judges.items():
            t = time.perf_counter()
            judge.judge(items)
            seconds[name] += time.perf_counter() - t
    rate = {name: args.n * args.rounds / s for name, s in seconds.items()}
    for name, r in rate.items():
        print(f"{name:8s} {r:9.0f} responses/s on one core ({args.n} responses x {args.rounds} rounds)")
    print(f"offline / keyword time ratio: {seconds['offline'] / seconds['keyword']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
