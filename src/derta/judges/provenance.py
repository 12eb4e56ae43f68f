"""What the offline judge's verdicts depend on, what its rules were tuned on, and how well they agree with people.

- ``rules_sha256()``: a hash of the source of every module whose code decides a verdict. It is in
  the judge's identity, so changing a rule re-judges cached verdicts.
- ``TUNED_ON`` / ``is_tuning_row``: the rules were tuned by reading errors on HALF of the rows of
  four human-labelled files (rows whose id hashes to an even number); the other half was never
  read, and is what agreement is reported on (``derta judge-eval`` does this by itself).
- ``shipped_calibration()``: the judge's counts against the human labels on those held-out halves
  (``resources/judges/offline_calibration.json``, written by ``scripts/calibrate_offline.py``),
  used for the judge-error-corrected ASR. It is returned only while it was measured on the rules
  as they are now: a stale calibration is None, never silently reused.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

#: The four files of ../shared/data/judge-labels (name -> sha256) whose tuning halves were read.
TUNED_ON: dict[str, str] = {
    "harmbench_val.jsonl": "cc4915356e87f94ae47bdf6b790631473786a87c6c01f47ea41c352ec5d9499c",
    "gptfuzz.jsonl": "133c1f60ab6388dbb6c1ed4305d7197e320048ff644cb17ae7a5c59ce31301eb",
    "jailjudge_mini.jsonl": "254ee429b21933713c02ea6f96c1e9053321dde6cc81e57b66f272c8d464164c",
    "xstest_v2.jsonl": "e59c390036e16d919e5ca7a4c8eb78decc6e68da89b34c143bc04f1522803649",
}
TUNING_SPLIT = "a row is in the tuning half when int(sha256(row id)[:8], 16) is even"
CALIBRATION_RESOURCE = "judges/offline_calibration.json"
_RULE_MODULES = ("judges/offline.py", "judges/text.py", "judges/personas.py", "judges/harmless.py", "refusal.py")


def is_tuning_row(row_id: str) -> bool:
    """True for the rows whose errors were read while the rules were written (see TUNING_SPLIT)."""
    return int(hashlib.sha256(str(row_id).encode("utf-8")).hexdigest()[:8], 16) % 2 == 0


@lru_cache(maxsize=1)
def rules_sha256() -> str:
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for rel in _RULE_MODULES:
        h.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def shipped_calibration() -> dict[str, Any] | None:
    """The shipped held-out counts (tp, fn, tn, fp, ...) when they were measured on the current rules."""
    try:
        text = resources.files("derta").joinpath("resources", CALIBRATION_RESOURCE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    calib = json.loads(text)
    return calib if calib.get("rules_sha256") == rules_sha256() else None
