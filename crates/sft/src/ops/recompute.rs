//! [`recompute`]: a function whose intermediate values the backward pass recomputes instead of
//! keeping, with the [`GradSink`] that collects the gradients of trainable tensors used inside.

use super::{cpu_storage, cuda_storage, to_candle};
use candle_core::{CpuStorage, CudaStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor, Var};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use thrive_core::Rng;

type CResult<T> = candle_core::Result<T>;

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
