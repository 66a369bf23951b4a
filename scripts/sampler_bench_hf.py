"""The reference side of scripts/bench-sampler.sh: makes a random Gemma 2 of a named size (saved
for thrive to load) and times Hugging Face `generate` on it: PROMPTS copies of <bos>, greedy,
exactly NEW_TOKENS new tokens each, in batches.

usage: sampler_bench_hf.py {small,medium} OUT_DIR PROMPTS NEW_TOKENS [BATCH]
"""
import shutil
import sys
import time
from pathlib import Path

import torch
from transformers import Gemma2Config, Gemma2ForCausalLM

SIZES = {
    # the test fixture's shape
    "small": dict(vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=64),
    # a scaled-down Gemma-2-2B (same head layout, 4 layers, 16k vocabulary)
    "medium": dict(vocab_size=16384, hidden_size=576, intermediate_size=2304, num_hidden_layers=4,
                   num_attention_heads=8, num_key_value_heads=4, head_dim=72, sliding_window=256),
}
ROOT = Path(__file__).resolve().parent.parent


def main(size: str, out: str, prompts: int, new_tokens: int, batch: int) -> None:
    torch.manual_seed(0)
    cfg = Gemma2Config(**SIZES[size], query_pre_attn_scalar=SIZES[size]["head_dim"], max_position_embeddings=4096,
                       bos_token_id=2, eos_token_id=1, pad_token_id=0, hidden_activation="gelu_pytorch_tanh")
    model = Gemma2ForCausalLM(cfg).eval()
    model.save_pretrained(out, safe_serialization=True)
    shutil.copy(ROOT / "crates/sft/tests/fixtures/tiny-gemma2/tokenizer.json", Path(out) / "tokenizer.json")
    torch.set_num_threads(torch.get_num_threads())
    total = 0
    start = time.perf_counter()
    for first in range(0, prompts, batch):
        n = min(batch, prompts - first)
        ids = torch.full((n, 1), 2)
        with torch.no_grad():
            g = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                               min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
        total += (g.shape[1] - 1) * n
    secs = time.perf_counter() - start
    print(f"hf generate: {total} tokens in {secs:.2f} s = {total / secs:.1f} tokens/s (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)")


if __name__ == "__main__":
    a = sys.argv
    main(a[1], a[2], int(a[3]), int(a[4]), int(a[5]) if len(a) > 5 else int(a[3]))
