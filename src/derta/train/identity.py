"""What a training run is, as a fingerprint: everything that changes the trained weights.

The fingerprint holds the data's sha256, the model's and the tokenizer's identity (a name, or for a
local folder its config, tokenizer files and a cheap weights fingerprint: size + sha256 of the first
and last MiB of each weight file) and every setting of :class:`derta.train.config.TrainConfig`
that the method uses. Where a run lives and how it reports (``output_dir``, logging, progress,
save frequency, ``resume``) are not in it, nor ``gradient_checkpointing``, which recomputes the
same activations to save memory, nor ``padding_free`` and ``loss_chunk_size``, which compute the
same loss over the same rows another way. ``packing`` and ``group_by_length`` change which rows
share a step, and ``objective: constrained`` (with its β schedule) changes the loss; they enter the
fingerprint when set (at none / false / derta they train as runs recorded before these settings
existed, and those runs resume).

``output_dir/derta_run.json`` holds the fingerprint of the run that owns the folder; a run whose
fingerprint differs never resumes its checkpoints (:func:`check_output_dir`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..io import redact_secrets

RECORD = "derta_run.json"
MiB = 1 << 20

#: Settings that never change the trained weights.
NOT_RESULT = ("output_dir", "resume", "progress", "report_to", "logging_steps", "save_steps", "save_total_limit",
              "gradient_checkpointing", "model", "data", "tokenizer", "bf16", "padding_free", "loss_chunk_size",
              "reference_cache_dir")
#: Settings left out of the fingerprint at these values: how every run trained before they existed.
_DEFAULT_BATCHING = {"packing": "none", "group_by_length": False, "objective": "derta"}
_LORA = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")
_CONSTRAINED = ("constrained_beta_first", "constrained_beta_early", "constrained_beta_late", "constrained_early_tokens")
_SFT_ONLY = ("refusal_word", "refusal_token", "rto_weight", "rto_keep", "rto_norm", "rto_max_share", "objective", *_CONSTRAINED)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
                    "vocab.txt", "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(4 * MiB), b""):
            h.update(block)
    return h.hexdigest()


def weights_fingerprint(path: Path) -> str:
    """size + sha256 of the first and last MiB: cheap on a 16 GB file, and any retrained or
    swapped weight file changes it."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        h.update(f.read(MiB))
        if size > MiB:
            f.seek(max(MiB, size - MiB))
            h.update(f.read(MiB))
    return h.hexdigest()


