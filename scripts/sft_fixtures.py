#!/usr/bin/env python3
"""Parity fixtures for crates/sft: a tiny random Gemma 2 and what transformers + peft compute on it.

usage: scripts/.venv/bin/python scripts/sft_fixtures.py     (needs `bash scripts/setup-python.sh lm`)
Writes crates/sft/tests/fixtures/tiny-gemma2/:
  config.json, model.safetensors, tokenizer.json       the model (2 layers: one sliding, one global)
  adapter/adapter_config.json, adapter_model.safetensors  a PEFT LoRA (r 4, alpha 8, all 7 projections)
                                                        with B moved off zero so every gradient is non-zero
  reference.safetensors: input_ids, attention_mask (right padding), logits, loss, grad.<peft name>,
                          and losses_after_steps (3 AdamW steps, lr 1e-2, weight decay 0.01)
"""
import json
import pathlib
import shutil

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import Gemma2Config, Gemma2ForCausalLM

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "crates" / "sft" / "tests" / "fixtures" / "tiny-gemma2"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main():
    torch.manual_seed(0)
    cfg = Gemma2Config(
        vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24, sliding_window=4,
        attn_logit_softcapping=5.0, final_logit_softcapping=3.0, max_position_embeddings=64,
        rms_norm_eps=1e-6, rope_theta=10000.0, hidden_activation="gelu_pytorch_tanh", initializer_range=0.2,
        pad_token_id=0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=True, attention_dropout=0.0,
    )
    model = Gemma2ForCausalLM(cfg).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(0.3 * torch.randn_like(p))
    OUT.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(OUT, safe_serialization=True)
    shutil.copy(ROOT / "crates" / "pool" / "tests" / "fixtures" / "tokenizer.json", OUT / "tokenizer.json")

    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS, bias="none", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn_like(p))
    peft_model.save_pretrained(OUT / "adapter")
    (OUT / "adapter" / "README.md").unlink(missing_ok=True)  # the model card peft writes is not needed

    ids = torch.randint(3, 400, (2, 10))
    ids[:, 0] = 2  # <bos>
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 7:] = 0
    ids[1, 7:] = 0  # right padding
    labels = ids.clone()
    labels[mask == 0] = -100

    peft_model.train()
    out = peft_model(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    tensors = {
        "input_ids": ids.to(torch.int64),
        "attention_mask": mask.to(torch.int64),
        "logits": out.logits.detach().contiguous(),
        "loss": out.loss.detach().reshape(1),
    }
    trainable = [(n, p) for n, p in peft_model.named_parameters() if p.requires_grad]
    for n, p in trainable:
        tensors[f"grad.{n.replace('.default', '')}"] = p.grad.detach().clone().contiguous()

    opt = torch.optim.AdamW([p for _, p in trainable], lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    losses = []
    for _ in range(3):
        opt.step()
        opt.zero_grad()
        loss = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
        losses.append(loss.item())
        loss.backward()
    tensors["losses_after_steps"] = torch.tensor(losses)
    save_file(tensors, OUT / "reference.safetensors")
    print(f"wrote {OUT}; loss {out.loss.item():.6f}, after steps {losses}")
    print(json.dumps(json.load(open(OUT / "adapter" / "adapter_config.json")))[:300])


if __name__ == "__main__":
    main()
