"""Public third-party data files: found locally, or downloaded from their source and checked by sha256.

derta never ships these files. It looks for them in a data directory laid out like
``derta-testsets/``, ``derta-train/`` and ``xstest/`` (``--data-dir``, else ``$DERTA_DATA``, else
``../shared/data`` beside the working directory), and otherwise downloads them from the public
repository at a pinned commit into ``cache_dir()/data`` (see :func:`derta.gguf.cache_dir`). A file
whose sha256 differs from the pinned one is an error, never used.

The DeRTa files are JSON lists upstream; the local copies are JSONL with one ``json.dumps(row)``
per line, which is what the sha256 is computed on after a download too.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..io import atomic_file

DERTA_COMMIT = "70bdb52b5e139f32f5a723b5f09d2b0befa81657"
XSTEST_COMMIT = "d7bb5bd738c1fcbc36edd83d5e7d1b71a3e2d84d"
_DERTA = f"https://raw.githubusercontent.com/RobustNLP/DeRTa/{DERTA_COMMIT}/data"


@dataclass(frozen=True)
class Source:
    folder: str  # folder of the data directory
    name: str  # file name there
    url: str
    sha256: str
    json_list: bool = False  # upstream is a JSON list: store as JSONL (one json.dumps(row) per line)
    licence: str = ""


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("derta-train", "malicious_tuning_data_330.jsonl", f"{_DERTA}/train/malicious_tuning_data/malicious_tuning_data_330.json",
           "4542b5a8f35be54ecfe8ce594f631e92f9a8aafea442a3ac5fe69139fd3067a9", True, "MIT (RobustNLP/DeRTa)"),
    Source("derta-testsets", "safety_illegal_instructions_200.jsonl", f"{_DERTA}/test/safety_illegal_instructions_200.json",
           "d77c96592c8ef1ea680a61876bbe91f49749f8283a633f74e84f35906329f01d", True, "MIT (RobustNLP/DeRTa)"),
    Source("derta-testsets", "safety_completionattack.jsonl", f"{_DERTA}/test/safety_completionattack.json",
           "2375fa405d5bed8ae6ca24749f12c993d90c83cde1ef41b856a9e8538c46c696", True, "MIT (RobustNLP/DeRTa)"),
    Source("derta-testsets", "safety_codeattack.jsonl", f"{_DERTA}/test/safety_codeattack.json",
           "66b749d114a05f1bb2bb3ed218cdbac1ffc1a3c493fc0f60452977762d5e99d0", True, "MIT (RobustNLP/DeRTa)"),
    Source("derta-testsets", "safety_jailbreakchat.jsonl", f"{_DERTA}/test/safety_jailbreakchat.json",
           "65d8e52636e055d2c1da5b855f15d34cf0328f8b2d5dba24828ed574d32e48d2", True, "MIT (RobustNLP/DeRTa)"),
    Source("xstest", "xstest_prompts.csv", f"https://raw.githubusercontent.com/paul-rottger/exaggerated-safety/{XSTEST_COMMIT}/xstest_prompts.csv",
           "11783fb294ed017473ee53c207d71f2161c7672c8d0b037501e78387f801cb5a", False, "CC BY 4.0 (Röttger et al., 2024)"),
)}


class SourceError(RuntimeError):
    """A data file is missing and cannot be downloaded, or its sha256 is not the pinned one."""


def data_dir(explicit: str | Path | None = None) -> Path | None:
    """The local data directory: ``explicit``, ``$DERTA_DATA``, or ``../shared/data`` if it exists."""
    for cand in (explicit, os.environ.get("DERTA_DATA"), Path.cwd().parent / "shared" / "data"):
        if cand and Path(cand).is_dir():
            return Path(cand)
    if explicit:
        raise SourceError(f"{explicit}: no such data directory")
    return None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(src: Source, raw: bytes) -> bytes:
    if not src.json_list:
        return raw
    rows = json.loads(raw.decode("utf-8"))
    if not isinstance(rows, list):
        raise SourceError(f"{src.url}: expected a JSON list")
    return "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")


def _download(src: Source, dest: Path) -> Path:
    from urllib.error import URLError
    from urllib.request import urlopen

    try:
        with urlopen(src.url, timeout=60) as r:  # noqa: S310 (a pinned https URL)
            raw = r.read()
    except (URLError, OSError) as e:
        raise SourceError(f"{src.name}: not found locally and the download from {src.url} failed ({e}); "
                          f"put the file in DATA_DIR/{src.folder}/ and pass --data-dir DATA_DIR") from None
    data = _canonical(src, raw)
    if _sha(data) != src.sha256:
        raise SourceError(f"{src.url}: sha256 {_sha(data)} is not the pinned {src.sha256}; not using it")
    with atomic_file(dest, "wb") as f:
        f.write(data)
    return dest


def fetch(name: str, data: str | Path | None = None, download: bool = True) -> Path:
    """The path of the public file ``name``: local (sha256 checked), cached, or downloaded."""
    from ..gguf import cache_dir

    src = SOURCES.get(name)
    if src is None:
        raise KeyError(f"unknown data file {name!r} (have: {', '.join(SOURCES)})")
    root = data_dir(data)
    candidates = ([root / src.folder / src.name] if root else []) + [cache_dir() / "data" / src.folder / src.name]
    for path in candidates:
        if path.is_file():
            got = _sha(path.read_bytes())
            if got != src.sha256:
                raise SourceError(f"{path}: sha256 {got} is not the pinned {src.sha256} (a changed or corrupt copy)")
            return path
    if not download:
        raise SourceError(f"{src.name}: not found in {', '.join(map(str, candidates))}")
    return _download(src, candidates[-1])
