#!/usr/bin/env python3
"""The embedded assets of `thrive demo`: a tiny pre-trained Gemma 2, its tokenizer, and a "real" data set.

What: a small, fully generated world (30 animals, 12 colours, 20 countries and their capitals, foods,
arithmetic with the numbers 0-20, comparisons, little stories) gives
  - a pre-training corpus of plain English paragraphs about that world (no `user:`/`assistant:` turns),
  - a HelpSteer2-shaped supervised data set of questions and short answers about the same world
    (rows {prompt, response, helpfulness, correctness, coherence, complexity, verbosity}, scores 0-4),
  - a byte-level BPE tokenizer (512 tokens; <pad>=0, <eos>=1, <bos>=2, <unk>=3; encoding prepends <bos>),
  - a 4-layer Gemma 2-shaped causal LM (~0.66 M parameters) pre-trained from scratch on the corpus only.

Why: the language-model setting of the paper (Gemma 2 fine-tuned on HelpSteer2, then sampled from <bos>
and parsed as `user: {prompt}\\nassistant: {response}`) needs a base model that knows English and the facts
but not the chat format, so that fine-tuning on the real data visibly teaches the format and sampling
gives parseable generations, while staying small enough to ship in the repository and to run on a CPU.
Everything is generated here from fixed seeds: no third-party data, no network.

How: `scripts/.venv/bin/python scripts/make_demo_assets.py` (needs `bash scripts/setup-python.sh lm`;
about 5 minutes on 2 idle CPU cores). It writes
  data/demo/corpus/pretrain.txt.gz            the pre-training paragraphs, one per line (for reference)
  data/demo/helpsteer2/train.jsonl            1000 rows
  data/demo/helpsteer2/validation.jsonl       200 rows (other rows, same distribution)
  data/demo/model/{config.json, model.safetensors, tokenizer.json}
and prints sanity checks: the pre-training loss, and on a throw-away copy of the model a short full
fine-tune on train.jsonl (validation loss before/after) followed by unconditional sampling from <bos>
(the share of generations that parse as `user: ...\\nassistant: ...`). Only the pre-trained base is saved.
The script is deterministic (fixed seeds, 2 torch threads, eager attention on CPU).
"""
import argparse
import copy
import gzip
import json
import math
import pathlib
import random
import time

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import Gemma2Config, Gemma2ForCausalLM

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "data" / "demo"
PAD, EOS, BOS, UNK = 0, 1, 2, 3
MAX_LEN = 128  # tokens per training sequence, <bos> and <eos> included

# ---------------------------------------------------------------------------------------------------------
# The world
# ---------------------------------------------------------------------------------------------------------

COLOURS = ["red", "blue", "green", "yellow", "brown", "black", "white", "grey", "pink", "orange", "purple", "gold"]

