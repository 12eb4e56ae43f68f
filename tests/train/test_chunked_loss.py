"""The chunked loss over trained positions equals the full-logits loss (values and gradients), keeps no logits for backward."""

from __future__ import annotations

import copy

import pytest
import torch

from derta.records import IGNORE_INDEX as IGN
from derta.train.collator import DeRTaCollator, PaddingFreeCollator
from derta.train.loss import chunked_weighted_causal_lm_loss, weighted_causal_lm_loss

ROWS = [  # MLE (weight 1) and RTO (λ = 0.7) rows; one with a zero-weight labelled position
    {"input_ids": [1, 5, 6, 7, 8, 9, 10], "labels": [IGN, IGN, IGN, 7, 8, 9, 10], "loss_weights": [0, 0, 0, 1, 1, 1, 1]},
    {"input_ids": [1, 9, 3, 4, 5, 6, 2, 2, 3, 11, 12], "labels": [IGN, IGN] + [4] * 9, "loss_weights": [0, 0] + [0.7] * 9},
    {"input_ids": [1, 2, 3], "labels": [IGN, 2, 3], "loss_weights": [0, 1, 0]},
    {"input_ids": [1, 7, 7, 7, 7, 7, 7, 8], "labels": [IGN, IGN, IGN, 4, IGN, 4, 4, 4], "loss_weights": [0, 0, 0, 0.7, 0, 0.7, 0.7, 0.7]},
]
N_TRAINED = 4 + 9 + 2 + 4  # labelled positions after the shift (the zero-weight one counts in N, as today)


def _loss_and_grads(model, fn):
    model.zero_grad()
    loss = fn()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def _hidden(model, batch):
    kw = {"attention_mask": batch["attention_mask"]} if "attention_mask" in batch else {"position_ids": batch["position_ids"]}
    return model.model(input_ids=batch["input_ids"], use_cache=False, **kw).last_hidden_state


