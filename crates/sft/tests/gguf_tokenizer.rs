//! The tokenizer rebuilt from Gemma 3 270M's GGUF against SentencePiece itself, on the few hundred
//! strings of tests/fixtures/gemma3_tokenizer.json (scripts/gemma3_tokenizer_fixtures.py runs the
//! `sentencepiece` library on a ModelProto made from the same GGUF metadata).
//!
//! The GGUF (253 MB) is not in the repository: `bash scripts/fetch-gemma3.sh` puts it in
//! `${THRIVE_CACHE:-$HOME/.cache/thrive}/gemma3-270m/`, or `THRIVE_GEMMA3_GGUF` names it. Without
//! it the tests print SKIPPED on stderr and pass, unless `THRIVE_GEMMA3_GGUF` is set. The `tiny_*` tests
//! need no file: they build a tokenizer from a made-up vocabulary of a few hundred pieces.

mod common;
use candle_core::quantized::gguf_file::{Content, Value, VersionedMagic};
use common::*;
use serde::Deserialize;
use std::path::PathBuf;
use thrive_sft::{read_gguf, tokenizer_from_gguf};
use tokenizers::Tokenizer;

#[derive(Deserialize)]
struct Fixture {
    gguf_sha256: String,
    bos_id: u32,
    eos_id: u32,
    vocab_size: usize,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    /// sentencepiece's ids, without special tokens.
    ids: Vec<u32>,
    /// sentencepiece's decode where it is not `text` (an input `▁` comes back as a space).
    decoded: Option<String>,
    /// transformers' ids where they differ from sentencepiece's.
    transformers_ids: Option<Vec<u32>>,
}

