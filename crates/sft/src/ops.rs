//! Two custom ops that decide what the backward pass keeps and computes (../shared/candle.md):
//!
//! - [`frozen_linear`]: `x Wᵀ` for a weight that is not trained. candle's own matmul backward
//!   always computes and stores the gradient of both operands, so a frozen weight (the tied
//!   262,144 × 640 embedding included) would cost a weight-sized buffer and a full matmul in
//!   every backward pass. This op's backward gives only the input's gradient.
//! - [`recompute`]: a differentiable function of one to three tensors whose intermediate values
//!   are not kept. The forward pass runs it on detached inputs (nothing is recorded), the backward
//!   pass runs it again on fresh variables and backpropagates through that copy. Attention, RMS
//!   norms, the loss (chunk by chunk over the vocabulary) and, with gradient checkpointing, whole
//!   decoder layers go through it. Trainable tensors used inside that are not among the inputs
//!   (a layer's LoRA matrices) send their gradients to a [`GradSink`].

use crate::matmul::Mm;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Storage, Tensor, Var};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use thrive_core::Rng;

type CResult<T> = candle_core::Result<T>;

fn to_candle(e: crate::Error) -> candle_core::Error {
    match e {
        crate::Error::Candle(c) => c,
        other => candle_core::Error::Msg(other.to_string()),
    }
}

/// `x Wᵀ` with `w` (out, in) frozen: no gradient for `w`, and none of its work in the backward.
pub fn frozen_linear(x: &Tensor, w: &Tensor) -> crate::Result<Tensor> {
    if !x.track_op() {
        // Inference (evaluation, sampling): nothing to keep anyway.
        return Ok(x.broadcast_mm(&w.t()?)?);
    }
    let w = w.detach().contiguous()?;
    Ok(x.contiguous()?.apply_op1(FrozenLinear { w })?)
}

struct FrozenLinear {
    /// (out, in), contiguous.
    w: Tensor,
}

impl FrozenLinear {
    /// `mul(x, w, bmnk, x's layout, w's layout)` is the backend's storage-level product.
    fn fwd<S: BackendStorage>(
        &self,
        x: &S,
        l: &Layout,
        pick: impl Fn(&Storage) -> Option<&S>,
        mul: impl Fn(&S, &S, (usize, usize, usize, usize), &Layout, &Layout) -> CResult<S>,
    ) -> CResult<(S, Shape)> {
        let (out_dim, in_dim) = self.w.dims2()?;
        let dims = l.shape().dims();
        if !l.is_contiguous() || dims.last() != Some(&in_dim) {
            candle_core::bail!("frozen_linear: input {:?} is not a contiguous (…, {in_dim}) tensor", l.shape());
        }
        let m = l.shape().elem_count() / in_dim;
        let (guard, wl) = self.w.storage_and_layout();
        let w =
            pick(&guard).ok_or_else(|| candle_core::Error::Msg("frozen_linear: weight on another device".into()))?;
        let lhs = Layout::contiguous_with_offset((1, m, in_dim), l.start_offset());
        // Wᵀ as a (1, in, out) view of the (out, in) storage, as `w.t()` broadcast would be.
        let rhs = Layout::new(Shape::from((1, in_dim, out_dim)), vec![0, 1, in_dim], wl.start_offset());
        let y = mul(x, w, (1, m, out_dim, in_dim), &lhs, &rhs)?;
        let mut out = dims.to_vec();
        *out.last_mut().expect("checked above") = out_dim;
        Ok((y, Shape::from(out)))
    }
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        self.fwd(
            s,
            l,
            |st| match st {
                Storage::Cpu(c) => Some(c),
                _ => None,
            },
            crate::matmul::cpu_matmul,
        )
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> CResult<(CudaStorage, Shape)> {
        self.fwd(
            s,
            l,
            |st| match st {
                Storage::Cuda(c) => Some(c),
                _ => None,
            },
            CudaStorage::matmul,
        )
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        Ok(Some(grad.broadcast_mm(&self.w)?))
    }
}

/// `x Wᵀ` for a trained f32 weight `w` (out, in) whose products run in bf16, as PyTorch's CPU
/// autocast runs them (`--dtype bf16-mixed --full`): W is rounded once per call and x and the
/// output's gradient once per product, and every product (the forward, x's gradient, W's
/// gradient) accumulates in f32. W's gradient comes back in f32, unrounded.
pub fn bf16_trained_linear(x: &Tensor, w: &Tensor) -> crate::Result<Tensor> {
    let w16 = crate::matmul::round_bf16(&w.detach())?;
    if !x.track_op() && !w.track_op() {
        return Ok(x.broadcast_mm(&w16.t()?)?);
    }
    Ok(x.contiguous()?.apply_op2(w, Bf16TrainedLinear { w16 })?)
}

struct Bf16TrainedLinear {
    /// The weight rounded to bf16, (out, in), contiguous.
    w16: Tensor,
}

