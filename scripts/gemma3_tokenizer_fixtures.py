#!/usr/bin/env python3
"""Tokenizer fixtures for Gemma 3 270M (GGUF): what SentencePiece itself makes of a few hundred strings.

usage: scripts/.venv/bin/python scripts/gemma3_tokenizer_fixtures.py [GGUF]
  (needs `bash scripts/setup-python.sh lm`; GGUF defaults to $THRIVE_GEMMA3_GGUF, else the path
   scripts/fetch-gemma3.sh prints)
Writes crates/sft/tests/fixtures/gemma3_tokenizer.json.

The trusted reference is the `sentencepiece` library running a ModelProto rebuilt from the GGUF
metadata: BPE, byte fallback, the normalizer Gemma ships (identity, no dummy prefix, whitespace
kept, spaces escaped to U+2581), pieces, scores and types exactly as the file stores them, except
that
  - the runs of spaces llama.cpp's converter respelled as real spaces ("  ") go back to "▁▁", their
    spelling in Gemma's tokenizer.model (SentencePiece matches user-defined pieces after escaping);
  - `<unk>`, which the converter marked CONTROL, is UNKNOWN again (SentencePiece needs one).
In SentencePiece, control tokens typed as text ("<bos>") are plain text; user-defined tokens
("\\n", runs of spaces or tabs, "<b>", ...) are always matched whole.

transformers' own GGUF tokenizer (AutoTokenizer.from_pretrained(dir, gguf_file=...)) is run too.
It matches control tokens typed as text as the tokens themselves, and it does not treat the runs of
spaces as user-defined tokens (it builds runs longer than 31 by merges, unlike sentencepiece and
llama.cpp). Every string where it disagrees with sentencepiece gets `transformers_ids`, so the Rust
test can check the control-token mode too; any other disagreement is printed as a failure.
"""
import hashlib
import json
import os
import pathlib
import random
import sys

from gguf import GGUFReader
from sentencepiece import SentencePieceProcessor
from sentencepiece import sentencepiece_model_pb2 as sp_pb2

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "crates" / "sft" / "tests" / "fixtures" / "gemma3_tokenizer.json"
NAME = "gemma-3-270m-q4_k_m.gguf"
SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def default_gguf() -> pathlib.Path:
    if os.environ.get("THRIVE_GEMMA3_GGUF"):
        return pathlib.Path(os.environ["THRIVE_GEMMA3_GGUF"])
    cache = pathlib.Path(os.environ.get("THRIVE_CACHE", pathlib.Path.home() / ".cache" / "thrive"))
    return cache / "gemma3-270m" / NAME


def read_vocab(path):
    reader = GGUFReader(str(path))
    field = lambda key: reader.fields[key].contents()  # noqa: E731
    meta = {
        key: field(f"tokenizer.ggml.{key}")
        for key in ["model", "bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id",
                    "add_bos_token", "add_eos_token", "add_space_prefix"]
    }
    return field("tokenizer.ggml.tokens"), field("tokenizer.ggml.scores"), field("tokenizer.ggml.token_type"), meta


def sentencepiece_from_gguf(tokens, scores, types, meta) -> SentencePieceProcessor:
    m = sp_pb2.ModelProto()
    t = m.trainer_spec
    t.model_type = sp_pb2.TrainerSpec.BPE
    t.vocab_size = len(tokens)
    t.byte_fallback = True
    t.unk_id, t.bos_id, t.eos_id, t.pad_id = (
        meta["unknown_token_id"], meta["bos_token_id"], meta["eos_token_id"], meta["padding_token_id"])
    t.unk_piece, t.bos_piece, t.eos_piece, t.pad_piece = (tokens[i] for i in (t.unk_id, t.bos_id, t.eos_id, t.pad_id))
    n = m.normalizer_spec
    n.name = "identity"
    n.add_dummy_prefix = bool(meta["add_space_prefix"])  # False for Gemma
    n.remove_extra_whitespaces = False
    n.escape_whitespaces = True
    n.precompiled_charsmap = b""
    for i, (tok, score, typ) in enumerate(zip(tokens, scores, types)):
        p = m.pieces.add()
        p.piece = "\u2581" * len(tok) if typ == USER_DEFINED and tok and not tok.strip(" ") else tok
        p.score = float(score)
        p.type = UNKNOWN if i == t.unk_id else int(typ)
    sp = SentencePieceProcessor()
    sp.LoadFromSerializedProto(m.SerializeToString())
    return sp


