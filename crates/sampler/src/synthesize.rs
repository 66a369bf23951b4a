//! From generations to pool rows: the paper's unconditional mode with its filter, or synthetic
//! responses to given prompts; provenance on every row, rejections counted by reason.

use crate::generate::{generate, sample_rng, SamplerSettings};
use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use thrive_core::text_format::{parse_generation, training_text};
use thrive_pool::{Example, Provenance};
use thrive_sft::{Gemma, TextEncoder};
use tokenizers::Tokenizer;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// From `<bos>` alone; keep generations that parse as `user: …\nassistant: …` (§4.3).
    /// `strip_quirk` reproduces the authors' `lstrip("user: ")` on the prompt.
    Unconditional { strip_quirk: bool, max_attempts: u64 },
    /// One synthetic response per prompt (`user: {prompt}\nassistant:` is the context).
    Prompted { prompts: Vec<String> },
}

/// Which model samples, for the provenance columns, and where its rows go in the pool.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    /// The chain's kind: a workflow's name, or [`thrive_pool::VALUE_SOURCE`] for a source of the
    /// value-of-synthetic grid.
    pub workflow: String,
    pub chain: u64,
    /// The generation whose model samples (its rows are `synthetic/<workflow>/chain-c/gen-t`).
    pub generation: u32,
    pub base_model: String,
    pub adapter_path: Option<String>,
    pub adapter_sha256: Option<String>,
    /// Keys every sample's random stream together with its index.
    pub call_seed: u64,
}

/// The outcome of a sampling call.
#[derive(Debug, Clone)]
pub struct Synthesized {
    pub rows: Vec<Example>,
    /// Generations made (accepted or not).
    pub attempts: u64,
    /// Rejected generations by reason (`no_user_prefix`, `not_one_assistant_turn`, `empty_response`).
    pub rejections: BTreeMap<String, u64>,
    /// New tokens decoded, EOS excluded.
    pub new_tokens: u64,
    pub seconds: f64,
}

/// SHA-256 of a file, hex (the adapter's fingerprint in the provenance).
pub fn file_sha256(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::BadInput { path: path.into(), message: e.to_string() })?;
    Ok(Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    Ok(tokenizer.encode(text, true).map_err(|e| Error::Invalid(format!("tokenizing: {e}")))?.get_ids().to_vec())
}

fn decode(tokenizer: &Tokenizer, ids: &[u32]) -> Result<String> {
    tokenizer.decode(ids, true).map_err(|e| Error::Invalid(format!("decoding: {e}")))
}

/// Samples `count` accepted rows (Unconditional) or one row per prompt (Prompted).
/// `progress`, if given, holds the progress bar (a multi-generation run's own display).
pub fn synthesize(
    model: &Gemma,
    text: &TextEncoder,
    mode: &Mode,
    count: usize,
    s: &SamplerSettings,
    origin: &Origin,
    progress: Option<&indicatif::MultiProgress>,
) -> Result<Synthesized> {
    s.check()?;
    let (tokenizer, eos) = (text.tokenizer(), text.eos());
    let started = std::time::Instant::now();
    let provenance = |index: u64| Provenance {
        base_model: origin.base_model.clone(),
        adapter_path: origin.adapter_path.clone(),
        adapter_sha256: origin.adapter_sha256.clone(),
        temperature: s.temperature,
        top_p: s.top_p,
        top_k: s.top_k,
        max_new_tokens: s.max_new_tokens as u32,
        call_seed: origin.call_seed,
        sample_index: index,
        filter: "accepted".into(),
    };
    let (target, total_attempts) = match mode {
        Mode::Unconditional { max_attempts, .. } => (count, *max_attempts),
        Mode::Prompted { prompts } => (prompts.len().min(count), prompts.len().min(count) as u64),
    };
    let bar = indicatif::ProgressBar::new(target as u64);
    let bar = match progress {
        Some(multi) => multi.add(bar),
        None => bar,
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} rows {msg} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut out = Synthesized {
        rows: Vec::with_capacity(target),
        attempts: 0,
        rejections: BTreeMap::new(),
        new_tokens: 0,
        seconds: 0.0,
    };
    let bos_only = encode(tokenizer, "")?;
    if matches!(mode, Mode::Unconditional { .. }) && bos_only.is_empty() {
        return Err(Error::Invalid(
            "the tokenizer adds no BOS token: unconditional sampling has nothing to start from".into(),
        ));
    }
    while out.rows.len() < target && out.attempts < total_attempts {
        let first = out.attempts;
        let n = (s.batch_size as u64).min(total_attempts - first) as usize;
        let prompts: Vec<Vec<u32>> = match mode {
            Mode::Unconditional { .. } => vec![bos_only.clone(); n],
            Mode::Prompted { prompts } => prompts[first as usize..first as usize + n]
                .iter()
                .map(|p| encode(tokenizer, training_text(p, "").trim_end()))
                .collect::<Result<_>>()?,
        };
        let mut rngs: Vec<_> = (0..n as u64).map(|i| sample_rng(origin.call_seed, first + i)).collect();
        let generations = generate(model, &prompts, &mut rngs, eos, s)?;
        out.attempts += n as u64;
        for (i, ids) in generations.iter().enumerate() {
            out.new_tokens += ids.len() as u64;
            if out.rows.len() == target {
                break; // the rest of the batch is not needed; ids past the target are never used
            }
            let index = first + i as u64;
            let text = decode(tokenizer, ids)?;
            let parsed = match mode {
                Mode::Unconditional { strip_quirk, .. } => parse_generation(&text, *strip_quirk).map_err(|r| r.name()),
                Mode::Prompted { prompts } => Ok((prompts[index as usize].clone(), text.trim().to_string())),
            };
            let parsed = parsed.and_then(|(p, r)| if r.is_empty() { Err("empty_response") } else { Ok((p, r)) });
            match parsed {
                Ok((prompt, response)) => {
                    let w = origin.workflow.as_str();
                    out.rows.push(Example::synthetic(
                        w,
                        origin.chain,
                        origin.generation,
                        prompt,
                        response,
                        provenance(index),
                    ));
                    bar.inc(1);
                }
                Err(reason) => *out.rejections.entry(reason.to_string()).or_default() += 1,
            }
        }
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!(
            "{:.1} rows/s, {:.0} tok/s, {} rejected",
            out.rows.len() as f64 / secs,
            out.new_tokens as f64 / secs,
            out.rejections.values().sum::<u64>()
        ));
    }
    bar.finish_and_clear();
    out.seconds = started.elapsed().as_secs_f64();
    if matches!(mode, Mode::Unconditional { .. }) && out.rows.len() < target {
        return Err(Error::Invalid(format!(
            "only {} of {target} rows accepted after {} generations (rejections: {:?}); raise the attempt limit or \
             check the model",
            out.rows.len(),
            out.attempts,
            out.rejections
        )));
    }
    tracing::info!(
        rows = out.rows.len(),
        attempts = out.attempts,
        rejections = ?out.rejections,
        seconds = out.seconds,
        "sampled"
    );
    Ok(out)
}
