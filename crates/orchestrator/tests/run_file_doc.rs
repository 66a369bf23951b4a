//! docs/run-file.md lists every key of the run file: a run configuration with every table and
//! every optional key set is serialized, and each of its keys must appear in backticks in the
//! doc's section for its table (a heading containing `[table]`; top-level keys under a heading
//! containing "top level").
//!
//! The configuration below names every field of every struct explicitly (no `..Default`), so a
//! new key does not compile until it is added here, and then fails until the doc lists it.

use std::path::{Path, PathBuf};
use thrive_orchestrator::{
    DataConfig, LoopConfig, OneOrMany, RunFile, SamplingConfig, SlurmConfig, TrainSettings, ValueConfig,
};

/// A run configuration with every optional table and key set (a run file may not hold both
/// `[run]` and `[value]`, but serializing does not check that).
fn every_key() -> RunFile {
    RunFile {
        out: PathBuf::from("runs/all"),
        model: "google/gemma-2-2b".into(),
        data: DataConfig { helpsteer2: Some(PathBuf::from("data")), hub: Some("nvidia/HelpSteer2".into()) },
        run: Some(LoopConfig {
            workflows: vec!["replace".into()],
            generations: 2,
            chains: vec![0],
            continue_from_previous: true,
        }),
        value: Some(ValueConfig {
            num_real: vec![0, 8],
            num_synthetic: vec![0, 8],
            sources: vec![0],
            source_real: Some(OneOrMany::Many(vec![4, 8])),
            source_epochs: Some(OneOrMany::One(2)),
            source_temperature: Some(OneOrMany::Many(vec![0.5, 1.0])),
            seeds: vec![0],
            pick: "random".into(),
        }),
        sft: TrainSettings {
            full: true,
            lr: Some(1e-4),
            lora_rank: 8,
            lora_alpha: 16.0,
            lora_dropout: 0.1,
            lora_targets: vec!["q_proj".into()],
            rslora: true,
            weight_decay: 0.01,
            warmup_ratio: 0.1,
            warmup_steps: Some(16),
            schedule: "cosine".into(),
            sequences_per_step: 16,
            micro_batch: 4,
            epochs: 2,
            max_len: 256,
            response_only: true,
            eval_every: 5,
            checkpoint_every: 5,
            max_grad_norm: 0.5,
            gradient_checkpointing: true,
        },
        sampling: SamplingConfig {
            mode: "prompted".into(),
            count: 100,
            temperature: 0.7,
            top_p: 0.9,
            top_k: Some(40),
            max_new_tokens: 64,
            batch_size: 8,
            strip_quirk: false,
            max_attempts: Some(1000),
        },
        device: "cpu".into(),
        dtype: Some("f32".parse().expect("a precision")),
        slurm: Some(SlurmConfig {
            partition: Some("gpu".into()),
            account: Some("lab".into()),
            gpus: Some(1),
            cpus: Some(8),
            mem: Some("64G".into()),
            time: Some("04:00:00".into()),
            extra: vec!["--qos=high".into()],
            setup: vec!["module load cuda".into()],
        }),
    }
}

/// Every leaf key under `value`, dotted (`sft.lr`); arrays are leaves.
fn leaf_keys(prefix: &str, value: &toml::Value, out: &mut Vec<String>) {
    match value {
        toml::Value::Table(table) => {
            for (key, v) in table {
                let dotted = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                leaf_keys(&dotted, v, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

/// The doc's sections: each heading with the text up to the next heading of its level or
/// higher (lines in code blocks are not headings).
fn sections(doc: &str) -> Vec<(String, String)> {
    let mut headings = Vec::new();
    let mut fenced = false;
    let lines: Vec<&str> = doc.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            headings.push((i, line.chars().take_while(|&c| c == '#').count()));
        }
    }
    headings
        .iter()
        .enumerate()
        .map(|(n, &(start, level))| {
            let end = headings[n + 1..].iter().find(|&&(_, l)| l <= level).map_or(lines.len(), |&(i, _)| i);
            (lines[start].to_string(), lines[start + 1..end].join("\n"))
        })
        .collect()
}

#[test]
fn the_run_file_doc_lists_every_key() {
    let value = toml::Value::try_from(every_key()).expect("a run configuration serializes to TOML");
    let mut keys = Vec::new();
    leaf_keys("", &value, &mut keys);
    // The walk reaches every table and the optional keys.
    for key in ["out", "dtype", "data.hub", "run.generations", "value.source_temperature", "sft.lr", "slurm.partition"]
    {
        assert!(keys.iter().any(|k| k == key), "{key} not among the serialized keys {keys:?}");
    }

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/run-file.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let sections = sections(&doc);
    let mut missing = Vec::new();
    for key in &keys {
        let (table, leaf) = key.rsplit_once('.').unwrap_or(("", key));
        let wanted = |heading: &str| {
            if table.is_empty() {
                heading.to_lowercase().contains("top level")
            } else {
                heading.contains(&format!("[{table}]"))
            }
        };
        let Some((_, body)) = sections.iter().find(|(h, _)| wanted(h)) else {
            let heading = if table.is_empty() { "top level".to_string() } else { format!("[{table}]") };
            missing.push(format!("{key} (no section whose heading contains `{heading}`)"));
            continue;
        };
        if !body.contains(&format!("`{leaf}`")) && !body.contains(&format!("`{key}`")) {
            missing.push(key.clone());
        }
    }
    assert!(missing.is_empty(), "docs/run-file.md does not list these run.toml keys: {}", missing.join(", "));
}
