//! Benchmark driver for scripts/bench-pool.sh (run it through the script, which also times the
//! pyarrow reference and measures peak memory).
//!
//! `pool_bench write DIR ROWS GENERATIONS`: a pool of 1,000 real rows and ROWS synthetic rows split
//! over GENERATIONS Accumulate batches (chain 0), each row ~1 kB of text with full provenance.
//! `pool_bench scan DIR GENERATION`: streams the Accumulate training view of GENERATION and
//! prints rows, seconds, Parquet bytes read and decoded Arrow bytes per second.

use std::time::Instant;
use thrive_core::Workflow;
use thrive_pool::{BatchKey, Example, Pool, PoolWriter, Provenance, View};

const WORDS: [&str; 12] =
    ["model", "data", "the", "synthetic", "collapse", "accumulate", "of", "and", "thrive", "real", "a", "token"];

fn text(seed: u64, words: usize) -> String {
    // A cheap deterministic generator: text that compresses like prose, not like zeros.
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = String::with_capacity(words * 7);
    for _ in 0..words {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(WORDS[(x % WORDS.len() as u64) as usize]);
        out.push(' ');
    }
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("write") => {
            let (dir, rows, gens): (&str, u64, u32) = (&args[2], args[3].parse()?, args[4].parse()?);
            let start = Instant::now();
            let mut w = PoolWriter::open(dir)?;
            let real: Vec<Example> =
                (0..1000).map(|i| Example::real("bench", "train", i, text(i, 30), text(i + 7, 130))).collect();
            w.write_batch(&BatchKey::real("train"), &real)?;
            let per = rows / gens as u64;
            for g in 1..=gens {
                let batch: Vec<Example> = (0..per)
                    .map(|i| {
                        let seed = g as u64 * per + i;
                        let p = Provenance {
                            base_model: "google/gemma-2-2b".into(),
                            adapter_path: Some(format!("checkpoints/accumulate/chain-0/gen-{g}")),
                            adapter_sha256: Some("ab".repeat(32)),
                            temperature: 1.0,
                            top_p: 1.0,
                            top_k: None,
                            max_new_tokens: 512,
                            call_seed: g as u64,
                            sample_index: i,
                            filter: "accepted".into(),
                        };
                        let mut e = Example::synthetic("accumulate", 0, g, text(seed, 30), text(seed ^ 0xabc, 130), p);
                        e.tokens = Some(200);
                        e
                    })
                    .collect();
                w.write_batch(&BatchKey::synthetic(Workflow::Accumulate, 0, g), &batch)?;
            }
            let secs = start.elapsed().as_secs_f64();
            let bytes: u64 = w.pool().manifest().files.iter().map(|f| f.bytes).sum();
            println!("write rows={} seconds={secs:.3} parquet_bytes={bytes}", rows + 1000);
        }
        Some("scan") => {
            let (dir, generation): (&str, u32) = (&args[2], args[3].parse()?);
            let pool = Pool::open(dir)?;
            let view = View::training(Workflow::Accumulate, 0, generation);
            let parquet_bytes: u64 = Pool::training_batches(Workflow::Accumulate, 0, generation)
                .iter()
                .map(|k| pool.entry(k).map(|e| e.bytes))
                .sum::<Result<u64, _>>()?;
            let start = Instant::now();
            let (mut rows, mut arrow_bytes, mut text_bytes) = (0usize, 0usize, 0usize);
            for batch in pool.view(&view)? {
                let batch = batch?;
                rows += batch.num_rows();
                arrow_bytes += batch.get_array_memory_size();
                for c in ["prompt", "response"] {
                    let col = batch.column_by_name(c).expect("pool column");
                    text_bytes += col.to_data().buffers()[1].len();
                }
            }
            let secs = start.elapsed().as_secs_f64();
            println!(
                "scan rows={rows} seconds={secs:.3} parquet_bytes={parquet_bytes} arrow_bytes={arrow_bytes} \
                 text_bytes={text_bytes} parquet_gbps={:.3} arrow_gbps={:.3} text_gbps={:.3}",
                parquet_bytes as f64 / secs / 1e9,
                arrow_bytes as f64 / secs / 1e9,
                text_bytes as f64 / secs / 1e9
            );
        }
        _ => eprintln!("usage: pool_bench write DIR ROWS GENERATIONS | pool_bench scan DIR GENERATION"),
    }
    Ok(())
}
