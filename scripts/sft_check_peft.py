"""Checks that an export of `thrive sft` loads in Hugging Face: the adapter through
`peft.PeftModel.from_pretrained` on the base model, the merged weights through
`AutoModelForCausalLM.from_pretrained`, and that both give the same logits.

usage: scripts/.venv/bin/python scripts/sft_check_peft.py BASE_MODEL_DIR EXPORT_DIR
(EXPORT_DIR is a `thrive sft --out` directory written with --merged.)
"""
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer


def main(base_dir: str, export_dir: str) -> None:
    tok = AutoTokenizer.from_pretrained(base_dir)
    batch = tok(["user: Describe bees.\nassistant: bees are", "user: Hi\nassistant: Hello there"],
                return_tensors="pt", padding=True)
    base = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        plain = base(**batch).logits
    peft_model = PeftModel.from_pretrained(base, f"{export_dir}/adapter").eval()
    merged = AutoModelForCausalLM.from_pretrained(f"{export_dir}/merged", torch_dtype=torch.float32,
                                                  attn_implementation="eager").eval()
    with torch.no_grad():
        a = peft_model(**batch).logits
        b = merged(**batch).logits
    mask = batch["attention_mask"].bool()
    diff = (a - b)[mask].abs().max().item()
    moved = (a - plain)[mask].abs().max().item()
    print(f"peft adapter vs merged weights: max |logit difference| {diff:.2e}; adapter moved logits by {moved:.2e}")
    assert moved > 1e-3, "the adapter did not change the model: was it loaded?"
    assert diff < 1e-4, "the adapter and the merged weights disagree"
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
