"""Hugging Face transformers backend: batched, left-padded, greedy by default, KV cache on.

Rendering follows the training layout of :mod:`derta.data.render` (each segment tokenized on its
own), so a model is attacked in exactly the format it was tuned in::

    messages:  [bos if the template needs it] prompt | lead + prefill      (model continues)
    text:      bos | text + prefill                                          (no chat template)

``template`` is "chat" (the tokenizer's own chat template) or a plain template of
:mod:`derta.templates` ("reference", "plain", "raw"); by default the chat template, or for a
derta-trained checkpoint the template it was trained with (its ``derta_run.json``). A tokenizer
without a chat template and no template named is an error (:func:`derta.templates.generation_template`),
never a silent switch to the reference format. A local path that does not exist is reported as
"no such model directory". Generation stops at the end of the assistant turn: the eos id(s) and, when the template closes
a turn with another special token (Llama-3's ``<|eot_id|>``, Qwen's ``<|im_end|>``), that token,
found by string in the tokenizer.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..records import AttackPrompt, Message
from ..templates import default_template, generation_template, get_template
from ..tokens import single_token_id
from .base import Completion, Decoding, check_prompt, cut_at_stop

log = logging.getLogger(__name__)


@dataclass
class RenderedPrompt:
    """Prompt ids, plus the separator (``lead``) the model writes first when nothing is prefilled."""

    ids: list[int]
    lead: str = ""


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def render_prompt(prompt: AttackPrompt, tokenizer: Any, template: str | None = None) -> RenderedPrompt:
    """Token ids of what the model sees before it generates (prefill included)."""
    check_prompt(prompt)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    if prompt.text is not None:
        return RenderedPrompt(bos + _ids(tokenizer, prompt.text + prompt.prefill))  # one raw document
    turn = get_template(generation_template(tokenizer, template))(list(prompt.messages or []), tokenizer)
    head = bos if turn.add_bos else []
    ids = head + _ids(tokenizer, turn.prompt)
    if prompt.prefill:
        return RenderedPrompt(ids + _ids(tokenizer, turn.lead + prompt.prefill))
    return RenderedPrompt(ids, lead=turn.lead)


def stop_token_ids(tokenizer: Any, template: str | None = None, model: Any = None) -> list[int]:
    """Ids that end the assistant turn: eos, the model's generation-config eos ids, and the
    template's own end-of-turn token when it is a different single token."""
    ids: list[int] = []
    candidates: list[Any] = [tokenizer.eos_token_id]
    gen_cfg = getattr(model, "generation_config", None)
    if gen_cfg is not None:
        eos = gen_cfg.eos_token_id
        candidates += list(eos) if isinstance(eos, (list, tuple)) else [eos]
    render = get_template(generation_template(tokenizer, template))
    try:
        end = render([Message("user", "x")], tokenizer).end
    except Exception:  # a template that cannot render a one-turn chat: eos is all we know
        end = ""
    if end.strip():
        tid = single_token_id(tokenizer, end.strip())
        if tid is None:  # e.g. "<|im_end|>\n<|endoftext|>": the first token, if it is special
            first = _ids(tokenizer, end.strip())[:1]
            tid = first[0] if first and first[0] in set(tokenizer.all_special_ids) else None
        candidates.append(tid)
    for c in candidates:
        if c is not None and int(c) not in ids:
            ids.append(int(c))
    if not ids:
        raise ValueError("cannot tell where a response ends: the tokenizer has no eos_token and the template no end-of-turn token")
    return ids


def looks_like_path(arg: str) -> bool:
    """Is a spec's argument meant as a local path (``./out/x``, ``../m``, ``/abs``, ``~/m``,
    ``out\\x`` on Windows) rather than a hub name (``org/name``)?"""
    return arg.startswith(("./", "../", "/", "~", ".\\", "..\\")) or arg in (".", "..") or (os.sep != "/" and os.sep in arg)


def check_model_path(arg: str) -> None:
    """A ValueError "no such model directory: PATH" for a local path that does not exist
    (transformers would report it as a malformed hub repo id)."""
    if looks_like_path(arg) and not Path(arg).expanduser().exists():
        raise ValueError(f"no such model directory: {arg}")