# name, plural, colour, food, legs, sound (None: no sound facts), home, size (bigger number = bigger animal)
ANIMALS = [
    ("cow", "cows", "brown", "grass", 4, "moo", "on a farm", 8),
    ("sheep", "sheep", "white", "grass", 4, "baa", "on a farm", 6),
    ("horse", "horses", "black", "hay", 4, "neigh", "on a farm", 8),
    ("pig", "pigs", "pink", "apples", 4, "oink", "on a farm", 6),
    ("goat", "goats", "grey", "grass", 4, "meh", "on a farm", 5),
    ("duck", "ducks", "white", "bread", 2, "quack", "on a pond", 3),
    ("chicken", "chickens", "red", "seeds", 2, "cluck", "on a farm", 3),
    ("dog", "dogs", "brown", "meat", 4, "woof", "in a house", 5),
    ("cat", "cats", "black", "fish", 4, "meow", "in a house", 4),
    ("mouse", "mice", "grey", "cheese", 4, "squeak", "in a house", 2),
    ("rabbit", "rabbits", "white", "carrots", 4, None, "in a field", 3),
    ("frog", "frogs", "green", "bugs", 4, "croak", "on a pond", 2),
    ("fish", "fish", "gold", "bugs", 0, None, "in a river", 3),
    ("owl", "owls", "brown", "mice", 2, "hoot", "in the forest", 3),
    ("lion", "lions", "gold", "meat", 4, "roar", "in Africa", 8),
    ("tiger", "tigers", "orange", "meat", 4, "roar", "in the jungle", 8),
    ("elephant", "elephants", "grey", "leaves", 4, None, "in Africa", 11),
    ("giraffe", "giraffes", "yellow", "leaves", 4, None, "in Africa", 10),
    ("zebra", "zebras", "white", "grass", 4, None, "in Africa", 8),
    ("monkey", "monkeys", "brown", "bananas", 2, None, "in the jungle", 5),
    ("bear", "bears", "brown", "honey", 4, "growl", "in the forest", 8),
    ("wolf", "wolves", "grey", "meat", 4, "howl", "in the forest", 6),
    ("fox", "foxes", "orange", "mice", 4, None, "in the forest", 5),
    ("snake", "snakes", "green", "mice", 0, "hiss", "in the grass", 4),
    ("spider", "spiders", "black", "bugs", 8, None, "in a web", 1),
    ("bee", "bees", "yellow", "flowers", 6, "buzz", "in a hive", 1),
    ("ant", "ants", "red", "seeds", 6, None, "in the ground", 1),
    ("whale", "whales", "blue", "fish", 0, None, "in the sea", 12),
    ("penguin", "penguins", "black", "fish", 2, None, "on the ice", 5),
    ("camel", "camels", "brown", "leaves", 4, None, "in the desert", 9),
]
NUMBER_WORDS = {0: "no", 2: "two", 4: "four", 6: "six", 8: "eight"}

# name, colour, kind (fruit / vegetable / food), countable
FOODS = [
    ("apple", "red", "fruit", True), ("banana", "yellow", "fruit", True), ("orange", "orange", "fruit", True),
    ("grape", "purple", "fruit", True), ("lemon", "yellow", "fruit", True), ("plum", "purple", "fruit", True),
    ("cherry", "red", "fruit", True), ("pear", "green", "fruit", True), ("carrot", "orange", "vegetable", True),
    ("pea", "green", "vegetable", True), ("potato", "brown", "vegetable", True), ("corn", "yellow", "vegetable", False),
    ("bread", "brown", "food", False), ("milk", "white", "food", False), ("cheese", "yellow", "food", False),
    ("rice", "white", "food", False), ("honey", "gold", "food", False), ("chocolate", "brown", "food", False),
]
FOOD_PLURAL = {"cherry": "cherries", "potato": "potatoes"}
THINGS = [("The sky", "blue"), ("Grass", "green"), ("Snow", "white"), ("The sun", "yellow"), ("Coal", "black"),
          ("The sea", "blue"), ("A rose", "red"), ("A cloud", "white"), ("The night", "black"), ("A leaf", "green")]

COUNTRIES = [
    ("France", "Paris", "Europe"), ("Spain", "Madrid", "Europe"), ("Italy", "Rome", "Europe"),
    ("Germany", "Berlin", "Europe"), ("Greece", "Athens", "Europe"), ("Norway", "Oslo", "Europe"),
    ("Poland", "Warsaw", "Europe"), ("Ireland", "Dublin", "Europe"), ("Portugal", "Lisbon", "Europe"),
    ("Japan", "Tokyo", "Asia"), ("China", "Beijing", "Asia"), ("India", "New Delhi", "Asia"),
    ("Egypt", "Cairo", "Africa"), ("Kenya", "Nairobi", "Africa"), ("Brazil", "Brasilia", "South America"),
    ("Peru", "Lima", "South America"), ("Chile", "Santiago", "South America"), ("Canada", "Ottawa", "North America"),
    ("Mexico", "Mexico City", "North America"), ("Australia", "Canberra", "Australia"),
]
NAMES = ["Anna", "Tom", "Sam", "Mia", "Ben", "Lily", "Max", "Zoe", "Leo", "Emma"]
COUNTABLES = ["apples", "eggs", "books", "cards", "stones", "shells", "pens", "coins", "cakes", "balls"]