@pytest.mark.parametrize("chunk", [1, 3, 5, 16, 10_000])  # splits rows (1, 3, 5) ... larger than every position
@pytest.mark.parametrize("layout", ["padded", "flat"])
def test_chunked_equals_full_logits(tiny_model, chunk, layout, one_torch_thread):
    batch = (DeRTaCollator(pad_token_id=0) if layout == "padded" else PaddingFreeCollator())(ROWS)
    labels, weights = batch["labels"], batch["loss_weights"]
    assert int(labels[:, 1:].ne(IGN).sum()) == N_TRAINED
    full = _loss_and_grads(tiny_model, lambda: weighted_causal_lm_loss(tiny_model.lm_head(_hidden(tiny_model, batch)), labels, weights, 40))
    chunked = _loss_and_grads(tiny_model, lambda: chunked_weighted_causal_lm_loss(_hidden(tiny_model, batch), tiny_model.lm_head, labels, weights, 40, chunk))
    assert full[0] > 0
    torch.testing.assert_close(chunked[0], full[0], rtol=1e-5, atol=1e-6)
    assert len(chunked[1]) == len(full[1]) > 0
    for a, b in zip(chunked[1], full[1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_chunked_default_count_and_unweighted(tiny_model, one_torch_thread):
    batch = DeRTaCollator(pad_token_id=0)(ROWS)
    h = _hidden(tiny_model, batch).detach()
    for weights in (None, batch["loss_weights"]):
        full = weighted_causal_lm_loss(tiny_model.lm_head(h), batch["labels"], weights)
        torch.testing.assert_close(chunked_weighted_causal_lm_loss(h, tiny_model.lm_head, batch["labels"], weights, chunk_size=4), full, rtol=1e-5, atol=1e-6)


def test_no_trained_position_is_a_connected_zero(tiny_model):
    batch = DeRTaCollator(pad_token_id=0)([{"input_ids": [1, 2, 3], "labels": [IGN] * 3, "loss_weights": [0.0] * 3}])
    loss = chunked_weighted_causal_lm_loss(_hidden(tiny_model, batch), tiny_model.lm_head, batch["labels"], batch["loss_weights"])
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is not None and p.grad.abs().sum() == 0 for p in tiny_model.parameters())


def _largest_saved_logits(fn, head: torch.nn.Linear) -> int:
    """Elements of the largest tensor with a vocabulary dimension that autograd keeps for backward
    (the head's own weight aside)."""
    sizes = [0]
    weight = head.weight.untyped_storage().data_ptr()

    def pack(t):
        if t.dim() and t.shape[-1] == head.out_features and t.untyped_storage().data_ptr() != weight:
            sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn().backward()
    return max(sizes)


def test_chunked_keeps_no_logits_for_backward(tiny_model, one_torch_thread):
    batch = DeRTaCollator(pad_token_id=0)(ROWS)
    V = tiny_model.config.vocab_size
    h = _hidden(tiny_model, batch).detach().requires_grad_(True)
    full = _largest_saved_logits(lambda: weighted_causal_lm_loss(tiny_model.lm_head(h), batch["labels"], batch["loss_weights"]), tiny_model.lm_head)
    chunked = _largest_saved_logits(lambda: chunked_weighted_causal_lm_loss(h, tiny_model.lm_head, batch["labels"], batch["loss_weights"], chunk_size=2), tiny_model.lm_head)
    assert full >= batch["input_ids"].numel() * V  # the (B, T, V) logits
    assert chunked == 0  # each chunk's logits are recomputed in backward, never kept


def _trainer(model, tmp_path, chunk):
    from derta.train.trainer import DeRTaTrainer, TrainConfig, training_arguments

    cfg = TrainConfig(model="tiny", output_dir=str(tmp_path), batch_size=4, total_batch_size=4, max_steps=1, save_steps=100, progress=False)
    return DeRTaTrainer(model=model, args=training_arguments(cfg), loss_chunk_size=chunk, train_dataset=ROWS, data_collator=DeRTaCollator(0))


@pytest.mark.parametrize("lora_head", [False, True])
@pytest.mark.parametrize("layout", ["padded", "flat"])
def test_trainer_chunked_loss_equals_full_logits(tiny_model, tmp_path, layout, lora_head, one_torch_thread):
    """DeRTaTrainer.compute_loss: the hidden-state path (plain and PEFT-wrapped, LoRA on the LM head too) = the logits path."""
    if lora_head:
        from peft import LoraConfig, get_peft_model

        tiny_model = get_peft_model(tiny_model, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "lm_head"], task_type="CAUSAL_LM"))
        for n, p in tiny_model.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.5)  # a LoRA head that is not a no-op
    batch = (DeRTaCollator(pad_token_id=0) if layout == "padded" else PaddingFreeCollator())(ROWS)
    results = []
    for chunk in (None, 3):
        trainer = _trainer(tiny_model, tmp_path / str(chunk), chunk)
        results.append(_loss_and_grads(tiny_model, lambda: trainer.compute_loss(tiny_model, dict(batch), num_items_in_batch=torch.tensor(N_TRAINED))))
        assert trainer.loss_mode().startswith("chunked" if chunk else "full")
    (l_full, g_full), (l_chunk, g_chunk) = results
    torch.testing.assert_close(l_chunk, l_full, rtol=1e-5, atol=1e-6)
    assert len(g_chunk) == len(g_full) > 0
    for a, b in zip(g_chunk, g_full):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    if lora_head:  # the adapter on the head is used (not only its base weight)
        head = tiny_model.get_base_model().lm_head
        plain = copy.deepcopy(head.base_layer)
        h = torch.randn(2, 64)
        assert (head(h) - plain(h)).abs().max() > 1e-3


def test_logit_transforming_models_use_the_full_logits(tiny_model):
    from derta.train.trainer import chunked_loss_problem

    assert chunked_loss_problem(tiny_model) == ""
    tiny_model.config.final_logit_softcapping = 30.0
    assert "final_logit_softcapping" in chunked_loss_problem(tiny_model)