def folder_identity(name: str, files: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A model or tokenizer: a Hub name as it is; a local folder by its content (config and
    tokenizer files hashed whole, weight files by :func:`weights_fingerprint`)."""
    path = Path(name)
    if not path.is_dir():
        return {"name": name}
    out: dict[str, Any] = {}
    for p in sorted(path.iterdir()):
        if not p.is_file():
            continue
        if files is None and p.name.endswith(_WEIGHT_SUFFIXES):
            out[p.name] = "weights:" + weights_fingerprint(p)
        elif p.name in (files or ("config.json", "adapter_config.json", *_TOKENIZER_FILES)):
            out[p.name] = sha256_file(p)
    return {"sha256": hashlib.sha256(json.dumps(out, sort_keys=True).encode()).hexdigest(), "files": out}


def data_identity(source: str, rows: list[Any]) -> dict[str, Any]:
    """sha256 of a data file's bytes (what ``sha256sum`` prints), else of its rows as JSON."""
    path = Path(source)
    if path.is_file():
        return {"sha256": sha256_file(path), "rows": len(rows)}
    text = json.dumps([r.to_dict() for r in rows], sort_keys=True, ensure_ascii=False)
    return {"sha256": hashlib.sha256(text.encode()).hexdigest(), "rows": len(rows)}


def settings(cfg: Any) -> dict[str, Any]:
    """The TrainConfig fields that change what ``cfg.method`` trains."""
    drop = set(NOT_RESULT)
    if not cfg.lora:
        drop |= set(_LORA)
    drop |= {"dpo_beta"} if cfg.method == "sft" else set(_SFT_ONLY)
    if cfg.max_steps > 0:
        drop.add("epochs")  # max_steps wins
    drop |= {k for k, v in _DEFAULT_BATCHING.items() if getattr(cfg, k, v) == v}
    if getattr(cfg, "objective", "derta") != "constrained":
        drop |= set(_CONSTRAINED)
    out = {k: v for k, v in asdict(cfg).items() if k not in drop}
    out["bf16"] = cfg.use_bf16()  # "auto" means different things on different machines
    world = int(os.environ.get("WORLD_SIZE", "1"))
    out["rows_per_step"] = max(1, cfg.total_batch_size // (cfg.batch_size * world)) * cfg.batch_size * world
    return out


def fingerprint(cfg: Any, rows: list[Any]) -> dict[str, Any]:
    model = folder_identity(cfg.model)
    tokenizer = folder_identity(cfg.tokenizer, _TOKENIZER_FILES) if cfg.tokenizer else {"from": "model"}
    fp = {"data": data_identity(cfg.data, rows), "model": model, "tokenizer": tokenizer, "settings": settings(cfg)}
    return json.loads(json.dumps(redact_secrets(fp)))  # exactly what the record reads back


def _short(v: Any) -> str:
    if isinstance(v, dict) and "sha256" in v:
        return v["sha256"][:12] + "…"
    if isinstance(v, dict) and "name" in v:
        return repr(v["name"])
    return repr(v) if isinstance(v, str) else str(v)


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs, in words: ``learning_rate 0.0001 → 0.0002``, ``data sha256 ab12… → cd34…``."""
    out = []
    for key in ("data", "model", "tokenizer"):
        a, b = old.get(key), new.get(key)
        if (a or {}).get("sha256", a) != (b or {}).get("sha256", b):
            label = f"{key} sha256" if isinstance(a, dict) and "sha256" in a and isinstance(b, dict) and "sha256" in b else key
            out.append(f"{label} {_short(a)} → {_short(b)}")
    sa, sb = old.get("settings", {}), new.get("settings", {})
    for k in sorted(set(sa) | set(sb)):
        if sa.get(k, "(unset)") != sb.get(k, "(unset)"):
            out.append(f"{k} {_short(sa.get(k, '(unset)'))} → {_short(sb.get(k, '(unset)'))}")
    return out


class RunMismatch(ValueError):
    """``output_dir`` holds another run: resuming it would train (or report) the wrong thing."""


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise RunMismatch(f"{path}: the run record does not read ({e}); use --fresh to start this output_dir again") from None


def check_output_dir(output_dir: str | Path, fp: dict[str, Any], fresh: bool = False, resume: bool = True) -> str:
    """What a run with fingerprint ``fp`` does in ``output_dir``: "new", "resume" or "finished".

    A folder holding checkpoints or a final model of another fingerprint (or of none: a run that
    predates the record) is a RunMismatch that says what differs, unless ``fresh``.
    """
    out = Path(output_dir)
    held = (out / "final").is_dir() or any(Path(out, "checkpoints").glob("checkpoint-*"))
    if fresh or not held:
        return "new"
    record = _read(out / RECORD) or _read(out / "final" / RECORD)
    how = "; train it with --fresh (deletes the old run's checkpoints and final model) or give a new output_dir"
    if not record or "fingerprint" not in record:
        raise RunMismatch(f"{out} holds a run without a fingerprint in {RECORD} (made by an older derta or by hand): "
                          f"it cannot be checked against this config{how}")
    diff = differences(record["fingerprint"], fp)
    if diff:
        raise RunMismatch(f"{out} holds another run: {'; '.join(diff)}{how}")
    if not resume:
        raise RunMismatch(f"{out} holds this run already and resume is false{how}")
    final = _read(out / "final" / RECORD)
    return "finished" if final and final.get("fingerprint") == fp else "resume"


def clear_run(output_dir: str | Path) -> list[str]:
    """Delete what a run wrote into ``output_dir`` (nothing else); returns what was removed."""
    out = Path(output_dir)
    gone = []
    for name in ("checkpoints", "final", "final.tmp", "final.old", RECORD):
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
        else:
            continue
        gone.append(str(p))
    return gone
