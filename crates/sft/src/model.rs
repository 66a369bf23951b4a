//! The Gemma 2 and Gemma 3 decoders, written so that every op between the loss and a trainable
//! tensor has a backward pass: composite softmax and rotary embeddings, full-sequence logits,
//! padding masks, sliding-window and global attention, soft-capping (Gemma 2), QK-norm and a RoPE
//! base per layer type (Gemma 3), (1 + w) RMSNorm, GeGLU. The two share everything else.

use crate::config::GemmaConfig;
use crate::lora::{LoraConfig, LoraLinear, Weight};
use crate::matmul::{weight_for, Mm};
use crate::ops::{frozen_linear, recompute, GradSink, Recompute};
use crate::{Error, Precision, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor, Var, D};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use thrive_core::Rng;

/// The linear layers of a decoder layer, in the order of `Layer`'s fields (transformers' names).
const LINEAR_MODULES: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

/// Added to masked attention scores (finite, so a fully masked row gives a uniform softmax, not NaN).
const MASKED: f32 = -1e30;

#[derive(Debug, Clone)]
struct RmsNorm {
    /// The stored weight w.
    weight: Tensor,
    /// 1 + w, precomputed while w is frozen.
    scale: Tensor,
    /// w itself (f32) when it is trained (full fine-tuning).
    var: Option<Var>,
    eps: f64,
}

impl RmsNorm {
    /// (1 + w) · x / rms(x) over the last axis, in f32, back in x's dtype. Recomputed in the
    /// backward pass rather than keeping its five intermediate tensors; with `manual` (GPUs, see
    /// [`Gemma::manual_backward`]) candle's fused kernel computes it and [`NormCore::backward`]
    /// gives the gradients.
    fn forward(&self, x: &Tensor, manual: bool) -> Result<Tensor> {
        let core = NormCore { eps: self.eps, scale: self.var.is_none().then(|| self.scale.clone()), manual };
        let (fwd, bwd) = (core.clone(), core);
        let body = move |a: &[Tensor], _: Option<&mut Rng>| fwd.forward(a);
        let mut extra = Recompute::default();
        if manual {
            extra.backward = Some(Arc::new(move |a: &[Tensor], g: &Tensor| bwd.backward(a, g)));
        }
        let inputs: Vec<&Tensor> = match &self.var {
            Some(v) => vec![x, v.as_tensor()],
            None => vec![x],
        };
        Ok(recompute("rms-norm", &inputs, Arc::new(body), extra)?.0)
    }

    fn make_trainable(&mut self) -> Result<Var> {
        let var = Var::from_tensor(&self.weight.to_dtype(DType::F32)?)?;
        self.weight = var.as_tensor().clone();
        self.var = Some(var.clone());
        Ok(var)
    }
}

/// The norm as a function of x (and w, when it is trained): inputs `[x]` or `[x, w]`.
#[derive(Clone)]
struct NormCore {
    eps: f64,
    /// 1 + w while w is frozen; `None` when w is the second input.
    scale: Option<Tensor>,
    manual: bool,
}

impl NormCore {
    fn scale(&self, a: &[Tensor]) -> Result<Tensor> {
        Ok(match &self.scale {
            Some(s) => s.clone(),
            None => (&a[1] + 1.0)?,
        })
    }

    fn forward(&self, a: &[Tensor]) -> Result<Tensor> {
        let (x, scale) = (&a[0], self.scale(a)?);
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        if self.manual {
            // The fused kernel wants contiguous rows (a batch's last positions are not).
            return Ok(candle_nn::ops::rms_norm(&x.contiguous()?, &scale, self.eps as f32)?.to_dtype(dtype)?);
        }
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = x.broadcast_div(&(ms + self.eps)?.sqrt()?)?;
        Ok(normed.broadcast_mul(&scale)?.to_dtype(dtype)?)
    }

