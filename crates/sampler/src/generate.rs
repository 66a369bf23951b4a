//! Batched decoding with a KV cache, and the per-token choice (temperature, top-k, top-p).

use crate::{Error, Result};
use candle_core::Tensor;
use rand::Rng as _;
use rayon::prelude::*;
use thrive_core::{Rng, Seeds, Stream};
use thrive_sft::{Gemma, KvCache};

/// The sampler's settings (vLLM's meaning: temperature 0 is greedy, top-p 1 and no top-k keep
/// the whole distribution). The paper: temperature 1, top-p 1, no top-k, 512 new tokens.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplerSettings {
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: Option<u32>,
    pub max_new_tokens: usize,
    /// Sequences decoded together (memory, not results, depends on it).
    pub batch_size: usize,
    /// Keep decoding past EOS to exactly `max_new_tokens` (benchmarks only, like vLLM's ignore_eos).
    #[serde(default)]
    pub ignore_eos: bool,
}

impl Default for SamplerSettings {
    fn default() -> Self {
        SamplerSettings {
            temperature: 1.0,
            top_p: 1.0,
            top_k: None,
            max_new_tokens: 512,
            batch_size: 64,
            ignore_eos: false,
        }
    }
}

impl SamplerSettings {
    /// Checks the ranges; errors name the setting.
    pub fn check(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::Invalid(format!("temperature must be >= 0 (got {})", self.temperature)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Invalid(format!("top-p must be in (0, 1] (got {})", self.top_p)));
        }
        if self.top_k == Some(0) {
            return Err(Error::Invalid("top-k must be at least 1".into()));
        }
        if self.max_new_tokens == 0 || self.batch_size == 0 {
            return Err(Error::Invalid("max new tokens and batch size must be positive".into()));
        }
        Ok(())
    }

    fn greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == Some(1)
    }
}

/// The random stream of sample `index` of the call with seed `call_seed`.
pub fn sample_rng(call_seed: u64, index: u64) -> Rng {
    // Stream ids are (tag << 32 | index): samples beyond 2^32 wrap into the high tag bits, which
    // a call never reaches (it would be four billion generations).
    Seeds::new(call_seed).stream(Stream::Custom(0x5A, index as u32))
}

/// The largest logit, NaNs ignored (−∞ for an empty or all-NaN row), eight lanes at a time: the
/// greedy choice scans 262,144 logits a token.
fn max_logit(logits: &[f32]) -> f32 {
    use wide::{f32x8, CmpGt};
    let mut chunks = logits.chunks_exact(8);
    let mut lanes = f32x8::splat(f32::NEG_INFINITY);
    for c in &mut chunks {
        let v = f32x8::from(<[f32; 8]>::try_from(c).expect("chunks of 8"));
        // NaN lanes of v keep the running maximum.
        lanes = v.cmp_gt(lanes).blend(v, lanes);
    }
    let tail = chunks.remainder().iter().copied();
    lanes.to_array().into_iter().chain(tail).fold(f32::NEG_INFINITY, f32::max)
}

/// exp((l − max) / t) of every logit in f64, four at a time: wide's vector exp is within an ulp
/// or two of libm's, and libm's scalar exp over 262,144 logits a token was a tenth of a decoding
/// step. Below exp(−708) a weight is 0 (libm gives a subnormal), and a NaN logit weighs 0.
fn exp_weights(logits: &[f32], max: f64, t: f64) -> Vec<f64> {
    use wide::f64x4;
    let (max4, t4) = (f64x4::splat(max), f64x4::splat(t));
    let mut out = Vec::with_capacity(logits.len());
    let mut chunks = logits.chunks_exact(4);
    for c in &mut chunks {
        let l = f64x4::from([c[0] as f64, c[1] as f64, c[2] as f64, c[3] as f64]);
        out.extend_from_slice(&((l - max4) / t4).exp().to_array());
    }
    for &l in chunks.remainder() {
        let w = f64x4::splat((l as f64 - max) / t).exp().to_array()[0];
        out.push(w);
    }
    out
}

