//! The training forward pass: embedding, decoder layers (recomputed one by one under gradient
//! checkpointing), the final norm and the tied output layer.

use super::layer::LayerPass;
use super::{Gemma, MASKED};
use crate::matmul::{frozen_linear, weight_for, Mm, Weight};
use crate::ops::{recompute, GradSink, Recompute};
use crate::Result;
use candle_core::{DType, Tensor};
use std::sync::Arc;
use thrive_core::Rng;

impl Gemma {
    /// Additive attention masks (batch, 1, seq, seq): causal, key padding, and the sliding window.
    fn mask(&self, attention_mask: &[Vec<u8>], seq: usize, window: Option<usize>) -> Result<Tensor> {
        let b = attention_mask.len();
        let mut m = vec![MASKED; b * seq * seq];
        for (bi, keys) in attention_mask.iter().enumerate() {
            for q in 0..seq {
                let lo = window.map_or(0, |w| (q + 1).saturating_sub(w));
                for k in lo..=q {
                    if keys[k] != 0 {
                        m[(bi * seq + q) * seq + k] = 0.0;
                    }
                }
            }
        }
        Ok(Tensor::from_vec(m, (b, 1, seq, seq), &self.device)?)
    }

    /// Rotary tables (seq, head_dim / 2) for positions 0..seq and RoPE base `base`.
    fn rope(&self, seq: usize, base: f64) -> Result<(Tensor, Tensor)> {
        let hd = self.cfg.head_dim;
        let inv: Vec<f32> = (0..hd).step_by(2).map(|i| (1.0 / base.powf(i as f64 / hd as f64)) as f32).collect();
        let inv = Tensor::from_vec(inv, (1, hd / 2), &self.device)?;
        let t = Tensor::arange(0u32, seq as u32, &self.device)?.to_dtype(DType::F32)?.reshape((seq, 1))?;
        let freqs = t.mm(&inv)?;
        Ok((freqs.cos()?, freqs.sin()?))
    }

    /// The final hidden states (batch, seq, hidden) before the output projection.
    /// `attention_mask[b][s]` is 1 for tokens and 0 for padding. `dropout_rng` enables LoRA dropout.
    pub fn hidden_states(
        &self,
        input_ids: &Tensor,
        attention_mask: &[Vec<u8>],
        dropout_rng: Option<&mut Rng>,
    ) -> Result<Tensor> {
        self.hidden_states_with(input_ids, attention_mask, dropout_rng, None)
    }

    /// [`Self::hidden_states`], with each decoder layer recomputed in the backward pass when
    /// `checkpoint` is given (gradient checkpointing): the trainable tensors of the layers then
    /// send their gradients to that sink instead of the backward pass's store.
    pub(crate) fn hidden_states_with(
        &self,
        input_ids: &Tensor,
        attention_mask: &[Vec<u8>],
        mut dropout_rng: Option<&mut Rng>,
        checkpoint: Option<&GradSink>,
    ) -> Result<Tensor> {
        let (b, seq) = input_ids.dims2()?;
        let cfg = &self.cfg;
        let mut x =
            (self.embed.rows(&input_ids.flatten_all()?)?.to_dtype(self.dtype)?.reshape((b, seq, cfg.hidden_size))?
                * (cfg.hidden_size as f64).sqrt())?;
        // One table per RoPE base (Gemma 3 has two).
        let mut tables: Vec<(u64, (Tensor, Tensor))> = Vec::new();
        for layer in &self.layers {
            if !tables.iter().any(|(b, _)| *b == layer.rope_base.to_bits()) {
                tables.push((layer.rope_base.to_bits(), self.rope(seq, layer.rope_base)?));
            }
        }
        let global_mask = self.mask(attention_mask, seq, None)?;
        let window_mask = match cfg.sliding_window {
            Some(w) if w < seq => Some(self.mask(attention_mask, seq, Some(w))?),
            _ => None,
        };
        for layer in &self.layers {
            let (_, (cos, sin)) = tables.iter().find(|(b, _)| *b == layer.rope_base.to_bits()).expect("built above");
            let mask = match (layer.window, &window_mask) {
                (Some(_), Some(m)) => m,
                _ => &global_mask,
            };
            let pass = LayerPass {
                cos: cos.clone(),
                sin: sin.clone(),
                mask: mask.clone(),
                scaling: cfg.query_pre_attn_scalar.powf(-0.5),
                softcap: cfg.attn_logit_softcapping,
                heads: (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim),
                erf_gelu: self.erf_gelu,
                manual_backward: self.uses_manual_backward(),
            };
            x = match checkpoint {
                None => layer.forward(&x, &pass, dropout_rng.as_deref_mut())?,
                Some(sink) => {
                    let params = layer.trainable_vars();
                    let owned = layer.clone();
                    let body = Arc::new(move |a: &[Tensor], rng: Option<&mut Rng>| owned.forward(&a[0], &pass, rng));
                    let extra = Recompute {
                        rng: dropout_rng.as_deref().cloned(),
                        params,
                        sink: Some(sink.clone()),
                        backward: None,
                    };
                    let (out, after) = recompute("decoder-layer", &[&x], body, extra)?;
                    if let (Some(r), Some(after)) = (dropout_rng.as_deref_mut(), after) {
                        *r = after;
                    }
                    out
                }
            };
        }
        self.final_norm.forward(&x, self.uses_manual_backward())
    }

