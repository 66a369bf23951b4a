"""The peers of scripts/bench-decode.sh, on the real Gemma 3 270M: llama.cpp (llama-cpp-python)
on the GGUF file, or Hugging Face `generate` on the model directory converted from it (the same
weights, dequantized to f32). Greedy, exactly NEW_TOKENS new tokens per sequence (EOS ignored),
BATCH copies of PROMPT; timing from the first prompt token to the last new token, model loading
excluded. Prints one line: "<peer>: N tokens in S s = R tokens/s".

usage: decode_bench_peers.py llama GGUF PROMPT NEW_TOKENS
       decode_bench_peers.py hf MODEL_DIR PROMPT NEW_TOKENS BATCH [sample]
           sample: the paper's sampling (temperature 1, top-p 1, no top-k) instead of greedy
"""
import os
import sys
import time

THREADS = os.cpu_count() or 1


def llama(gguf: str, prompt: str, new_tokens: int) -> None:
    from llama_cpp import Llama, __version__

    llm = Llama(model_path=gguf, n_ctx=512, n_threads=THREADS, n_threads_batch=THREADS, n_batch=512,
                verbose=False, logits_all=False)
    ids = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    out = []
    start = time.perf_counter()
    # The generator decodes until told to stop; EOS does not end it. top_k 1 is greedy.
    for tok in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
        out.append(tok)
        if len(out) == new_tokens:
            break
    secs = time.perf_counter() - start
    text = llm.detokenize(out).decode(errors="replace")
    print(f"text: {prompt}{text!r}", file=sys.stderr)
    print(f"llama.cpp (llama-cpp-python {__version__}, {THREADS} threads): {len(out)} tokens in {secs:.2f} s = "
          f"{len(out) / secs:.1f} tokens/s")


def hf(model_dir: str, prompt: str, new_tokens: int, batch: int, sample: bool = False) -> None:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    enc = tok([prompt] * batch, return_tensors="pt")
    start = time.perf_counter()
    with torch.no_grad():
        how = dict(do_sample=True, temperature=1.0, top_p=1.0, top_k=0) if sample else dict(do_sample=False)
        torch.manual_seed(0)
        g = model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0, **how)
    secs = time.perf_counter() - start
    total = (g.shape[1] - enc["input_ids"].shape[1]) * batch
    print(f"text: {prompt}{tok.decode(g[0, enc['input_ids'].shape[1]:])!r}", file=sys.stderr)
    print(f"hf generate (transformers {transformers.__version__}, torch {torch.__version__}, f32, "
          f"{'sampling' if sample else 'greedy'}, "
          f"{torch.get_num_threads()} threads): {total} tokens in {secs:.2f} s = {total / secs:.1f} tokens/s")


if __name__ == "__main__":
    a = sys.argv
    if len(a) >= 5 and a[1] == "llama":
        llama(a[2], a[3], int(a[4]))
    elif len(a) >= 6 and a[1] == "hf":
        hf(a[2], a[3], int(a[4]), int(a[5]), len(a) > 6 and a[6] == "sample")
    else:
        sys.exit(__doc__)
