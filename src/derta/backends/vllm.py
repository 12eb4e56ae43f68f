"""vLLM backend for fast offline generation on GPUs (optional: ``pip install 'derta[vllm]'``).

Prompts are rendered to token ids by :func:`derta.backends.hf.render_prompt`, exactly as the
Hugging Face backend renders them (chat template + prefill, or BOS + raw text), and handed to
vLLM as ``{"prompt_token_ids": ...}``: vLLM then adds nothing (no second BOS), and both backends
see the same ids. End-of-turn ids come from :func:`derta.backends.hf.stop_token_ids`. The template
is chosen as the Hugging Face backend chooses it (no silent fallback when the tokenizer has no chat
template), and a local path that does not exist is "no such model directory".
"""

from __future__ import annotations

from typing import Any

from ..records import AttackPrompt
from .base import Completion, Decoding
from .hf import check_model_path, render_prompt, stop_token_ids, trained_template


def _vllm() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise ImportError("the vLLM backend needs vllm (and a CUDA GPU): pip install 'derta[vllm]'") from e
    return vllm


def _with_generation_config(model: str) -> Any:
    """An object whose ``generation_config`` holds the model's eos ids (Llama-3 lists several)."""
    from types import SimpleNamespace

    from transformers import GenerationConfig

    try:
        return SimpleNamespace(generation_config=GenerationConfig.from_pretrained(model))
    except (OSError, ValueError):  # no generation_config.json: the tokenizer's eos will do
        return None


class VLLMBackend:
    """Generate with ``vllm.LLM``, prefix caching on; ``llm_kwargs`` go to its constructor (max_model_len, enforce_eager, ...)."""

    def __init__(
        self,
        model: str,
        *,
        name: str | None = None,
        template: str | None = None,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.9,
        seed: int = 0,
        progress: bool = True,
        enable_prefix_caching: bool = True,
        **llm_kwargs: Any,
    ):
        from ..templates import generation_template

        check_model_path(model)
        vllm = _vllm()
        self.llm = vllm.LLM(
            model=model, tensor_parallel_size=tensor_parallel_size, dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization, seed=seed,
            # a prefill sweep, k samples and one template over many questions share prompt prefixes:
            # vLLM computes a shared prefix's KV cache once
            enable_prefix_caching=enable_prefix_caching, **llm_kwargs,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.name = name or f"vllm:{model}"
        self.template = generation_template(self.tokenizer, template or trained_template(model, self.tokenizer), self.name)
        self.progress = progress
        self.call_size = 1024  # vLLM schedules its own batches: hand it many prompts per call
        self.stop_ids = stop_token_ids(self.tokenizer, self.template, _with_generation_config(model))

    def sampling_params(self, decoding: Decoding) -> Any:
        vllm = _vllm()
        return vllm.SamplingParams(
            n=1,
            max_tokens=decoding.max_new_tokens,
            temperature=decoding.temperature,  # 0 is greedy in vLLM
            top_p=decoding.top_p,
            seed=decoding.seed,  # per request: a prompt's sample does not depend on its batch
            stop=list(decoding.stop) or None,
            stop_token_ids=self.stop_ids,
            skip_special_tokens=True,
        )

    def generate(self, prompts: list[AttackPrompt], decoding: Decoding | None = None) -> list[str]:
        return [c.text for c in self.complete(prompts, decoding)]

    def complete(self, prompts: list[AttackPrompt], decoding: Decoding | None = None) -> list[Completion]:
        decoding = decoding or Decoding()
        rendered = [render_prompt(p, self.tokenizer, self.template) for p in prompts]
        inputs = [{"prompt_token_ids": r.ids} for r in rendered]
        params = [self.sampling_params(decoding.for_sample(p.metadata)) for p in prompts]  # k samples of a prompt: k seeds
        outputs = self.llm.generate(inputs, params, use_tqdm=self.progress)
        results = []
        for r, out in zip(rendered, outputs):  # vLLM returns outputs in input order
            o = out.outputs[0]
            ids = list(o.token_ids)
            while ids and ids[-1] in self.stop_ids:  # vLLM keeps the end-of-turn id; the text does not
                ids.pop()
            text = o.text[len(r.lead) :] if r.lead and o.text.startswith(r.lead) else o.text
            results.append(Completion(text=text, token_ids=ids, n_tokens=len(ids), finish_reason=o.finish_reason or ""))
        return results
