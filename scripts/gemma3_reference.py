#!/usr/bin/env python3
"""Reference outputs of Gemma 3 270M (Q4_K_M GGUF) as transformers runs it, for a candle port.

usage: scripts/.venv/bin/python scripts/gemma3_reference.py [GGUF]
  (needs `bash scripts/setup-python.sh lm`; GGUF defaults to $THRIVE_GEMMA3_GGUF, else the path
   scripts/fetch-gemma3.sh prints; a few minutes on 2 CPU cores)
Writes crates/sft/tests/fixtures/gemma3_reference.json:
  prompts: for each prompt its ids (with <bos>), the greedy continuation (24 new tokens, EOS not
           special-cased: the argmax is taken at every step) as ids and text, and the logits at the
           last prompt position: the first 64 entries and the top 10 (ids, values)
  config: the Gemma3TextConfig transformers builds from the GGUF metadata (plus its defaults)
  norms: each kind of norm weight as the file stores it and as transformers uses it
  tensor_types: the GGUF storage type of each kind of tensor
  dummy_prefix_mean_loss: mean next-token loss of a few sentences tokenized as Gemma does (no dummy
                prefix) and with a leading "▁" added, as a check that no prefix is what the model expects
  norm_offset_mean_loss: the same loss as loaded, and with 1 added to every norm weight (what the
                model would be if the file stored w rather than w + 1)

transformers dequantizes every tensor to float32 when it loads a GGUF (Gemma2TensorProcessor, also
used for gemma3, subtracts 1 from every `*norm.weight` since Gemma's RMSNorm scales by 1 + w and
llama.cpp stores w + 1).
"""
import json
import pathlib
import re
import sys
import time

import numpy as np
import torch
from gguf import GGUFReader
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from gemma3_tokenizer_fixtures import ROOT, SHA256, default_gguf, read_vocab, sentencepiece_from_gguf  # noqa: E402

OUT = ROOT / "crates" / "sft" / "tests" / "fixtures" / "gemma3_reference.json"
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "user: What is the boiling point of water?\n\nassistant:",
    "Once upon a time",
]
NEW_TOKENS = 24
SENTENCES = [
    "The capital of France is Paris.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "She opened the door and walked slowly into the dark room.",
    "Machine learning models are trained on large amounts of data.",
]
# GGUF norm tensor (layer 0 where per layer) -> transformers parameter.
NORMS = {
    "blk.0.attn_norm.weight": "model.layers.0.input_layernorm.weight",
    "blk.0.post_attention_norm.weight": "model.layers.0.post_attention_layernorm.weight",
    "blk.0.ffn_norm.weight": "model.layers.0.pre_feedforward_layernorm.weight",
    "blk.0.post_ffw_norm.weight": "model.layers.0.post_feedforward_layernorm.weight",
    "blk.0.attn_q_norm.weight": "model.layers.0.self_attn.q_norm.weight",
    "blk.0.attn_k_norm.weight": "model.layers.0.self_attn.k_norm.weight",
    "output_norm.weight": "model.norm.weight",
}


def stats(a) -> dict:
    a = np.asarray(a, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "max": float(a.max()),
            "first4": [float(x) for x in a.reshape(-1)[:4]]}


def gguf_tensors(path):
    reader = GGUFReader(str(path))
    norms, types = {}, {}
    for t in reader.tensors:
        kind = re.sub(r"^blk\.\d+\.", "blk.N.", t.name)
        types.setdefault(kind, set()).add(t.tensor_type.name)
        if t.name in NORMS:
            assert t.tensor_type.name == "F32", (t.name, t.tensor_type.name)
            norms[t.name] = np.array(t.data, dtype=np.float32)
    # Every layer's norms, to see the pattern is not layer 0's alone.
    every = {}
    for t in reader.tensors:
        kind = re.sub(r"^blk\.\d+\.", "blk.N.", t.name)
        if "norm" in kind and kind.startswith("blk.N."):
            every.setdefault(kind, []).append(float(np.asarray(t.data, dtype=np.float64).mean()))
    return norms, {k: sorted(v) for k, v in sorted(types.items())}, every


@torch.no_grad()
def greedy(model, ids, steps):
    """Argmax at every step, without a cache: plain and obviously right for a few dozen tokens."""
    seq = torch.tensor([ids])
    first = None
    for _ in range(steps):
        logits = model(input_ids=seq, logits_to_keep=1).logits[0, -1]
        if first is None:
            first = logits.clone()
        seq = torch.cat([seq, logits.argmax().view(1, 1)], dim=1)
    return seq[0, len(ids):].tolist(), first


