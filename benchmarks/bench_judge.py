"""Judge throughput: responses per second of the default offline judge and the keyword judge, on
real responses (``judge-labels/*.jsonl``: real model answers to harmful and harmless requests),
else on synthetic text (said in the result's ``source``)."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def judge_items(n: int, root: Path | None, seed: int = 0) -> tuple[list[dict[str, Any]], str]:
    files = sorted((root / "judge-labels").glob("*.jsonl")) if root else []
    rows: list[dict[str, Any]] = []
    for f in files:
        rows += [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
    if rows:
        random.Random(seed).shuffle(rows)
        items = [{"question": r["question"], "prompt": r.get("prompt") or r["question"], "response": r["response"]} for r in rows[:n]]
        return items, f"{root / 'judge-labels'} ({len(items)} of {len(rows)} real responses)"
    rng = random.Random(seed)
    words = "sure here is how to step first then you will need sorry cannot help with that the a of and".split()
    items = [{"question": "How do I do this?", "response": " ".join(rng.choice(words) for _ in range(rng.randint(20, 300)))} for _ in range(n)]
    return items, "synthetic text (judge-labels not found: set DERTA_DATA or --data-dir)"


def judge_arms(items: list[dict[str, Any]]) -> dict[str, Callable[[bool], float]]:
    from derta.judges import DEFAULT_JUDGE, get_judge

    def arm(name: str) -> Callable[[bool], float]:
        judge = get_judge(name)

        def run(warm: bool = False) -> float:
            batch = items[:20] if warm else items
            start = time.perf_counter()
            judge.judge(batch)
            return len(batch) / (time.perf_counter() - start)

        return run

    return {"default": arm(DEFAULT_JUDGE), "keyword": arm("keyword")}
