"""The peer side of scripts/bench-train.sh: the same fine-tuning job in PyTorch + PEFT.

    python train_bench_peft.py data MODEL_DIR OUT_DIR STEPS SEQS LEN
        writes OUT_DIR/train.jsonl (SEQS * STEPS rows) and OUT_DIR/valid.jsonl (1 row) whose
        training texts are LEN tokens long, give or take a few (demo prompts, responses made of
        demo responses), for both sides to train on.
    python train_bench_peft.py train MODEL_DIR TRAIN.jsonl SEQS MICRO lora|full PRECISION
        trains on every row, SEQS sequences a step in micro-batches of MICRO (token-weighted
        accumulation, as thrive), AdamW; prints one JSON line with the seconds of every step, the
        target tokens a step and, on CUDA, the peak GPU memory. PRECISION: f32 or
        bf16-autocast on the CPU; cuda-bf16 (frozen weights in bf16, LoRA adapters in f32, as
        PEFT keeps them) or cuda-f32 on the GPU.
    python train_bench_peft.py generate MODEL_DIR PROMPTS NEW_TOKENS cpu|cuda
        Hugging Face `generate` from <bos>: PROMPTS sequences in one batch, exactly NEW_TOKENS
        new tokens each, temperature 1 and top-p 1 (the paper's sampling); prints tokens/s.

Sequences are built as thrive builds them: the paper's `user: …\\nassistant: …` text, <bos>
from the tokenizer's template, <eos> appended, right padding, loss on every token.
"""

import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def text(row):
    return f"user: {row['prompt']}\nassistant: {row['response']}"


def make_data(model_dir, out_dir, steps, seqs, length):
    tok = AutoTokenizer.from_pretrained(model_dir)
    demo = [json.loads(l) for l in open("data/demo/helpsteer2/train.jsonl")]
    rows, i = [], 0
    while len(rows) < steps * seqs + 1:
        prompt, parts = demo[i % len(demo)]["prompt"], []
        j = i
        while True:
            j += 1
            parts.append(demo[j % len(demo)]["response"])
            row = {"prompt": prompt, "response": " ".join(parts)}
            if len(tok(text(row))["input_ids"]) + 1 >= length:
                break
        rows.append(row)
        i = j + 1
    with open(f"{out_dir}/train.jsonl", "w") as f:
        for r in rows[:-1]:
            f.write(json.dumps(r) + "\n")
    with open(f"{out_dir}/valid.jsonl", "w") as f:
        f.write(json.dumps(rows[-1]) + "\n")


def train(model_dir, data, seqs, micro, mode, precision):
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    cuda = precision.startswith("cuda")
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if precision == "cuda-bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
        model = get_peft_model(model, cfg)
        lr = 2e-4
    else:
        lr = 8e-6
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    rows = [json.loads(l) for l in open(data)]
    encoded = [tok(text(r))["input_ids"] + [tok.eos_token_id] for r in rows]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    seconds, tokens_per_step = [], []
    for start in range(0, len(encoded), seqs):
        step = encoded[start : start + seqs]
        targets = sum(len(s) - 1 for s in step)
        t0 = time.perf_counter()
        for m in range(0, len(step), micro):
            chunk = step[m : m + micro]
            width = max(len(s) for s in chunk)
            ids = torch.tensor([s + [pad] * (width - len(s)) for s in chunk], device=device)
            mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in chunk], device=device)
            labels = ids.masked_fill(mask == 0, -100)
            n = sum(len(s) - 1 for s in chunk)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-autocast"):
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            (loss * (n / targets)).backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - t0)
        tokens_per_step.append(targets)
        print(f"step {len(seconds)}: {seconds[-1]:.2f} s, loss {loss.item():.4f}", file=sys.stderr, flush=True)
    out = {"step_seconds": seconds, "tokens_per_step": tokens_per_step}
    if cuda:
        out["peak_gpu_bytes"] = torch.cuda.max_memory_allocated()
    print(json.dumps(out))


def generate(model_dir, prompts, new_tokens, device):
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    ids = torch.full((prompts, 1), 2, device=device)
    start = time.perf_counter()
    with torch.no_grad():
        g = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                           min_new_tokens=new_tokens, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                           pad_token_id=0)
    if device == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - start
    total = (g.shape[1] - 1) * prompts
    print(json.dumps({"tokens": total, "seconds": secs, "tokens_per_s": total / secs}))


if __name__ == "__main__":
    if sys.argv[1] == "generate":
        generate(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    elif sys.argv[1] == "data":
        make_data(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
    else:
        train(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7])
