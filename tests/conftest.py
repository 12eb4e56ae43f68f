"""Shared fixtures: the DeRTa test sets (read from ../shared, never copied) and tiny local models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTSETS = Path(os.environ.get("DERTA_TESTSETS", REPO.parent / "shared" / "data" / "derta-testsets"))


@pytest.fixture(scope="session")
def testsets_dir() -> Path:
    if not TESTSETS.is_dir():
        pytest.skip(f"DeRTa test sets not found at {TESTSETS} (set DERTA_TESTSETS)")
    return TESTSETS


@pytest.fixture()
def one_torch_thread():
    """One torch thread: tiny matrices gain nothing from more, and model-server threads share the cores."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def world():
    from derta.demo.world import make_world

    return make_world(seed=0)


def _world_texts(w) -> list[str]:
    texts: list[str] = []
    for c in w.base_corpus:
        texts += [c.get("query", ""), c.get("response", ""), c.get("text", "")]
    for t in w.triples:
        texts += [t.safe_response, " " + t.safe_response, t.rebuttal_response]
    return [t for t in texts if t]


@pytest.fixture(scope="session")
def bpe_tokenizer(world):
    """A byte-level BPE tokenizer (LLaMA-3 / GPT-2 style) trained here on the toy world."""
    from derta.demo.model import train_tokenizer

    return train_tokenizer(_world_texts(world), vocab_size=1000, kind="bpe")


@pytest.fixture(scope="session")
def unigram_tokenizer(world):
    """A SentencePiece-style Unigram tokenizer (Metaspace) trained here on the toy world."""
    from derta.demo.model import train_tokenizer

    return train_tokenizer(_world_texts(world), vocab_size=1000, kind="unigram")


@pytest.fixture()
def tiny_model(bpe_tokenizer):
    """A fresh, randomly initialised tiny LLaMA built from a config (no download)."""
    from derta.demo.model import tiny_llama

    return tiny_llama(bpe_tokenizer, hidden=64, layers=2, heads=4, seed=0)


# What `chat_model` memorises: greedy generation from it is predictable in backend tests.
MEMORISED_CHATS = (
    ("What is 2 plus 3?", "2 plus 3 is 5."),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How do I wash a car?", "Sure, wash the car with soap and water."),
    ("How do I steal a car?", "Sorry, I cannot help with stealing a car."),
)
MEMORISED_DOCS = ("Here is how to wash a car: use soap and water.",)