    /// Logits (rows, vocab) of hidden states (rows, hidden): tied embeddings, final soft-capping.
    pub fn logits_of(&self, hidden: &Tensor) -> Result<Tensor> {
        self.logits_with(hidden, self.embed_var.as_ref().map(|v| v.as_tensor()))
    }

    /// Logits through `embed` when the embedding is trained (its gradient is wanted), else
    /// through the frozen embedding (no gradient computed for it).
    pub(crate) fn logits_with(&self, hidden: &Tensor, embed: Option<&Tensor>) -> Result<Tensor> {
        let logits = self.uncapped_logits(hidden, embed)?;
        Ok(match self.cfg.final_logit_softcapping {
            Some(cap) => ((logits / cap)?.tanh()? * cap)?,
            None => logits,
        })
    }

    /// f32 logits before the final soft-capping (the loss folds the cap into its own op).
    pub(crate) fn uncapped_logits(&self, hidden: &Tensor, embed: Option<&Tensor>) -> Result<Tensor> {
        let logits = match embed {
            Some(e) => hidden.broadcast_mm(&e.to_dtype(hidden.dtype())?.t()?)?,
            None => match &self.embed {
                Weight::Dense(e) => frozen_linear(hidden, &weight_for(e, hidden.dtype())?)?,
                other => other.apply(hidden)?, // quantized, or packed for the loss or decoding
            },
        };
        Ok(logits.to_dtype(DType::F32)?)
    }

    /// The output layer's (vocab, hidden) weight for activations of `dtype`: `embed` when the
    /// embedding is trained, else the frozen one, kept in bf16 where the product takes it so
    /// (quantized weights are never trained, so never asked for).
    pub(crate) fn output_weight(&self, embed: Option<&Tensor>, dtype: DType) -> Result<Tensor> {
        Ok(match embed {
            Some(e) => e.to_dtype(dtype)?,
            None => weight_for(self.embed.dense()?, dtype)?,
        })
    }

    /// Logits at every position (batch, seq, vocab).
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &[Vec<u8>]) -> Result<Tensor> {
        let h = self.hidden_states(input_ids, attention_mask, None)?;
        self.logits_of(&h)
    }

    /// Packs the frozen tied output matrix once for a training run's loss, where the build
    /// packs (bf16 on the CPU with oneMKL, so `bf16-mixed` LoRA): the fused loss's logits product
    /// then reads the packed copy instead of MKL repacking the 262,144 × 640 matrix for every
    /// chunk. Costs one packed copy of the matrix (335 MB for Gemma 3 270M). Says whether it
    /// packed.
    pub fn pack_output_layer(&mut self) -> Result<bool> {
        if self.embed_var.is_some() || !matches!(self.embed, Weight::Dense(_)) {
            return Ok(false);
        }
        self.embed = self.embed.packed()?;
        Ok(matches!(self.embed, Weight::Packed { .. }))
    }
}
