//! Where models run: one choice for training, sampling and whole runs.

use crate::{Error, Result};
use candle_core::{DType, Device};

/// The device named by `choice` (`auto`: CUDA when this build has it and a GPU is present, else
/// the CPU; `cpu`; `cuda`) and the dtype used there: bf16 on CUDA (the paper's precision), f32
/// on the CPU, where bf16 matmuls are slow.
pub fn device_for(choice: &str) -> Result<(Device, DType)> {
    let device = match choice {
        "cpu" => Device::Cpu,
        "auto" => Device::cuda_if_available(0).unwrap_or(Device::Cpu),
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
    let dtype = if device.is_cuda() { DType::BF16 } else { DType::F32 };
    Ok((device, dtype))
}