@pytest.fixture(scope="session")
def chat_model(bpe_tokenizer):
    """A tiny LLaMA trained (a few seconds) until it repeats MEMORISED_CHATS (chat template, answer
    ending with ``<|end|>``) and MEMORISED_DOCS (BOS + raw text + eos) verbatim under greedy decoding.

    Returns a namespace with ``model``, ``tokenizer``, ``chats`` and ``docs``.
    """
    from types import SimpleNamespace

    import torch

    from derta.demo.model import tiny_llama

    tok = bpe_tokenizer
    seqs, starts = [], []  # starts: first position that must be predicted exactly
    for q, a in MEMORISED_CHATS:
        head = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
        text = tok.apply_chat_template([{"role": "user", "content": q}, {"role": "assistant", "content": a}], tokenize=False)
        assert text.startswith(head)
        seqs.append(tok(text, add_special_tokens=False)["input_ids"])
        starts.append(len(tok(head, add_special_tokens=False)["input_ids"]))
    for d in MEMORISED_DOCS:
        seqs.append([tok.bos_token_id] + tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
        starts.append(1)
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), tok.pad_token_id)
    labels = torch.full((len(seqs), width), -100)
    mask = torch.zeros_like(ids)
    must = torch.zeros_like(ids, dtype=torch.bool)  # label positions the model must get right
    for i, (s, start) in enumerate(zip(seqs, starts)):
        ids[i, : len(s)] = labels[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        must[i, start : len(s)] = True
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only contend on a shared CPU
    try:
        model = tiny_llama(tok, hidden=64, layers=2, heads=4, seed=0)
        opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
        for step in range(601):
            out = model(input_ids=ids, attention_mask=mask, labels=labels)
            if step % 25 == 0:  # checked before the update, so the model returned is the one checked
                pred = out.logits.argmax(-1)[:, :-1]  # position j predicts token j + 1
                if bool((pred == ids[:, 1:])[must[:, 1:]].all()):
                    break
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        else:
            raise AssertionError("chat_model did not memorise its texts in 600 steps")
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return SimpleNamespace(model=model, tokenizer=tok, chats=MEMORISED_CHATS, docs=MEMORISED_DOCS)


# -- kill -9 trials: a real `derta` process, SIGKILLed at a chosen moment, then rerun ----------------

class KillTrial:
    """One fault-injection trial: the kill point, what was on disk at the kill, how the rerun ended."""

    HEADER = ("trial", "kill point", "on disk at kill", "resume rc", "vs uninterrupted")

    def __init__(self, trial: int, kill: str, on_disk: str, resume_rc: int | None = None, equal: bool | None = None):
        self.trial, self.kill, self.on_disk, self.resume_rc, self.equal = trial, kill, on_disk, resume_rc, equal

    def cells(self) -> tuple[str, ...]:
        equal = "-" if self.equal is None else "equal" if self.equal else "DIFFERENT"
        return (str(self.trial), self.kill, self.on_disk, "-" if self.resume_rc is None else str(self.resume_rc), equal)


class Killer:
    """Runs ``python -m derta.cli ARGS`` as a subprocess (one thread, no GPU) and SIGKILLs it when a
    condition on disk holds; builds the conditions (a log grew to N lines, a file appeared, a delay)
    and reads logs back strictly (every line must parse)."""

    POLL = 0.0005  # seconds between looks at the disk: a line appended is seen within ~1 ms
    Trial = KillTrial

    @staticmethod
    def argv(*args: object) -> list[str]:
        import sys

        return [sys.executable, "-m", "derta.cli", *map(str, args)]

    @staticmethod
    def env() -> dict[str, str]:
        return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "TOKENIZERS_PARALLELISM": "false"}

    def run(self, *args: object, timeout: float = 500):
        """Run to the end; the CompletedProcess (text output captured)."""
        import subprocess

        return subprocess.run(self.argv(*args), env=self.env(), capture_output=True, text=True, timeout=timeout)

    def kill_when(self, args: list[object], ready, timeout: float = 300, stdout: Path | None = None) -> tuple[bool, float, int]:
        """Start ``derta ARGS``; SIGKILL it as soon as ``ready()`` holds. Returns (killed, seconds
        from start to kill or end, exit status); killed is False when the process ended first.
        ``stdout``: a file for what it prints (else it is dropped)."""
        import contextlib
        import subprocess
        import time

        t0 = time.monotonic()
        with contextlib.ExitStack() as stack:
            sink = stack.enter_context(stdout.open("w")) if stdout is not None else subprocess.DEVNULL
            proc = subprocess.Popen(self.argv(*args), env=self.env(), stdout=sink, stderr=subprocess.DEVNULL)
            return self._watch(proc, args, ready, t0, timeout)

    def _watch(self, proc, args: list[object], ready, t0: float, timeout: float) -> tuple[bool, float, int]:
        import signal
        import time

        try:
            while proc.poll() is None:
                if ready():
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    return True, time.monotonic() - t0, proc.returncode
                if time.monotonic() - t0 > timeout:
                    raise AssertionError(f"derta {' '.join(map(str, args))}: still running after {timeout} s")
                time.sleep(self.POLL)
            return False, time.monotonic() - t0, proc.returncode
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    @staticmethod
    def lines(path: Path) -> int:
        """Complete lines in ``path`` (0 when absent)."""
        try:
            return path.read_bytes().count(b"\n")
        except FileNotFoundError:
            return 0

    def after_lines(self, path: Path, n: int):
        """Ready once ``path`` holds ``n`` complete lines (the file is read only when its size changed)."""
        seen = {"size": -1}

        def ready() -> bool:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                return False
            if size == seen["size"]:
                return False
            seen["size"] = size
            return self.lines(path) >= n

        return ready

    @staticmethod
    def after_delay(first, delay: float):
        """Ready ``delay`` seconds after ``first()`` first held."""
        import time

        since: dict[str, float] = {}

        def ready() -> bool:
            if "t" not in since:
                if not first():
                    return False
                since["t"] = time.monotonic()
            return time.monotonic() - since["t"] >= delay

        return ready

    @staticmethod
    def describe(path: Path) -> str:
        """``NAME: N lines (+ K torn bytes)`` or ``NAME: -`` when absent."""
        if not path.exists():
            return f"{path.name}: -"
        data = path.read_bytes()
        torn = len(data) - (data.rfind(b"\n") + 1)
        n = data.count(b"\n")
        return f"{path.name}: {n}" + (f" + {torn} B torn" if torn else "")

    @staticmethod
    def read_strict(path: Path) -> list[dict]:
        """Every row of a JSONL log; a line that does not parse, or a missing final newline, fails."""
        import json

        data = path.read_bytes()
        assert data.endswith(b"\n"), f"{path}: the last line is torn ({data[-80:]!r})"
        rows = []
        for i, line in enumerate(data.split(b"\n")[:-1], start=1):
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                raise AssertionError(f"{path}:{i}: does not parse ({e}): {line[:120]!r}") from None
        return rows

    @staticmethod
    def table(title: str, trials: list[KillTrial]) -> str:
        rows = [KillTrial.HEADER] + [t.cells() for t in trials]
        widths = [max(len(r[i]) for r in rows) for i in range(len(KillTrial.HEADER))]
        out = [title] + [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
        out.insert(2, "-+-".join("-" * w for w in widths))
        return "\n".join(out)


@pytest.fixture()
def killer() -> Killer:
    """Runs `derta` in a subprocess and kills it with SIGKILL at a chosen moment (the *_kills tests)."""
    return Killer()