    /// With r = 1 / rms(x) and s = 1 + w: dx = r · (s ⊙ g − x · r² · mean(x ⊙ s ⊙ g)), and
    /// dw = Σ over rows of g ⊙ x · r.
    fn backward(&self, a: &[Tensor], grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (x, scale) = (a[0].to_dtype(DType::F32)?, self.scale(a)?);
        let g = grad.to_dtype(DType::F32)?;
        let r = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?.recip()?;
        let gs = g.broadcast_mul(&scale)?;
        let dot = (&x * &gs)?.mean_keepdim(D::Minus1)?;
        let dx = (gs - x.broadcast_mul(&(dot * r.sqr()?)?)?)?.broadcast_mul(&r)?.to_dtype(a[0].dtype())?;
        let dw = match a.get(1) {
            Some(w) => {
                let hidden = x.dim(D::Minus1)?;
                let xr = x.broadcast_mul(&r)?;
                Some((g * xr)?.reshape(((), hidden))?.sum(0)?.to_dtype(w.dtype())?)
            }
            None => None,
        };
        Ok(std::iter::once(Some(dx)).chain(a.get(1).map(|_| dw)).collect())
    }
}

#[derive(Debug, Clone)]
struct Layer {
    q: LoraLinear,
    k: LoraLinear,
    v: LoraLinear,
    o: LoraLinear,
    gate: LoraLinear,
    up: LoraLinear,
    down: LoraLinear,
    input_norm: RmsNorm,
    post_attn_norm: RmsNorm,
    pre_ff_norm: RmsNorm,
    post_ff_norm: RmsNorm,
    /// Gemma 3's RMSNorm of each query and key head (over head_dim), before RoPE.
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    window: Option<usize>,
    rope_base: f64,
}

/// A Gemma 2 or Gemma 3 (text) causal language model with optional LoRA adapters.
#[derive(Debug, Clone)]
pub struct Gemma {
    pub cfg: GemmaConfig,
    /// The tied embedding and output matrix (dense, or quantized for decoding).
    embed: Weight,
    /// The embedding (f32) when it is trained (full fine-tuning); `embed` is then its tensor.
    embed_var: Option<Var>,
    layers: Vec<Layer>,
    final_norm: RmsNorm,
    dtype: DType,
    device: Device,
    erf_gelu: bool,
    /// candle's fused RMSNorm and softmax kernels (training and decoding) with hand-written
    /// backward passes for RMSNorm, attention and the loss (no autograd graph): `None` uses them
    /// on every device. candle's composite ops each cost a pass over (seq × seq) or (rows ×
    /// vocabulary) values and, on a GPU, a kernel launch; on the CPU the hand-written passes took
    /// a LoRA step of Gemma 3 270M from 36 to 29 s (README). `Some(false)` runs autograd through
    /// the composite ops instead, which tests and `thrive check-device` compare against.
    #[doc(hidden)]
    pub manual_backward: Option<bool>,
    /// Full fine-tuning under `--dtype bf16-mixed`: the trained weights' products (the output
    /// matrix's included) run in bf16 against their f32 masters, as PyTorch's CPU autocast.
    bf16_trained: bool,
}

