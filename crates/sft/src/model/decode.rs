//! Incremental decoding: the [`KvCache`], one decoding step, and preparing the frozen matrices
//! for it (quantizing, packing).

use super::layer::geglu;
use super::{Gemma, MASKED};
use crate::lora::LoraLinear;
use crate::matmul::{Mm, Weight};
use crate::{Error, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Tensor, D};
use std::sync::Arc;

/// Keys and values of every layer for incremental decoding (inference only).
pub struct KvCache {
    layers: Vec<candle_nn::kv_cache::KvCache>,
}

impl KvCache {
    /// An empty cache with room for `capacity` positions (it grows if needed).
    pub fn new(model: &Gemma, capacity: usize) -> Self {
        KvCache {
            layers: (0..model.layers.len()).map(|_| candle_nn::kv_cache::KvCache::new(2, capacity.max(1))).collect(),
        }
    }

    /// Positions held so far.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |l| l.current_seq_len())
    }

    /// Whether no position is held yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `x Wᵀ` of `N` layers on one input, for decoding. Quantized layers of one block type (no
/// adapter) go through one fused call where candle has one (x86 with AVX-512 VNNI, ARM): x is
/// quantized once and the products share one parallel region (tests/quantized.rs covers both).
fn project<const N: usize>(x: &Tensor, lins: [&LoraLinear; N]) -> Result<[Tensor; N]> {
    let mut out: [Option<Tensor>; N] = std::array::from_fn(|_| None);
    let quantized = |l: &LoraLinear| match (&l.weight, &l.lora, &l.full) {
        (Weight::Quantized(q), None, None) => Some(q.clone()),
        _ => None,
    };
    if x.dtype() == DType::F32 && x.device().is_cpu() {
        let x = x.contiguous()?;
        for i in 0..N {
            let Some(first) = (out[i].is_none()).then(|| quantized(lins[i])).flatten() else { continue };
            let group: Vec<usize> = (i..N)
                .filter(|&j| out[j].is_none() && quantized(lins[j]).is_some_and(|q| q.dtype() == first.dtype()))
                .collect();
            if group.len() < 2 {
                continue;
            }
            let qs: Vec<Arc<QTensor>> = group.iter().filter_map(|&j| quantized(lins[j])).collect();
            let refs: Vec<&QTensor> = qs.iter().map(|q| q.as_ref()).collect();
            if let Some(ys) = QTensor::gemv_fused_shared_lhs(&refs, &x)? {
                for (j, y) in group.into_iter().zip(ys) {
                    out[j] = Some(y);
                }
            }
        }
    }
    let mut result = Vec::with_capacity(N);
    for (y, l) in out.into_iter().zip(lins) {
        result.push(match y {
            Some(y) => y,
            None => l.forward(x, None)?,
        });
    }
    Ok(result.try_into().unwrap_or_else(|_| unreachable!("N outputs")))
}

impl Gemma {
    /// Quantizes the frozen matrices whose input width is a whole number of `kind`'s blocks
    /// (32 weights for q8_0 and q4_0, 256 for the k-quants), the tied embedding included, for
    /// decoding; the others stay dense, and LoRA adapters stay separate f32 updates. What a GGUF
    /// file's quantizer did to [`Gemma::load_gguf`]'s weights, for a dense model.
    pub fn quantize(&mut self, kind: GgmlDType) -> Result<()> {
        if self.embed_var.is_some() {
            return Err(Error::Invalid("quantize: the weights are being trained (full fine-tuning)".into()));
        }
        let fits = |w: &Weight| -> Result<bool> { Ok(w.dims2()?.1 % kind.block_size() == 0) };
        let quantize = |w: &Weight| -> Result<Weight> {
            Weight::from_qtensor(QTensor::quantize(&w.dense()?.to_dtype(DType::F32)?, kind)?)
        };
        for (_, lin) in self.linears_mut() {
            if lin.full.is_none() && !lin.weight.is_quantized() && fits(&lin.weight)? {
                lin.weight = quantize(&lin.weight)?;
            }
        }
        if !self.embed.is_quantized() && fits(&self.embed)? {
            self.embed = quantize(&self.embed)?;
            self.dtype = DType::F32;
        }
        Ok(())
    }