def trained_template(path: str, tokenizer: Any) -> str | None:
    """The template a derta-trained checkpoint was trained with (its ``derta_run.json``), or None.

    ``template: auto`` in training means the chat template when the tokenizer has one, else the
    reference format (:func:`derta.templates.default_template`): the same rule gives it back here.
    """
    record = Path(path).expanduser() / "derta_run.json"
    if not record.is_file():
        return None
    try:
        chosen = (json.loads(record.read_text(encoding="utf-8")).get("config") or {}).get("template")
    except (ValueError, OSError, AttributeError):
        return None
    if not isinstance(chosen, str) or not chosen:
        return None
    return default_template(tokenizer) if chosen == "auto" else chosen


#: Default token budget of one generation batch: padded prompt + max_new_tokens, summed over its rows.
DEFAULT_TOKEN_BUDGET = 32768


def plan_batches(lengths: list[int], batch_size: int, token_budget: int | None, max_new_tokens: int) -> list[tuple[int, int]]:
    """Cut prompts sorted longest first (``lengths``, in that order) into ``[start, stop)`` batches.

    A batch takes the next prompt while it has fewer than ``batch_size`` rows and its rows, each
    left-padded to the batch's first (longest) prompt plus ``max_new_tokens``, stay within
    ``token_budget`` (None: no budget, batches of ``batch_size``). Never empty: a prompt that alone
    is over the budget is a batch of one. Example, budget 100, 10 new tokens:
    lengths [40, 30, 12, 10, 8, 5] -> [(0, 2), (2, 6)] (2 x 50 and 4 x 22 tokens).
    """
    batches: list[tuple[int, int]] = []
    start = 0
    while start < len(lengths):
        row = lengths[start] + max_new_tokens
        fit = batch_size if token_budget is None else max(1, token_budget // row)
        stop = min(len(lengths), start + min(batch_size, fit))
        batches.append((start, stop))
        start = stop
    return batches


class HFBackend:
    """Generate with a transformers causal LM given as a path/name or in memory.

    ``HFBackend("path/or/name")`` loads model and tokenizer (bf16 on GPU); ``HFBackend(model,
    tokenizer)`` uses objects already in memory (the demo trains this way) and leaves them on their
    device unless ``device`` is given. Prompts are sorted by length (longest first) and cut into
    batches by a token budget: a batch holds at most ``batch_size`` prompts and, when
    ``token_budget`` is set, at most that many padded prompt + ``max_new_tokens`` tokens (its KV
    cache), so short prompts share large batches and long ones small batches (a prompt over the
    budget on its own is generated alone). Greedy outputs do not depend on how prompts are batched.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        name: str | None = None,
        template: str | None = None,
        batch_size: int = 8,
        token_budget: int | None = DEFAULT_TOKEN_BUDGET,
        device: str | None = None,
        dtype: Any = None,
        progress: bool = True,
    ):
        import torch

        if isinstance(model, str):
            from transformers import AutoModelForCausalLM, AutoTokenizer

            path = model
            check_model_path(path)
            dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            dtype = dtype or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(dev)
            name = name or f"hf:{path}"
            template = template or trained_template(path, tokenizer)
        else:
            if tokenizer is None:
                raise ValueError("an in-memory model needs its tokenizer: HFBackend(model, tokenizer)")
            if device is not None:
                model = model.to(device)
            name = name or f"hf:{getattr(model.config, '_name_or_path', '') or 'in-memory'}"
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if token_budget is not None and token_budget < 1:
            raise ValueError(f"token_budget must be >= 1 or None, got {token_budget}")
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.template = generation_template(tokenizer, template, name)
        self.batch_size = batch_size
        self.token_budget = token_budget
        self.progress = progress
        self.stop_ids = stop_token_ids(tokenizer, self.template, model)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else self.stop_ids[0]

    def render(self, prompt: AttackPrompt) -> RenderedPrompt:
        return render_prompt(prompt, self.tokenizer, self.template)

    def generate(self, prompts: list[AttackPrompt], decoding: Decoding | None = None) -> list[str]:
        return [c.text for c in self.complete(prompts, decoding)]

    @property
    def context_length(self) -> int | None:
        """The most positions the model takes (its config's ``max_position_embeddings``), if known."""
        cfg = getattr(self.model, "config", None)
        n = getattr(getattr(cfg, "get_text_config", lambda: cfg)(), "max_position_embeddings", None)
        return int(n) if isinstance(n, int) and n > 0 else None

    def _over_context(self, rendered: list[RenderedPrompt], decoding: Decoding) -> set[int]:
        """Prompts whose tokens plus ``max_new_tokens`` do not fit the model's context: recorded on
        each generation (``over_context``) and said once per call, never silently generated."""
        ctx = self.context_length
        if ctx is None:
            return set()
        over = {i for i, r in enumerate(rendered) if len(r.ids) + decoding.max_new_tokens > ctx}
        if over:
            longest = max(len(rendered[i].ids) for i in over)
            log.warning("%s: %d of %d prompts plus max_new_tokens %d exceed the model's context of %d tokens (longest prompt %d); "
                        "their generations are marked over_context", self.name, len(over), len(rendered), decoding.max_new_tokens, ctx, longest)
        return over

    def complete(self, prompts: list[AttackPrompt], decoding: Decoding | None = None) -> list[Completion]:
        from tqdm.auto import tqdm

        decoding = decoding or Decoding()
        rendered = [self.render(p) for p in prompts]
        over = self._over_context(rendered, decoding)
        # Longest first: similar lengths share a batch (less padding) and an out-of-memory error
        # shows up in the first batch rather than the last.
        order = sorted(range(len(prompts)), key=lambda i: -len(rendered[i].ids))
        batches = plan_batches([len(rendered[i].ids) for i in order], self.batch_size, self.token_budget, decoding.max_new_tokens)
        out: list[Completion | None] = [None] * len(prompts)
        was_training = self.model.training
        self.model.eval()
        try:
            with tqdm(total=len(prompts), disable=not self.progress, desc=self.name, unit="prompt") as bar:
                for b, (start, stop) in enumerate(batches):
                    idx = order[start:stop]
                    batch = self._generate_batch([rendered[i].ids for i in idx], decoding, seed_offset=b)
                    for i, (ids, stopped) in zip(idx, batch):
                        out[i] = self._finish(ids, stopped, rendered[i], prompts[i], decoding, i in over)
                    bar.update(len(idx))
        finally:
            self.model.train(was_training)
        return out  # type: ignore[return-value]

    def _generate_batch(self, batch: list[list[int]], decoding: Decoding, seed_offset: int) -> list[tuple[list[int], bool]]:
        """Left-pad, generate, and return each row's new ids cut at the end of turn (+ whether it ended)."""
        import torch

        device = self.model.device
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, ids in enumerate(batch):
            input_ids[r, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[r, width - len(ids) :] = 1
        kwargs: dict[str, Any] = dict(
            max_new_tokens=decoding.max_new_tokens, eos_token_id=self.stop_ids, pad_token_id=self.pad_id, use_cache=True,
        )
        if decoding.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=decoding.temperature, top_p=decoding.top_p, top_k=None)
        if decoding.stop:
            kwargs.update(stop_strings=list(decoding.stop), tokenizer=self.tokenizer)
        devices = [device] if device.type == "cuda" else []
        with torch.inference_mode(), torch.random.fork_rng(devices=devices):
            if decoding.seed is not None:
                torch.manual_seed(decoding.seed + seed_offset)
            gen = self.model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), **kwargs)
        ends = set(self.stop_ids) | {self.pad_id}
        rows = []
        for row in gen[:, width:].tolist():
            cut = next((j for j, t in enumerate(row) if t in ends), None)
            rows.append((row[:cut], cut is not None) if cut is not None else (row, False))
        return rows

    def _finish(self, ids: list[int], ended: bool, rendered: RenderedPrompt, prompt: AttackPrompt, decoding: Decoding,
                over_context: bool = False) -> Completion:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        text, hit = cut_at_stop(text, decoding.stop)
        if rendered.lead and text.startswith(rendered.lead):
            text = text[len(rendered.lead) :]  # the template's separator, e.g. the space after "[\INST]"
        reason = "stop" if ended or hit else "length"
        meta: dict[str, Any] = {"n_prompt_tokens": len(rendered.ids)}
        if over_context:
            meta["over_context"] = True
        return Completion(text=text, token_ids=ids, n_tokens=len(ids), finish_reason=reason, metadata=meta)