/// Loads every tensor of a model directory (single file or sharded with an index).
fn load_weights(dir: &Path, dtype: DType, device: &Device) -> Result<(HashMap<String, Tensor>, String)> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<std::path::PathBuf> = if single.exists() {
        vec![single]
    } else if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::Io { path: index.clone(), source: e })?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::bad_model(&index, format!("not JSON: {e}")))?;
        let map =
            v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| Error::bad_model(&index, "no weight_map"))?;
        let mut files: Vec<String> = map.values().filter_map(|f| f.as_str().map(String::from)).collect();
        files.sort();
        files.dedup();
        files.into_iter().map(|f| dir.join(f)).collect()
    } else {
        return Err(Error::bad_model(dir, "no model.safetensors or model.safetensors.index.json"));
    };
    let mut all = HashMap::new();
    for f in &files {
        all.extend(crate::weights::read(f, dtype, device)?);
    }
    Ok((all, files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")))
}

impl Gemma {
    /// Loads `config.json` and the weights from `dir`, frozen, in `precision` (a dtype, f32 on
    /// the CPU and bf16 on CUDA, or [`Precision::BF16_MIXED`]: bf16 weights, f32 activations).
    pub fn load(dir: &Path, precision: impl Into<Precision>, device: &Device) -> Result<Self> {
        let precision = precision.into();
        let cfg = GemmaConfig::from_file(&dir.join("config.json"))?;
        let (w, files) = load_weights(dir, precision.weights, device)?;
        let w = w.into_iter().map(|(k, t)| (k, Weight::Dense(t))).collect();
        Self::from_weights(cfg, w, &files, precision.compute, device)
    }

    /// A Gemma 3 GGUF file for decoding only: its matrices (the tied embedding included) stay in
    /// the file's quantized blocks and go through candle's quantized matmul, which reads 4.5 to
    /// 8.5 bits a weight instead of 32; norms and activations are f32. It cannot be trained,
    /// merged with an adapter or exported (an adapter stays a separate f32 update).
    pub fn load_gguf(path: &Path, device: &Device) -> Result<Self> {
        let (cfg, w) = crate::gguf::read_quantized(path, device)?;
        Self::from_weights(cfg, w, &path.display().to_string(), DType::F32, device)
    }

    /// The model of `cfg` from its tensors under transformers' names (`files` names them in errors).
    fn from_weights(
        cfg: GemmaConfig,
        mut w: HashMap<String, Weight>,
        files: &str,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let h = cfg.hidden_size;
        let (nh, nkv, hd, ff) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.intermediate_size);
        let mut take = |name: &str, shape: &[usize]| -> Result<Weight> {
            let t = w
                .remove(name)
                .or_else(|| w.remove(&name.replacen("model.", "", 1)))
                .ok_or_else(|| Error::bad_model(files, format!("missing tensor `{name}`")))?;
            let dims = match &t {
                Weight::Quantized(q) => q.shape().dims().to_vec(),
                Weight::Q8(q) => vec![q.dims().0, q.dims().1],
                dense => dense.dense()?.dims().to_vec(),
            };
            if dims != shape {
                return Err(Error::bad_model(
                    files,
                    format!("tensor `{name}` has shape {dims:?}, the config needs {shape:?}"),
                ));
            }
            Ok(t)
        };
        let norm = |t: Weight| -> Result<RmsNorm> {
            let t = t.dense()?.clone();
            Ok(RmsNorm { scale: (t.to_dtype(DType::F32)? + 1.0)?, weight: t, var: None, eps: cfg.rms_norm_eps })
        };
        let embed = take("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
        let qk_norm = cfg.is_gemma3();
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let lin = |weight: Weight| LoraLinear { weight, full: None, lora: None, bf16_products: false };
            layers.push(Layer {
                q: lin(take(&format!("{p}.self_attn.q_proj.weight"), &[nh * hd, h])?),
                k: lin(take(&format!("{p}.self_attn.k_proj.weight"), &[nkv * hd, h])?),
                v: lin(take(&format!("{p}.self_attn.v_proj.weight"), &[nkv * hd, h])?),
                o: lin(take(&format!("{p}.self_attn.o_proj.weight"), &[h, nh * hd])?),
                gate: lin(take(&format!("{p}.mlp.gate_proj.weight"), &[ff, h])?),
                up: lin(take(&format!("{p}.mlp.up_proj.weight"), &[ff, h])?),
                down: lin(take(&format!("{p}.mlp.down_proj.weight"), &[h, ff])?),
                input_norm: norm(take(&format!("{p}.input_layernorm.weight"), &[h])?)?,
                post_attn_norm: norm(take(&format!("{p}.post_attention_layernorm.weight"), &[h])?)?,
                pre_ff_norm: norm(take(&format!("{p}.pre_feedforward_layernorm.weight"), &[h])?)?,
                post_ff_norm: norm(take(&format!("{p}.post_feedforward_layernorm.weight"), &[h])?)?,
                q_norm: qk_norm.then(|| norm(take(&format!("{p}.self_attn.q_norm.weight"), &[hd])?)).transpose()?,
                k_norm: qk_norm.then(|| norm(take(&format!("{p}.self_attn.k_norm.weight"), &[hd])?)).transpose()?,
                window: cfg.window(i),
                rope_base: cfg.rope_base(i),
            });
        }
        let final_norm = norm(take("model.norm.weight", &[h])?)?;
        let erf_gelu = cfg.hidden_activation == "gelu";
        Ok(Gemma {
            cfg,
            embed,
            embed_var: None,
            layers,
            final_norm,
            dtype,
            device: device.clone(),
            erf_gelu,
            manual_backward: None,
            bf16_trained: false,
        })
    }

    /// For full fine-tuning: every weight read in f32 and made trainable (the f32 master
    /// copies, so a generation never starts from weights rounded through bf16), computed in
    /// `dtype`.
    /// Under `bf16-mixed` (CPU, `mkl` build) the weights stay f32 masters and every product that
    /// reads one rounds it and its other operand to bf16, accumulating in f32 (AMX), as PyTorch's
    /// CPU autocast does; activations, norms, attention and the loss stay f32.
    pub fn load_full(dir: &Path, precision: impl Into<Precision>, device: &Device) -> Result<Self> {
        let precision = precision.into();
        let mixed = precision == Precision::BF16_MIXED;
        if precision.weights != precision.compute && !mixed {
            return Err(Error::Invalid(format!("dtype {}: not a precision for full fine-tuning", precision.name())));
        }
        if mixed && !(device.is_cpu() && crate::matmul::mixed_products()) {
            return Err(Error::Invalid("dtype bf16-mixed needs the CPU of an mkl build; use f32 or bf16 here".into()));
        }
        let mut model = Self::load(dir, DType::F32, device)?;
        model.dtype = precision.compute;
        model.make_all_trainable()?;
        if mixed {
            model.bf16_trained = true;
            for (_, lin) in model.linears_mut() {
                lin.bf16_products = true;
            }
        }
        Ok(model)
    }

    /// Whether the trained weights' products run in bf16 ([`Gemma::load_full`] under bf16-mixed).
    pub(crate) fn bf16_trained(&self) -> bool {
        self.bf16_trained
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Whether the matrices are quantized (decoding only).
    pub fn is_quantized(&self) -> bool {
        self.embed.is_quantized()
    }

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

    /// Every adaptable linear layer with its PEFT module path
    /// (`base_model.model.model.layers.{i}.self_attn.q_proj`).
    fn linears_mut(&mut self) -> Vec<(String, &mut LoraLinear)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter_mut().enumerate() {
            let p = format!("base_model.model.model.layers.{i}");
            let [q, k, v, o, gate, up, down] =
                [&mut l.q, &mut l.k, &mut l.v, &mut l.o, &mut l.gate, &mut l.up, &mut l.down];
            for (module, lin) in LINEAR_MODULES.iter().zip([q, k, v, o, gate, up, down]) {
                out.push((format!("{p}.{module}"), lin));
            }
        }
        out
    }

    /// Every linear layer under PEFT's name (`base_model.model.model.layers.0.self_attn.q_proj`).
    fn linears(&self) -> Vec<(String, &LoraLinear)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("base_model.model.model.layers.{i}");
            for (module, lin) in LINEAR_MODULES.iter().zip([&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down]) {
                out.push((format!("{p}.{module}"), lin));
            }
        }
        out
    }

    /// Adds fresh LoRA adapters (A from `rng`, B zero) to the configured modules.
    pub fn add_lora(&mut self, cfg: &LoraConfig, rng: &mut thrive_core::Rng) -> Result<()> {
        for t in &cfg.targets {
            if !crate::LORA_TARGETS.contains(&t.as_str()) {
                return Err(Error::Invalid(format!(
                    "unknown LoRA target module `{t}` (expected one of {:?})",
                    crate::LORA_TARGETS
                )));
            }
        }
        let device = self.device.clone();
        for (name, lin) in self.linears_mut() {
            let module = name.rsplit('.').next().unwrap_or_default();
            if cfg.targets.iter().any(|t| t == module) {
                *lin = lin.clone().with_lora(cfg, rng, &device)?;
            }
        }
        Ok(())
    }

    /// Loads A and B of every adapted module from a PEFT `adapter_model.safetensors`.
    pub fn load_lora_weights(&mut self, path: &Path) -> Result<()> {
        let tensors = candle_core::safetensors::load(path, &self.device)
            .map_err(|e| Error::bad_model(path, format!("not readable safetensors: {e}")))?;
        for (name, lin) in self.linears_mut() {
            let Some(l) = &lin.lora else { continue };
            for (part, var) in [("lora_A", &l.a), ("lora_B", &l.b)] {
                let key = format!("{name}.{part}.weight");
                let t = tensors.get(&key).ok_or_else(|| Error::bad_model(path, format!("missing tensor `{key}`")))?;
                if t.dims() != var.dims() {
                    return Err(Error::bad_model(
                        path,
                        format!("`{key}` has shape {:?}, expected {:?} (rank or targets differ)", t.dims(), var.dims()),
                    ));
                }
                var.set(&t.to_dtype(DType::F32)?)?;
            }
        }
        Ok(())
    }

    /// The trainable tensors under PEFT's names (`….q_proj.lora_A.weight`), or, for full
    /// fine-tuning, the transformers names of the base weights.
    pub fn trainable(&mut self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        for (name, lin) in self.linears_mut() {
            if let Some(l) = &lin.lora {
                out.push((format!("{name}.lora_A.weight"), l.a.clone()));
                out.push((format!("{name}.lora_B.weight"), l.b.clone()));
            }
            if let Some(v) = &lin.full {
                out.push((format!("{}.weight", name.trim_start_matches("base_model.model.")), v.clone()));
            }
        }
        if let Some(v) = &self.embed_var {
            out.push(("model.embed_tokens.weight".into(), v.clone()));
        }
        for (name, norm) in self.norms() {
            if let Some(v) = &norm.var {
                out.push((format!("{name}.weight"), v.clone()));
            }
        }
        out
    }

    /// Every RMSNorm under its transformers name (without `.weight`).
    fn norms(&self) -> Vec<(String, &RmsNorm)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            out.push((format!("{p}.input_layernorm"), &l.input_norm));
            out.push((format!("{p}.post_attention_layernorm"), &l.post_attn_norm));
            out.push((format!("{p}.pre_feedforward_layernorm"), &l.pre_ff_norm));
            out.push((format!("{p}.post_feedforward_layernorm"), &l.post_ff_norm));
            if let (Some(q), Some(k)) = (&l.q_norm, &l.k_norm) {
                out.push((format!("{p}.self_attn.q_norm"), q));
                out.push((format!("{p}.self_attn.k_norm"), k));
            }
        }
        out.push(("model.norm".into(), &self.final_norm));
        out
    }

    /// Makes every parameter trainable, as the paper's full fine-tuning: the linear layers, the
    /// (tied) embedding and every norm, each held in f32.
    pub fn make_all_trainable(&mut self) -> Result<()> {
        if self.embed_var.is_some() {
            return Ok(()); // already (Gemma::load_full)
        }
        for (_, lin) in self.linears_mut() {
            *lin = LoraLinear::trainable(lin.weight.dense()?)?;
        }
        let var = Var::from_tensor(&self.embed.dense()?.to_dtype(DType::F32)?)?;
        self.embed = Weight::Dense(var.as_tensor().clone());
        self.embed_var = Some(var);
        for l in &mut self.layers {
            for n in [&mut l.input_norm, &mut l.post_attn_norm, &mut l.pre_ff_norm, &mut l.post_ff_norm] {
                n.make_trainable()?;
            }
            for n in [&mut l.q_norm, &mut l.k_norm].into_iter().flatten() {
                n.make_trainable()?;
            }
        }
        self.final_norm.make_trainable()?;
        Ok(())
    }

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

    /// Whether attention and the loss use their hand-written backward passes.
    pub(crate) fn uses_manual_backward(&self) -> bool {
        self.manual_backward.unwrap_or(true)
    }

    /// The trained embedding, when there is one (full fine-tuning).
    pub(crate) fn embed_var(&self) -> Option<&Var> {
        self.embed_var.as_ref()
    }

    /// Logits at every position (batch, seq, vocab).
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &[Vec<u8>]) -> Result<Tensor> {
        let h = self.hidden_states(input_ids, attention_mask, None)?;
        self.logits_of(&h)
    }
}