def art(word):
    return ("an " if word[0] in "aeiou" else "a ") + word


def cap(s):
    return s[0].upper() + s[1:]


def food_plural(name):
    return FOOD_PLURAL.get(name, name + "s")


def eaters(food):
    return [a for a in ANIMALS if a[3] == food]


def dwellers(home):
    return [a for a in ANIMALS if a[6] == home]


# ---------------------------------------------------------------------------------------------------------
# Facts as plain sentences (pre-training)
# ---------------------------------------------------------------------------------------------------------

def animal_facts(r, a):
    name, pl, colour, food, legs, sound, home, size = a
    facts = [
        r.choice([f"The {name} is {colour}.", f"{art(name).capitalize()} is {colour}.",
                  f"{cap(pl)} are {colour}." if pl != name else f"The {name} is {colour}."]),
        r.choice([f"{cap(pl)} eat {food}.", f"The {name} eats {food}.", f"{art(name).capitalize()} eats {food}."]),
        f"{art(name).capitalize()} has {NUMBER_WORDS[legs]} legs.",
        r.choice([f"The {name} lives {home}.", f"{cap(pl)} live {home}."]),
    ]
    if sound:
        facts.append(r.choice([f"The {name} says {sound}.", f"{art(name).capitalize()} says {sound}."]))
    other = r.choice([b for b in ANIMALS if b[7] != size])
    if other[7] < size:
        facts.append(f"The {name} is bigger than the {other[0]}.")
    else:
        facts.append(f"The {name} is smaller than the {other[0]}.")
    mates = [b for b in eaters(food) if b[0] != name]
    if mates:
        b = r.choice(mates)
        facts.append(f"{cap(pl)} and {b[1]} both eat {food}.")
    return facts


def sent_animal(r):
    facts = animal_facts(r, r.choice(ANIMALS))
    r.shuffle(facts)
    return facts[: r.randint(2, len(facts))]


def sent_food(r):
    out = []
    for _ in range(r.randint(2, 5)):
        name, colour, kind, countable = r.choice(FOODS)
        if countable:
            out.append(r.choice([f"{art(name).capitalize()} is {colour}.", f"{cap(food_plural(name))} are {colour}."]))
            if kind != "food":
                out.append(r.choice([f"{art(name).capitalize()} is {art(kind)}.",
                                     f"{cap(food_plural(name))} are {kind if kind == 'fruit' else 'vegetables'}."]))
        else:
            out.append(f"{cap(name)} is {colour}.")
    if r.random() < 0.5:
        thing, colour = r.choice(THINGS)
        out.append(f"{thing} is {colour}.")
    return out


def sent_country(r):
    out = []
    for _ in range(r.randint(1, 3)):
        country, capital, cont = r.choice(COUNTRIES)
        out += [r.choice([f"The capital of {country} is {capital}.", f"{capital} is the capital of {country}."]),
                r.choice([f"{country} is in {cont}.", f"{country} is a country in {cont}."])]
        if r.random() < 0.4:
            out.append(f"{capital} is a big city in {country}.")
    return out


def sent_arith(r):
    out = []
    for _ in range(r.randint(2, 6)):
        kind = r.random()
        if kind < 0.4:
            a = r.randint(0, 20)
            b = r.randint(0, 20 - a)
            out.append(r.choice([f"{a} plus {b} is {a + b}.", f"{a} plus {b} is {a + b}.",
                                 f"{a} and {b} make {a + b}."]))
        elif kind < 0.75:
            a = r.randint(0, 20)
            b = r.randint(0, a)
            out.append(f"{a} minus {b} is {a - b}.")
        else:
            a, b = r.sample(range(21), 2)
            out.append(f"{a} is bigger than {b}." if a > b else f"{a} is smaller than {b}.")
    return out


