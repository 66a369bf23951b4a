//! A test helper, not a tool: `pool-crash-writer DIR` appends Accumulate batches of 20,000
//! synthetic rows to the pool at DIR until it is killed. crates/pool/tests/pool.rs kills it with
//! SIGKILL mid-write and checks the pool it leaves.

use thrive_core::Workflow;
use thrive_pool::{BatchKey, Example, PoolWriter, Provenance};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: pool-crash-writer DIR")?;
    let mut w = PoolWriter::open(&dir)?;
    let start = w.pool().manifest().files.len() as u32;
    for g in start + 1.. {
        let rows: Vec<Example> = (0..20_000u64)
            .map(|i| {
                let words = 1 + (i as usize * 7 + g as usize * 3) % 40;
                let provenance = Provenance {
                    base_model: "tiny-gemma2".into(),
                    adapter_path: Some("checkpoints/x/gen-1/adapter".into()),
                    adapter_sha256: Some("ab".repeat(32)),
                    temperature: 1.0,
                    top_p: 1.0,
                    top_k: None,
                    max_new_tokens: 64,
                    call_seed: g as u64,
                    sample_index: i,
                    filter: "accepted".into(),
                };
                let response = vec!["word"; words].join(" ");
                Example::synthetic("accumulate", 0, g, format!("question {i} of generation {g}"), response, provenance)
            })
            .collect();
        w.write_batch(&BatchKey::synthetic(Workflow::Accumulate, 0, g), &rows)?;
    }
    Ok(())
}
