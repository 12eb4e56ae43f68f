"""Analyses over judged rows -> the summary dict: the analyse stage is :mod:`derta.analysis.summary`
(the canonical ``summary.json`` layout is described there). The names stay importable from here.
"""

from __future__ import annotations

from ..analysis.summary import (DEGENERATE_EXAMPLE_CHARS, EXAMPLE_CHARS, HELPFULNESS_ORDER, OVER_REFUSAL_PRIMARY, SUMMARY_FORMAT, agreement,
                                analyse, apply_calibration, asr, asr_table, degenerate_summary, generations, halting_summary,
                                helpfulness_summary, over_refusal_summary, pick_examples, positions_summary, prefill_curve, rate)

__all__ = [
    "DEGENERATE_EXAMPLE_CHARS", "EXAMPLE_CHARS", "HELPFULNESS_ORDER", "OVER_REFUSAL_PRIMARY", "SUMMARY_FORMAT", "agreement", "analyse",
    "apply_calibration", "asr", "asr_table", "degenerate_summary", "generations", "halting_summary", "helpfulness_summary",
    "over_refusal_summary", "pick_examples", "positions_summary", "prefill_curve", "rate",
]