def sent_story(r):
    n = r.choice(NAMES)
    kind = r.random()
    if kind < 0.35:
        a = r.choice(ANIMALS)
        s = [f"{n} saw {art(a[0])} {a[6]}.", f"The {a[0]} was {a[2]}."]
        if a[5]:
            s.append(f"The {a[0]} said {a[5]}.")
        s.append(f"{n} gave the {a[0]} some {a[3]}.")
        return s
    if kind < 0.7:
        thing = r.choice(COUNTABLES)
        a = r.randint(1, 15)
        b = r.randint(1, 20 - a)
        if r.random() < 0.5:
            return [f"{n} has {a} {thing}.", f"{r.choice(NAMES)} gives {n} {b} more.",
                    f"Now {n} has {a + b} {thing}."]
        return [f"{n} has {a + b} {thing}.", f"{n} gives {b} away.", f"Now {n} has {a} {thing}."]
    if kind < 0.85:
        country, capital, cont = r.choice(COUNTRIES)
        return [f"{n} lives in {capital}.", f"{capital} is the capital of {country}.", f"{country} is in {cont}."]
    name, colour, _, countable = r.choice(FOODS)
    if countable:
        return [f"{n} has {art(colour)} {name}.", f"{n} likes {food_plural(name)}."]
    return [f"{n} likes {name}.", f"{cap(name)} is {colour}."]


def sent_group(r):
    food = r.choice(sorted({a[3] for a in ANIMALS if len(eaters(a[3])) >= 2}))
    names = [a[1] for a in eaters(food)]
    r.shuffle(names)
    k = r.randint(2, min(3, len(names)))
    s = [f"{cap(', '.join(names[:k - 1]))} and {names[k - 1]} eat {food}."]
    home = r.choice(sorted({a[6] for a in ANIMALS if len(dwellers(a[6])) >= 2}))
    names = [a[1] for a in dwellers(home)]
    r.shuffle(names)
    s.append(f"{cap(names[0])} and {names[1]} live {home}.")
    x, y = r.sample(ANIMALS, 2)
    if x[7] != y[7]:
        big, small = (x, y) if x[7] > y[7] else (y, x)
        s.append(f"{art(big[0]).capitalize()} is bigger than {art(small[0])}.")
    return s


def sent_quiz(r):
    """Questions followed by their answers in running text (a quiz in a book); no turn labels."""
    out = []
    for _ in range(r.randint(1, 3)):
        q, ans = qa_pair(r)[:2]
        out += [q, ans]
    return out


PRETRAIN_KINDS = [(sent_animal, 0.30), (sent_food, 0.10), (sent_country, 0.12), (sent_arith, 0.15),
                  (sent_story, 0.18), (sent_group, 0.08), (sent_quiz, 0.07)]


def paragraph(r):
    x = r.random()
    for f, w in PRETRAIN_KINDS:
        if x < w:
            return " ".join(f(r))
        x -= w
    return " ".join(PRETRAIN_KINDS[0][0](r))


# ---------------------------------------------------------------------------------------------------------
# Questions and answers (the HelpSteer2-shaped data)
# ---------------------------------------------------------------------------------------------------------

