"""Side-by-side measurement: interleaved rounds (A, B, C, A, B, C, ...) and their summaries.

Running the arms one after the other within each round, instead of all rounds of A and then all
of B, spreads slow phases of a shared machine (another process, thermal limits) over every arm,
so a ratio compares arms measured under the same conditions.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

NOT_AVAILABLE = "not available"


class Unavailable(Exception):
    """An arm that cannot run here (a missing dependency or setting); the message says why."""


def summary(values: list[float], **extra: Any) -> dict[str, Any]:
    """``{median, min, max, rounds}`` of per-round values (plus ``extra`` keys)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": len(values), **extra}


def unavailable(reason: str) -> dict[str, Any]:
    return {"median": NOT_AVAILABLE, "min": NOT_AVAILABLE, "max": NOT_AVAILABLE, "rounds": 0, "reason": reason}


def is_valid_entry(entry: dict[str, Any]) -> bool:
    """A measured entry (positive finite median/min/max) or a "not available" one with a reason."""
    keys = ("median", "min", "max")
    if all(entry.get(k) == NOT_AVAILABLE for k in keys):
        return bool(entry.get("reason"))
    return all(isinstance(entry.get(k), (int, float)) and math.isfinite(entry[k]) and entry[k] > 0 for k in keys)


def interleaved(arms: dict[str, Callable[[bool], float]], rounds: int, warmup: bool = True) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Run every arm once per round, in the same order; each arm's per-round values, and why an
    arm could not run.

    An arm is called with ``warm`` (True in the untimed first round, when ``warmup``: it may build
    itself and run a little, for lazy initialisation and first allocations) and returns the figure
    it measured (a rate, higher is better). An arm that raises :class:`Unavailable` or
    fails is dropped from later rounds, its message kept.
    """
    values: dict[str, list[float]] = {name: [] for name in arms}
    errors: dict[str, str] = {}
    for r in range(rounds + int(warmup)):
        for name, run in arms.items():
            if name in errors:
                continue
            try:
                v = run(warmup and r == 0)
            except Unavailable as e:
                errors[name] = str(e)
                continue
            except Exception as e:  # an arm that breaks is reported; the others still run
                errors[name] = f"{type(e).__name__}: {e}"
                continue
            if r >= int(warmup):
                values[name].append(v)
    return values, errors


def ratio(values: dict[str, list[float]], errors: dict[str, str], a: str, b: str, **extra: Any) -> dict[str, Any]:
    """Per-round ratio ``a / b`` of two interleaved arms (both measured in the same round)."""
    for arm in (a, b):
        if arm in errors:
            return unavailable(f"{arm}: {errors[arm]}")
        if not values.get(arm):
            return unavailable(f"{arm} was not measured")
    return summary([x / y for x, y in zip(values[a], values[b])], **extra)


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(threads: int) -> dict[str, Any]:
    import torch

    from derta.io import environment

    env = environment()
    return {
        "cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": threads,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": env.get("torch"), "transformers": env.get("transformers"), "trl": env.get("trl"),
        "python": env.get("python"), "platform": env.get("platform"),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
