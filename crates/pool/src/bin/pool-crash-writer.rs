//! A test helper, not a tool: `pool-crash-writer DIR [CHAIN [BATCHES]]` appends Accumulate
//! batches of 20,000 synthetic rows of chain CHAIN (default 0) to the pool at DIR, BATCHES of them
//! or until it is killed, and prints `committed GENERATION` after each commit. crates/pool/tests/
//! pool.rs kills it with SIGKILL mid-write, alone and among other writers, and checks the pool
//! it leaves.

use std::io::Write;
use thrive_core::Workflow;
use thrive_pool::{BatchKey, Example, PoolWriter, Provenance};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: pool-crash-writer DIR [CHAIN [BATCHES]]")?;
    let chain: u64 = args.next().map_or(Ok(0), |a| a.parse())?;
    let batches: Option<u32> = args.next().map(|a| a.parse()).transpose()?;
    let mut w = PoolWriter::open(&dir)?;
    let start = w
        .pool()
        .manifest()
        .files
        .iter()
        .filter(|f| matches!(f.key, BatchKey::Synthetic { chain: c, .. } if c == chain))
        .count() as u32;
    let end = batches.map_or(u32::MAX, |n| start + n);
    for g in start + 1..=end {
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
                let prompt = format!("question {i} of chain {chain} generation {g}");
                Example::synthetic("accumulate", chain, g, prompt, response, provenance)
            })
            .collect();
        w.write_batch(&BatchKey::synthetic(Workflow::Accumulate, chain, g), &rows)?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "committed {g}")?;
        out.flush()?;
    }
    Ok(())
}