def qa_pair(r):
    """(prompt, response, complexity, long) about the world; every answer is true in it."""
    k = r.random()
    if k < 0.30:  # one animal
        a = r.choice(ANIMALS)
        name, pl, colour, food, legs, sound, home, size = a
        t = r.randint(0, 5)
        if t == 0:
            q = r.choice([f"What colour is the {name}?", f"What colour is {art(name)}?"])
            ans = f"The {name} is {colour}."
            if r.random() < 0.3:
                return q, ans + f" It lives {home}.", 0, True
            return q, ans, 0, False
        if t == 1:
            q = r.choice([f"What does {art(name)} eat?", f"What do {pl} eat?"])
            return q, r.choice([f"{cap(pl)} eat {food} {home}.", f"{art(name).capitalize()} eats {food}."]), 0, False
        if t == 2:
            return f"How many legs does {art(name)} have?", f"{art(name).capitalize()} has {NUMBER_WORDS[legs]} legs.", 0, False
        if t == 3 and sound:
            q = r.choice([f"What sound does {art(name)} make?", f"What does the {name} say?"])
            return q, f"The {name} says {sound}.", 0, False
        if t == 4:
            q = r.choice([f"Where does the {name} live?", f"Where do {pl} live?"])
            return q, r.choice([f"The {name} lives {home}.", f"{cap(pl)} live {home}."]), 0, False
        facts = animal_facts(r, a)[:4]
        return f"Tell me about the {name}.", " ".join(facts), 1, True
    if k < 0.42:  # two animals
        x, y = r.sample([a for a in ANIMALS], 2)
        while x[7] == y[7]:
            x, y = r.sample(ANIMALS, 2)
        big, small = (x, y) if x[7] > y[7] else (y, x)
        if r.random() < 0.5:
            return (f"Which is bigger, the {x[0]} or the {y[0]}?",
                    f"The {big[0]} is bigger than the {small[0]}.", 1, False)
        if x is big:
            return f"Is the {x[0]} bigger than the {y[0]}?", f"Yes, the {x[0]} is bigger than the {y[0]}.", 1, False
        return f"Is the {x[0]} bigger than the {y[0]}?", f"No, the {x[0]} is smaller than the {y[0]}.", 1, False
    if k < 0.50:  # groups
        if r.random() < 0.6:
            food = r.choice(sorted({a[3] for a in ANIMALS if len(eaters(a[3])) >= 2}))
            b, c = r.sample(eaters(food), 2)
            return (f"Name two animals that eat {food}.",
                    f"Two animals that eat {food} are the {b[0]} and the {c[0]}.", 1, False)
        home = r.choice(sorted({a[6] for a in ANIMALS if len(dwellers(a[6])) >= 2}))
        b, c = r.sample(dwellers(home), 2)
        return f"Name two animals that live {home}.", f"The {b[0]} and the {c[0]} live {home}.", 1, False
    if k < 0.64:  # countries
        country, capital, cont = r.choice(COUNTRIES)
        t = r.randint(0, 2)
        if t == 0:
            ans = f"The capital of {country} is {capital}."
            if r.random() < 0.3:
                return f"What is the capital of {country}?", ans + f" {country} is in {cont}.", 0, True
            return f"What is the capital of {country}?", ans, 0, False
        if t == 1:
            return f"{capital} is the capital of which country?", f"{capital} is the capital of {country}.", 0, False
        return f"Where is {country}?", r.choice([f"{country} is in {cont}.", f"{country} is a country in {cont}."]), 0, False
    if k < 0.84:  # numbers
        t = r.randint(0, 3)
        if t == 0:
            a = r.randint(0, 20)
            b = r.randint(0, 20 - a)
            return f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.", 0, False
        if t == 1:
            a = r.randint(0, 20)
            b = r.randint(0, a)
            return f"What is {a} minus {b}?", f"{a} minus {b} is {a - b}.", 0, False
        a, b = r.sample(range(21), 2)
        if t == 2:
            return (f"Which is bigger, {a} or {b}?", f"{max(a, b)} is bigger than {min(a, b)}.", 0, False)
        return (f"Is {a} bigger than {b}?",
                f"Yes, {a} is bigger than {b}." if a > b else f"No, {a} is smaller than {b}.", 0, False)
    if k < 0.93:  # foods
        name, colour, kind, countable = r.choice(FOODS)
        if countable and kind != "food" and r.random() < 0.4:
            return (f"Is {art(name)} a fruit or a vegetable?", f"{art(name).capitalize()} is {art(kind)}.", 0, False)
        if countable:
            return f"What colour is {art(name)}?", r.choice([f"{art(name).capitalize()} is {colour}.",
                                                             f"The colour of {art(name)} is {colour}."]), 0, False
        return f"What colour is {name}?", f"The colour of {name} is {colour}.", 0, False
    # word problems
    n, m = r.sample(NAMES, 2)
    thing = r.choice(COUNTABLES)
    a = r.randint(1, 15)
    b = r.randint(1, 20 - a)
    if r.random() < 0.5:
        return (f"{n} has {a} {thing} and {m} gives {n} {b} more. How many {thing} does {n} have now?",
                f"{n} has {a + b} {thing} now, because {a} plus {b} is {a + b}.", 2, True)
    return (f"{n} has {a + b} {thing} and gives {b} away. How many {thing} does {n} have left?",
            f"{n} has {a} {thing} left, because {a + b} minus {b} is {a}.", 2, True)