/// What every layer of one forward pass shares: its rotary table, its mask and the sizes.
#[derive(Clone)]
struct LayerPass {
    cos: Tensor,
    sin: Tensor,
    /// Additive (batch, 1, seq, seq).
    mask: Tensor,
    scaling: f64,
    softcap: Option<f64>,
    /// (query heads, key/value heads, head dim).
    heads: (usize, usize, usize),
    erf_gelu: bool,
    /// Attention's hand-written backward (see [`Gemma::manual_backward`]).
    manual_backward: bool,
}

impl Layer {
    /// One decoder layer on (batch, seq, hidden).
    fn forward(&self, x: &Tensor, pass: &LayerPass, mut rng: Option<&mut Rng>) -> Result<Tensor> {
        let (b, seq, _) = x.dims3()?;
        let (nh, nkv, hd) = pass.heads;
        let m = pass.manual_backward;
        let h = self.input_norm.forward(x, m)?;
        let q = self.q.forward(&h, rng.as_deref_mut())?.reshape((b, seq, nh, hd))?;
        let k = self.k.forward(&h, rng.as_deref_mut())?.reshape((b, seq, nkv, hd))?;
        let v = self.v.forward(&h, rng.as_deref_mut())?.reshape((b, seq, nkv, hd))?;
        let (q, k) = match (&self.q_norm, &self.k_norm) {
            (Some(qn), Some(kn)) => (qn.forward(&q, m)?, kn.forward(&k, m)?),
            _ => (q, k),
        };
        let attn = attention(&q, &k, &v, pass)?;
        let h = self.o.forward(&attn, rng.as_deref_mut())?;
        let x = (x + self.post_attn_norm.forward(&h, m)?)?;

        let h = self.pre_ff_norm.forward(&x, m)?;
        let gate = self.gate.forward(&h, rng.as_deref_mut())?;
        let up = self.up.forward(&h, rng.as_deref_mut())?;
        let h = self.down.forward(&geglu(&gate, &up, pass.erf_gelu)?, rng)?;
        Ok((x + self.post_ff_norm.forward(&h, m)?)?)
    }

