"""The ``derta train`` config: every option of a training run, in one dataclass.

Every field is a YAML key of ``--config`` and a ``--field-name`` option of ``derta train``. This
module imports neither torch nor transformers, so that ``derta --help`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Training methods: the DeRTa objective (MLE + λ·RTO) over TrainingExamples, or DPO over PreferencePairs.
METHODS = ("sft", "dpo")
#: How rows become micro-batches: as they come (none) or best-fit-decreasing packed into bins (bfd).
PACKING = ("none", "bfd")
#: Losses of method sft: cross-entropy (the DeRTa objective) or Qi et al.'s token-wise constrained loss.
OBJECTIVES = ("derta", "constrained")


def _h(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class TrainConfig:
    """Everything ``derta train`` needs. Paper defaults (full tuning) where they exist."""

    method: str = field(default="sft", metadata=_h("sft (MLE + λ·RTO over training examples) | dpo (preference pairs, with TRL)"))
    model: str = field(default="", metadata=_h("HF model name or local path (AutoModelForCausalLM)"))
    data: str = field(default="", metadata=_h("training data built by `derta data build` (JSONL)"))
    output_dir: str = field(default="runs/train", metadata=_h("where checkpoints and the final model go"))
    tokenizer: str | None = field(default=None, metadata=_h("tokenizer name/path (default: the model's)"))
    template: str = field(default="auto", metadata=_h("auto | chat | reference | plain"))
    refusal_word: str = field(default="Sorry", metadata=_h("RTO transition word, looked up in the tokenizer"))
    refusal_token: str | None = field(default=None, metadata=_h("RTO transition token as a vocabulary entry (wins over the word)"))
    rto_weight: float = field(default=1.0, metadata=_h("λ, the weight of the RTO term"))
    rto_keep: float = field(default=1.0, metadata=_h("share of RTO positions kept (0.05 = reference full-parameter run)"))
    rto_norm: str = field(default="auto", metadata=_h("token (each RTO position weighs λ, the paper) | sequence (an RTO row weighs λ × one average safe response) | auto (sequence when RTO would be over rto_max_share of the trained positions)"))
    rto_max_share: float = field(default=0.25, metadata=_h("auto: the share of trained positions above which RTO is normalised per sequence (with a warning)"))
    max_length: int = field(default=1024, metadata=_h("truncate rendered rows to this many tokens (rows cut are counted in the log and derta_run.json)"))
    epochs: float = field(default=2.0, metadata=_h("training epochs"))
    max_steps: int = field(default=-1, metadata=_h("stop after this many optimiser steps (-1: use epochs)"))
    learning_rate: float = field(default=2e-5, metadata=_h("peak learning rate (paper: 2e-5 full, 1e-4 LoRA)"))
    warmup_ratio: float = field(default=0.03, metadata=_h("linear warm-up share of steps"))
    weight_decay: float = field(default=2e-5, metadata=_h("AdamW weight decay"))
    lr_scheduler: str = field(default="cosine", metadata=_h("transformers scheduler name"))
    batch_size: int = field(default=4, metadata=_h("rows per device per micro-batch"))
    total_batch_size: int = field(default=128, metadata=_h("rows per optimiser step over all devices (sets gradient accumulation)"))
    padding_free: bool = field(default=True, metadata=_h("lay each micro-batch out with position_ids restarting per row, no attention mask: one sequence with FlashAttention's varlen kernel, else its rows packed into sequences of at most max_length tokens (off, with a warning, for a model whose attention cannot keep packed rows apart)"))
    packing: str = field(default="none", metadata=_h("none (a micro-batch is batch_size rows) | bfd (rows best-fit-decreasing packed into bins of max_length tokens, a micro-batch is batch_size bins; needs padding_free; gradient accumulation keeps about total_batch_size rows per step)"))
    group_by_length: bool = field(default=False, metadata=_h("batch rows of similar length together (transformers' length-grouped sampler): less padding when padding_free is off"))
    truncate_query: bool = field(default=True, metadata=_h("a row over max_length: after the harmful prefix, the middle of the query gives way as far as the target needs (min(its length, max_length / 2) tokens); false: the target's end is cut instead"))
    loss_chunk_size: int | None = field(default=1024, metadata=_h("score only the trained positions, this many at a time (peak loss memory O(chunk x vocabulary)); null: score every position from the full logits"))
    dpo_beta: float = field(default=0.1, metadata=_h("β of DPO (used when the data are preference pairs)"))
    objective: str = field(default="derta", metadata=_h("loss of method sft: derta (cross-entropy, MLE + λ·RTO) | constrained (Qi et al. 2025's token-wise constrained loss against the starting model, whose log-probs are computed once before training and cached)"))
    constrained_beta_first: float = field(default=0.5, metadata=_h("constrained: β of a row's first trained token (Qi et al.: 0.5)"))
    constrained_beta_early: float = field(default=2.0, metadata=_h("constrained: β of trained tokens 2..constrained_early_tokens (Qi et al.: 2)"))
    constrained_beta_late: float = field(default=0.1, metadata=_h("constrained: β of the later trained tokens (Qi et al.: 0.1)"))
    constrained_early_tokens: int = field(default=5, metadata=_h("constrained: the last trained token of a row (counted from 1) that takes constrained_beta_early"))
    reference_cache_dir: str | None = field(default=None, metadata=_h("constrained: folder of the cached reference log-probs (null: output_dir/reference)"))
    lora: bool = field(default=False, metadata=_h("train LoRA adapters instead of all parameters"))
    lora_r: int = field(default=96, metadata=_h("LoRA rank"))
    lora_alpha: int = field(default=16, metadata=_h("LoRA alpha"))
    lora_dropout: float = field(default=0.05, metadata=_h("LoRA dropout"))
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"], metadata=_h("modules to adapt (all-linear = attention + MLP)"))
    bf16: str = field(default="auto", metadata=_h("auto (on a bf16 GPU) | true | false"))
    gradient_checkpointing: bool = field(default=False, metadata=_h("trade compute for memory"))
    save_steps: int = field(default=500, metadata=_h("checkpoint every N steps"))
    save_total_limit: int = field(default=2, metadata=_h("keep at most N checkpoints"))
    logging_steps: int = field(default=10, metadata=_h("log every N steps"))
    resume: bool = field(default=True, metadata=_h("resume this run from its newest complete checkpoint in output_dir (false: never resume; a run already there is then an error, see --fresh)"))
    seed: int = field(default=42, metadata=_h("random seed (data order, k sampling, RTO dropout, init)"))
    progress: bool = field(default=True, metadata=_h("show progress bars"))
    report_to: str = field(default="none", metadata=_h("transformers report_to (none, tensorboard, wandb)"))

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be sft or dpo, got {self.method!r}")
        if self.template not in ("auto", "chat", "reference", "plain"):
            raise ValueError(f"template must be auto, chat, reference or plain, got {self.template!r}")
        if self.bf16 not in ("auto", "true", "false"):
            raise ValueError(f"bf16 must be auto, true or false, got {self.bf16!r}")
        if self.rto_norm not in ("auto", "token", "sequence"):
            raise ValueError(f"rto_norm must be auto, token or sequence, got {self.rto_norm!r}")
        if not 0.0 < self.rto_max_share <= 1.0:
            raise ValueError(f"rto_max_share must be in (0, 1], got {self.rto_max_share}")
        if self.packing not in PACKING:
            raise ValueError(f"packing must be none or bfd, got {self.packing!r}")
        if self.packing == "bfd" and not self.padding_free:
            raise ValueError("packing bfd needs padding_free: packed rows are told apart by their position_ids")
        if self.packing == "bfd" and self.group_by_length:
            raise ValueError("group_by_length applies to rows, not to packed bins: use one of packing bfd and group_by_length")
        if self.loss_chunk_size is not None and self.loss_chunk_size < 1:
            raise ValueError(f"loss_chunk_size must be >= 1 or null, got {self.loss_chunk_size}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be derta or constrained, got {self.objective!r}")
        if self.objective == "constrained" and self.method != "sft":
            raise ValueError("objective constrained is a loss of method sft (DPO has its own)")
        for name in ("constrained_beta_first", "constrained_beta_early", "constrained_beta_late"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.constrained_early_tokens < 1:
            raise ValueError(f"constrained_early_tokens must be >= 1, got {self.constrained_early_tokens}")
        if self.total_batch_size < self.batch_size:
            raise ValueError(f"total_batch_size ({self.total_batch_size}) < batch_size ({self.batch_size})")

    def use_bf16(self) -> bool:
        if self.bf16 == "auto":
            import torch

            return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return self.bf16 == "true"
