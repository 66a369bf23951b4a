//! `thrive pool` end to end: import the HelpSteer2-shaped fixture with a real tokenizer, add
//! synthetic batches through the library (as the sampler will), inspect (--json parsed), lineage,
//! export as jsonl and Parquet, and bad input (clear error naming the file/column/flag, non-zero
//! exit, nothing written).

mod common;
use common::*;
use std::path::{Path, PathBuf};
use thrive_core::Workflow;
use thrive_pool::{BatchKey, Example, Pool, PoolWriter, Provenance};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../pool/tests/fixtures")
}

fn add_synthetic(dir: &Path, generations: u32) {
    let mut w = PoolWriter::open(dir).unwrap();
    for g in 1..=generations {
        let rows: Vec<Example> = (0..25)
            .map(|i| {
                let p = Provenance {
                    base_model: "google/gemma-2-2b".into(),
                    adapter_path: Some(format!("checkpoints/gen-{g}")),
                    adapter_sha256: Some("cd".repeat(32)),
                    temperature: 1.0,
                    top_p: 0.9,
                    top_k: Some(50),
                    max_new_tokens: 512,
                    call_seed: 100 + g as u64,
                    sample_index: i,
                    filter: "accepted".into(),
                };
                Example::synthetic("accumulate", 7, g, format!("q{i} g{g}"), format!("answer {i}"), p)
            })
            .collect();
        w.write_batch(&BatchKey::synthetic(Workflow::Accumulate, 7, g), &rows).unwrap();
    }
}

#[test]
fn import_inspect_lineage_export() {
    let tmp = tempfile::tempdir().unwrap();
    let pool = tmp.path().join("pool");
    let hs = fixtures().join("helpsteer2");
    let tok = fixtures().join("tokenizer.json");
    let out = ok(&["pool", "import", s(&pool), "--helpsteer2", s(&hs), "--tokenizer", s(&tok), "--json"]);
    let imported: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(imported["imported"][0]["rows"], 60);
    assert_eq!(imported["imported"][1]["rows"], 12);
    add_synthetic(&pool, 3);

    let out = ok(&["pool", "inspect", s(&pool), "--json", "--verify"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let batches = v["summary"]["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 5);
    assert_eq!(v["summary"]["total_rows"], 60 + 12 + 3 * 25);
    let expected: Vec<u32> =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("token_counts.json")).unwrap()).unwrap();
    let train = batches.iter().find(|b| b["split"] == "train").unwrap();
    assert_eq!(train["tokens_summary"]["max"], *expected.iter().max().unwrap());
    assert_eq!(train["tokens"], expected.iter().map(|&t| t as u64).sum::<u64>());
    // Sample rows: real train first, then the newest synthetic batch.
    assert_eq!(v["samples"][0]["source"], "real");
    assert_eq!(v["samples"][2]["generation"], 3);

    // Lineage of a synthetic row of generation 2, in text and JSON.
    let id = Pool::open(&pool).unwrap().read_batch(&BatchKey::synthetic(Workflow::Accumulate, 7, 2)).unwrap()[4]
        .example_id
        .clone();
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["pool", "inspect", s(&pool), "--json", "--lineage", &id])).unwrap();
    assert_eq!(v["lineage"]["example"]["provenance"]["sample_index"], 4);
    assert_eq!(
        v["lineage"]["model_trained_on"],
        serde_json::json!(["real/train", "synthetic accumulate chain 7 generation 1"])
    );
    let text = ok(&["pool", "inspect", s(&pool), "--lineage", &id]);
    assert!(text.contains("checkpoints/gen-2") && text.contains("fine-tuned on"), "{text}");

    // Export one batch as jsonl and the training set of generation 3 as Parquet.
    let jsonl = tmp.path().join("gen3.jsonl");
    ok(&["pool", "export", s(&pool), "--generation", "3", "--format", "jsonl", "--out", s(&jsonl)]);
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&jsonl).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 25);
    assert_eq!(lines[0]["generation"], 3);
    assert_eq!(lines[0]["top_k"], 50);
    let parquet = tmp.path().join("train3.parquet");
    let out = ok(&["pool", "export", s(&pool), "--generation", "3", "--training", "--out", s(&parquet)]);
    assert!(out.contains("wrote 110 rows"), "{out}"); // 60 real + 2 × 25 synthetic
                                                      // The exported Parquet imports as ordinary data (prompt/response columns, the rest kept as extras).
    let again = tmp.path().join("again");
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["pool", "import", s(&again), "--file", s(&parquet), "--json"])).unwrap();
    assert_eq!(v["imported"][0]["rows"], 110);
}