    /// Every trainable tensor of the layer (LoRA matrices, or its weights and norms).
    fn trainable_vars(&self) -> Vec<Var> {
        let mut out = Vec::new();
        for lin in [&self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down] {
            if let Some(l) = &lin.lora {
                out.extend([l.a.clone(), l.b.clone()]);
            }
            out.extend(lin.full.clone());
        }
        let norms = [&self.input_norm, &self.post_attn_norm, &self.pre_ff_norm, &self.post_ff_norm];
        for n in norms.into_iter().chain(self.q_norm.iter()).chain(self.k_norm.iter()) {
            out.extend(n.var.clone());
        }
        out
    }
}

/// gelu(gate) · up, recomputed in the backward pass rather than keeping gelu(gate).
fn geglu(gate: &Tensor, up: &Tensor, erf: bool) -> Result<Tensor> {
    if let Some(fused) = crate::ops::geglu_cpu(gate, up, erf)? {
        return Ok(fused);
    }
    let body = move |a: &[Tensor], _: Option<&mut Rng>| -> Result<Tensor> {
        let g = if erf { a[0].gelu_erf()? } else { a[0].gelu()? };
        Ok((g * &a[1])?)
    };
    Ok(recompute("geglu", &[gate, up], Arc::new(body), Recompute::default())?.0)
}

