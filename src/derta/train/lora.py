"""LoRA adapters (PEFT) on a causal LM, as the training config asks for them.

``all-linear`` is resolved here to explicit module names, so that what is adapted does not depend
on PEFT's guesses about mixture-of-experts models:

- every ``nn.Linear`` (attention, dense MLPs, a MoE block's shared expert, experts that are
  ``nn.Linear`` as in transformers 4's ``w1/w2/w3``), except the output head and the routers: the
  ``gate`` / ``router`` / ``*_gate`` children of a block that holds ``experts`` (and any module whose
  class is a router). A router adapted by LoRA would change which experts a token goes to, not what
  they compute;
- experts fused into stacked parameters (transformers 5 Mixtral / Qwen2-MoE: ``experts.gate_up_proj``,
  ``experts.down_proj``, no ``nn.Linear``): adapted as PEFT target parameters, which PEFT supports
  only without dropout, so with ``lora_dropout`` > 0 they are left out (logged) and LoRA adapts
  attention and whatever else is linear.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)

_ROUTER_NAMES = ("gate", "router")


def _is_router(leaf: str, module: torch.nn.Module, parent: torch.nn.Module | None) -> bool:
    if "router" in type(module).__name__.lower():
        return True
    in_moe_block = parent is not None and hasattr(parent, "experts")
    return in_moe_block and (leaf in _ROUTER_NAMES or leaf.endswith("_gate"))


def lora_targets(model: torch.nn.Module) -> tuple[list[str], list[str], list[str]]:
    """``(modules, expert_parameters, routers)`` of ``all-linear`` on ``model``: the ``nn.Linear``
    modules to adapt, the fused expert parameters (3-d, inside an ``experts`` module) and the
    router modules left out (all as full names)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    modules: dict[str, torch.nn.Module] = dict(model.named_modules())
    linear, routers, experts = [], [], []
    for name, module in modules.items():
        parent_name, _, leaf = name.rpartition(".")
        parent = modules.get(parent_name) if name else None
        if _is_router(leaf, module, parent):
            routers.append(name)
            continue
        if any(name.startswith(r + ".") for r in routers):
            continue
        if isinstance(module, torch.nn.Linear) and module is not head:
            linear.append(name)
        if leaf == "experts" and not isinstance(module, torch.nn.ModuleList):
            experts += [f"{name}.{p}" for p, t in module.named_parameters(recurse=False) if t.dim() == 3]
    return linear, experts, routers


def add_lora(model: Any, cfg: Any) -> Any:
    """``model`` with PEFT LoRA adapters of ``cfg`` (rank, alpha, dropout, target modules).

    ``lora_target_modules: [all-linear]`` is resolved by :func:`lora_targets`; an explicit list
    is passed to PEFT as given.
    """
    from peft import LoraConfig, get_peft_model

    targets: Any = cfg.lora_target_modules
    parameters: list[str] = []
    if targets in (["all-linear"], "all-linear"):
        targets, experts, routers = lora_targets(model)
        if experts and cfg.lora_dropout == 0:
            parameters = experts
        elif experts:
            log.warning("LoRA: the %d fused expert weights (%s, ...) are not adapted: PEFT adapts stacked parameters only with "
                        "lora_dropout 0 (got %s); adapting attention and the other linear layers", len(experts), experts[0], cfg.lora_dropout)
        log.info("LoRA on %d linear modules%s; routers left as they are: %s", len(targets),
                 f" and {len(parameters)} fused expert weights" if parameters else "", ", ".join(routers) or "none")
        if not targets and not parameters:
            raise ValueError("lora_target_modules all-linear: the model has no linear layer to adapt")
    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=targets,
                      target_parameters=parameters or None, task_type="CAUSAL_LM")
    return get_peft_model(model, lcfg)
