//! Where models run: one choice for training, sampling and whole runs.

use crate::{Error, Result};
use candle_core::{DType, Device};

/// The device named by `choice` (`auto`: CUDA when this build has it and a GPU answers, else the
/// CPU; `cpu`; `cuda`) and the dtype of the frozen weights and activations there: `dtype`
/// (`f32` or `bf16`) when given, else bf16 on CUDA (the paper's precision) and f32 on the CPU,
/// where bf16 matmuls are slow. Trainable tensors, optimiser moments and the loss are f32 either
/// way.
pub fn device_for(choice: &str, dtype: Option<&str>) -> Result<(Device, DType)> {
    let device = match choice {
        "cpu" => Device::Cpu,
        "auto" if !candle_core::utils::cuda_is_available() => {
            tracing::debug!("device auto: the CPU (this binary was built without CUDA)");
            Device::Cpu
        }
        "auto" => match Device::new_cuda(0) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("device auto: CUDA is built in but no GPU answered ({e}); using the CPU");
                Device::Cpu
            }
        },
        "cuda" if candle_core::utils::cuda_is_available() => {
            Device::new_cuda(0).map_err(|e| Error::Invalid(format!("device cuda: no usable GPU ({e})")))?
        }
        "cuda" => {
            return Err(Error::Invalid(
                "device cuda: this binary was built without CUDA (see scripts/build-cuda.sh)".into(),
            ))
        }
        other => return Err(Error::Invalid(format!("device `{other}`: expected auto, cpu or cuda"))),
    };
    let dtype = match dtype {
        None | Some("auto") if device.is_cuda() => DType::BF16,
        None | Some("auto") => DType::F32,
        Some("f32") => DType::F32,
        Some("bf16") => DType::BF16,
        Some(other) => return Err(Error::Invalid(format!("dtype `{other}`: expected auto, f32 or bf16"))),
    };
    Ok((device, dtype))
}