def sft_rows(r, n, exclude=frozenset()):
    rows, seen = [], set(exclude)
    while len(rows) < n:
        prompt, response, complexity, long = qa_pair(r)
        if (prompt, response) in seen:
            continue
        seen.add((prompt, response))
        words = len(response.split())
        assert 4 <= words <= 25, response

        def jitter(v):
            return max(0, min(4, v - (1 if r.random() < 0.15 else 0)))
        rows.append({
            "prompt": prompt,
            "response": response,
            "helpfulness": jitter(4 if long or complexity else r.choice([3, 4])),
            "correctness": jitter(4),
            "coherence": jitter(4),
            "complexity": min(4, complexity + (1 if r.random() < 0.1 else 0)),
            "verbosity": 2 if long else r.choice([1, 1, 2]),
        })
    return rows


def sft_text(row):
    return f"user: {row['prompt']}\nassistant: {row['response']}"


# ---------------------------------------------------------------------------------------------------------
# Tokenizer, model, training
# ---------------------------------------------------------------------------------------------------------

def make_tokenizer(texts):
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", BOS)])
    return tok


def model_config():
    return Gemma2Config(
        vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, query_pre_attn_scalar=32, sliding_window=64,
        max_position_embeddings=256, rms_norm_eps=1e-6, rope_theta=10000.0, hidden_activation="gelu_pytorch_tanh",
        attn_logit_softcapping=50.0, final_logit_softcapping=30.0, tie_word_embeddings=True,
        bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, attention_dropout=0.0, attn_implementation="eager",
    )


def batchify(seqs):
    """Right-padded input_ids, attention_mask, labels (every real token is a target)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


def epoch_batches(seqs, batch, g):
    """One epoch of batches of similar lengths (little padding): shuffle, sort within windows of 64
    batches by length, cut into batches, shuffle the batches. Incomplete batches are dropped."""
    perm = torch.randperm(len(seqs), generator=g).tolist()
    out = []
    window = batch * 64
    for w in range(0, len(perm), window):
        chunk = sorted(perm[w: w + window], key=lambda i: len(seqs[i]))
        out += [chunk[b: b + batch] for b in range(0, len(chunk) - batch + 1, batch)]
    return [out[i] for i in torch.randperm(len(out), generator=g).tolist()]


def train(model, seqs, steps, batch, lr, warmup, seed, log_every, label):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    batches, recent = [], []
    model.train()
    t0 = time.time()
    for step in range(steps):
        if not batches:
            batches = epoch_batches(seqs, batch, g)
        ids, mask, labels = batchify([seqs[i] for i in batches.pop()])
        if step < warmup:
            f = (step + 1) / warmup
        else:
            f = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
        for group in opt.param_groups:
            group["lr"] = lr * f
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        recent = (recent + [loss.item()])[-20:]
        if (step + 1) % log_every == 0 or step + 1 == steps:
            print(f"  {label} step {step + 1:4d}/{steps}  loss {sum(recent) / len(recent):.3f}  "
                  f"({time.time() - t0:.0f} s)", flush=True)
    model.eval()
    return sum(recent) / len(recent)


@torch.no_grad()
def eval_loss(model, seqs, batch=50):
    """Mean token cross-entropy over all targets of `seqs`."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(seqs), batch):
        ids, mask, labels = batchify(seqs[i: i + batch])
        n = int((labels[:, 1:] != -100).sum())
        total += model(input_ids=ids, attention_mask=mask, labels=labels).loss.item() * n
        count += n
    return total / count


