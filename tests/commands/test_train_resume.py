"""`derta train` into an output_dir that already holds a run: a changed config is refused, a finished
run is left as it is, a torn checkpoint is skipped, and kill -9 at random points always resumes to
the weights of an uninterrupted run, bit for bit."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from derta.cli import main
from derta.io import read_jsonl, write_jsonl

MAX_STEPS = 4


@pytest.fixture()
def run(tmp_path, world, tiny_model, bpe_tokenizer, one_torch_thread):
    """A tiny model folder, a DeRTa data file and a config writer: ``run.config(**changes)``."""
    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    bpe_tokenizer.save_pretrained(model_dir)
    triples = write_jsonl(tmp_path / "triples.jsonl", [t.to_dict() for t in world.triples[:8]])
    data = tmp_path / "data.jsonl"
    assert main(["data", "build", "--recipe", "derta", "--triples", str(triples), "--out", str(data)]) == 0

    class Run:
        out = tmp_path / "run"

        def __init__(self):
            self.model_dir, self.data = model_dir, data

        def config(self, name: str = "cfg.yaml", **changes) -> Path:
            cfg = {"model": str(model_dir), "data": str(data), "output_dir": str(self.out), "batch_size": 2, "total_batch_size": 4,
                   "learning_rate": 1e-3, "warmup_ratio": 0.0, "save_steps": 1, "save_total_limit": 2, "logging_steps": 1,
                   "progress": False, "max_length": 128, "max_steps": MAX_STEPS, **changes}
            path = tmp_path / name
            path.write_text(yaml.safe_dump(cfg))
            return path

    return Run()


def weights(final: Path) -> dict[str, torch.Tensor]:
    return load_file(str(final / "model.safetensors"))


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def train(cfg: Path, *extra: str) -> int:
    return main(["train", "--config", str(cfg), *extra])


def test_another_config_in_a_finished_dir_is_refused_and_fresh_trains_it(run, tmp_path, capsys):
    assert train(run.config()) == 0
    final = run.out / "final"
    old_weights, old_record = weights(final), (final / "derta_run.json").read_bytes()
    other = write_jsonl(tmp_path / "other.jsonl", list(reversed(read_jsonl(run.data)))[:6])
    cfg = run.config("other.yaml", learning_rate=2e-3, data=str(other))
    capsys.readouterr()
    assert train(cfg) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("derta train: error:")  # refused before anything was loaded
    assert "learning_rate 0.001 → 0.002" in err and "data sha256" in err and "--fresh" in err and "output_dir" in err
    # nothing was trained, nothing was rewritten: the record still describes the weights next to it
    assert same_weights(weights(final), old_weights) and (final / "derta_run.json").read_bytes() == old_record
    # --fresh trains the new run from the start, and the record says so
    assert train(cfg, "--fresh") == 0
    record = json.loads((final / "derta_run.json").read_text())
    assert record["config"]["learning_rate"] == 2e-3 and record["resumed_from"] is None and record["examples"] == 6
    assert not same_weights(weights(final), old_weights)


def test_a_changed_model_is_refused(run, tmp_path, tiny_model, capsys):
    assert train(run.config()) == 0
    with torch.no_grad():
        tiny_model.lm_head.weight.mul_(1.5)  # same name, same config, other weights
    tiny_model.save_pretrained(run.model_dir)
    assert train(run.config()) == 2
    assert "model sha256" in capsys.readouterr().err


def test_the_same_config_in_a_finished_dir_trains_nothing(run, capsys, caplog, monkeypatch):
    from derta.train.trainer import DeRTaTrainer

    cfg = run.config()
    assert train(cfg) == 0
    final = run.out / "final"
    record, state = (final / "derta_run.json").read_bytes(), weights(final)
    monkeypatch.setattr(DeRTaTrainer, "train", lambda *a, **k: pytest.fail("a finished run was trained again"))
    capsys.readouterr()
    assert train(cfg, "--progress", "true", "--logging-steps", "7") == 0  # how a run reports is not what it is
    assert f"final model: {final}" in capsys.readouterr().out
    assert "finished" in caplog.text and "nothing to train" in caplog.text
    assert (final / "derta_run.json").read_bytes() == record and same_weights(weights(final), state)


def test_an_interrupted_run_resumes_only_with_its_own_config(run, capsys, monkeypatch):
    """Stopped after step 2 (Ctrl-C), then rerun: another max_steps is refused, the same config
    runs only the steps left and ends with the weights of an uninterrupted run."""
    from derta.train.trainer import DeRTaTrainer

    assert train(run.config("ref.yaml", output_dir=str(run.out.with_name("ref")))) == 0
    reference = weights(run.out.with_name("ref") / "final")
    original, steps = DeRTaTrainer.training_step, []

    def stop_after_two_steps(self, *args, **kwargs):
        if self.state.global_step == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DeRTaTrainer, "training_step", stop_after_two_steps)
    assert train(run.config()) == 130
    assert not (run.out / "final").exists() and (run.out / "checkpoints" / "checkpoint-2").is_dir()
    def counting_step(self, *args, **kwargs):
        steps.append(self.state.global_step)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DeRTaTrainer, "training_step", counting_step)
    capsys.readouterr()
    assert train(run.config("longer.yaml", max_steps=MAX_STEPS + 1)) == 2
    assert f"max_steps {MAX_STEPS} → {MAX_STEPS + 1}" in capsys.readouterr().err
    steps.clear()
    assert train(run.config()) == 0
    assert steps == [2, 2, 3, 3]  # two optimiser steps left, two micro-batches each
    record = json.loads((run.out / "final" / "derta_run.json").read_text())
    assert record["resumed_from"].endswith("checkpoint-2")
    assert same_weights(weights(run.out / "final"), reference)


def test_a_run_without_a_fingerprint_is_not_resumed(run, capsys):
    assert train(run.config()) == 0
    (run.out / "derta_run.json").unlink()
    record = json.loads((run.out / "final" / "derta_run.json").read_text())
    del record["fingerprint"]
    (run.out / "final" / "derta_run.json").write_text(json.dumps(record))
    assert train(run.config()) == 2
    assert "without a fingerprint" in capsys.readouterr().err


def _tear_trainer_state(ckpt: Path) -> None:
    (ckpt / "trainer_state.json").unlink()


def _cut_weights(ckpt: Path) -> None:
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])


def _cut_optimizer(ckpt: Path) -> None:
    data = (ckpt / "optimizer.pt").read_bytes()
    (ckpt / "optimizer.pt").write_bytes(data[:-100])


def _half_deleted(ckpt: Path) -> None:
    (ckpt / "rng_state.pth").unlink()


@pytest.mark.parametrize("tear", [_tear_trainer_state, _cut_weights, _cut_optimizer, _half_deleted], ids=lambda f: f.__name__.strip("_"))
def test_a_torn_checkpoint_is_skipped_with_a_warning(run, caplog, tear):
    """The newest checkpoint lost a file (a kill during its save): the run resumes from the one
    before, names the torn one, and ends with the weights of the uninterrupted run."""
    from derta.train.checkpoints import incomplete_reason

    cfg = run.config(save_total_limit=3)
    assert train(cfg) == 0
    reference = weights(run.out / "final")
    last = run.out / "checkpoints" / f"checkpoint-{MAX_STEPS}"
    tear(last)
    assert incomplete_reason(last) is not None and incomplete_reason(last.with_name(f"checkpoint-{MAX_STEPS - 1}")) is None
    os.rename(run.out / "final", run.out / "final.tmp")  # killed before the final model was in place
    assert train(cfg) == 0
    assert f"checkpoint-{MAX_STEPS}" in caplog.text and "incomplete" in caplog.text
    record = json.loads((run.out / "final" / "derta_run.json").read_text())
    assert record["resumed_from"].endswith(f"checkpoint-{MAX_STEPS - 1}")
    assert same_weights(weights(run.out / "final"), reference)
    assert incomplete_reason(last) is None  # written again, whole


def test_truncation_is_counted_and_an_untrainable_run_is_an_error(run, capsys, caplog):
    assert train(run.config(max_length=24)) == 0
    record = json.loads((run.out / "final" / "derta_run.json").read_text())
    t = record["truncation"]
    assert t["max_length"] == 24 and t["rows"] == 8 and t["rows_cut"] > 0 and t["rows_trained"] > 0
    assert record["objective"]["truncation"] == t
    assert "longer than max_length 24" in caplog.text
    capsys.readouterr()
    # the query gives way before the target: only a row whose template alone fills max_length trains nothing
    assert train(run.config(max_length=3, output_dir=str(run.out.with_name("short")))) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "max_length 3" in err and "8 of 8 rows" in err  # no model was even loaded
    assert not run.out.with_name("short").exists()  # refused before anything was written


# --- kill -9 at random points -------------------------------------------------------------------


def _cli(cfg: Path) -> list[str]:
    return [sys.executable, "-m", "derta.cli", "train", "--config", str(cfg)]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "TOKENIZERS_PARALLELISM": "false"}


def _state(out: Path) -> str:
    from derta.train.checkpoints import incomplete_reason

    ckpts = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    parts = [f"{p.name.split('-')[1]}{'' if incomplete_reason(p) is None else ' torn'}" for p in ckpts]
    final = " + final" if (out / "final").exists() else (" + final.tmp" if (out / "final.tmp").exists() else "")
    return ("checkpoints " + ", ".join(parts) if parts else "no checkpoint") + final


def _wait_for(proc: subprocess.Popen, ready) -> bool:
    """True as soon as ``ready()`` holds while ``proc`` runs; False when it ended first."""
    while proc.poll() is None:
        if ready():
            return True
        time.sleep(0.001)
    return False


def _kill_when(proc: subprocess.Popen, ready) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()`` holds; False when it ended first."""
    if not _wait_for(proc, ready):
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def kill_trial(cfg: Path, out: Path, kind: str, rng: random.Random) -> tuple[str, str]:
    """Start `derta train`, SIGKILL it at a point of ``kind``; returns (when, state at kill)."""
    ckpt_dir = out / "checkpoints"
    proc = subprocess.Popen(_cli(cfg), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if kind == "checkpoint":  # the moment checkpoint-N appears: its files are being written
        n = rng.randint(1, MAX_STEPS)
        when = f"as checkpoint-{n} appears"
        killed = _kill_when(proc, lambda: (ckpt_dir / f"checkpoint-{n}").exists())
    elif kind == "final":
        when = "as final.tmp appears"
        killed = _kill_when(proc, lambda: (out / "final.tmp").exists())
    else:  # a random moment of the steps after the first (the whole run trains in about 0.2 s)
        delay = rng.uniform(0.0, 0.2)
        when = f"{delay:.3f} s after checkpoint-1 appeared"
        _wait_for(proc, lambda: (ckpt_dir / "checkpoint-1").exists())
        start = time.monotonic()
        killed = _kill_when(proc, lambda: time.monotonic() - start >= delay)
    if not killed:
        when += " (run had ended)"
    return when, _state(out)


def _reference(run, tmp_path) -> dict[str, torch.Tensor]:
    """The uninterrupted run, in this process (one torch thread, like the subprocesses)."""
    ref = tmp_path / "reference"
    assert train(run.config("reference.yaml", output_dir=str(ref))) == 0
    return weights(ref / "final")


def _trials(run, tmp_path, kinds: list[str], seed: int) -> list[tuple]:
    rng = random.Random(seed)
    reference = _reference(run, tmp_path)
    table = []
    for i, kind in enumerate(kinds):
        out = tmp_path / f"trial-{i}"
        cfg = run.config(f"trial-{i}.yaml", output_dir=str(out))
        when, state = kill_trial(cfg, out, kind, rng)
        p = subprocess.run(_cli(cfg), env=_env(), capture_output=True, text=True, timeout=300)
        equal = p.returncode == 0 and same_weights(weights(out / "final"), reference)
        table.append((when, state, f"exit {p.returncode}", "equal" if equal else "DIFFERENT"))
        assert p.returncode == 0, f"trial {i} ({when}, {state}): resume exited {p.returncode}: {p.stderr[-2000:]}"
        assert equal, f"trial {i} ({when}, {state}): weights differ from the uninterrupted run"
    print("\nkill time | state at kill | resume | weights vs uninterrupted")
    for row in table:
        print(" | ".join(row))
    return table


def test_kill_during_a_checkpoint_save_then_resume(run, tmp_path):
    _trials(run, tmp_path, ["checkpoint"], seed=1)


@pytest.mark.slow
def test_kill_at_random_points_then_resume(run, tmp_path):
    table = _trials(run, tmp_path, ["checkpoint", "random", "checkpoint", "random", "final", "random", "checkpoint", "random"], seed=7)
    assert len(table) == 8


def test_a_dpo_run_is_fingerprinted_too(run, tmp_path, world, capsys):
    triples = write_jsonl(tmp_path / "dpo_triples.jsonl", [t.to_dict() for t in world.triples[:4]])
    pairs = tmp_path / "pairs.jsonl"
    assert main(["data", "build", "--recipe", "dpo", "--triples", str(triples), "--out", str(pairs)]) == 0
    cfg = run.config("dpo.yaml", method="dpo", data=str(pairs), max_steps=1, save_steps=100)
    assert train(cfg) == 0
    record = json.loads((run.out / "final" / "derta_run.json").read_text())
    assert record["fingerprint"]["settings"]["dpo_beta"] == 0.1 and "rto_weight" not in record["fingerprint"]["settings"]
    assert record["truncation"]["rows"] == 4 and record["truncation"]["rows_trained"] == 4
    capsys.readouterr()
    assert train(cfg, "--dpo-beta", "0.2") == 2
    assert "dpo_beta 0.1 → 0.2" in capsys.readouterr().err
    assert train(cfg, "--rto-weight", "3") == 0  # DPO does not use it: the finished run is left as it is


def test_a_record_without_checkpoints_is_replaced(run, capsys):
    """A run killed before its first checkpoint left only its record: another config may start there."""
    run.out.mkdir()
    (run.out / "derta_run.json").write_text(json.dumps({"fingerprint": {"settings": {"learning_rate": 9.0}}}))
    assert train(run.config()) == 0
    assert json.loads((run.out / "derta_run.json").read_text())["fingerprint"]["settings"]["learning_rate"] == 1e-3
    assert train(run.config()) == 0  # and the run it now holds is this one: finished