def strings():
    """Hand-written cases, then seeded random mixtures of the same ingredients."""
    base = [
        "", " ", "  ", "   ", "a", "A", "Hello", "Hello world", "Hello, world!", " Hello", "Hello ", "  Hello  ",
        "hello\tworld", "hello\nworld", "hello\n\nworld", "hello\r\nworld", "\n", "\n\n", "\n\n\n", "\t", "\t\t",
        "line one\nline two\n", "trailing newline\n", "\nleading newline", " \n \n ", "\n \n", "a \n b", " \t\n\t ",
        "The quick brown fox jumps over the lazy dog.",
        "The capital of France is",
        "Once upon a time",
        "Once upon a time, in a land far, far away, there lived a princess who loved mathematics.",
        "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness.",
        "In 1905, Albert Einstein published four groundbreaking papers; the third introduced special relativity.",
        "Model collapse: when models are trained recursively on their own outputs, the tails of the distribution vanish.",
        "user: What is the boiling point of water?\n\nassistant:",
        "user: What is the boiling point of water?\n\nassistant: Water boils at 100 °C (212 °F) at sea level.",
        "user: Write a haiku about autumn.\n\nassistant: Crisp leaves drift and fall,\nwhispering to the cold earth —\ngold turns into rust.",
        "user:\n\nassistant:", "user: hi\n\nassistant: hello!\n\nuser: bye\n\nassistant: bye", "User: ...\n\nAssistant: ...",
        "def fibonacci(n):",
        "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
        "fn main() {\n    println!(\"Hello, {}!\", name);\n}\n",
        "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
        "#include <stdio.h>\nint main(void) { return 0; }",
        "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
        "import numpy as np\nx = np.linspace(0, 1, 101)\nprint(x.mean())",
        "if __name__ == \"__main__\":\n\tmain()\n",
        "{\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
        "<html><body><p>Paragraph</p></body></html>",
        "<table><tr><td>1</td><td>2</td></tr></table>",
        "<b>bold</b> and <i>italic</i> and <code>x = 1</code>",
        "a<b>c", "<<b>>", "<bbox>", "</div>", "<div class=\"x\">",
        "    indented four", "        eight spaces", "\t\tdouble tab", "x" + " " * 31 + "y", "x" + " " * 40 + "y",
        " " * 64, "\n" * 40, "\t" * 35, "a" * 50, "ab" * 40, "=" * 30, "-" * 80, "." * 20, "!?" * 10,
        "0", "1", "12", "123", "1234", "12345678901234567890", "3.14159", "-42", "1,000,000", "1e-6", "0x1F",
        "2024-01-31", "12:30:45", "$19.99", "50%", "+1 (555) 010-9999", "v1.2.3", "192.168.0.1", "1/2 + 3/4 = 5/4",
        "naïve café résumé", "Ångström", "Über straße", "façade", "coöperate", "São Paulo", "Zürich", "ñandú", "œuvre",
        "e\u0301", "n\u0303o", "ﬁ ligature", "Ⅻ", "①②③", "½ ¼ ¾", "x² + y² = z²", "H₂O", "∀x ∈ ℝ: x² ≥ 0", "∑ ∫ ∂ √ ∞ ≈ ≠",
        "日本語のテキストです。", "東京は日本の首都です。", "中文文本测试", "我爱北京天安门", "한국어 텍스트", "안녕하세요",
        "Привет, мир!", "Ελληνικά", "עברית", "العربية", "हिन्दी", "ภาษาไทย", "Tiếng Việt", "ქართული", "Հայերեն",
        "𠜎𠜱𠝹𠱓", "龘靐齉", "ꙮ", "𓀀𓁐", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝕏", "Ω Ω", "ℌ",
        "😀", "😀😃😄", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷🇯🇵", "❤️", "🤖 robots", "I ❤ NY", "☃", "🦀 Rust", "🏳️‍🌈", "🫠",
        "\x00", "\x01\x02\x03", "a\x00b", "\x7f", "\x1b[31mred\x1b[0m", "\x0b\x0c", "\r", "\r\n\r\n", "\u00a0", "a\u00a0b",
        "\u200b", "a\u200bb", "\u200d", "\ufeffBOM", "\ue000", "\U0010fffd", "\ufffd", "\u2028\u2029", "\u3000", "a\u2003b",
        "\u2581", "\u2581hello", "a\u2581b", "\u2581\u2581",
        "<bos>", "<eos>", "<pad>", "<unk>", "<mask>", "<bos>Hello", "Hello<eos>", "<start_of_turn>user\nhi<end_of_turn>\n",
        "<start_of_image>", "<end_of_image>", "[multimodal]", "<unused0>", "<unused6241>", "<0x41>", "<0x0A>", "<0xFF>",
        "<bos> <eos>", "text <mask> text", "<not_a_token>", "<|endoftext|>", "</s>", "<s>",
        "C'est la vie.", "don't won't can't", "rock 'n' roll", "“smart quotes” and ‘single’", "—em dash–en dash-",
        "email@example.com", "https://example.com/path?query=1&x=y#frag", "C:\\Users\\name\\file.txt", "/usr/bin/env",
        "#hashtag @mention", "snake_case camelCase PascalCase kebab-case SCREAMING_CASE", "a.b.c.d", "a,b;c:d",
        "antidisestablishmentarianism", "pneumonoultramicroscopicsilicovolcanoconiosis", "Supercalifragilisticexpialidocious",
        "The the THE tHe", "A B C D E F G", "a b c d e f g", "aaaa bbbb cccc", "x y  z   w    v",
        "   leading spaces", "trailing spaces   ", " a ", "  a  ", "a  b", "a   b", "a\t b", "a \tb", "a\n\n\n\nb",
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore.",
        "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
        "The slings and arrows of outrageous fortune,\nOr to take arms against a sea of troubles",
        "Photosynthesis converts light energy into chemical energy stored in glucose.",
        "The mitochondria is the powerhouse of the cell.",
        "Water boils at 100 degrees Celsius at sea level.",
        "Mix 2 cups flour, 1 tsp salt, and 3/4 cup water; knead for 10 minutes.",
        "Q: What is 7 × 8?\nA: 56",
        "Step 1: Open the box.\nStep 2: Remove the device.\nStep 3: Plug it in.",
        "- item one\n- item two\n  - nested item\n* star item",
        "| col1 | col2 |\n|------|------|\n| a    | b    |",
        "# Title\n\n## Subtitle\n\nSome **bold** and _italic_ text.",
        "```python\nprint('hi')\n```",
        "$$E = mc^2$$ and \\frac{a}{b}",
    ]
    base.append(
        "Gemma is a family of lightweight, state-of-the-art open models built from the same research and technology "
        "used to create the Gemini models. " * 6)
    rng = random.Random(9)
    pools = [
        "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", " ", "  ", "\n", "\t", ".,;:!?'\"()[]{}<>",
        "éèêàçùöüßñ", "日本語中文한국어", "😀👍🦀🇫🇷", "\u2581", "+-*/=_#@$%^&|~`\\",
    ]
    words = ("the of and to in is was for that with as on by it be at from this have an are or not his but "
             "model data training collapse generation distribution tail sample token language paper result").split()
    for _ in range(70):
        n = rng.randint(1, 40)
        base.append("".join(rng.choice(rng.choice(pools)) for _ in range(n)))
    for _ in range(70):
        seps = [" ", " ", " ", "  ", "\n", ", ", ". ", "\t", " \n", ""]
        text = "".join(rng.choice(words) + rng.choice(seps) for _ in range(rng.randint(1, 25)))
        if rng.random() < 0.3:
            text = text.capitalize()
        base.append(text)
    for _ in range(30):
        base.append("".join(chr(rng.randint(0x20, 0x2FFF)) for _ in range(rng.randint(1, 12))))
    seen, unique = set(), []
    for s in base:
        if s not in seen:
            seen.add(s)
            unique.append(s)
    return unique