impl CustomOp2 for Bf16TrainedLinear {
    fn name(&self) -> &'static str {
        "bf16-trained-linear"
    }

    fn cpu_fwd(&self, x: &CpuStorage, l: &Layout, _w: &CpuStorage, _wl: &Layout) -> CResult<(CpuStorage, Shape)> {
        FrozenLinear { w: self.w16.clone() }.cpu_fwd(x, l)
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let (out_dim, in_dim) = self.w16.dims2()?;
        let m = grad.elem_count() / out_dim.max(1);
        let g16 = crate::matmul::round_bf16(&grad.reshape((m, out_dim))?)?;
        let dx =
            if x.track_op() { Some(crate::matmul::mm_f32_out(&g16, &self.w16)?.reshape(x.shape())?) } else { None };
        let dw = if w.track_op() {
            let x16 = crate::matmul::round_bf16(&x.reshape((m, in_dim))?)?;
            Some(crate::matmul::mm_f32_out(&g16.t()?, &x16)?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// Gradients of trainable tensors used inside a recomputed function but not among its inputs,
/// summed over every recomputation of one backward pass.
#[derive(Clone, Default)]
pub struct GradSink(Arc<Mutex<HashMap<candle_core::TensorId, Tensor>>>);

impl GradSink {
    fn add(&self, var: &Var, g: &Tensor) -> CResult<()> {
        let mut map = self.0.lock().map_err(|_| candle_core::Error::Msg("gradient sink poisoned".into()))?;
        let sum = match map.remove(&var.id()) {
            Some(prev) => (prev + g)?,
            None => g.clone(),
        };
        map.insert(var.id(), sum);
        Ok(())
    }

    /// The gradient collected for `var`, if any.
    pub fn take(&self, var: &Var) -> Option<Tensor> {
        self.0.lock().ok()?.remove(&var.id())
    }
}

/// The function a [`recompute`] op runs: inputs, and the dropout stream when there is one.
pub type Body = dyn Fn(&[Tensor], Option<&mut Rng>) -> crate::Result<Tensor> + Send + Sync;

/// A hand-written backward for a recomputed function: the inputs and the output's gradient give
/// each input's gradient. It may use ops that have no backward of their own (candle's fused
/// softmax) and skips the graph that autograd would record and walk.
pub type ManualBackward = dyn Fn(&[Tensor], &Tensor) -> crate::Result<Vec<Option<Tensor>>> + Send + Sync;

/// What a recomputed function needs besides its inputs.
#[derive(Default)]
pub struct Recompute {
    /// The dropout stream: the forward pass advances it, the backward pass replays the same masks.
    pub rng: Option<Rng>,
    /// Trainable tensors used by the body that are not inputs, and where their gradients go.
    pub params: Vec<Var>,
    pub sink: Option<GradSink>,
    /// Replaces autograd through the body in the backward pass (only for bodies without
    /// dropout or `params`).
    pub backward: Option<Arc<ManualBackward>>,
}

/// Applies `body` to `inputs` (one to three tensors) without keeping its intermediate values.
/// Returns the output and the dropout stream as the forward pass left it.
pub fn recompute(
    name: &'static str,
    inputs: &[&Tensor],
    body: Arc<Body>,
    extra: Recompute,
) -> crate::Result<(Tensor, Option<Rng>)> {
    let needs_grad = inputs.iter().any(|t| t.track_op()) || !extra.params.is_empty();
    if !needs_grad {
        let args: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
        let mut rng = extra.rng;
        let out = body(&args, rng.as_mut())?;
        return Ok((out, rng));
    }
    // The op's backward only runs when its first input is part of the graph: a layer whose
    // input is a constant (the frozen embedding's output) but whose LoRA matrices train gets a
    // variable in its place.
    let first = if inputs[0].track_op() { inputs[0].clone() } else { Var::from_tensor(inputs[0])?.as_tensor().clone() };
    let op = Arc::new(RecomputeOp {
        name,
        body,
        inputs: inputs.iter().map(|t| t.detach()).collect(),
        rng: extra.rng,
        after: Mutex::new(None),
        params: extra.params,
        sink: extra.sink,
        manual: extra.backward,
    });
    let out = match inputs.len() {
        1 => first.apply_op1_arc(Arc::new(Box::new(Shared(op.clone()))))?,
        2 => first.apply_op2_arc(inputs[1], Arc::new(Box::new(Shared(op.clone()))))?,
        3 => first.apply_op3_arc(inputs[1], inputs[2], Arc::new(Box::new(Shared(op.clone()))))?,
        n => return Err(crate::Error::Invalid(format!("recompute `{name}`: {n} inputs (1 to 3 allowed)"))),
    };
    let rng = op.after.lock().ok().and_then(|mut a| a.take());
    Ok((out, rng))
}

/// Seconds spent in each recomputed function's backward pass (recomputation included) since
/// the last [`take_backward_seconds`], for the debug log of a training step.
static BACKWARD_SECONDS: Mutex<std::collections::BTreeMap<&'static str, f64>> =
    Mutex::new(std::collections::BTreeMap::new());

/// The backward seconds by recomputed function, and resets them.
pub fn take_backward_seconds() -> Vec<(&'static str, f64)> {
    BACKWARD_SECONDS.lock().map(|mut t| std::mem::take(&mut *t).into_iter().collect()).unwrap_or_default()
}

struct RecomputeOp {
    name: &'static str,
    body: Arc<Body>,
    /// The inputs, detached (they share storage with the op's arguments).
    inputs: Vec<Tensor>,
    rng: Option<Rng>,
    /// The dropout stream after the forward pass.
    after: Mutex<Option<Rng>>,
    params: Vec<Var>,
    sink: Option<GradSink>,
    manual: Option<Arc<ManualBackward>>,
}

/// An op's output as a storage of its own (a copy: candle gives no way to move a storage out of
/// a tensor), contiguous from offset 0 so that the copy is exactly the tensor.
fn own_storage(out: Tensor) -> CResult<Tensor> {
    let out = out.contiguous()?;
    Ok(if out.layout().start_offset() != 0 { out.force_contiguous()? } else { out })
}

fn cpu_storage(out: Tensor, name: &str) -> CResult<(CpuStorage, Shape)> {
    let out = own_storage(out)?;
    let (s, l) = out.storage_and_layout();
    match &*s {
        Storage::Cpu(c) => Ok((c.try_clone(l)?, out.shape().clone())),
        _ => candle_core::bail!("{name}: output not on the CPU"),
    }
}

fn cuda_storage(out: Tensor, name: &str) -> CResult<(CudaStorage, Shape)> {
    let out = own_storage(out)?;
    let (s, l) = out.storage_and_layout();
    match &*s {
        Storage::Cuda(c) => Ok((c.try_clone(l)?, out.shape().clone())),
        _ => candle_core::bail!("{name}: output not on the GPU"),
    }
}

/// Lets one op value serve as CustomOp1, 2 or 3 while the caller keeps a handle on it.
struct Shared(Arc<RecomputeOp>);

impl RecomputeOp {
    /// Runs the body on the detached inputs; nothing is recorded.
    fn forward(&self) -> CResult<Tensor> {
        let mut rng = self.rng.clone();
        let out = (self.body)(&self.inputs, rng.as_mut()).map_err(to_candle)?;
        if let Ok(mut after) = self.after.lock() {
            *after = rng;
        }
        Ok(out)
    }

    fn cpu(&self) -> CResult<(CpuStorage, Shape)> {
        cpu_storage(self.forward()?, self.name)
    }

    fn cuda(&self) -> CResult<(CudaStorage, Shape)> {
        cuda_storage(self.forward()?, self.name)
    }

    /// Runs the body again on fresh variables and backpropagates `grad` through it.
    fn backward(&self, args: &[&Tensor], grad: &Tensor) -> CResult<Vec<Option<Tensor>>> {
        let started = std::time::Instant::now();
        let out = self.backward_untimed(args, grad);
        if let Ok(mut t) = BACKWARD_SECONDS.lock() {
            *t.entry(self.name).or_default() += started.elapsed().as_secs_f64();
        }
        out
    }

    fn backward_untimed(&self, args: &[&Tensor], grad: &Tensor) -> CResult<Vec<Option<Tensor>>> {
        if let Some(manual) = &self.manual {
            let inputs: Vec<Tensor> = args.iter().map(|a| a.detach()).collect();
            return manual(&inputs, &grad.detach()).map_err(to_candle);
        }
        let vars = args.iter().map(|a| Var::from_tensor(&a.detach())).collect::<CResult<Vec<_>>>()?;
        let inputs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let mut rng = self.rng.clone();
        let out = (self.body)(&inputs, rng.as_mut()).map_err(to_candle)?;
        let store = (out * grad.detach())?.sum_all()?.backward()?;
        // Detached: a gradient computed from the recomputed graph would otherwise keep that whole
        // graph alive for as long as the gradient lives.
        if let Some(sink) = &self.sink {
            for p in &self.params {
                if let Some(g) = store.get(p) {
                    sink.add(p, &g.detach())?;
                }
            }
        }
        Ok(vars.iter().map(|v| store.get(v).map(Tensor::detach)).collect())
    }
}

impl CustomOp1 for Shared {
    fn name(&self) -> &'static str {
        self.0.name
    }
    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> CResult<(CpuStorage, Shape)> {
        self.0.cpu()
    }
    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> CResult<(CudaStorage, Shape)> {
        self.0.cuda()
    }
    fn bwd(&self, a: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        Ok(self.0.backward(&[a], grad)?.pop().flatten())
    }
}

impl CustomOp2 for Shared {
    fn name(&self) -> &'static str {
        self.0.name
    }
    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> CResult<(CpuStorage, Shape)> {
        self.0.cpu()
    }
    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout, _: &CudaStorage, _: &Layout) -> CResult<(CudaStorage, Shape)> {
        self.0.cuda()
    }
    fn bwd(&self, a: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let mut g = self.0.backward(&[a, b], grad)?.into_iter();
        Ok((g.next().flatten(), g.next().flatten()))
    }
}

