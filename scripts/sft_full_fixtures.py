"""Fixture for full fine-tuning parity: the gradient of every parameter of the tiny random Gemma 2
(crates/sft/tests/fixtures/tiny-gemma2, made by scripts/sft_fixtures.py) on the batch stored in its
reference.safetensors, by Hugging Face transformers. The tied embedding's gradient includes its use
as the output layer.

usage: scripts/.venv/bin/python scripts/sft_full_fixtures.py
writes crates/sft/tests/fixtures/tiny-gemma2/full_grads.safetensors
"""
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import Gemma2ForCausalLM

DIR = Path(__file__).resolve().parent.parent / "crates/sft/tests/fixtures/tiny-gemma2"


def main() -> None:
    ref = load_file(DIR / "reference.safetensors")
    ids, mask = ref["input_ids"], ref["attention_mask"]
    labels = ids.clone()
    labels[mask == 0] = -100
    model = Gemma2ForCausalLM.from_pretrained(DIR, torch_dtype=torch.float32).train()
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    tensors = {"loss": out.loss.detach().reshape(1)}
    for name, p in model.named_parameters():
        tensors[f"grad.{name}"] = p.grad.detach().clone().contiguous()
    save_file(tensors, DIR / "full_grads.safetensors")
    print(f"{len(tensors) - 1} gradients, loss {out.loss.item():.6f}")


if __name__ == "__main__":
    main()