#[test]
fn bad_input_is_named_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let pool = tmp.path().join("pool");
    let hs = fixtures().join("helpsteer2");
    let train = hs.join("train.jsonl");
    fails(
        &["pool", "import", s(&pool), "--file", s(&train), "--prompt-column", "question"],
        &["train.jsonl", "missing column `question`"],
    );
    assert!(!pool.exists(), "a failed import created the pool");
    let garbage = tmp.path().join("garbage.parquet");
    std::fs::write(&garbage, b"PAR1 not really").unwrap();
    fails(&["pool", "import", s(&pool), "--file", s(&garbage)], &["garbage.parquet", "Parquet"]);
    fails(&["pool", "import", s(&pool), "--helpsteer2", s(tmp.path())], &["no train.jsonl.gz"]);
    let bad_tok = tmp.path().join("tokenizer.json");
    std::fs::write(&bad_tok, "{}").unwrap();
    fails(&["pool", "import", s(&pool), "--file", s(&train), "--tokenizer", s(&bad_tok)], &["--tokenizer"]);
    fails(&["pool", "inspect", s(tmp.path())], &["not a pool"]);

    ok(&["pool", "import", s(&pool), "--file", s(&train)]);
    // Importing a committed split again is refused; the pool is unchanged.
    fails(&["pool", "import", s(&pool), "--file", s(&train)], &["already committed"]);
    let out = tmp.path().join("x.jsonl");
    fails(&["pool", "export", s(&pool), "--generation", "2", "--out", s(&out)], &["no synthetic batches"]);
    fails(&["pool", "export", s(&pool), "--generation", "0", "--format", "csv", "--out", s(&out)], &["--format"]);
    // A length filter needs token counts: this pool was imported without a tokenizer.
    fails(
        &["pool", "export", s(&pool), "--generation", "0", "--max-tokens", "10", "--out", s(&out)],
        &["train.parquet", "tokens"],
    );
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A truncated pool file is named.
    let file = pool.join("real/train.parquet");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    fails(&["pool", "inspect", s(&pool)], &["train.parquet", "truncated"]);
}

/// Several `thrive pool import` processes write one pool at once while another is SIGKILLed
/// (at a different moment each round): every import that finished is there, the killed one is
/// there whole or not at all, and `thrive pool inspect --verify` passes.
#[test]
fn concurrent_imports_with_one_killed_leave_a_verified_pool() {
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir().unwrap();
    let pool = tmp.path().join("pool");
    let rows = |n: usize, tag: &str| -> PathBuf {
        let path = tmp.path().join(format!("{tag}.jsonl"));
        let text: String = (0..n)
            .map(|i| serde_json::json!({"prompt": format!("{tag} question {i}"), "response": "an answer ".repeat(1 + i % 30)}).to_string() + "\n")
            .collect();
        std::fs::write(&path, text).unwrap();
        path
    };
    let small = rows(2_000, "small");
    let big = rows(60_000, "big");
    let import = |file: &Path, split: &str| {
        Command::new(env!("CARGO_BIN_EXE_thrive"))
            .args(["--log", "warn", "pool", "import", s(&pool), "--file", s(file), "--split", split])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut victims = Vec::new();
    for (round, delay_ms) in [300u64, 700, 1200].into_iter().enumerate() {
        let writers: Vec<_> = ["a", "b", "c"].map(|w| import(&small, &format!("r{round}-{w}"))).into();
        let mut victim = import(&big, &format!("r{round}-victim"));
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        victim.kill().unwrap(); // SIGKILL
        victim.wait().unwrap();
        victims.push(format!("real/r{round}-victim"));
        for w in writers {
            let out = w.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let v: serde_json::Value = serde_json::from_str(&ok(&["pool", "inspect", s(&pool), "--verify", "--json"])).unwrap();
    let batches = v["summary"]["batches"].as_array().unwrap();
    for round in 0..3 {
        for w in ["a", "b", "c"] {
            let split = format!("r{round}-{w}");
            let b = batches.iter().find(|b| b["split"] == split.as_str());
            assert_eq!(b.map(|b| b["rows"].clone()), Some(2_000.into()), "{split} missing or short");
        }
    }
    for b in batches {
        let rows = if b["split"].as_str().unwrap().ends_with("victim") { 60_000 } else { 2_000 };
        assert_eq!(b["rows"], rows, "{b}");
    }
    let total: u64 = batches.iter().map(|b| b["rows"].as_u64().unwrap()).sum();
    assert_eq!(v["summary"]["total_rows"], total);
}