impl CustomOp3 for Shared {
    fn name(&self) -> &'static str {
        self.0.name
    }
    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        self.0.cpu()
    }
    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> CResult<(CudaStorage, Shape)> {
        self.0.cuda()
    }
    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        c: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let mut g = self.0.backward(&[a, b, c], grad)?.into_iter();
        Ok((g.next().flatten(), g.next().flatten(), g.next().flatten()))
    }
}

/// gelu(gate) · up for f32 CPU tensors of one shape, as one op: a single pass forward, and a
/// backward that writes both gradients in a single pass from the inputs it keeps. candle's
/// autograd through `gelu` makes about ten passes (a cube, a tanh, powers and sums, each a new
/// tensor) and took a fifth of a LoRA step's backward on Gemma 3 270M. `erf` picks the exact
/// GELU, otherwise the tanh approximation (Gemma's `gelu_pytorch_tanh`); the forward values
/// are candle's `gelu_erf` times `up` bit for bit, and its tanh `gelu` within a few ulp (eight
/// lanes at a time through [`tanh8`]). `None` where it does not apply.
pub fn geglu_cpu(gate: &Tensor, up: &Tensor, erf: bool) -> crate::Result<Option<Tensor>> {
    let f32_cpu = |t: &Tensor| t.device().is_cpu() && t.dtype() == candle_core::DType::F32;
    if !f32_cpu(gate) || !f32_cpu(up) || gate.shape() != up.shape() {
        return Ok(None);
    }
    Ok(Some(gate.contiguous()?.apply_op2(&up.contiguous()?, Geglu { erf })?))
}

