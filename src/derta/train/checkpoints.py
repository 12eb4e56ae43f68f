"""Which checkpoint a run resumes from: the newest COMPLETE one.

``transformers.Trainer._save_checkpoint`` writes, in this order, the model (``model.safetensors``,
an adapter, or shards with their index), then ``optimizer.pt``, ``scheduler.pt``, the RNG state
(``rng_state.pth``, one per process under DDP) and, last, ``trainer_state.json``; then it
deletes old checkpoints (``save_total_limit``). A kill during a save leaves a ``checkpoint-N``
without its last files, or with a file cut short; a kill during the clean-up leaves an older
checkpoint half deleted. Such a folder must never be resumed from: every file a resume loads is
checked here (cheaply: JSON that parses, a safetensors header that covers the file, a torch zip
whose central directory, written last, is there).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import struct
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

_STEP = re.compile(r"^checkpoint-(\d+)$")
_WEIGHTS = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin", "adapter_model.bin")
_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _safetensors_ok(path: Path) -> bool:
    """The header parses and its tensors end exactly at the end of the file."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if 8 + n > size:
                return False
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        return 8 + n + end == size
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return False


def _torch_zip_ok(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return bool(z.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def _file_ok(path: Path) -> bool:
    return _safetensors_ok(path) if path.suffix == ".safetensors" else _torch_zip_ok(path)


def _weights_ok(ckpt: Path) -> str | None:
    """None when the model weights are complete, else what is wrong."""
    for name in _WEIGHTS:
        if (ckpt / name).exists():
            return None if _file_ok(ckpt / name) else f"{name} is cut short"
    for name in _INDEXES:
        if (ckpt / name).exists():
            try:
                shards = set(json.loads((ckpt / name).read_text())["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return f"{name} does not parse"
            bad = sorted(s for s in shards if not (ckpt / s).is_file() or not _file_ok(ckpt / s))
            return f"shard {bad[0]} is missing or cut short" if bad else None
    if any(ckpt.glob("pytorch_model_fsdp*")) or any(p.is_dir() for p in ckpt.glob("global_step*")):
        return None  # FSDP / DeepSpeed layouts: their own loaders check their shards
    return "no model weights"


def incomplete_reason(ckpt: str | Path) -> str | None:
    """None when ``ckpt`` holds everything a resume loads, else the first thing missing."""
    ckpt = Path(ckpt)
    m = _STEP.match(ckpt.name)
    try:
        state = json.loads((ckpt / "trainer_state.json").read_text())
    except FileNotFoundError:
        return "no trainer_state.json"
    except (OSError, ValueError):
        return "trainer_state.json is cut short"
    if not isinstance(state, dict) or (m and state.get("global_step") != int(m.group(1))):
        return "trainer_state.json is not this checkpoint's"
    bad = _weights_ok(ckpt)
    if bad:
        return bad
    sharded_optimizer = any(ckpt.glob("optimizer_0")) or any(p.is_dir() for p in ckpt.glob("global_step*"))
    if not sharded_optimizer:
        for name in ("optimizer.pt", "scheduler.pt"):
            if not (ckpt / name).is_file():
                return f"no {name}"
            if not _torch_zip_ok(ckpt / name):
                return f"{name} is cut short"
    rng = sorted(ckpt.glob("rng_state*.pth"))
    if not rng:
        return "no rng_state.pth"
    bad_rng = [p.name for p in rng if not _torch_zip_ok(p)]
    return f"{bad_rng[0]} is cut short" if bad_rng else None


def checkpoints(output_dir: str | Path) -> list[Path]:
    """``output_dir/checkpoints/checkpoint-N`` folders, oldest step first."""
    found = [p for p in Path(output_dir, "checkpoints").glob("checkpoint-*") if p.is_dir() and _STEP.match(p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def latest_checkpoint(output_dir: str | Path, remove_torn: bool = False) -> str | None:
    """The newest complete checkpoint of ``output_dir`` (None: none).

    Each newer checkpoint that is incomplete is named in a warning; with ``remove_torn`` it is
    deleted (the run writes it again when it reaches that step), so that no later resume or
    clean-up of old checkpoints ever meets it. Older incomplete ones are left to the Trainer's
    clean-up, which deletes them first.
    """
    found = checkpoints(output_dir)
    for ckpt in reversed(found):
        why = incomplete_reason(ckpt)
        if why is None:
            return str(ckpt)
        older = [p.name for p in found if p != ckpt and int(p.name.split("-")[-1]) < int(ckpt.name.split("-")[-1])]
        log.warning("checkpoint %s is incomplete (%s: a save was interrupted); %s%s", ckpt, why,
                    f"falling back to an older one ({', '.join(older[-1:])} first)" if older else "no older checkpoint: training from the start",
                    "; removing it" if remove_torn else "")
        if remove_torn:
            shutil.rmtree(ckpt, ignore_errors=True)
    return None
