"""The deception study's report (``deception.md``, ``deception.html``, ``plots/``): written by
:mod:`derta.report.deception`, which reads the summary and classification rows the study writes.
The names stay importable from here.
"""

from __future__ import annotations

from ..report.deception import (DEFINITIONS, HEADERS, LABELS, RATE_COLUMNS, curves, fmt_rate, make_plots, rebuild, section_html,
                                section_markdown, write_report)

__all__ = ["DEFINITIONS", "HEADERS", "LABELS", "RATE_COLUMNS", "curves", "fmt_rate", "make_plots", "rebuild", "section_html",
           "section_markdown", "write_report"]