struct Geglu {
    erf: bool,
}

/// Elements per parallel task of the GeGLU passes.
const GEGLU_CHUNK: usize = 1 << 14;

impl Geglu {
    /// gelu(x) and its derivative.
    fn gelu(&self, x: f32) -> (f32, f32) {
        if self.erf {
            // 0.5 x (1 + erf(x / √2)); derivative 0.5 (1 + erf(x / √2)) + x φ(x).
            let e = candle_core::cpu::erf::erf_f32(x * std::f32::consts::FRAC_1_SQRT_2);
            let phi = (-0.5 * x * x).exp() * (0.5 * std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2);
            ((e + 1.) * 0.5 * x, 0.5 * (1.0 + e) + x * phi)
        } else {
            // 0.5 x (1 + tanh(u)), u = c x (1 + 0.044715 x²): candle's expression for the value.
            const C: f32 = 0.797_884_6; // √(2/π)
            let t = (C * x * (1.0 + 0.044715 * x * x)).tanh();
            let du = C * (1.0 + 3.0 * 0.044715 * x * x);
            (0.5 * x * (1.0 + t), 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)
        }
    }
}

impl CustomOp2 for Geglu {
    fn name(&self) -> &'static str {
        "geglu"
    }

    fn cpu_fwd(&self, g: &CpuStorage, gl: &Layout, u: &CpuStorage, ul: &Layout) -> CResult<(CpuStorage, Shape)> {
        use rayon::prelude::*;
        let (g, u) = (f32_slice(g, gl, "geglu")?, f32_slice(u, ul, "geglu")?);
        let mut out = vec![0f32; g.len()];
        let candle_gelu = |x: f32| {
            if self.erf {
                (candle_core::cpu::erf::erf_f32(x * std::f32::consts::FRAC_1_SQRT_2) + 1.) * 0.5 * x
            } else {
                0.5 * x * (1.0 + f32::tanh(0.797_884_6 * x * (1.0 + 0.044715 * x * x)))
            }
        };
        out.par_chunks_mut(GEGLU_CHUNK).zip(g.par_chunks(GEGLU_CHUNK)).zip(u.par_chunks(GEGLU_CHUNK)).for_each(
            |((o, g), u)| {
                let mut i = 0;
                if !self.erf {
                    // Eight lanes at a time (libm's scalar tanh was a tenth of a LoRA step).
                    while i + 8 <= g.len() {
                        let (value, _) = gelu_tanh8(load8(&g[i..]));
                        o[i..i + 8].copy_from_slice(&(value * load8(&u[i..])).to_array());
                        i += 8;
                    }
                }
                for j in i..g.len() {
                    o[j] = candle_gelu(g[j]) * u[j];
                }
            },
        );
        Ok((CpuStorage::F32(out), gl.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        use rayon::prelude::*;
        let grad = grad.to_dtype(candle_core::DType::F32)?.contiguous()?;
        let (gs, gl) = gate.storage_and_layout();
        let (us, ul) = up.storage_and_layout();
        let (rs, rl) = grad.storage_and_layout();
        let (Storage::Cpu(gs), Storage::Cpu(us), Storage::Cpu(rs)) = (&*gs, &*us, &*rs) else {
            candle_core::bail!("geglu: tensors not on the CPU");
        };
        let (g, u, r) = (f32_slice(gs, gl, "geglu")?, f32_slice(us, ul, "geglu")?, f32_slice(rs, rl, "geglu")?);
        let (mut dg, mut du) = (vec![0f32; g.len()], vec![0f32; g.len()]);
        dg.par_chunks_mut(GEGLU_CHUNK)
            .zip(du.par_chunks_mut(GEGLU_CHUNK))
            .zip(g.par_chunks(GEGLU_CHUNK).zip(u.par_chunks(GEGLU_CHUNK)).zip(r.par_chunks(GEGLU_CHUNK)))
            .for_each(|((dg, du), ((g, u), r))| {
                let mut i = 0;
                if !self.erf {
                    while i + 8 <= g.len() {
                        let (value, slope) = gelu_tanh8(load8(&g[i..]));
                        let r8 = load8(&r[i..]);
                        dg[i..i + 8].copy_from_slice(&(r8 * load8(&u[i..]) * slope).to_array());
                        du[i..i + 8].copy_from_slice(&(r8 * value).to_array());
                        i += 8;
                    }
                }
                for j in i..g.len() {
                    let (value, slope) = self.gelu(g[j]);
                    dg[j] = r[j] * u[j] * slope;
                    du[j] = r[j] * value;
                }
            });
        let shape = gate.shape().clone();
        Ok((Some(Tensor::from_vec(dg, shape.clone(), gate.device())?), Some(Tensor::from_vec(du, shape, up.device())?)))
    }
}

/// The first eight values of `s`.
fn load8(s: &[f32]) -> wide::f32x8 {
    wide::f32x8::from(<[f32; 8]>::try_from(&s[..8]).expect("eight values"))
}

/// [`Geglu::gelu`]'s tanh form (the value and its derivative), eight lanes at a time through
/// [`tanh8`]: within a few ulp of candle's scalar `gelu`.
fn gelu_tanh8(x: wide::f32x8) -> (wide::f32x8, wide::f32x8) {
    const C: f32 = 0.797_884_6; // √(2/π)
    let x2 = x * x;
    let t = tanh8(x * C * (x2 * 0.044715 + 1.0));
    let du = (x2 * (3.0 * 0.044715) + 1.0) * C;
    let half_one_plus_t = (t + 1.0) * 0.5;
    (x * half_one_plus_t, half_one_plus_t + x * 0.5 * (1.0 - t * t) * du)
}

/// In place on f32 logits (rows, vocabulary) on the CPU: each row becomes softmax − one-hot of
/// its target, times the soft-cap's slope 1 − tanh²(l / cap) where there is a cap; the rows'
/// negative log-likelihoods are kept for [`SoftmaxMinusOneHot::summed_nll`]. Three passes over a
/// row that stays in cache (maximum; exponentials and their sum; scaling), one exp per logit.
pub struct SoftmaxMinusOneHot {
    targets: Arc<Vec<u32>>,
    cap: Option<f32>,
    nll: Mutex<Vec<f64>>,
}

impl SoftmaxMinusOneHot {
    pub fn new(targets: Arc<Vec<u32>>, cap: Option<f64>) -> Self {
        Self { targets, cap: cap.map(|c| c as f32), nll: Mutex::new(Vec::new()) }
    }

    /// Σ over rows of −log softmax(capped)[target], after the op has run.
    pub fn summed_nll(&self) -> crate::Result<f64> {
        let nll = self.nll.lock().map_err(|_| crate::Error::Invalid("loss poisoned".into()))?;
        Ok(nll.iter().sum())
    }

    /// One row: returns its negative log-likelihood. Three passes over the row, eight lanes at a
    /// time: cap and maximum; exp, its sum (f32 within a block, f64 across blocks) and the
    /// cap's slope; the scale by 1 / sum. A NaN logit makes the row's loss and gradient NaN, as
    /// scalar exp would (the vector tanh and exp would turn it into a number).
    fn row(&self, row: &mut [f32], target: usize) -> f64 {
        use wide::f32x8;
        let (head, tail) = row.split_at_mut(row.len() / 8 * 8);
        let mut maxv = f32x8::splat(f32::NEG_INFINITY);
        // NaNs are looked for in the logits as they come, before the cap could hide them.
        let mut nan = f32x8::ZERO;
        for c in head.chunks_exact_mut(8) {
            let mut v = load8(c);
            nan |= v.is_nan();
            if let Some(cap) = self.cap {
                v = tanh8(v / cap) * cap;
                c.copy_from_slice(&v.to_array());
            }
            maxv = maxv.max(v);
        }
        if nan.any() || tail.iter().any(|l| l.is_nan()) {
            row.fill(f32::NAN);
            return f64::NAN;
        }
        if let Some(cap) = self.cap {
            tail.iter_mut().for_each(|l| *l = cap * (*l / cap).tanh());
        }
        let max = maxv.to_array().into_iter().chain(tail.iter().copied()).fold(f32::NEG_INFINITY, f32::max);
        let picked = row[target];
        let (head, tail) = row.split_at_mut(row.len() / 8 * 8);
        let mut sum = 0f64;
        for block in head.chunks_mut(512) {
            let mut acc = f32x8::ZERO;
            for c in block.chunks_exact_mut(8) {
                let l = load8(c);
                let e = (l - max).exp();
                acc += e;
                let out = match self.cap {
                    Some(cap) => e * (f32x8::ONE - (l / cap) * (l / cap)),
                    None => e,
                };
                c.copy_from_slice(&out.to_array());
            }
            sum += acc.to_array().iter().map(|&x| x as f64).sum::<f64>();
        }
        // exp(c − max), times the slope 1 − (c / cap)², summed without the slope.
        for l in tail.iter_mut() {
            let e = (*l - max).exp();
            sum += e as f64;
            *l = match self.cap {
                Some(c) => e * (1.0 - (*l / c) * (*l / c)),
                None => e,
            };
        }
        let inv = (1.0 / sum) as f32;
        row.iter_mut().for_each(|l| *l *= inv);
        row[target] -= match self.cap {
            Some(c) => 1.0 - (picked / c) * (picked / c),
            None => 1.0,
        };
        max as f64 + sum.ln() - picked as f64
    }
}

/// tanh, eight lanes at a time: Cephes' odd polynomial for |x| < 0.625 and 1 − 2 / (e^{2|x|} + 1)
/// above (|x| clamped at 10, where tanh rounds to 1 in f32), within a few ulp of libm's tanhf
/// (tested). libm's scalar tanh and exp were a sixth of a LoRA step of Gemma 3 270M (perf).
fn tanh8(x: wide::f32x8) -> wide::f32x8 {
    use wide::{f32x8, CmpLt};
    let a = x.abs();
    let z = x * x;
    let poly = ((((f32x8::splat(-5.704_988_7e-3) * z + 2.063_909e-2) * z - 5.373_98e-2) * z + 1.333_144_2e-1) * z
        - 3.333_328e-1)
        * z
        * x
        + x;
    let e = (a.min(f32x8::splat(10.0)) * 2.0).exp();
    let big = (f32x8::ONE - f32x8::splat(2.0) / (e + 1.0)).copysign(x);
    a.cmp_lt(f32x8::splat(0.625)).blend(poly, big)
}

impl candle_core::InplaceOp1 for SoftmaxMinusOneHot {
    fn name(&self) -> &'static str {
        "softmax-minus-one-hot"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> CResult<()> {
        use rayon::prelude::*;
        let (rows, vocab) = l.shape().dims2()?;
        if rows != self.targets.len() || !l.is_contiguous() {
            candle_core::bail!("softmax-minus-one-hot: {rows} rows for {} targets", self.targets.len());
        }
        let CpuStorage::F32(v) = s else { candle_core::bail!("softmax-minus-one-hot: wants f32 logits") };
        let data = &mut v[l.start_offset()..l.start_offset() + rows * vocab];
        let nll: Vec<f64> = data
            .par_chunks_mut(vocab)
            .zip(self.targets.par_iter())
            .map(|(row, &t)| self.row(row, t as usize))
            .collect();
        *self.nll.lock().map_err(|_| candle_core::Error::Msg("loss poisoned".into()))? = nll;
        Ok(())
    }
}

/// Per-row negative log-likelihood of `targets` under softmax of `cap · tanh(logits / cap)` (or
/// of the logits themselves without a cap), for f32 logits (rows, vocabulary). On the CPU it is
/// one fused op: a pass for each row's maximum and log-sum-exp (accumulated in f64), and a
/// backward that writes softmax − one-hot, times the cap's derivative, directly; candle's
/// composite log-softmax makes about ten passes over the logits and keeps several copies.
/// Elsewhere it is composed of candle's ops.
pub fn cross_entropy_rows(logits: &Tensor, targets: &[u32], cap: Option<f64>) -> crate::Result<Tensor> {
    let (rows, _) = logits.dims2()?;
    if targets.len() != rows {
        return Err(crate::Error::Invalid(format!("cross-entropy: {} targets for {rows} rows", targets.len())));
    }
    if !logits.device().is_cpu() || logits.dtype() != candle_core::DType::F32 {
        let capped = match cap {
            Some(c) => ((logits / c)?.tanh()? * c)?,
            None => logits.clone(),
        };
        let logp = candle_nn::ops::log_softmax(&capped, candle_core::D::Minus1)?;
        let t = Tensor::from_vec(targets.to_vec(), (rows, 1), logits.device())?;
        return Ok(logp.gather(&t, 1)?.neg()?.squeeze(1)?);
    }
    let op = CrossEntropy { targets: Arc::new(targets.to_vec()), cap: cap.map(|c| c as f32) };
    Ok(logits.contiguous()?.apply_op1(op)?)
}

struct CrossEntropy {
    targets: Arc<Vec<u32>>,
    cap: Option<f32>,
}

impl CrossEntropy {
    fn capped(&self, l: f32) -> f32 {
        match self.cap {
            Some(c) => c * (l / c).tanh(),
            None => l,
        }
    }

    /// log Σ exp over a row of capped logits.
    fn log_sum_exp(&self, row: &[f32]) -> f64 {
        let max = row.iter().map(|&l| self.capped(l)).fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = row.iter().map(|&l| ((self.capped(l) - max) as f64).exp()).sum();
        max as f64 + sum.ln()
    }
}

/// A contiguous f32 CPU storage as a slice; `op` names the op in the error.
fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> CResult<&'a [f32]> {
    match s {
        CpuStorage::F32(v) if l.is_contiguous() => Ok(&v[l.start_offset()..l.start_offset() + l.shape().elem_count()]),
        _ => candle_core::bail!("{op}: wants contiguous f32 input"),
    }
}