/// Scaled dot-product attention of q (batch, seq, heads, hd) over k and v (batch, seq, kv heads,
/// hd), rotary embeddings included, in f32; returns (batch, seq, heads · hd) in q's dtype. Only
/// the inputs and the output are kept: the (seq × seq) scores and probabilities are recomputed
/// in the backward pass, one layer at a time, through autograd or (`pass.manual_backward`) the
/// hand-written [`AttentionCore::backward`].
fn attention(q: &Tensor, k: &Tensor, v: &Tensor, pass: &LayerPass) -> Result<Tensor> {
    let core = AttentionCore(pass.clone());
    let (fwd, bwd) = (core.clone(), core);
    let body = move |a: &[Tensor], _: Option<&mut Rng>| -> Result<Tensor> { fwd.forward(a) };
    let mut extra = Recompute::default();
    if pass.manual_backward {
        extra.backward = Some(Arc::new(move |a: &[Tensor], g: &Tensor| bwd.backward(a, g)));
    }
    Ok(recompute("attention", &[q, k, v], Arc::new(body), extra)?.0)
}

#[derive(Clone)]
struct AttentionCore(LayerPass);

impl AttentionCore {
    /// (batch, heads, seq, hd) in f32.
    fn heads_first(t: &Tensor) -> Result<Tensor> {
        Ok(t.to_dtype(DType::F32)?.transpose(1, 2)?.contiguous()?)
    }

