//! `thrive sample` end to end on CPU: train generation 1 with `thrive sft`, let its adapter
//! answer the pool's prompts into the pool, trace a row's lineage back to the adapter, train
//! generation 2 on the Accumulate view (real + synthetic), and refuse bad requests.

mod common;
use common::*;

#[test]
fn two_generations_through_the_pool() {
    let tmp = tempfile::tempdir().unwrap();
    let pool = tmp.path().join("pool");
    let model = root().join("sft/tests/fixtures/tiny-gemma2");
    let tokenizer = model.join("tokenizer.json");
    ok(&[
        "pool",
        "import",
        s(&pool),
        "--helpsteer2",
        s(&root().join("pool/tests/fixtures/helpsteer2")),
        "--tokenizer",
        s(&tokenizer),
    ]);
    let fast = ["--lr", "1e-2", "--sequences-per-step", "8", "--max-len", "128", "--device", "cpu"];
    let gen1 = tmp.path().join("gen1");
    let mut args = vec!["sft", "--model", s(&model), "--pool", s(&pool), "--generation", "1", "--out", s(&gen1)];
    args.extend(fast);
    ok(&args);
    let adapter = gen1.join("adapter");
    let sample_as = |workflow: &str, extra: &[&str]| -> Vec<String> {
        let mut v = vec!["sample", "--model", s(&model), "--adapter", s(&adapter), "--pool", s(&pool)];
        v.extend(["--workflow", workflow, "--generation", "1", "--max-new-tokens", "16", "--device", "cpu"]);
        v.extend(extra);
        v.into_iter().map(String::from).collect()
    };
    let sample = |extra: &[&str]| sample_as("accumulate", extra);
    let out = ok(&sample(&["--prompted", "--count", "8", "--batch-size", "3"]));
    assert!(out.contains("8 rows"), "{out}");
    fails(&sample(&["--prompted", "--count", "8"]), &["already holds"]);

    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&["pool", "inspect", s(&pool), "--json", "--verify"])).unwrap();
    let synthetic = inspect["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source"] == "synthetic")
        .expect("a synthetic sample row")
        .clone();
    let p = &synthetic["provenance"];
    // Recorded relative to the pool, so that a pool moved with its models still points at them.
    assert_eq!(p["adapter_path"], "../gen1/adapter");
    assert!(pool.join(p["adapter_path"].as_str().unwrap()).join("adapter_model.safetensors").exists());
    assert_eq!(p["adapter_sha256"].as_str().unwrap().len(), 64);
    assert!(synthetic["tokens"].as_u64().unwrap() > 0);
    let id = synthetic["example_id"].as_str().unwrap();
    let lineage = ok(&["pool", "inspect", s(&pool), "--lineage", id, "--samples", "0"]);
    assert!(lineage.contains("real/train"), "{lineage}");

    // Generation 2 trains on real + generation 1's synthetic rows.
    let gen2 = tmp.path().join("gen2");
    let mut args = vec![
        "sft",
        "--model",
        s(&model),
        "--pool",
        s(&pool),
        "--view",
        "accumulate",
        "--generation",
        "2",
        "--out",
        s(&gen2),
    ];
    args.extend(fast);
    ok(&args);
    let manifest = std::fs::read_to_string(gen2.join("metrics.manifest.json")).unwrap();
    assert!(manifest.contains("generation 2"), "{manifest}");
    let steps: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(steps["config"]["total_steps"], 9, "68 sequences at 8 a step"); // 60 real + 8 synthetic

    // Unconditional sampling with a tokenizer that cannot spell "user: " accepts nothing.
    fails(
        &sample_as("replace", &["--count", "4", "--max-attempts", "8", "--batch-size", "4"]),
        &["0 of 4", "no_user_prefix"],
    );
    fails(&sample(&["--top-p", "0", "--count", "4"]), &["top-p"]);
    let mut bad = sample(&[]);
    let at = bad.iter().position(|a| a == "--generation").unwrap();
    bad[at + 1] = "0".into();
    fails(&bad, &["--generation"]);
}

#[test]
fn generate_continues_prompts_and_names_bad_input() {
    let model = root().join("sampler/tests/fixtures/tiny-trained");
    let args = |extra: &[&str]| {
        let mut a = vec!["generate", "--model", s(&model), "--device", "cpu", "--max-new-tokens", "12"];
        a.extend_from_slice(extra);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let greedy = ok(&args(&["--prompt", "user: hi", "--prompt", "assistant"]));
    assert!(greedy.starts_with("user: hi"), "{greedy}");
    assert!(greedy.contains("\n\nassistant"), "{greedy}");
    // Greedy is deterministic; sampling depends only on the seed.
    assert_eq!(ok(&args(&["--prompt", "user: hi", "--prompt", "assistant"])), greedy);
    let hot = |seed: &str| ok(&args(&["--prompt", "user: hi", "--temperature", "1.5", "--seed", seed]));
    assert_eq!(hot("3"), hot("3"));
    fails(&args(&["--prompt", "x", "--temperature=-1"]), &["temperature"]);
    let missing = root().join("no-such-model.gguf");
    fails(&["generate", "--model", s(&missing), "--prompt", "x"], &["no such GGUF file"]);
    fails(&["generate", "--model", s(&model)], &["--prompt"]);
    // Quantized decoding of a safetensors model: says what to pass instead.
    fails(
        &args(&["--prompt", "x", "--dtype", "gguf"]),
        &["--dtype gguf", "no quantized weights", ".gguf", "--dtype f32"],
    );
}