def main():
    path = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else default_gguf()
    if not path.is_file():
        sys.exit(f"{path}: missing; run `bash scripts/fetch-gemma3.sh` first")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SHA256:
        print(f"warning: {path} has sha256 {digest}, not {SHA256}", file=sys.stderr)
    tokens, scores, types, meta = read_vocab(path)
    assert meta["model"] == "llama" and not meta["add_space_prefix"] and meta["add_bos_token"] and not meta["add_eos_token"]
    sp = sentencepiece_from_gguf(tokens, scores, types, meta)

    from transformers import AutoTokenizer
    hf = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)

    cases, failures, control_text, space_runs = [], [], 0, 0
    control = {t for t, k in zip(tokens, types) if k == CONTROL}
    for text in strings():
        ids = sp.encode(text)
        decoded = sp.decode(ids)
        case = {"text": text, "ids": ids}
        if decoded != text:
            case["decoded"] = decoded  # only where the input holds U+2581, which decodes to a space
            assert "\u2581" in text, (text, decoded)
        hf_ids = hf.encode(text, add_special_tokens=False)
        if hf.encode(text, add_special_tokens=True) != [meta["bos_token_id"]] + hf_ids:
            failures.append(f"transformers adds other special tokens than <bos> to {text!r}")
        if hf_ids != ids:
            case["transformers_ids"] = hf_ids
            if any(c in text for c in control):
                control_text += 1
            elif " " * 32 in text:
                # transformers does not add the runs of spaces as user-defined tokens (it renames them
                # "▁▁" but then looks the file's "  " up), so it builds long runs by merges: 40 spaces
                # are 16 + 24 there, 31 + 9 in sentencepiece and llama.cpp (longest match first).
                space_runs += 1
            else:
                failures.append(f"sentencepiece and transformers disagree on {text!r}:\n  sp {ids}\n  hf {hf_ids}")
        cases.append(case)

    fixture = {
        "about": "Gemma 3 270M tokenizer cases from scripts/gemma3_tokenizer_fixtures.py. `ids`: sentencepiece "
                 "(BPE, byte fallback, no dummy prefix, whitespace kept) on a ModelProto rebuilt from the GGUF, "
                 "without special tokens; with them the ids are [bos] + ids. `decoded`: sentencepiece's decode "
                 "where it differs from the text. `transformers_ids`: transformers' GGUF tokenizer where it "
                 "differs (it matches control tokens typed as text, and splits runs of more than 31 spaces "
                 "differently).",
        "gguf": NAME,
        "gguf_sha256": SHA256,
        "bos_id": meta["bos_token_id"], "eos_id": meta["eos_token_id"],
        "unk_id": meta["unknown_token_id"], "pad_id": meta["padding_token_id"],
        "vocab_size": len(tokens),
        "cases": cases,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    # One case a line, so that a regenerated fixture diffs readably.
    compact = lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":"))  # noqa: E731
    head = compact({k: v for k, v in fixture.items() if k != "cases"})[:-1]
    OUT.write_text(head + ',"cases":[\n' + ",\n".join(compact(c) for c in cases) + "\n]}\n")
    json.loads(OUT.read_text())
    print(f"{OUT}: {len(cases)} strings, {OUT.stat().st_size} bytes; transformers differs on {control_text} "
          f"strings holding control-token text and {space_runs} holding runs of more than 31 spaces")
    for f in failures:
        print("FAIL:", f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
