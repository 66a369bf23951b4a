"""A model directory with random weights at a real model's shape, for memory and speed checks
where the real weights cannot be had (no network): config.json, model.safetensors and the tiny
test tokenizer (its ids are all below 400, so any vocabulary size works).

    python make_shape_model.py OUT_DIR [SHAPE=gemma2-2b] [LAYERS=26] [DTYPE=bfloat16] [DEVICE=cpu]

DEVICE cuda draws the random weights on the GPU (the 2B shape's 2.6 billion in seconds).

Shapes: gemma2-2b (hidden 2304, 8 heads, 4 KV heads of dim 256, intermediate 9216, vocabulary
256,000, soft-capping 50/30, window 4096), tiny (the test fixture's shape, vocabulary 400).
"""

import json
import shutil
import sys
from pathlib import Path

import torch
from transformers import Gemma2Config, Gemma2ForCausalLM

SHAPES = {
    "gemma2-2b": dict(
        hidden_size=2304,
        intermediate_size=9216,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=256,
        vocab_size=256000,
        query_pre_attn_scalar=256,
        sliding_window=4096,
        attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=400,
        query_pre_attn_scalar=24,
        sliding_window=4,
        attn_logit_softcapping=5.0,
        final_logit_softcapping=3.0,
    ),
}


def main():
    out = Path(sys.argv[1])
    shape = sys.argv[2] if len(sys.argv) > 2 else "gemma2-2b"
    layers = int(sys.argv[3]) if len(sys.argv) > 3 else 26
    dtype = getattr(torch, sys.argv[4] if len(sys.argv) > 4 else "bfloat16")
    torch.manual_seed(0)
    cfg = Gemma2Config(
        num_hidden_layers=layers,
        layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)],
        max_position_embeddings=8192,
        rms_norm_eps=1e-6,
        hidden_activation="gelu_pytorch_tanh",
        bos_token_id=2,
        eos_token_id=1,
        pad_token_id=0,
        tie_word_embeddings=True,
        initializer_range=0.02,
        **SHAPES[shape],
    )
    device = sys.argv[5] if len(sys.argv) > 5 else "cpu"
    with torch.device(device):
        model = Gemma2ForCausalLM(cfg).to(dtype)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    fixture = Path(__file__).resolve().parent.parent / "crates/sft/tests/fixtures/tiny-gemma2"
    shutil.copy(fixture / "tokenizer.json", out / "tokenizer.json")
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<bos>",
                "eos_token": "<eos>",
                "pad_token": "<pad>",
            }
        )
    )
    print(out)


if __name__ == "__main__":
    main()
