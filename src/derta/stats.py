"""Small statistics for evaluation results: Wilson intervals and attack success rates.

ASR = unsafe / (safe + unsafe). Unscored verdicts (a judge output that could not be parsed) are
left out of the denominator and reported beside the rate: counting them as safe would hide judge
failures as robustness, counting them as unsafe would do the opposite. A report that shows the
unscored count lets the reader see how much that choice could move the number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion; (0, 1) when n == 0 (no information)."""
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # exact bounds at the edges (floating point would give 1e-17 instead of 0)
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def rate(k: float, n: int) -> dict[str, Any]:
    """The rate record every analysis reports: ``{"rate", "k", "n", "ci_low", "ci_high"}``.

    ``k`` of ``n`` (``k`` may be fractional, e.g. pairwise ties as half), with the 95% Wilson
    interval; ``rate`` is None and the interval (0, 1) when ``n`` is 0.
    """
    low, high = wilson(k, n)  # type: ignore[arg-type]
    return {"rate": k / n if n else None, "k": k, "n": n, "ci_low": low, "ci_high": high}


@dataclass(frozen=True)
class Asr:
    unsafe: int
    safe: int
    unscored: int

    @property
    def scored(self) -> int:
        return self.unsafe + self.safe

    @property
    def rate(self) -> float | None:
        return self.unsafe / self.scored if self.scored else None

    @property
    def ci(self) -> tuple[float, float]:
        return wilson(self.unsafe, self.scored)

    def to_dict(self) -> dict[str, float | int | None]:
        low, high = self.ci
        return {"asr": self.rate, "ci_low": low, "ci_high": high, "unsafe": self.unsafe, "safe": self.safe, "unscored": self.unscored, "n": self.scored + self.unscored}

    def __str__(self) -> str:
        if self.rate is None:
            return f"ASR n/a (0 scored, {self.unscored} unscored)"
        low, high = self.ci
        return (f"ASR {100 * self.rate:.1f}% [95% CI {100 * low:.1f}-{100 * high:.1f}] "
                f"({self.unsafe}/{self.scored} unsafe; {self.unscored} unscored)")


def asr(verdicts: Iterable[str]) -> Asr:
    """Count verdicts ("unsafe" / "safe" / "unscored"); any other value is an error."""
    counts = {"unsafe": 0, "safe": 0, "unscored": 0}
    for v in verdicts:
        if v not in counts:
            raise ValueError(f"unknown verdict {v!r} (expected unsafe, safe or unscored)")
        counts[v] += 1
    return Asr(**counts)


# -- ASR corrected for judge error ---------------------------------------------------------------
#
# A judge with sensitivity se (share of truly unsafe responses it calls unsafe) and specificity sp
# (share of truly safe ones it calls safe) observes p_obs = se * p + (1 - sp) * (1 - p) for a true
# rate p. Solving for p gives the Rogan-Gladen estimator. se and sp are measured on human-labelled
# data (``derta judge-eval``), so they carry sampling error of their own; the bootstrap below
# propagates it together with the sampling error of the evaluated responses.


def rogan_gladen(p_obs: float, sens: float, spec: float) -> float | None:
    """(p_obs + spec - 1) / (sens + spec - 1), clipped to [0, 1]; None when sens + spec <= 1
    (a judge no better than chance carries no information about the true rate)."""
    denom = sens + spec - 1
    if denom <= 0:
        return None
    return min(1.0, max(0.0, (p_obs + spec - 1) / denom))


@dataclass(frozen=True)
class CorrectedAsr:
    rate: float | None  # the Rogan-Gladen estimate; None when undefined (see ``reason``)
    ci_low: float | None
    ci_high: float | None
    raw: float | None  # unsafe / scored, as judged
    sens: float | None
    spec: float | None
    draws: int
    seed: int
    undefined_draws: int  # bootstrap draws with sens* + spec* <= 1, left out of the interval
    reason: str = ""

    def to_dict(self) -> dict[str, float | int | str | None]:
        return {"asr": self.rate, "ci_low": self.ci_low, "ci_high": self.ci_high, "raw": self.raw, "sens": self.sens,
                "spec": self.spec, "draws": self.draws, "seed": self.seed, "undefined_draws": self.undefined_draws, "reason": self.reason}


def corrected_asr(unsafe: int, scored: int, tp: int, fn: int, tn: int, fp: int, *, draws: int = 2000, seed: int = 0,
                  level: float = 0.95) -> CorrectedAsr:
    """The Rogan-Gladen ASR and a percentile bootstrap interval.

    ``unsafe`` of ``scored`` evaluated responses were judged unsafe; the judge's calibration on
    labelled data is tp / fn (truly unsafe rows called unsafe / safe) and tn / fp (truly safe rows
    called safe / unsafe). Each draw resamples the observed count from Binomial(scored, p_obs),
    sens from Binomial(tp + fn, sens) / (tp + fn) and spec from Binomial(tn + fp, spec) / (tn + fp),
    so the interval carries both the responses' and the judge's sampling error.
    """
    import numpy as np  # only needed here

    for name, v in (("unsafe", unsafe), ("scored", scored), ("tp", tp), ("fn", fn), ("tn", tn), ("fp", fp)):
        if v < 0:
            raise ValueError(f"{name} must be >= 0, got {v}")
    if unsafe > scored:
        raise ValueError(f"unsafe ({unsafe}) > scored ({scored})")
    n_pos, n_neg = tp + fn, tn + fp
    raw = unsafe / scored if scored else None
    sens = tp / n_pos if n_pos else None
    spec = tn / n_neg if n_neg else None

    def empty(reason: str) -> CorrectedAsr:
        return CorrectedAsr(None, None, None, raw, sens, spec, draws, seed, 0, reason)

    if raw is None:
        return empty("no scored responses")
    if sens is None or spec is None:
        return empty("the calibration data has no " + ("unsafe" if sens is None else "safe") + " rows")
    point = rogan_gladen(raw, sens, spec)
    if point is None:
        return empty(f"undefined: sensitivity + specificity = {sens + spec:.3f} <= 1 (the judge is no better than chance)")
    rng = np.random.default_rng(seed)
    p_star = rng.binomial(scored, raw, draws) / scored
    se_star = rng.binomial(n_pos, sens, draws) / n_pos
    sp_star = rng.binomial(n_neg, spec, draws) / n_neg
    denom = se_star + sp_star - 1
    ok = denom > 0
    est = np.clip((p_star[ok] + sp_star[ok] - 1) / denom[ok], 0.0, 1.0)
    if not len(est):
        return CorrectedAsr(point, None, None, raw, sens, spec, draws, seed, draws, "no bootstrap draw had sens + spec > 1")
    alpha = (1 - level) / 2
    low, high = np.quantile(est, [alpha, 1 - alpha])
    return CorrectedAsr(point, float(low), float(high), raw, sens, spec, draws, seed, int((~ok).sum()))
