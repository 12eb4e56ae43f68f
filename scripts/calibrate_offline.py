"""Measure the offline judge against people on the rows its rules were not tuned on, and ship the counts.

    python scripts/calibrate_offline.py [--labels ../shared/data/judge-labels]

Runs the same measurement as ``derta judge-eval`` (held-out rows of the four judge-label files,
see derta.judges.provenance) and writes its calibration, pooled and per file, with the rules'
hash, to src/derta/resources/judges/offline_calibration.json. The corrected ASR uses the pooled
counts; the judge returns them only while its rules are the ones measured here
(tests/judges/test_judge_offline.py checks that the shipped file is current and reproducible).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO / "src"))
    from derta.judges import OfflineJudge
    from derta.judges.evaluate import calibration_document, evaluate, load_labelled
    from derta.judges.provenance import CALIBRATION_RESOURCE, TUNED_ON, TUNING_SPLIT, rules_sha256

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labels", default=str(REPO.parent / "shared" / "data" / "judge-labels"))
    args = ap.parse_args(argv)
    files = [load_labelled(Path(args.labels) / name) for name in TUNED_ON]
    for f, sha in zip(files, TUNED_ON.values()):
        if f.sha256 != sha:
            print(f"{f.path}: sha256 differs from the file the rules were tuned on ({sha})", file=sys.stderr)
            return 2
    results = evaluate([OfflineJudge()], files, references=False, progress=False, draws=200)
    (calib,) = calibration_document(results)["judges"].values()
    calib.update(rules_sha256=rules_sha256(),
                 source="derta offline judge on the held-out rows of " + ", ".join(f.name for f in files)
                        + f" (human majority labels; {TUNING_SPLIT}, those rows were read while tuning and are left out)")
    out = REPO / "src" / "derta" / "resources" / CALIBRATION_RESOURCE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(calib, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for name, c in calib["files"].items():
        print(f"{name:22s} accuracy {c['accuracy']:.3f}  kappa {c['kappa']:.3f}")
    print(f"pooled: accuracy {calib['accuracy']:.3f}, kappa {calib['kappa']:.3f}, sensitivity {calib['sensitivity']:.3f}, "
          f"specificity {calib['specificity']:.3f} -> {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
