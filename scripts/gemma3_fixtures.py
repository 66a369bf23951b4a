#!/usr/bin/env python3
"""Parity fixtures for Gemma 3 in crates/sft: a tiny random Gemma 3 (text) and what transformers and
peft compute on it.

usage: scripts/.venv/bin/python scripts/gemma3_fixtures.py     (needs `bash scripts/setup-python.sh lm`)
Writes crates/sft/tests/fixtures/tiny-gemma3/:
  config.json, model.safetensors, tokenizer.json   the model: 3 layers (sliding, global, sliding; window 4
                   < sequence 10), QK-norm, RoPE base 1e4 on sliding layers and 1e6 on the global one, GQA,
                   no soft-capping; every norm weight random so that (1 + w) matters
  reference.safetensors: input_ids, attention_mask (one right-padded row), logits, loss,
                   full.<name> (the gradient of every parameter, tied embedding included) and
                   lora.<peft name> (LoRA r 4, alpha 8 on all 7 projections, B moved off zero)
"""
import pathlib
import shutil

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "crates" / "sft" / "tests" / "fixtures" / "tiny-gemma3"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main():
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(
        vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24, sliding_window=4,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
        max_position_embeddings=64, rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh",
        initializer_range=0.2, pad_token_id=0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=True,
        attention_dropout=0.0, attn_logit_softcapping=None, final_logit_softcapping=None,
    )
    model = Gemma3ForCausalLM(cfg).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(0.3 * torch.randn_like(p))
    OUT.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(OUT, safe_serialization=True)
    (OUT / "generation_config.json").unlink(missing_ok=True)
    shutil.copy(ROOT / "crates" / "pool" / "tests" / "fixtures" / "tokenizer.json", OUT / "tokenizer.json")

    ids = torch.randint(3, 400, (2, 10))
    ids[:, 0] = 2  # <bos>
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 7:] = 0
    ids[1, 7:] = 0  # right padding
    labels = ids.clone()
    labels[mask == 0] = -100

    # Full fine-tuning: every parameter's gradient.
    model.train()
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    tensors = {
        "input_ids": ids.to(torch.int64),
        "attention_mask": mask.to(torch.int64),
        "logits": out.logits.detach().contiguous(),
        "loss": out.loss.detach().reshape(1),
    }
    for name, p in model.named_parameters():
        tensors[f"full.{name}"] = p.grad.detach().clone().contiguous()
    model.zero_grad()

    # LoRA: the adapters' gradients.
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS, bias="none", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn_like(p))
    peft_model.train()
    loss = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    tensors["lora_loss"] = loss.detach().reshape(1)
    for n, p in peft_model.named_parameters():
        if p.requires_grad:
            key = n.replace(".default", "")
            tensors[f"lora.{key}"] = p.grad.detach().clone().contiguous()
            tensors[f"lora_value.{key}"] = p.detach().clone().contiguous()
    save_file(tensors, OUT / "reference.safetensors")
    print(f"loss {out.loss.item():.6f}, lora loss {loss.item():.6f}, {len(tensors)} tensors")


if __name__ == "__main__":
    main()
