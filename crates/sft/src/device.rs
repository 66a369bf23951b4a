//! Where models run: one choice for training, sampling and whole runs.

use crate::{Error, Result};
use candle_core::{DType, Device};

/// The precision a model runs in: the dtype its frozen weights are stored in and the dtype its
/// activations are computed in. Trainable tensors, optimiser moments and the loss are f32 in
/// every precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Precision {
    pub weights: DType,
    pub compute: DType,
}

impl Precision {
    /// bf16 frozen weights with f32 activations, as PyTorch's CPU autocast and Lightning's
    /// `bf16-mixed`: every product of a frozen weight reads bf16 operands (the activations
    /// rounded once per product) and accumulates in f32 on AMX tiles; everything else, the
    /// LoRA products and the loss included, is f32. CPU with the `mkl` feature only.
    pub const BF16_MIXED: Precision = Precision { weights: DType::BF16, compute: DType::F32 };

    /// The `--dtype` value that names it.
    pub fn name(&self) -> &'static str {
        match (self.weights, self.compute) {
            (DType::F32, DType::F32) => "f32",
            (DType::BF16, DType::BF16) => "bf16",
            (DType::BF16, DType::F32) => "bf16-mixed",
            _ => "other",
        }
    }
}

impl From<DType> for Precision {
    fn from(dtype: DType) -> Self {
        Precision { weights: dtype, compute: dtype }
    }
}

/// The device named by `choice` (`auto`: CUDA when this build has it and a GPU answers, else the
/// CPU; `cpu`; `cuda`) and the precision there: `dtype` (`f32`, `bf16` or `bf16-mixed`) when
/// given, else bf16 on CUDA (the paper's precision) and f32 on the CPU, where candle's bf16
/// elementwise ops are slow. Trainable tensors, optimiser moments and the loss are f32 either
/// way.
pub fn device_for(choice: &str, dtype: Option<&str>) -> Result<(Device, Precision)> {
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
    let precision = match dtype {
        None | Some("auto") if device.is_cuda() => DType::BF16.into(),
        None | Some("auto") => DType::F32.into(),
        Some("f32") => DType::F32.into(),
        Some("bf16") => DType::BF16.into(),
        Some("bf16-mixed") if device.is_cuda() => {
            return Err(Error::Invalid(
                "dtype bf16-mixed is for the CPU; on CUDA use bf16 (the default there) or f32".into(),
            ))
        }
        Some("bf16-mixed") if !crate::matmul::mixed_products() => {
            return Err(Error::Invalid(
                "dtype bf16-mixed needs the mkl build (cargo build --release -p thrive-cli --features mkl, after \
                 scripts/setup-mkl.sh); use f32"
                    .into(),
            ))
        }
        Some("bf16-mixed") => Precision::BF16_MIXED,
        Some(other) => return Err(Error::Invalid(format!("dtype `{other}`: expected auto, f32, bf16 or bf16-mixed"))),
    };
    Ok((device, precision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_names_and_errors() {
        let (_, p) = device_for("cpu", None).unwrap();
        assert_eq!(p.name(), "f32");
        assert_eq!(device_for("cpu", Some("bf16")).unwrap().1.name(), "bf16");
        let err = device_for("cpu", Some("f16")).unwrap_err().to_string();
        assert!(err.contains("f16") && err.contains("bf16-mixed"), "{err}");
        match device_for("cpu", Some("bf16-mixed")) {
            Ok((_, p)) => {
                assert!(crate::matmul::mixed_products());
                assert_eq!((p, p.name()), (Precision::BF16_MIXED, "bf16-mixed"));
            }
            // Without the mkl feature: an error that says what to build or use instead.
            Err(e) => {
                assert!(!crate::matmul::mixed_products());
                let e = e.to_string();
                assert!(e.contains("mkl") && e.contains("use f32"), "{e}");
            }
        }
    }
}
