"""LoRA on mixture-of-experts models (tiny config-built Mixtral / Qwen2-MoE): routers are never
adapted, dropout 0.05 (the paper's LoRA setting) trains, and a dense model gets PEFT's own all-linear."""

from types import SimpleNamespace

import pytest
import torch

from derta.train.lora import add_lora, lora_targets


def _mixtral():
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(0)
    return MixtralForCausalLM(MixtralConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                                            num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=64))


def _qwen2_moe():
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    torch.manual_seed(0)
    return Qwen2MoeForCausalLM(Qwen2MoeConfig(vocab_size=64, hidden_size=32, intermediate_size=48, moe_intermediate_size=16,
                                              shared_expert_intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                                              num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, max_position_embeddings=64))


def _cfg(dropout):
    return SimpleNamespace(lora_r=4, lora_alpha=8, lora_dropout=dropout, lora_target_modules=["all-linear"])


def _routers(model):
    """Router modules, found by what they compute: a map from the hidden state to one score per expert."""
    n_experts = model.config.num_local_experts if hasattr(model.config, "num_local_experts") else model.config.num_experts
    out = []
    for name, module in model.named_modules():
        w = getattr(module, "weight", None)
        if name.endswith(".mlp.gate") or name.endswith("shared_expert_gate"):
            assert w is not None and w.shape[-1] == model.config.hidden_size and w.shape[0] in (n_experts, 1)
            out.append(name)
    return out


def _train_step(model):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    model.train()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    return loss


@pytest.mark.parametrize("build", [_mixtral, _qwen2_moe])
def test_moe_lora_with_dropout_trains_and_leaves_the_routers(build, one_torch_thread):
    model = build()
    routers = _routers(model)
    assert routers
    before = {n: model.get_submodule(n).weight.detach().clone() for n in routers}
    peft_model = add_lora(model, _cfg(0.05))
    lora_names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert lora_names and all("lora_" in n for n in lora_names)
    for r in routers:
        assert not any(f"{r}." in n for n in lora_names), f"router {r} is adapted"
    assert any("self_attn.q_proj.lora_B" in n for n in lora_names)
    dropouts = [m for n, m in peft_model.named_modules() if n.endswith("lora_dropout.default")]
    assert dropouts and all(isinstance(d, torch.nn.Dropout) and d.p == 0.05 for d in dropouts)
    loss = _train_step(peft_model)
    assert torch.isfinite(loss)
    moved = [n for n, p in peft_model.named_parameters() if "lora_B" in n and p.abs().sum() > 0]
    assert moved  # lora_B starts at zero
    base = peft_model.get_base_model()
    for r in routers:
        assert torch.equal(base.get_submodule(r).weight, before[r])


def test_qwen2_moe_shared_expert_mlp_is_adapted_but_not_its_gate():
    linear, _, routers = lora_targets(_qwen2_moe())
    assert "model.layers.0.mlp.shared_expert.gate_proj" in linear and "model.layers.0.mlp.shared_expert.down_proj" in linear
    assert "model.layers.0.mlp.shared_expert_gate" in routers and "model.layers.0.mlp.shared_expert_gate" not in linear


def test_fused_experts_are_adapted_without_dropout(one_torch_thread):
    model = _mixtral()
    fused = [n for n, p in model.named_parameters() if ".experts." in n and p.dim() == 3]
    assert fused  # transformers 5 stacks the experts: no nn.Linear per expert
    peft_model = add_lora(model, _cfg(0.0))
    assert sorted(peft_model.peft_config["default"].target_parameters) == sorted(fused)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert any(".experts." in n for n in trainable)
    assert not any(".mlp.gate." in n for n in trainable)
    assert torch.isfinite(_train_step(peft_model))


def test_dense_model_gets_the_same_modules_as_peft_all_linear(tiny_model):
    import copy

    from peft import LoraConfig, get_peft_model

    theirs = get_peft_model(copy.deepcopy(tiny_model), LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    ours = add_lora(tiny_model, _cfg(0.05))
    assert set(ours.peft_config["default"].target_modules) == set(theirs.peft_config["default"].target_modules)