fn fixture() -> Fixture {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gemma3_tokenizer.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn tokenizer(path: &PathBuf) -> Tokenizer {
    let (content, _) = read_gguf(path).unwrap();
    tokenizer_from_gguf(&content).unwrap()
}

fn ids(tokenizer: &Tokenizer, text: &str, special: bool) -> Vec<u32> {
    tokenizer.encode(text, special).unwrap().get_ids().to_vec()
}

#[test]
fn gemma3_tokenizer_matches_sentencepiece() {
    let Some(path) = gguf("gemma3_tokenizer_matches_sentencepiece") else { return };
    let fixture = fixture();
    assert_eq!(sha256_file(&path), fixture.gguf_sha256, "{} is not the file the fixture was made from", path.display());
    let start = std::time::Instant::now();
    let tokenizer = tokenizer(&path);
    println!("built from {} in {:.2?} ({} cases)", path.display(), start.elapsed(), fixture.cases.len());
    assert_eq!(tokenizer.get_vocab_size(true), fixture.vocab_size);

    let mut failures = Vec::new();
    for case in &fixture.cases {
        let text = case.text.as_str();
        let plain = ids(&tokenizer, text, false);
        if plain != case.ids {
            failures.push(format!("encode {text:?}\n  got      {plain:?}\n  expected {:?}", case.ids));
            continue;
        }
        let with_bos = ids(&tokenizer, text, true);
        let expected: Vec<u32> = std::iter::once(fixture.bos_id).chain(case.ids.iter().copied()).collect();
        if with_bos != expected {
            failures
                .push(format!("encode {text:?} with special tokens\n  got      {with_bos:?}\n  expected {expected:?}"));
        }
        let want = case.decoded.as_deref().unwrap_or(text);
        for (ids, skip) in [(&plain, false), (&with_bos, true)] {
            let decoded = tokenizer.decode(ids, skip).unwrap();
            if decoded != want {
                failures
                    .push(format!("decode {ids:?} (skip special {skip})\n  got      {decoded:?}\n  expected {want:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cases fail:\n{}", failures.len(), fixture.cases.len(), failures.join("\n"));
}

/// Matching control-token text, as transformers does, is one switch away; decoding with special
/// tokens kept gives their text back.
#[test]
fn gemma3_tokenizer_control_tokens_in_text() {
    let Some(path) = gguf("gemma3_tokenizer_control_tokens_in_text") else { return };
    let fixture = fixture();
    let mut tokenizer = tokenizer(&path);
    tokenizer.set_encode_special_tokens(false);
    let mut checked = 0;
    for case in &fixture.cases {
        let Some(expected) = &case.transformers_ids else { continue };
        if case.text.contains("                                ") {
            continue; // transformers splits runs of more than 31 spaces by merges (see the script)
        }
        checked += 1;
        assert_eq!(&ids(&tokenizer, &case.text, false), expected, "{:?}", case.text);
        assert_eq!(tokenizer.decode(expected, false).unwrap(), case.text);
    }
    assert!(checked >= 10, "only {checked} control-token cases");
    let hi = ids(&tokenizer, "Hi", false);
    let expected: Vec<u32> = [fixture.bos_id, fixture.bos_id].into_iter().chain(hi).chain([fixture.eos_id]).collect();
    assert_eq!(ids(&tokenizer, "<bos>Hi<eos>", true), expected);
}

/// The fixture belongs to this GGUF; a different file would need new fixtures.
#[test]
fn gemma3_fixture_names_the_fetched_file() {
    let fixture = fixture();
    let script =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/fetch-gemma3.sh")).unwrap();
    assert!(script.contains(&fixture.gguf_sha256), "scripts/fetch-gemma3.sh fetches another file than the fixture's");
}

// A tiny SentencePiece vocabulary in GGUF metadata, so the construction is tested without the file.

const BYTES: u32 = 4; // <0x00> is id 4

/// Ids: 0-3 control, 4-259 bytes, 260 "\n" and 261 "  " user-defined, then normal pieces whose
/// scores are not in id order ("ab" has a lower id but a worse score than "bc").
fn tiny() -> Content {
    let mut pieces: Vec<(String, f32, i32)> =
        ["<pad>", "<eos>", "<bos>", "<unk>"].iter().map(|t| (t.to_string(), -1000.0, 3)).collect();
    pieces.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0, 6)));
    pieces.extend(["\n", "  "].iter().map(|t| (t.to_string(), -1000.0, 4)));
    for (t, s) in [("ab", -5.0), ("bc", -1.0), ("cd", -2.0), ("▁b", -3.0), ("▁", -10.0)] {
        pieces.push((t.to_string(), s, 1));
    }
    pieces.extend(["a", "b", "c", "d"].iter().enumerate().map(|(i, t)| (t.to_string(), -20.0 - i as f32, 1)));
    let mut metadata = std::collections::HashMap::new();
    let mut set = |k: &str, v: Value| metadata.insert(format!("tokenizer.ggml.{k}"), v);
    set("model", Value::String("llama".into()));
    set("tokens", Value::Array(pieces.iter().map(|p| Value::String(p.0.clone())).collect()));
    set("scores", Value::Array(pieces.iter().map(|p| Value::F32(p.1)).collect()));
    set("token_type", Value::Array(pieces.iter().map(|p| Value::I32(p.2)).collect()));
    set("bos_token_id", Value::U32(2));
    set("eos_token_id", Value::U32(1));
    set("unknown_token_id", Value::U32(3));
    set("padding_token_id", Value::U32(0));
    set("add_bos_token", Value::Bool(true));
    set("add_eos_token", Value::Bool(false));
    set("add_space_prefix", Value::Bool(false));
    Content { magic: VersionedMagic::GgufV3, metadata, tensor_infos: Default::default(), tensor_data_offset: 0 }
}

fn tiny_id(content: &Content, piece: &str) -> u32 {
    let tokens = content.metadata["tokenizer.ggml.tokens"].to_vec().unwrap();
    tokens.iter().position(|t| t.to_string().unwrap() == piece).unwrap() as u32
}

#[test]
fn tiny_vocabulary_merges_by_score_and_falls_back_to_bytes() {
    let content = tiny();
    let tokenizer = tokenizer_from_gguf(&content).unwrap();
    let id = |p: &str| tiny_id(&content, p);
    // "bc" (score -1) merges before "ab" (-5) and "cd" (-2): a|bc|d, not ab|cd.
    assert_eq!(ids(&tokenizer, "abcd", false), [id("a"), id("bc"), id("d")]);
    // No dummy prefix; one space is "▁", merged with what follows; runs of spaces and newlines
    // are matched whole; "é" is not a piece: its two UTF-8 bytes.
    let text = "a b  d\né";
    let expected = [id("a"), id("▁b"), id("  "), id("d"), id("\n"), BYTES + 0xC3, BYTES + 0xA9];
    assert_eq!(ids(&tokenizer, text, false), expected);
    assert_eq!(ids(&tokenizer, text, true)[1..], expected);
    assert_eq!(ids(&tokenizer, text, true)[0], 2);
    assert_eq!(tokenizer.decode(&ids(&tokenizer, text, true), true).unwrap(), text);
    assert_eq!(tokenizer.decode(&ids(&tokenizer, text, false), false).unwrap(), text);
    // Control-token text is plain text (SentencePiece); decoding drops control tokens on request.
    assert_eq!(ids(&tokenizer, "<eos>", false).len(), 5);
    assert_eq!(tokenizer.decode(&[2, id("a"), 1], true).unwrap(), "a");
    assert_eq!(tokenizer.decode(&[2, id("a"), 1], false).unwrap(), "<bos>a<eos>");
}

#[test]
fn tiny_vocabulary_errors_name_the_metadata_key() {
    let message = |content: &Content| tokenizer_from_gguf(content).unwrap_err().to_string();

    let mut content = tiny();
    content.metadata.remove("tokenizer.ggml.scores");
    assert!(message(&content).contains("tokenizer.ggml.scores"), "{}", message(&content));

    let mut content = tiny();
    content.metadata.insert("tokenizer.ggml.model".into(), Value::String("gpt2".into()));
    assert!(message(&content).contains("tokenizer.ggml.model"), "{}", message(&content));

    let mut content = tiny();
    content.metadata.insert("tokenizer.ggml.token_type".into(), Value::Array(vec![Value::I32(1)]));
    assert!(message(&content).contains("tokenizer.ggml.token_type"), "{}", message(&content));

    let mut content = tiny();
    content.metadata.insert("tokenizer.ggml.bos_token_id".into(), Value::U32(1 << 20));
    assert!(message(&content).contains("tokenizer.ggml.bos_token_id"), "{}", message(&content));

    let mut content = tiny();
    content.metadata.insert("tokenizer.ggml.add_space_prefix".into(), Value::Bool(true));
    assert!(message(&content).contains("tokenizer.ggml.add_space_prefix"), "{}", message(&content));

    let missing = read_gguf("/nonexistent/model.gguf").unwrap_err().to_string();
    assert!(missing.contains("/nonexistent/model.gguf"), "{missing}");
}