    /// q and k with rotary embeddings, v, all heads-first in f32; q stacked as (batch, kv heads,
    /// g · seq, hd): the g query heads that share a key/value head (head h uses kv head h / g, as
    /// transformers' repeat_kv) lie along the query axis, so k and v are never copied.
    fn qkv(&self, a: &[Tensor]) -> Result<(Tensor, Tensor, Tensor)> {
        let p = &self.0;
        let (b, seq, _, hd) = a[0].dims4()?;
        let nkv = a[1].dim(2)?;
        let q = candle_nn::rotary_emb::rope_slow(&Self::heads_first(&a[0])?, &p.cos, &p.sin)?;
        let k = candle_nn::rotary_emb::rope_slow(&Self::heads_first(&a[1])?, &p.cos, &p.sin)?;
        let g = a[0].dim(2)? / nkv;
        Ok((q.reshape((b, nkv, g * seq, hd))?, k, Self::heads_first(&a[2])?))
    }

    /// Masked scores (batch, kv heads, g · seq, seq), and tanh of the scaled scores when they are
    /// soft-capped (the cap's slope is 1 − tanh²).
    fn scores(&self, q: &Tensor, k: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let p = &self.0;
        let (b, nkv, gs, seq) = (q.dim(0)?, q.dim(1)?, q.dim(2)?, k.dim(2)?);
        let mut scores = (q.mm(&k.t()?)? * p.scaling)?;
        let mut tanh = None;
        if let Some(cap) = p.softcap {
            let t = (scores / cap)?.tanh()?;
            scores = (&t * cap)?;
            tanh = Some(t);
        }
        let masked = scores.reshape((b, nkv, gs / seq, seq, seq))?.broadcast_add(&p.mask.unsqueeze(1)?)?;
        Ok((masked.reshape((b, nkv, gs, seq))?, tanh))
    }

    /// (batch, kv heads, g · seq, hd) back to (batch, seq, heads · hd) in `dtype`.
    fn merge_heads(x: &Tensor, nh: usize, dtype: DType) -> Result<Tensor> {
        let (b, _, gs, hd) = x.dims4()?;
        let seq = gs * x.dim(1)? / nh;
        Ok(x.reshape((b, nh, seq, hd))?.transpose(1, 2)?.reshape((b, seq, nh * hd))?.to_dtype(dtype)?)
    }

    fn forward(&self, a: &[Tensor]) -> Result<Tensor> {
        let (q, k, v) = self.qkv(a)?;
        let (scores, _) = self.scores(&q, &k)?;
        let probs = if self.0.manual_backward {
            // The forward pass keeps no graph, so candle's fused softmax (no backward) serves.
            candle_nn::ops::softmax_last_dim(&scores.contiguous()?)?
        } else {
            candle_nn::ops::softmax(&scores, D::Minus1)?
        };
        Self::merge_heads(&probs.mm(&v)?, a[0].dim(2)?, a[0].dtype())
    }