impl CustomOp1 for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross-entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        use rayon::prelude::*;
        let (rows, vocab) = l.shape().dims2()?;
        let data = f32_slice(s, l, "cross-entropy")?;
        let nll: Vec<f32> = data
            .par_chunks(vocab)
            .zip(self.targets.par_iter())
            .map(|(row, &t)| (self.log_sum_exp(row) - self.capped(row[t as usize]) as f64) as f32)
            .collect();
        Ok((CpuStorage::F32(nll), Shape::from(rows)))
    }

    fn bwd(&self, logits: &Tensor, nll: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        use rayon::prelude::*;
        let (rows, vocab) = logits.dims2()?;
        let nll: Vec<f32> = nll.to_vec1()?;
        let grad: Vec<f32> = grad.to_dtype(candle_core::DType::F32)?.to_vec1()?;
        let logits = logits.contiguous()?;
        let (storage, layout) = logits.storage_and_layout();
        let data = match &*storage {
            Storage::Cpu(s) => f32_slice(s, layout, "cross-entropy")?,
            _ => candle_core::bail!("cross-entropy: logits not on the CPU"),
        };
        let mut out = vec![0f32; rows * vocab];
        out.par_chunks_mut(vocab).zip(data.par_chunks(vocab)).enumerate().for_each(|(r, (o, row))| {
            let t = self.targets[r] as usize;
            // log-sum-exp from the forward's result: nll = lse − capped(l_t).
            let lse = nll[r] as f64 + self.capped(row[t]) as f64;
            for (j, (o, &l)) in o.iter_mut().zip(row).enumerate() {
                let p = ((self.capped(l) as f64) - lse).exp() as f32;
                let d = if j == t { p - 1.0 } else { p };
                let slope = match self.cap {
                    Some(c) => 1.0 - (l / c).tanh().powi(2),
                    None => 1.0,
                };
                *o = grad[r] * d * slope;
            }
        });
        drop(storage);
        Ok(Some(Tensor::from_vec(out, (rows, vocab), logits.device())?))
    }
}