@torch.no_grad()
def mean_loss(model, ids):
    logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
    return float(torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:])))


def main():
    path = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else default_gguf()
    if not path.is_file():
        sys.exit(f"{path}: missing; run `bash scripts/fetch-gemma3.sh` first")
    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    tokens, scores, types, meta = read_vocab(path)
    sp = sentencepiece_from_gguf(tokens, scores, types, meta)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    start = time.time()
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    load_s = time.time() - start
    params = dict(model.named_parameters())
    dtypes = sorted({str(p.dtype) for p in params.values()})
    assert dtypes == ["torch.float32"], dtypes
    tied = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()

    file_norms, tensor_types, every_layer = gguf_tensors(path)
    norms = {}
    for gguf_name, hf_name in NORMS.items():
        stored, used = file_norms[gguf_name], params[hf_name].detach().numpy()
        norms[gguf_name] = {
            "transformers": hf_name,
            "gguf": stats(stored),
            "transformers_weight": stats(used),
            "max_abs(gguf - 1 - transformers)": float(np.abs(stored - 1.0 - used).max()),
        }
    norms["per_layer_gguf_means"] = every_layer

    results = []
    for prompt in PROMPTS:
        ids = tokenizer.encode(prompt, add_special_tokens=True)
        assert ids == [meta["bos_token_id"]] + sp.encode(prompt), (prompt, ids)
        new, logits = greedy(model, ids, NEW_TOKENS)
        top = torch.topk(logits, 10)
        text = sp.decode(new)
        results.append({
            "prompt": prompt,
            "prompt_ids": ids,
            "greedy_ids": new,
            "greedy_text": text,
            "last_logits_first64": [float(x) for x in logits[:64]],
            "last_logits_top10_ids": top.indices.tolist(),
            "last_logits_top10_values": [float(x) for x in top.values],
        })
        print(f"--- {prompt!r}\n{prompt}{text}\n    top-10 next: "
              + ", ".join(f"{sp.id_to_piece(i)!r} {v:.2f}" for i, v in zip(top.indices.tolist(), top.values.tolist())))

    prefix = {"no_prefix": [], "with_prefix": []}
    for s in SENTENCES:
        prefix["no_prefix"].append(mean_loss(model, [meta["bos_token_id"]] + sp.encode(s)))
        prefix["with_prefix"].append(mean_loss(model, [meta["bos_token_id"]] + sp.encode(" " + s)))
    prefix = {k: float(np.mean(v)) for k, v in prefix.items()}
    print("dummy-prefix check (mean loss):", prefix)

    # Norm offset check: the same sentences if the file's norm weights were w rather than w + 1.
    sentences = [[meta["bos_token_id"]] + sp.encode(s) for s in SENTENCES]
    offset = {"as_loaded": float(np.mean([mean_loss(model, ids) for ids in sentences]))}
    norm_params = [p for name, p in params.items() if name.endswith("norm.weight")]
    with torch.no_grad():
        for p in norm_params:
            p.add_(1.0)
        offset["norms_plus_one"] = float(np.mean([mean_loss(model, ids) for ids in sentences]))
        for p in norm_params:
            p.sub_(1.0)
    print("norm-offset check (mean loss):", offset)

    config = {k: v for k, v in model.config.to_dict().items() if k not in ("quantization_config",)}
    fixture = {
        "about": "Gemma 3 270M Q4_K_M GGUF run by transformers (dequantized to float32) from "
                 "scripts/gemma3_reference.py; see its docstring.",
        "gguf_sha256": SHA256,
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
        "tied_embeddings": tied,
        "config": config,
        "norms": norms,
        "tensor_types": tensor_types,
        "dummy_prefix_mean_loss": prefix,
        "norm_offset_mean_loss": offset,
        "prompts": results,
    }
    OUT.write_text(json.dumps(fixture, ensure_ascii=False, indent=1) + "\n")
    print(f"{OUT}: {OUT.stat().st_size} bytes; model loaded in {load_s:.1f} s")
    print("norms (mean): " + "; ".join(
        f"{k} file {v['gguf']['mean']:.3f} -> transformers {v['transformers_weight']['mean']:.3f}"
        for k, v in norms.items() if k != "per_layer_gguf_means"))


if __name__ == "__main__":
    main()