@torch.no_grad()
def sample(model, n, max_new, seed):
    """n sequences from <bos> alone: temperature 1, no top-k/top-p, stop at <eos>. Returns token lists."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((n, 1), BOS, dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    for _ in range(max_new):
        logits = model(input_ids=ids).logits[:, -1, :].float()
        nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=g).squeeze(1)
        nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        done |= nxt == EOS
        if done.all():
            break
    out = []
    for row in ids.tolist():
        row = row[1:]
        out.append(row[: row.index(EOS)] if EOS in row else row)
    return out


@torch.no_grad()
def greedy(model, tok, prompt, max_new=8):
    ids = tok.encode(prompt, add_special_tokens=True).ids
    for _ in range(max_new):
        nxt = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
        if nxt == EOS:
            break
        ids.append(nxt)
    return tok.decode(ids, skip_special_tokens=True)[len(prompt):]


def fact_probe(model, tok):
    """Greedy completions of plain-English facts: how much of the world the base knows."""
    r = random.Random(4)
    sums = [(a, b) for a, b in ((r.randint(0, 10), r.randint(0, 10)) for _ in range(30))]
    families = {
        "capitals": [(f"The capital of {c} is", f" {k}.") for c, k, _ in COUNTRIES],
        "legs": [(f"{art(a[0]).capitalize()} has", f" {NUMBER_WORDS[a[4]]} legs.") for a in ANIMALS],
        "sums": [(f"{a} plus {b} is", f" {a + b}.") for a, b in sums],
    }
    out = {}
    for fam, items in families.items():
        out[fam] = sum(greedy(model, tok, p).startswith(want) for p, want in items) / len(items)
    return out


def parses(text):
    return text.startswith("user: ") and text.count("assistant: ") == 1


# ---------------------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=pathlib.Path, default=OUT)
    ap.add_argument("--paragraphs", type=int, default=24000, help="pre-training paragraphs generated")
    ap.add_argument("--pretrain-steps", type=int, default=3200)
    ap.add_argument("--check-steps", type=int, default=150, help="steps of the throw-away SFT check")
    args = ap.parse_args()
    torch.set_num_threads(2)
    start = time.time()

    # 1. Text.
    r = random.Random(0)
    corpus = [paragraph(r) for _ in range(args.paragraphs)]
    assert not any("user:" in p or "assistant:" in p for p in corpus)
    train_rows = sft_rows(random.Random(1), 1000)
    valid_rows = sft_rows(random.Random(2), 200, exclude={(x["prompt"], x["response"]) for x in train_rows})
    r3 = random.Random(3)
    held_out = [paragraph(r3) for _ in range(300)]  # unseen paragraphs for a held-out loss (first 128 tokens)

    out = args.out
    (out / "corpus").mkdir(parents=True, exist_ok=True)
    (out / "helpsteer2").mkdir(parents=True, exist_ok=True)
    (out / "model").mkdir(parents=True, exist_ok=True)
    for name, rows in [("train", train_rows), ("validation", valid_rows)]:
        with open(out / "helpsteer2" / f"{name}.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    words = [len(x["response"].split()) for x in train_rows + valid_rows]
    print(f"corpus: {len(corpus)} paragraphs, {sum(len(p) for p in corpus)} characters; "
          f"SFT: {len(train_rows)} train + {len(valid_rows)} validation rows, responses {min(words)}-{max(words)} words")
    for p in corpus[:4]:
        print("  |", p)

    # 2. Tokenizer.
    tok = make_tokenizer(corpus + [sft_text(x) for x in train_rows + valid_rows])
    assert [tok.token_to_id(t) for t in ["<pad>", "<eos>", "<bos>", "<unk>"]] == [PAD, EOS, BOS, UNK]
    assert tok.get_vocab_size() == 512, tok.get_vocab_size()
    assert tok.encode("", add_special_tokens=True).ids == [BOS]
    probes = corpus[:100] + [sft_text(x) for x in train_rows[:96]] + [
        " leading space", "two  spaces\nand\n\nnewlines ", "tabs\tand ünïcödé ✓", "trailing newline\n"]
    for s in probes:
        e = tok.encode(s, add_special_tokens=True)
        assert e.ids[0] == BOS and BOS not in e.ids[1:], s
        assert tok.decode(e.ids, skip_special_tokens=True) == s, s
    assert len(probes) == 200
    tok.save(str(out / "model" / "tokenizer.json"))
    # Keep the paragraphs that fit whole (<bos> + text + <eos> <= MAX_LEN): no training sequence is cut.
    n_all = len(corpus)
    corpus = [p for p in corpus if len(tok.encode(p, add_special_tokens=True).ids) + 1 <= MAX_LEN]
    with open(out / "corpus" / "pretrain.txt.gz", "wb") as raw:
        with gzip.GzipFile(filename="pretrain.txt", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as f:
            f.write(("\n".join(corpus) + "\n").encode())
    lens = [len(tok.encode(p, add_special_tokens=True).ids) + 1 for p in corpus]
    print(f"pre-training corpus: {len(corpus)} of {n_all} paragraphs fit in {MAX_LEN} tokens")
    print(f"tokenizer: vocab {tok.get_vocab_size()}, round trip ok on {len(probes)} strings; "
          f"pre-training sequences {min(lens)}-{max(lens)} tokens (mean {sum(lens) / len(lens):.1f})")

    def encode(text):
        return tok.encode(text, add_special_tokens=True).ids + [EOS]

    pre_seqs = [encode(p) for p in corpus]
    held_seqs = [encode(p)[:MAX_LEN] for p in held_out]
    sft_train = [encode(sft_text(x)) for x in train_rows]
    sft_valid = [encode(sft_text(x)) for x in valid_rows]

    # 3. Pre-training.
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(model_config()).float()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters; pre-training {args.pretrain_steps} steps of 32 sequences", flush=True)
    t0 = time.time()
    final = train(model, pre_seqs, args.pretrain_steps, batch=32, lr=3e-3, warmup=max(1, args.pretrain_steps // 20),
                  seed=0, log_every=50, label="pretrain")
    pre_time = time.time() - t0
    held = eval_loss(model, held_seqs)
    print(f"pre-training: {pre_time:.0f} s, final train loss {final:.3f}, held-out corpus loss {held:.3f}")
    probe = fact_probe(model, tok)
    print("fact probe (greedy): " + ", ".join(f"{k} {v:.0%}" for k, v in probe.items()))
    base_samples = [tok.decode(s, skip_special_tokens=True) for s in sample(model, 4, 64, seed=1)]
    for s in base_samples:
        print("  base |", s.replace("\n", "\\n"))
    assert final < 1.5, "pre-training did not converge"
    assert not any(s.startswith("user: ") for s in base_samples)

    model.save_pretrained(out / "model", safe_serialization=True)
    (out / "model" / "generation_config.json").unlink(missing_ok=True)
    (out / "model" / "model.safetensors").chmod(0o644)  # safetensors writes 0600
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["model_type"] == "gemma2" and cfg["vocab_size"] == 512 and cfg["tie_word_embeddings"]

    # 4. Sanity check on a throw-away copy: a short full fine-tune teaches the format.
    sft = copy.deepcopy(model)
    before = eval_loss(sft, sft_valid)
    train(sft, sft_train, args.check_steps, batch=16, lr=1e-3, warmup=10, seed=1, log_every=50, label="sft")
    after = eval_loss(sft, sft_valid)
    texts = [tok.decode(s, skip_special_tokens=True) for s in sample(sft, 20, 64, seed=2)]
    ok = sum(parses(t) for t in texts)
    print(f"SFT check: validation loss {before:.3f} -> {after:.3f}; {ok}/20 unconditional samples parse")
    for t in texts[:5]:
        print("  sft |", t.replace("\n", "\\n"))
    assert after < 0.7 * before, "fine-tuning did not lower the validation loss noticeably"
    assert ok >= 10, "too few generations parse as user/assistant"

    sizes = {p.relative_to(out).as_posix(): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
    for k, v in sizes.items():
        print(f"  {k:40s} {v:>9d} bytes")
    print(f"data/demo total {sum(sizes.values())} bytes; runtime {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
