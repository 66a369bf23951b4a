//! Training examples: the paper's text format, tokenisation with EOS, the length limit, and
//! padded batches with attention and target masks.

use crate::loss::Batch;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use std::path::Path;
use tokenizers::Tokenizer;

/// One (prompt, response) pair.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Example {
    pub prompt: String,
    pub response: String,
}

/// A tokenised example: ids (with BOS if the tokenizer adds one, and EOS) and which ids are targets.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokenized {
    pub ids: Vec<u32>,
    /// 1 where the token is part of the loss.
    pub target: Vec<u8>,
}

/// Turns examples into token sequences.
pub struct TextEncoder {
    tokenizer: Tokenizer,
    eos: u32,
    pad: u32,
}

impl TextEncoder {
    /// Loads `tokenizer.json`; fails if it has no EOS token.
    pub fn from_file(path: &Path) -> Result<Self> {
        let tokenizer = Tokenizer::from_file(path)
            .map_err(|e| Error::bad_model(path, format!("not a tokenizers tokenizer.json: {e}")))?;
        let eos = ["<eos>", "</s>", "<|endoftext|>"]
            .iter()
            .find_map(|t| tokenizer.token_to_id(t))
            .ok_or_else(|| Error::bad_model(path, "the tokenizer has no EOS token (<eos>, </s> or <|endoftext|>)"))?;
        let pad = ["<pad>"].iter().find_map(|t| tokenizer.token_to_id(t)).unwrap_or(eos);
        Ok(TextEncoder { tokenizer, eos, pad })
    }

    /// The tokenizer itself.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The EOS id.
    pub fn eos(&self) -> u32 {
        self.eos
    }

    /// `user: {prompt}\nassistant: {response}` + EOS; the targets are every token (the paper)
    /// or, with `response_only`, the tokens that overlap the response (the first one usually
    /// carries the space after `assistant:`), and EOS.
    pub fn encode(&self, ex: &Example, response_only: bool) -> Result<Tokenized> {
        let text = thrive_core::text_format::training_text(&ex.prompt, &ex.response);
        let enc = self.tokenizer.encode(text.as_str(), true).map_err(|e| Error::Invalid(format!("tokenizing: {e}")))?;
        let response_start = text.len() - ex.response.len();
        let mut ids = enc.get_ids().to_vec();
        let mut target: Vec<u8> = if response_only {
            let special = enc.get_special_tokens_mask();
            enc.get_offsets()
                .iter()
                .zip(special)
                .map(|(&(start, end), &s)| u8::from(s == 0 && end > start && end > response_start))
                .collect()
        } else {
            vec![1; ids.len()]
        };
        ids.push(self.eos);
        target.push(1);
        Ok(Tokenized { ids, target })
    }

    /// Encodes every example and drops those longer than `max_len` tokens; returns the kept ones
    /// and how many were dropped.
    pub fn encode_all(
        &self,
        examples: &[Example],
        max_len: usize,
        response_only: bool,
    ) -> Result<(Vec<Tokenized>, usize)> {
        let mut kept = Vec::with_capacity(examples.len());
        for ex in examples {
            let t = self.encode(ex, response_only)?;
            if t.ids.len() <= max_len {
                kept.push(t);
            }
        }
        let dropped = examples.len() - kept.len();
        Ok((kept, dropped))
    }

    /// A right-padded batch.
    pub fn batch(&self, seqs: &[&Tokenized], device: &Device) -> Result<Batch> {
        let len = seqs.iter().map(|s| s.ids.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(seqs.len() * len);
        let (mut attention, mut target) = (Vec::new(), Vec::new());
        for s in seqs {
            let n = s.ids.len();
            ids.extend_from_slice(&s.ids);
            ids.extend(std::iter::repeat_n(self.pad, len - n));
            let mut a = vec![1u8; n];
            a.resize(len, 0);
            attention.push(a);
            let mut t = s.target.clone();
            t.resize(len, 0);
            target.push(t);
        }
        Ok(Batch {
            input_ids: Tensor::from_vec(ids, (seqs.len(), len), device)?,
            attention_mask: attention,
            target_mask: target,
        })
    }
}

/// Reads a jsonl file of `{"prompt": …, "response": …}` lines (other fields ignored).
pub fn read_jsonl(path: &Path) -> Result<Vec<Example>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io { path: path.into(), source: e })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let ex: Example = serde_json::from_str(line).map_err(|e| Error::BadInput {
            path: path.into(),
            message: format!("line {}: not a {{\"prompt\", \"response\"}} object: {e}", i + 1),
        })?;
        out.push(ex);
    }
    Ok(out)
}
