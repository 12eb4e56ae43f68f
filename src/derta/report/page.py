"""What every HTML page derta writes shares: a page that makes no external request.

The Content-Security-Policy allows only inline styles and ``data:`` images, so a report opened from
disk (or mailed) can neither load nor send anything, and plots travel inside the page.
"""

from __future__ import annotations

import base64
from pathlib import Path

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSP_META = f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'


def data_uri(path: str | Path) -> str:
    """A PNG file as a ``data:`` URI (the page must not reference files)."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