    /// The gradients of q, k and v (as given: (batch, seq, heads, hd), before the rotary
    /// embeddings, in their dtype) from the output's gradient, with the probabilities
    /// recomputed once; FlashAttention's backward, written in whole-matrix ops.
    fn backward(&self, a: &[Tensor], grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let p = &self.0;
        let (b, seq, nh, hd) = a[0].dims4()?;
        let nkv = a[1].dim(2)?;
        let (q, k, v) = self.qkv(a)?;
        let (scores, tanh) = self.scores(&q, &k)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores.contiguous()?)?;
        drop(scores);
        // The output's gradient in the layout of probs · v.
        let d_out = Self::heads_first(&grad.reshape((b, seq, nh, hd))?)?.reshape((b, nkv, nh / nkv * seq, hd))?;
        let d_v = probs.t()?.mm(&d_out)?;
        let d_probs = d_out.mm(&v.t()?)?;
        // Softmax: dS = P ⊙ (dP − Σ_j dP ⊙ P).
        let row = (&d_probs * &probs)?.sum_keepdim(D::Minus1)?;
        let mut d_scores = (d_probs.broadcast_sub(&row)? * &probs)?;
        drop(probs);
        if let Some(t) = tanh {
            d_scores = (d_scores * t.sqr()?.affine(-1.0, 1.0)?)?;
        }
        let d_scores = (d_scores * p.scaling)?;
        let d_q = d_scores.mm(&k)?.reshape((b, nh, seq, hd))?;
        let d_k = d_scores.t()?.mm(&q)?;
        // RoPE is a rotation: its transpose is the rotation by minus the angle.
        let minus_sin = p.sin.neg()?;
        let unrope = |x: &Tensor| candle_nn::rotary_emb::rope_slow(x, &p.cos, &minus_sin);
        let back = |x: Tensor, dtype: DType| -> Result<Tensor> { Ok(x.transpose(1, 2)?.to_dtype(dtype)?) };
        Ok(vec![
            Some(back(unrope(&d_q)?, a[0].dtype())?),
            Some(back(unrope(&d_k)?, a[1].dtype())?),
            Some(back(d_v, a[2].dtype())?),
        ])
    }
}

impl Gemma {
    /// Every weight under transformers' names, LoRA merged in (W + scale·B·A): a checkpoint
    /// `Gemma2ForCausalLM` / `Gemma3ForCausalLM.from_pretrained` loads (tied embeddings, so no
    /// `lm_head`).
    pub fn merged_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        out.insert("model.embed_tokens.weight".to_string(), self.embed.dense()?.clone());
        for (name, lin) in self.linears() {
            out.insert(format!("{}.weight", name.trim_start_matches("base_model.model.")), lin.merged_weight()?);
        }
        for (name, norm) in self.norms() {
            out.insert(format!("{name}.weight"), norm.weight.clone());
        }
        Ok(out)
    }

    /// The LoRA tensors under PEFT's names (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`).
    pub fn lora_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (name, lin) in self.linears() {
            if let Some(lora) = &lin.lora {
                out.insert(format!("{name}.lora_A.weight"), lora.a.as_tensor().clone());
                out.insert(format!("{name}.lora_B.weight"), lora.b.as_tensor().clone());
            }
        }
        out
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

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Gemma {
    /// Folds every LoRA adapter into its base weight (W + scale·B·A) and drops the adapters:
    /// the same function, one matmul per layer instead of three (for sampling).
    pub fn merge_lora(&mut self) -> Result<()> {
        let dtype = self.dtype;
        for (_, lin) in self.linears_mut() {
            // Quantized weights keep their adapter as a separate f32 update: requantizing W + BA
            // would round the update away.
            if (lin.lora.is_some() || lin.full.is_some()) && !lin.weight.is_quantized() {
                // An adapted weight keeps its stored dtype (bf16 under bf16-mixed, whose compute
                // dtype is f32); a trained one (f32 masters) goes back to the model's.
                let merged = lin.merged_weight()?;
                let merged = if lin.full.is_some() { merged.to_dtype(dtype)? } else { merged };
                *lin = LoraLinear::frozen(merged);
            }
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
