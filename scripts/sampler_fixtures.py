"""Fixtures for the sampler's tests. The tiny random Gemma 2 of the sft tests only repeats its
last token, so greedy decoding would prove little: this script first fully fine-tunes it (torch,
AdamW, 300 steps) on the pool tests' HelpSteer2-shaped rows in the paper's text format, saves it
as crates/sampler/tests/fixtures/tiny-trained/, and records Hugging Face transformers' greedy
`generate` on it, one prompt at a time.

usage: scripts/.venv/bin/python scripts/sampler_fixtures.py
"""
import json
import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "crates/sft/tests/fixtures/tiny-gemma2"
DATA = ROOT / "crates/pool/tests/fixtures/helpsteer2/train.jsonl"
OUT = ROOT / "crates/sampler/tests/fixtures"


def main() -> None:
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(BASE)
    model = AutoModelForCausalLM.from_pretrained(BASE, torch_dtype=torch.float32, attn_implementation="eager")
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    texts = [f"user: {r['prompt']}\nassistant: {r['response']}" for r in rows]
    enc = [tok(t)["input_ids"] + [tok.eos_token_id] for t in texts]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(300):
        batch = [enc[(step * 8 + i) % len(enc)] for i in range(8)]
        width = max(map(len, batch))
        ids = torch.tensor([b + [0] * (width - len(b)) for b in batch])
        mask = torch.tensor([[1] * len(b) + [0] * (width - len(b)) for b in batch])
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    print("final training loss", loss.item())
    model.eval()
    trained = OUT / "tiny-trained"
    trained.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(trained, safe_serialization=True)
    shutil.copy(BASE / "tokenizer.json", trained / "tokenizer.json")
    for extra in ["generation_config.json"]:
        (trained / extra).unlink(missing_ok=True)

    prompts = [tok("")["input_ids"]] + [tok(f"user: {p}\nassistant:")["input_ids"]
                                        for p in ["Describe robots.", "List three facts about bees.", "Hi"]]
    outputs = []
    for p in prompts:
        ids = torch.tensor([p])
        with torch.no_grad():
            g = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=40, do_sample=False,
                               eos_token_id=tok.eos_token_id, pad_token_id=0)
        out = g[0, len(p):].tolist()
        if tok.eos_token_id in out:
            out = out[:out.index(tok.eos_token_id)]
        outputs.append(out)
        print(repr(tok.decode(p + out)))
    (OUT / "greedy.json").write_text(json.dumps(
        {"max_new_tokens": 40, "eos": tok.eos_token_id, "prompts": prompts, "outputs": outputs}, indent=1))


if __name__ == "__main__":
    main()