    /// Packs the frozen matrices once for decoding's products (the tied embedding too, for the
    /// output layer), where the build does that: bf16 weights on the CPU with oneMKL
    /// (`--dtype bf16` and `bf16-mixed`). Adapters are merged first ([`Gemma::merge_lora`]); the
    /// dense weights stay for everything else (embedding lookups, products that need a
    /// gradient). Returns how many matrices were packed.
    pub fn pack_for_decoding(&mut self) -> Result<usize> {
        self.merge_lora()?;
        let mut packed = 0;
        let mut pack = |w: &mut Weight| -> Result<()> {
            *w = w.packed()?;
            packed += matches!(w, Weight::Packed { .. }) as usize;
            Ok(())
        };
        for (_, lin) in self.linears_mut() {
            if lin.full.is_none() && lin.lora.is_none() {
                pack(&mut lin.weight)?;
            }
        }
        if self.embed_var.is_none() {
            pack(&mut self.embed)?;
        }
        tracing::debug!(packed, "matrices packed for decoding");
        Ok(packed)
    }

    /// One decoding step with a KV cache: feeds `input_ids` (batch, s), which sit at cache slots
    /// `cache.len()..cache.len() + s`, and returns the logits (batch, vocab) of each row's last
    /// slot. `positions[b]` are the rotary positions of row b's s new tokens (they differ from
    /// the slots under left padding); `key_mask[b]` has one entry per slot so far, new ones
    /// included: 1 for a token, 0 for padding. Sliding windows count slots, which equals
    /// counting tokens because padding only precedes a row's tokens.
    pub fn decode_step(
        &self,
        input_ids: &Tensor,
        positions: &[Vec<u32>],
        key_mask: &[Vec<u8>],
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let (b, s) = input_ids.dims2()?;
        // candle's fused RMSNorm on GPUs (as in training); the CPU keeps its composite norm.
        let fused = self.uses_manual_backward();
        let cfg = &self.cfg;
        let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);
        let start = cache.len();
        let total = start + s;
        if positions.len() != b || key_mask.len() != b || key_mask.iter().any(|m| m.len() != total) {
            return Err(Error::Invalid("decode_step: positions or key mask do not match the batch".into()));
        }
        // Rotary tables per row, (b, 1, s, hd/2), one pair per RoPE base.
        let table = |base: f64| -> Result<(Tensor, Tensor)> {
            let inv: Vec<f64> = (0..hd).step_by(2).map(|i| 1.0 / base.powf(i as f64 / hd as f64)).collect();
            let (mut cos, mut sin) = (Vec::with_capacity(b * s * hd / 2), Vec::with_capacity(b * s * hd / 2));
            for row in positions {
                for &p in row {
                    for f in &inv {
                        // f32 product first, as the training path computes its table.
                        let angle = (p as f32 * *f as f32) as f64;
                        cos.push(angle.cos() as f32);
                        sin.push(angle.sin() as f32);
                    }
                }
            }
            Ok((
                Tensor::from_vec(cos, (b, 1, s, hd / 2), &self.device)?,
                Tensor::from_vec(sin, (b, 1, s, hd / 2), &self.device)?,
            ))
        };
        let mut tables: Vec<(u64, (Tensor, Tensor))> = Vec::new();
        for layer in &self.layers {
            if !tables.iter().any(|(b, _)| *b == layer.rope_base.to_bits()) {
                tables.push((layer.rope_base.to_bits(), table(layer.rope_base)?));
            }
        }
        let rope = |x: &Tensor, (cos, sin): &(Tensor, Tensor)| -> Result<Tensor> {
            let x1 = x.narrow(D::Minus1, 0, hd / 2)?;
            let x2 = x.narrow(D::Minus1, hd / 2, hd / 2)?;
            let r1 = (x1.broadcast_mul(cos)? - x2.broadcast_mul(sin)?)?;
            let r2 = (x2.broadcast_mul(cos)? + x1.broadcast_mul(sin)?)?;
            Ok(Tensor::cat(&[r1, r2], D::Minus1)?)
        };
        let mask = |window: Option<usize>| -> Result<Tensor> {
            let mut m = vec![MASKED; b * s * total];
            for (bi, keys) in key_mask.iter().enumerate() {
                for qi in 0..s {
                    let q = start + qi;
                    let lo = window.map_or(0, |w| (q + 1).saturating_sub(w));
                    for k in lo..=q {
                        if keys[k] != 0 {
                            m[(bi * s + qi) * total + k] = 0.0;
                        }
                    }
                }
            }
            Ok(Tensor::from_vec(m, (b, 1, s, total), &self.device)?)
        };
        let global_mask = mask(None)?;
        let window_mask = match cfg.sliding_window {
            Some(w) if w < total => Some(mask(Some(w))?),
            _ => None,
        };
        let scaling = cfg.query_pre_attn_scalar.powf(-0.5);
        let mut x =
            (self.embed.rows(&input_ids.flatten_all()?)?.to_dtype(self.dtype)?.reshape((b, s, cfg.hidden_size))?
                * (cfg.hidden_size as f64).sqrt())?;
        for (layer, kv) in self.layers.iter().zip(cache.layers.iter_mut()) {
            let residual = x.clone();
            let h = layer.input_norm.forward(&x, fused)?;
            let [q, k, v] = project(&h, [&layer.q, &layer.k, &layer.v])?;
            let q = q.reshape((b, s, nh, hd))?.transpose(1, 2)?;
            let k = k.reshape((b, s, nkv, hd))?.transpose(1, 2)?;
            let v = v.reshape((b, s, nkv, hd))?.transpose(1, 2)?;
            let (q, k) = match (&layer.q_norm, &layer.k_norm) {
                (Some(qn), Some(kn)) => (qn.forward(&q, fused)?, kn.forward(&k, fused)?),
                _ => (q, k),
            };
            let (_, table) = tables.iter().find(|(b, _)| *b == layer.rope_base.to_bits()).expect("built above");
            let q = rope(&q.to_dtype(DType::F32)?.contiguous()?, table)?;
            let k = rope(&k.to_dtype(DType::F32)?.contiguous()?, table)?;
            let (k, v) = kv.append(&k.contiguous()?, &v.to_dtype(DType::F32)?.contiguous()?)?;
            // Grouped-query attention without copying the cache: the g query heads that share a
            // key/value head (head h uses kv head h / g, as transformers' repeat_kv) are stacked
            // along the query axis.
            let g = nh / nkv;
            let q = q.reshape((b, nkv, g * s, hd))?;
            let mut scores = (q.mm(&k.t()?)? * scaling)?;
            if let Some(cap) = cfg.attn_logit_softcapping {
                scores = ((scores / cap)?.tanh()? * cap)?;
            }
            let mask = match (layer.window, &window_mask) {
                (Some(_), Some(m)) => m,
                _ => &global_mask,
            };
            let scores = scores.reshape((b, nkv, g, s, total))?.broadcast_add(&mask.unsqueeze(1)?)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores.reshape((b, nkv, g * s, total))?)?;
            let attn = probs.mm(&v)?.reshape((b, nh, s, hd))?; // the cache view as it is: no copy
            let attn = attn.transpose(1, 2)?.reshape((b, s, nh * hd))?.to_dtype(self.dtype)?;
            x = (residual + layer.post_attn_norm.forward(&layer.o.forward(&attn, None)?, fused)?)?;

            let residual = x.clone();
            let h = layer.pre_ff_norm.forward(&x, fused)?;
            let [gate, up] = project(&h, [&layer.gate, &layer.up])?;
            // The training path's fused GeGLU (vectorised on the CPU in f32).
            let h = geglu(&gate, &up, self.erf_gelu)?;
            x = (residual + layer.post_ff_norm.forward(&layer.down.forward(&h, None)?, fused)?)?;
        }
        let last = x.narrow(1, s - 1, 1)?.squeeze(1)?;
        self.logits_of(&self.final_norm.forward(&last, fused)?)
    }
}
