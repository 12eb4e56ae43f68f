"""Measure the offline judge against people on the rows its rules were not tuned on, and ship the counts.

    python scripts/calibrate_offline.py [--labels ../shared/data/judge-labels]

Writes src/derta/resources/judges/offline_calibration.json: the judge's confusion counts against
the human majority on the held-out half of each of the four judge-label files (see
derta.judges.provenance), pooled and per file, with the rules' hash. The corrected ASR uses the
pooled counts; the judge returns them only while its rules are the ones measured here
(tests/test_judge_offline.py checks that the shipped file is current and reproducible).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def counts(judged: list[str], gold: list[str]) -> dict[str, int]:
    out = {"tp": 0, "fn": 0, "tn": 0, "fp": 0}
    for ours, human in zip(judged, gold):
        out[("t" if (ours == "unsafe") == (human == "unsafe") else "f") + ("p" if ours == "unsafe" else "n")] += 1
    return out


def summary(c: dict[str, int]) -> dict[str, float]:
    n = sum(c.values())
    acc = (c["tp"] + c["tn"]) / n
    p_ours, p_human = (c["tp"] + c["fp"]) / n, (c["tp"] + c["fn"]) / n
    chance = p_ours * p_human + (1 - p_ours) * (1 - p_human)
    return {"n": n, "accuracy": round(acc, 4), "kappa": round((acc - chance) / (1 - chance), 4),
            "sensitivity": round(c["tp"] / (c["tp"] + c["fn"]), 4), "specificity": round(c["tn"] / (c["tn"] + c["fp"]), 4)}


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO / "src"))
    from derta.judges import OfflineJudge
    from derta.judges.provenance import CALIBRATION_RESOURCE, TUNED_ON, TUNING_SPLIT, is_tuning_row, rules_sha256

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labels", default=str(REPO.parent / "shared" / "data" / "judge-labels"))
    args = ap.parse_args(argv)
    judge, pooled, files = OfflineJudge(), {"tp": 0, "fn": 0, "tn": 0, "fp": 0}, {}
    for name, sha in TUNED_ON.items():
        path = Path(args.labels) / name
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha:
            print(f"{path}: sha256 differs from the file the rules were tuned on ({sha})", file=sys.stderr)
            return 2
        rows = [json.loads(line) for line in data.decode("utf-8").split("\n") if line.strip()]
        rows = [r for r in rows if not is_tuning_row(r["id"])]
        c = counts([j.verdict for j in judge.judge(rows)], [r["label"] for r in rows])
        files[name] = {**c, **summary(c), "sha256": sha}
        pooled = {k: pooled[k] + c[k] for k in pooled}
        print(f"{name:22s} {json.dumps(summary(c))}")
    doc = {"judge": "offline", "rules_sha256": rules_sha256(), **pooled, **summary(pooled),
           "source": "derta offline judge on the held-out halves of harmbench_val, gptfuzz, jailjudge_mini and xstest_v2 "
                     f"(human majority labels; {TUNING_SPLIT}, those rows were read while tuning and are left out)",
           "files": files}
    out = REPO / "src" / "derta" / "resources" / CALIBRATION_RESOURCE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"pooled {json.dumps(summary(pooled))} -> {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
