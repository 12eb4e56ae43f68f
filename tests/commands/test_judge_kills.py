"""`derta judge` killed with SIGKILL while judging, while writing its output and before removing its
log, then rerun: the output equals an uninterrupted run's byte for byte, no temp file or log is
left, and a final file present at a kill is never a partial one."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from derta.commands.judge import log_path

LABELS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "judge-labels" / "harmbench_val.jsonl"
JUDGES = ("--judge", "offline", "--judge", "keyword", "--batch-size", "8")


@pytest.fixture(scope="module")
def responses() -> list[dict]:
    """Real model responses to harmful requests, human-labelled (HarmBench's classifier validation set)."""
    if not LABELS.is_file():
        pytest.skip(f"judge-labels data not found at {LABELS}")
    return [json.loads(line) for line in LABELS.read_text(encoding="utf-8").splitlines() if line.strip()]


def argv(src: Path, out: Path) -> list[object]:
    return ["judge", src, "--out", out, *JUDGES]


def leftovers(out: Path) -> list[str]:
    """What a finished `derta judge --out OUT` must not leave beside OUT: temp files, its log and sidecars."""
    log = log_path(out)
    return sorted(p.name for p in out.parent.iterdir() if p.name.endswith(".tmp") or p.name.startswith(log.name))


def on_disk(killer, out: Path, reference: bytes) -> tuple[str, list[str]]:
    """The state at a kill, and what is wrong with it (a final file that is not the whole output)."""
    parts = [killer.describe(log_path(out)).replace(log_path(out).name, "log")]
    bad = []
    if out.exists():
        data = out.read_bytes()
        whole = data == reference
        parts.append(f"out: {len(data.splitlines())} rows" + ("" if whole else " PARTIAL"))
        if not whole:
            bad.append(f"{out} was in place at the kill but is not the whole output")
    else:
        parts.append("out: -")
    tmp = [n for n in leftovers(out) if n.endswith(".tmp")]
    if tmp:
        parts.append(f"{len(tmp)} .tmp")
    return ", ".join(parts), bad


def kill_point(killer, out: Path, kind: str, n_verdicts: int, rng: random.Random, span: float) -> tuple[str, object]:
    log = log_path(out)
    if kind == "judging":  # right after the n-th verdict was appended to the log
        n = rng.randint(1, n_verdicts - 1)
        return f"after log line {n}", killer.after_lines(log, n)
    if kind == "writing":  # the output's atomic write in flight
        return "as the output's .tmp appears", lambda: any(out.parent.glob(f".{out.name}.*.tmp"))
    if kind == "cleanup":  # the output in place, the log not yet removed
        return "as the output appears", out.exists
    delay = rng.uniform(0.0, span)
    return f"{delay:.2f} s after the log appeared", killer.after_delay(log.exists, delay)


def trials(killer, tmp_path: Path, rows: list[dict], kinds: list[str], seed: int) -> tuple[list, list[str]]:
    rng = random.Random(seed)
    src = tmp_path / "responses.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    ref_out = tmp_path / "reference" / "judged.jsonl"
    ref_out.parent.mkdir()
    first: dict[str, float] = {}

    def note_log() -> bool:
        if "t" not in first and log_path(ref_out).exists():
            first["t"] = time.monotonic()
        return False

    printed = tmp_path / "reference" / "stdout.txt"
    killed, _, rc = killer.kill_when(argv(src, ref_out), note_log, stdout=printed)
    assert not killed and rc == 0
    span = time.monotonic() - first["t"]
    reference, ref_stdout = ref_out.read_bytes(), printed.read_text()
    assert len(reference.splitlines()) == len(rows) and leftovers(ref_out) == [] and "offline: " in ref_stdout
    table, failures = [], []
    for i, kind in enumerate(kinds):
        out = tmp_path / f"trial-{i}" / "judged.jsonl"
        out.parent.mkdir()
        when, ready = kill_point(killer, out, kind, 2 * len(rows), rng, span)
        killed, seconds, _ = killer.kill_when(argv(src, out), ready)
        when = f"{when} ({seconds:.1f} s)" if killed else f"{when}: run had ended ({seconds:.1f} s)"
        state, errs = on_disk(killer, out, reference)
        p = killer.run(*argv(src, out))
        if p.returncode:
            errs.append(f"resume exited {p.returncode}: {p.stderr[-1500:]}")
        else:
            if out.read_bytes() != reference:
                errs.append("the output differs from the uninterrupted run's")
            if p.stdout.replace(str(out), "OUT") != ref_stdout.replace(str(ref_out), "OUT"):
                errs.append(f"printed results differ: {p.stdout!r}")
            if leftovers(out):
                errs.append(f"left behind: {leftovers(out)}")
        table.append(killer.Trial(i, when, state, p.returncode, not errs))
        failures += [f"trial {i} ({when}; on disk: {state}): {e}" for e in errs]
    print("\n" + killer.table(f"derta judge ({len(rows)} responses, offline + keyword): kill -9, then rerun "
                                f"({len(kinds)} trials, seed {seed})", table))
    return table, failures


def test_kill_while_judging_then_resume(tmp_path, killer, responses):
    table, failures = trials(killer, tmp_path, responses[:100], ["judging"], seed=2)
    assert not failures, "\n".join(failures)
    assert "run had ended" not in table[0].kill and table[0].equal


@pytest.mark.slow
def test_kill_at_random_points_then_resume(tmp_path, killer, responses):
    kinds = ["judging", "random", "writing", "judging", "cleanup", "random", "judging", "writing", "random", "cleanup"]
    table, failures = trials(killer, tmp_path, responses, kinds, seed=9)
    assert not failures, "\n".join(failures)
    assert len(table) == len(kinds) and all(t.equal for t in table)


def test_a_kill_while_a_torn_line_is_cut_keeps_the_whole_lines(tmp_path, killer):
    """A log left by a crash with a torn last line: the rerun cuts it. Killed while it does, the
    log must still hold every whole line (it may only ever shrink to them, never below)."""
    src = tmp_path / "responses.jsonl"
    src.write_text("".join(json.dumps({"id": f"r{i}", "question": "How?", "response": "Sorry, I cannot help."}) + "\n" for i in range(20)))
    out = tmp_path / "judged.jsonl"
    line = {"row": "", "judge_key": "k", "verdict": "safe", "judge": "offline", "explanation": "x" * 900, "judge_metadata": {}}
    n = 30000
    with log_path(out).open("w") as f:
        for i in range(n):
            f.write(json.dumps({**line, "row": f"id:old{i}:0"}) + "\n")
        f.write(json.dumps(line)[:40])  # the torn line
    whole = log_path(out).stat().st_size - 40
    shrank, seconds, rc = killer.kill_when(argv(src, out), lambda: log_path(out).exists() and log_path(out).stat().st_size < whole)
    left = killer.lines(log_path(out))
    assert not shrank, f"killed {seconds:.1f} s in, while the log was below its whole lines: {left} of {n} lines left"
    assert rc == 0