/// `x Wᵀ + scale · (x Aᵀ) Bᵀ` with W frozen and A, B trained, as one op that keeps only its
/// input and output (candle's ops would keep three output-sized tensors) and whose backward
/// computes the input's gradient and A's and B's, never W's. A and B (f32 masters) are used in
/// x's dtype; their gradients come back in f32.
pub fn lora_linear(x: &Tensor, w: &Tensor, a: &Var, b: &Var, scale: f64) -> crate::Result<Tensor> {
    // A and B are variables, so the op is always part of the graph.
    let (a_t, b_t) = (a.as_tensor(), b.as_tensor());
    let x = x.contiguous()?;
    let inputs = [x.detach(), a_t.detach(), b_t.detach()];
    let op = LoraOp { w: w.detach().contiguous()?, scale, inputs };
    Ok(x.apply_op3(a_t, b_t, op)?)
}

struct LoraOp {
    w: Tensor,
    scale: f64,
    /// x, A and B detached (sharing the arguments' storage), for the forward pass.
    inputs: [Tensor; 3],
}

/// `x Wᵀ + scale · (x Aᵀ) Bᵀ`, A and B in x's dtype.
fn lora_forward(x: &Tensor, w: &Tensor, a: &Tensor, b: &Tensor, scale: f64) -> CResult<Tensor> {
    let dt = x.dtype();
    let y = x.broadcast_mm(&w.t()?)?;
    let update = x.broadcast_mm(&a.to_dtype(dt)?.t()?)?.broadcast_mm(&(b.to_dtype(dt)? * scale)?.t()?)?;
    y + update
}

