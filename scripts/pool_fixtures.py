#!/usr/bin/env python3
"""Fixtures for crates/pool: a small real tokenizer and HelpSteer2-shaped data files.

usage: scripts/.venv/bin/python scripts/pool_fixtures.py
Writes crates/pool/tests/fixtures/:
  tokenizer.json        a byte-level BPE (vocab 400) with <pad> <eos> <bos> <unk>; adds <bos> like Gemma's
  helpsteer2/train.jsonl, train.jsonl.gz, train.parquet, validation.jsonl.gz
                        rows {prompt, response, helpfulness, correctness, coherence, complexity, verbosity}
  token_counts.json     the tokenizer's count of `<bos> user: {prompt}\nassistant: {response}` + <eos> per train row
"""
import gzip
import json
import pathlib
import random

import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, processors, trainers

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates" / "pool" / "tests" / "fixtures"

TOPICS = ["rivers", "prime numbers", "bread", "volcanoes", "the moon", "chess", "bees", "glaciers", "tea", "robots"]
VERBS = ["Explain", "Describe", "Summarise", "List three facts about", "Write a haiku about"]


def rows(n, rng):
    out = []
    for i in range(n):
        topic, verb = rng.choice(TOPICS), rng.choice(VERBS)
        prompt = f"{verb} {topic}."
        # Some long responses, so a 64-token limit drops a few rows.
        words = rng.randint(3, 60)
        response = " ".join(rng.choice(["It", "is", "a", "fact", "that", topic, "are", "often", "seen", "here"])
                            for _ in range(words)) + "."
        scores = {k: rng.randint(0, 4) for k in ["helpfulness", "correctness", "coherence", "complexity", "verbosity"]}
        out.append({"prompt": prompt, "response": response, **scores})
    return out


def main():
    rng = random.Random(0)
    train, valid = rows(60, rng), rows(12, rng)
    OUT.mkdir(parents=True, exist_ok=True)
    hs = OUT / "helpsteer2"
    hs.mkdir(exist_ok=True)
    with open(hs / "train.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in train)
    with gzip.open(hs / "train.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in train)
    with gzip.open(hs / "validation.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in valid)
    pq.write_table(pa.Table.from_pylist(train), hs / "train.parquet")

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [f"user: {r['prompt']}\nassistant: {r['response']}" for r in train + valid]
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    tok.save(str(OUT / "tokenizer.json"))

    eos = tok.token_to_id("<eos>")
    counts = []
    for r in train:
        ids = tok.encode(f"user: {r['prompt']}\nassistant: {r['response']}").ids
        counts.append(len(ids) + (0 if ids[-1] == eos else 1))
    (OUT / "token_counts.json").write_text(json.dumps(counts))
    print(f"wrote fixtures to {OUT}")


if __name__ == "__main__":
    main()