/// Picks the next token from one row of logits with one uniform draw from `rng` (drawn even when
/// greedy, so that a stream's position never depends on the settings' shortcuts).
pub fn choose_token(logits: &[f32], s: &SamplerSettings, rng: &mut Rng) -> u32 {
    let u: f64 = rng.random();
    let max = max_logit(logits);
    if s.greedy() {
        // The first logit equal to the largest (the first one when every logit is NaN).
        return logits.iter().position(|&l| l == max).unwrap_or(0) as u32;
    }
    let t = s.temperature;
    let max = max as f64;
    let full = s.top_p >= 1.0 && s.top_k.is_none_or(|k| k as usize >= logits.len());
    if full {
        // The whole distribution: inverse CDF in vocabulary order, no sort.
        let weights = exp_weights(logits, max, t);
        let total: f64 = weights.iter().sum();
        let mut target = u * total;
        for (i, w) in weights.iter().enumerate() {
            target -= w;
            if target < 0.0 {
                return i as u32;
            }
        }
        return (weights.len() - 1) as u32;
    }
    // Candidates by descending logit (ties by index), cut by top-k, then by top-p.
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    let k = s.top_k.map_or(logits.len(), |k| (k as usize).min(logits.len()));
    let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, by_logit);
        order.truncate(k);
    }
    order.sort_unstable_by(by_logit);
    let weights: Vec<f64> = order.iter().map(|&i| ((logits[i as usize] as f64 - max) / t).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut kept = 0;
    let mut mass = 0.0;
    for w in &weights {
        kept += 1;
        mass += w / total;
        if mass >= s.top_p {
            break;
        }
    }
    let kept_total: f64 = weights[..kept].iter().sum();
    let mut target = u * kept_total;
    for (i, w) in weights[..kept].iter().enumerate() {
        target -= w;
        if target < 0.0 {
            return order[i];
        }
    }
    order[kept - 1]
}