impl CustomOp3 for LoraOp {
    fn name(&self) -> &'static str {
        "lora-linear"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let [x, a, b] = &self.inputs;
        cpu_storage(lora_forward(x, &self.w, a, b, self.scale)?, "lora")
    }

    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> CResult<(CudaStorage, Shape)> {
        let [x, a, b] = &self.inputs;
        cuda_storage(lora_forward(x, &self.w, a, b, self.scale)?, "lora")
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // The arguments are part of the forward graph: gradients computed from them undetached
        // would keep that graph alive as long as they live.
        let (x, a, b, g) = (&x.detach(), &a.detach(), &b.detach(), &g.detach());
        let dt = x.dtype();
        let (a16, b16) = (a.to_dtype(dt)?, b.to_dtype(dt)?);
        let in_dim = x.dim(candle_core::D::Minus1)?;
        let out_dim = g.dim(candle_core::D::Minus1)?;
        let x2 = x.reshape(((), in_dim))?;
        let g2 = g.to_dtype(dt)?.reshape(((), out_dim))?;
        let xa = x2.mm(&a16.t()?)?; // (rows, r)
        let gb = g2.mm(&b16)?; // (rows, r)
        let dx = (g2.mm(&self.w)? + (gb.mm(&a16)? * self.scale)?)?.reshape(x.shape())?;
        let da = (gb.t()?.mm(&x2)? * self.scale)?.to_dtype(a.dtype())?;
        let db = (g2.t()?.mm(&xa)? * self.scale)?.to_dtype(b.dtype())?;
        Ok((Some(dx), Some(da), Some(db)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, D};

    /// The fused loss's in-place op against candle's composite ops: softmax − one-hot of the
    /// capped logits times the cap's slope, and the summed negative log-likelihood, with rows
    /// longer than a vector block (and a tail); a NaN logit makes its row NaN, not a number.
    #[test]
    fn softmax_minus_one_hot_equals_the_composite_and_keeps_nans() {
        let (rows, vocab) = (3, 1029);
        let v: Vec<f32> = (0..rows * vocab).map(|i| ((i * 53 % 101) as f32 - 50.0) * 0.9).collect();
        let targets = Arc::new(vec![0u32, 1028, 517]);
        for cap in [None, Some(30.0)] {
            let logits = Tensor::from_vec(v.clone(), (rows, vocab), &Device::Cpu).unwrap();
            let op = SoftmaxMinusOneHot::new(targets.clone(), cap);
            logits.inplace_op1(&op).unwrap();
            let capped = match cap {
                Some(c) => {
                    ((Tensor::from_vec(v.clone(), (rows, vocab), &Device::Cpu).unwrap() / c).unwrap().tanh().unwrap()
                        * c)
                        .unwrap()
                }
                None => Tensor::from_vec(v.clone(), (rows, vocab), &Device::Cpu).unwrap(),
            };
            let p = candle_nn::ops::softmax_last_dim(&capped).unwrap();
            let logp = candle_nn::ops::log_softmax(&capped, D::Minus1).unwrap().to_vec2::<f32>().unwrap();
            let (p, c) = (p.to_vec2::<f32>().unwrap(), capped.to_vec2::<f32>().unwrap());
            let got = logits.to_vec2::<f32>().unwrap();
            let mut nll = 0f64;
            for r in 0..rows {
                let t = targets[r] as usize;
                nll -= logp[r][t] as f64;
                for j in 0..vocab {
                    let slope = cap.map_or(1.0, |k| 1.0 - (c[r][j] / k as f32).powi(2));
                    let want = (p[r][j] - if j == t { 1.0 } else { 0.0 }) * slope;
                    assert!((got[r][j] - want).abs() <= 1e-6 + 1e-5 * want.abs(), "cap {cap:?} [{r}][{j}]");
                }
            }
            let summed = op.summed_nll().unwrap();
            assert!((summed - nll).abs() <= 1e-4 * nll.abs(), "cap {cap:?}: nll {summed} vs {nll}");
        }
        let mut with_nan = v.clone();
        with_nan[vocab + 5] = f32::NAN;
        let logits = Tensor::from_vec(with_nan, (rows, vocab), &Device::Cpu).unwrap();
        let op = SoftmaxMinusOneHot::new(targets.clone(), Some(30.0));
        logits.inplace_op1(&op).unwrap();
        assert!(op.summed_nll().unwrap().is_nan());
        let got = logits.to_vec2::<f32>().unwrap();
        assert!(got[1].iter().all(|x| x.is_nan()) && got[0].iter().all(|x| x.is_finite()));
    }

    /// The vector tanh against libm's, from tiny arguments through both branches to saturation.
    #[test]
    fn vector_tanh_is_within_a_few_ulp_of_libm() {
        let mut xs: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.0125).collect();
        xs.extend([1e-30, -1e-8, 3e-4, 0.6249, 0.625, 0.6251, 8.99, 9.0, 40.0, 1e4, f32::MAX, -f32::MAX]);
        xs.resize(xs.len().div_ceil(8) * 8, 0.5);
        let mut worst = 0f32;
        for c in xs.chunks_exact(8) {
            let got = tanh8(wide::f32x8::from(<[f32; 8]>::try_from(c).unwrap())).to_array();
            for (&x, g) in c.iter().zip(got) {
                let want = x.tanh();
                let ulps = (g - want).abs() / (want.abs().max(f32::MIN_POSITIVE) * f32::EPSILON);
                worst = worst.max(ulps);
                assert!(ulps <= 4.0, "tanh({x}): {g} vs libm {want} ({ulps} ulp)");
            }
        }
        assert!(worst > 0.0, "no difference at all from libm: the test did not reach the vector path");
    }

    /// The fused CPU cross-entropy against candle's composite ops, values and gradients, with
    /// and without the soft-cap, on rows whose targets include the first and last entries.
    #[test]
    fn fused_cross_entropy_equals_log_softmax_with_and_without_a_cap() {
        let (rows, vocab) = (5, 11);
        let v: Vec<f32> = (0..rows * vocab).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.7).collect();
        let targets: Vec<u32> = vec![0, 10, 3, 8, 9];
        let weights = Tensor::new(&[1.0f32, 0.5, 2.0, -1.0, 0.25], &Device::Cpu).unwrap();
        for cap in [None, Some(4.0)] {
            let run = |fused: bool| {
                let x = Var::from_vec(v.clone(), (rows, vocab), &Device::Cpu).unwrap();
                let nll = if fused {
                    cross_entropy_rows(x.as_tensor(), &targets, cap).unwrap()
                } else {
                    let capped = match cap {
                        Some(c) => ((x.as_tensor() / c).unwrap().tanh().unwrap() * c).unwrap(),
                        None => x.as_tensor().clone(),
                    };
                    let logp = candle_nn::ops::log_softmax(&capped, D::Minus1).unwrap();
                    let t = Tensor::new(targets.as_slice(), &Device::Cpu).unwrap().unsqueeze(1).unwrap();
                    logp.gather(&t, 1).unwrap().neg().unwrap().squeeze(1).unwrap()
                };
                let grads = (&nll * &weights).unwrap().sum_all().unwrap().backward().unwrap();
                let g = grads.get(x.as_tensor()).unwrap().to_dtype(DType::F32).unwrap();
                (nll.to_vec1::<f32>().unwrap(), g.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            };
            let ((nll, grad), (want_nll, want_grad)) = (run(true), run(false));
            for (a, b) in nll.iter().zip(&want_nll).chain(grad.iter().zip(&want_grad)) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "cap {cap:?}: {a} vs {b}");
            }
        }
    }

    /// The fused GeGLU against candle's `gelu`/`gelu_erf` times `up` through autograd: the same
    /// values (bit for bit for erf, within a few ulp for the vector tanh form), and gradients
    /// within f32 rounding, across a chunk boundary and a tail shorter than eight.
    #[test]
    fn fused_geglu_equals_candles_composite() {
        let n = 3 * 7001;
        let vals = |k: usize| -> Vec<f32> { (0..n).map(|i| (((i * k) % 997) as f32 - 498.0) / 83.0).collect() };
        for erf in [false, true] {
            let run = |fused: bool| {
                let g = Var::from_vec(vals(31), (3, 7001), &Device::Cpu).unwrap();
                let u = Var::from_vec(vals(17), (3, 7001), &Device::Cpu).unwrap();
                let y = if fused {
                    geglu_cpu(g.as_tensor(), u.as_tensor(), erf).unwrap().expect("f32 on the CPU")
                } else {
                    let a = if erf { g.as_tensor().gelu_erf().unwrap() } else { g.as_tensor().gelu().unwrap() };
                    (a * u.as_tensor()).unwrap()
                };
                let w = Tensor::from_vec(vals(7), (3, 7001), &Device::Cpu).unwrap();
                let grads = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
                let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                (flat(&y), flat(grads.get(g.as_tensor()).unwrap()), flat(grads.get(u.as_tensor()).unwrap()))
            };
            let ((y, dg, du), (want_y, want_dg, want_du)) = (run(true), run(false));
            if erf {
                assert_eq!(y, want_y, "erf {erf}: forward values");
            }
            // The tanh form runs eight lanes through our vector tanh: a few ulp from candle's.
            for (a, b) in y.iter().zip(&want_y) {
                assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "erf {erf}: value {a} vs {b}");
            }
            for (a, b) in dg.iter().zip(&want_dg).chain(du.iter().zip(&want_du)) {
                assert!((a - b).abs() <= 2e-5 * (1.0 + b.abs()), "erf {erf}: gradient {a} vs {b}");
            }
        }
        let bf16 = Tensor::zeros((2, 3), DType::BF16, &Device::Cpu).unwrap();
        assert!(geglu_cpu(&bf16, &bf16, false).unwrap().is_none());
    }
}
