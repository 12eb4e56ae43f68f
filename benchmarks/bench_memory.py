"""Peak memory of the loss path: one forward + loss + backward over the same batch of DeRTa rows,
derta's ``compute_loss`` against the model's built-in loss (``labels=`` passed to the model).

The model is a 1-layer LLaMA whose vocabulary V is the row's (32K, 128K): its body is small, so
the step's peak is the LM head, the logits and the loss. How it is measured:

- GPU: ``torch.cuda.max_memory_allocated`` minus the memory allocated before the step.
- CPU: the peak resident set size of the step minus the resident size before it. Each
  measurement runs in a fresh process (``--memory-child``) so one path's freed memory cannot be
  reused by the next; the kernel's high-water mark is reset right before the step
  (``/proc/self/clear_refs`` = 5, Linux), and glibc's mmap threshold is fixed at 128 KiB so every
  tensor larger than that is mapped on allocation and unmapped on free (its dynamic threshold would
  keep freed logits in the heap and hide the next allocation). Where ``clear_refs`` cannot be
  written, ``getrusage`` ``ru_maxrss`` deltas are used (the JSON's ``method`` says which).
"""

from __future__ import annotations

import ctypes
import gc
import json
import pickle
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

PATHS = ("derta", "builtin", "full_logits")


def _libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _status_kb(key: str) -> int:
    for line in open("/proc/self/status", encoding="utf-8"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
            f.write("5")
        return True
    except OSError:
        return False


def pick_rows(rows: list[dict[str, list]], tokens: int) -> list[dict[str, list]]:
    """Rows in order until their tokens reach ``tokens`` (the last one cut to fit exactly)."""
    out, n = [], 0
    for r in rows:
        take = min(len(r["input_ids"]), tokens - n)
        out.append({k: v[:take] for k, v in r.items()})
        n += take
        if n >= tokens:
            break
    return out


def measure(payload: dict[str, Any]) -> dict[str, Any]:
    """Peak bytes of one training step of ``payload['path']`` at vocabulary ``payload['vocab']``."""
    import tempfile

    import torch

    from bench_train import train_config
    from bench_workload import make_model
    from derta.train.collator import BATCH_COUNTS
    from derta.train.run import build_trainer

    libc = _libc()
    if libc is not None:
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD: fixed, which also turns off its dynamic growth
    w, path = payload["workload"], payload["path"]
    settings = {"loss_chunk_size": None} if path == "full_logits" else {}
    cfg = train_config(Path(tempfile.mkdtemp()), 4, payload["max_length"], **settings)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = make_model(w.tokenizer, hidden=payload["hidden"], layers=1, vocab_size=payload["vocab"]).to(device)
    trainer = build_trainer(cfg, model, w.tokenizer, w.examples)
    batch = {k: v.to(device) for k, v in trainer.data_collator(payload["rows"]).items()}
    model.train()

    def step() -> None:
        if path == "builtin":
            loss = model(**{k: v for k, v in batch.items() if k not in ("loss_weights", *BATCH_COUNTS)}).loss
        else:
            loss = trainer.compute_loss(model, dict(batch))
        loss.backward()

    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return {"peak_bytes": torch.cuda.max_memory_allocated() - before, "method": "torch.cuda.max_memory_allocated"}
    if libc is not None:
        libc.malloc_trim(0)
    if _reset_peak():
        before = _status_kb("VmRSS")
        step()
        return {"peak_bytes": (_status_kb("VmHWM") - before) * 1024, "method": "VmHWM after clear_refs, minus VmRSS"}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()
    return {"peak_bytes": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024, "method": "ru_maxrss delta"}


def measure_in_child(payload: dict[str, Any], tmp: Path, threads: int) -> dict[str, Any]:
    """:func:`measure` in a fresh ``python benchmarks/run.py --memory-child`` process."""
    src = tmp / f"memory-{payload['path']}-{payload['vocab']}.pkl"
    src.write_bytes(pickle.dumps(payload))
    run_py = Path(__file__).with_name("run.py")
    proc = subprocess.run([sys.executable, str(run_py), "--memory-child", str(src), "--threads", str(threads)],
                          capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"memory child failed (exit {proc.returncode}): {tail[0]}")
    return json.loads(lines[-1])


def child_main(payload_file: str) -> int:
    print(json.dumps(measure(pickle.loads(Path(payload_file).read_bytes()))))
    return 0