/// Continues every prompt (token ids, BOS included) until EOS or `max_new_tokens`, decoding them
/// together; `rngs[i]` is prompt i's stream. Returns the new tokens of each, EOS excluded.
pub fn generate(
    model: &Gemma,
    prompts: &[Vec<u32>],
    rngs: &mut [Rng],
    eos: u32,
    s: &SamplerSettings,
) -> Result<Vec<Vec<u32>>> {
    let b = prompts.len();
    if b == 0 {
        return Ok(Vec::new());
    }
    if rngs.len() != b || prompts.iter().any(|p| p.is_empty()) {
        return Err(Error::Invalid("every prompt needs at least one token and its own random stream".into()));
    }
    let device = model.device().clone();
    let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
    // Left padding: each row's tokens end at the same slot, so one new token per step fits all.
    let mut ids = Vec::with_capacity(b * width);
    let mut key_mask: Vec<Vec<u8>> = Vec::with_capacity(b);
    let mut positions: Vec<Vec<u32>> = Vec::with_capacity(b);
    for p in prompts {
        let pad = width - p.len();
        ids.extend(std::iter::repeat_n(p[0], pad));
        ids.extend_from_slice(p);
        key_mask.push([vec![0u8; pad], vec![1u8; p.len()]].concat());
        positions.push([vec![0u32; pad], (0..p.len() as u32).collect()].concat());
    }
    let mut cache = KvCache::new(model, width + s.max_new_tokens);
    let mut logits =
        model.decode_step(&Tensor::from_vec(ids, (b, width), &device)?, &positions, &key_mask, &mut cache)?;
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); b];
    let mut done = vec![false; b];
    let mut next_pos: Vec<u32> = prompts.iter().map(|p| p.len() as u32).collect();
    for step in 0..s.max_new_tokens {
        // One row per task: each row has its own stream, so threads do not change the result.
        let vocab = logits.dim(1)?;
        let rows = logits.to_dtype(candle_core::DType::F32)?.contiguous()?;
        // Read the CPU logits where they are (16 rows of 262,144 is 17 MB a step to copy).
        let (storage, layout) = rows.storage_and_layout();
        let copied: Vec<f32>;
        let flat: &[f32] = match (&*storage, layout.contiguous_offsets()) {
            (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((start, end))) => &v[start..end],
            _ => {
                copied = rows.flatten_all()?.to_vec1()?;
                &copied
            }
        };
        let picked: Vec<Option<u32>> = flat
            .par_chunks(vocab)
            .zip(rngs.par_iter_mut())
            .zip(done.par_iter())
            .map(|((row, rng), &d)| (!d).then(|| choose_token(row, s, rng)))
            .collect();
        let mut next = Vec::with_capacity(b);
        for (i, t) in picked.into_iter().enumerate() {
            let Some(t) = t else {
                next.push(eos);
                continue;
            };
            if t == eos && !s.ignore_eos {
                done[i] = true;
            } else {
                out[i].push(t);
            }
            next.push(t);
        }
        drop(storage);
        if done.iter().all(|&d| d) || step + 1 == s.max_new_tokens {
            break;
        }
        // Finished rows keep decoding (their tokens are ignored) so the batch stays rectangular.
        for m in key_mask.iter_mut() {
            m.push(1);
        }
        let pos: Vec<Vec<u32>> = next_pos.iter().map(|&p| vec![p]).collect();
        for p in next_pos.iter_mut() {
            *p += 1;
        }
        logits = model.decode_step(&Tensor::from_vec(next, (b, 1), &device)?, &pos, &key_mask, &mut cache)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::exp_weights;

    /// The vector maximum against a scalar fold: NaNs ignored, any length, the tail included.
    #[test]
    fn the_vector_maximum_is_the_scalar_one() {
        use super::max_logit;
        for len in [0usize, 1, 7, 8, 9, 100, 1003] {
            let mut v: Vec<f32> = (0..len).map(|i| ((i as f32 * 0.618_034).fract() - 0.5) * 10.0).collect();
            let want = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max_logit(&v), want, "length {len}");
            if len > 3 {
                v[len - 1] = 99.0; // in the tail or the last vector
                v[1] = f32::NAN;
                assert_eq!(max_logit(&v), 99.0, "length {len}");
            }
        }
        assert_eq!(max_logit(&[f32::NAN; 9]), f32::NEG_INFINITY);
    }

    /// The vector weights against libm's scalar exp: within 4 ulp wherever libm's result is a
    /// normal number, 0 for a NaN logit, and any length (the remainder after whole vectors).
    #[test]
    fn vector_weights_are_libms_within_a_few_ulp() {
        let logits: Vec<f32> = (0..10_003).map(|i| ((i as f32 * 0.618_034).fract() - 0.9) * 80.0).collect();
        let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        for t in [1.0, 0.7, 0.05] {
            let got = exp_weights(&logits, max, t);
            assert_eq!(got.len(), logits.len());
            for (&l, &g) in logits.iter().zip(&got) {
                let want = ((l as f64 - max) / t).exp();
                if want >= f64::MIN_POSITIVE * 1e10 {
                    assert!((g - want).abs() <= 4.0 * f64::EPSILON * want, "t {t}, logit {l}: {g} vs {want}");
                } else {
                    assert!(g <= f64::MIN_POSITIVE * 1e10, "t {t}, logit {l}: {g} vs {want}");
                }
            }
        }
        let nan = exp_weights(&[0.0, f32::NAN, -1.0, 0.5, f32::NAN], 0.5, 1.0);
        assert_eq!((nan[1], nan[4]), (0.0, 0.0));
        assert!((nan[0] - (-0.5f64).exp()).abs() < 1e-15);
    }
}
