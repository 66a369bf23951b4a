//! Where models run: one choice for training, sampling and whole runs.

use crate::{Error, Result};
use candle_core::{DType, Device};
use std::str::FromStr;

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

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = Error;

    /// `f32`, `bf16` or `bf16-mixed` (whether this build and device can run it is
    /// [`device_for`]'s question).
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(DType::F32.into()),
            "bf16" => Ok(DType::BF16.into()),
            "bf16-mixed" => Ok(Precision::BF16_MIXED),
            other => Err(Error::Invalid(format!("dtype `{other}`: expected f32, bf16 or bf16-mixed"))),
        }
    }
}

/// A precision as a user names it (`--dtype`, run.toml's `dtype`): `auto` (bf16 on CUDA, f32 on
/// the CPU, decided by [`device_for`] once the device is known) or a fixed one. Parsed from and
/// written as `auto`, `f32`, `bf16` or `bf16-mixed`, in serde too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrecisionChoice {
    /// The device's own default.
    #[default]
    Auto,
    /// This precision wherever the model runs.
    Fixed(Precision),
}

impl std::fmt::Display for PrecisionChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrecisionChoice::Auto => f.write_str("auto"),
            PrecisionChoice::Fixed(p) => p.fmt(f),
        }
    }
}

impl FromStr for PrecisionChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(PrecisionChoice::Auto),
            other => other
                .parse()
                .map(PrecisionChoice::Fixed)
                .map_err(|_| Error::Invalid(format!("dtype `{other}`: expected auto, f32, bf16 or bf16-mixed"))),
        }
    }
}

impl serde::Serialize for PrecisionChoice {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PrecisionChoice {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What sampling's `--dtype` names: a precision for a safetensors model, or `gguf`, which is a
/// way of loading rather than a precision (a GGUF file's own quantized matrices, f32
/// activations: [`crate::Gemma::load_gguf`]). Parsed from and written as `gguf` or a
/// [`PrecisionChoice`]'s name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeWeights {
    /// A safetensors model in this precision.
    Precision(PrecisionChoice),
    /// A GGUF file's quantized weights.
    Gguf,
}

impl Default for DecodeWeights {
    fn default() -> Self {
        DecodeWeights::Precision(PrecisionChoice::Auto)
    }
}

impl std::fmt::Display for DecodeWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeWeights::Precision(p) => p.fmt(f),
            DecodeWeights::Gguf => f.write_str("gguf"),
        }
    }
}

impl FromStr for DecodeWeights {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gguf" => Ok(DecodeWeights::Gguf),
            other => other
                .parse()
                .map(DecodeWeights::Precision)
                .map_err(|_| Error::Invalid(format!("dtype `{other}`: expected auto, f32, bf16, bf16-mixed or gguf"))),
        }
    }
}

/// The device named by `choice` (`auto`: CUDA when this build has it and a GPU answers, else the
/// CPU; `cpu`; `cuda`) and the precision there: `dtype` when fixed, else bf16 on CUDA (the
/// paper's precision) and f32 on the CPU, where candle's bf16 elementwise ops are slow.
/// Trainable tensors, optimiser moments and the loss are f32 either way.
pub fn device_for(choice: &str, dtype: PrecisionChoice) -> Result<(Device, Precision)> {
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
        PrecisionChoice::Auto if device.is_cuda() => DType::BF16.into(),
        PrecisionChoice::Auto => DType::F32.into(),
        PrecisionChoice::Fixed(Precision::BF16_MIXED) if device.is_cuda() => {
            return Err(Error::Invalid(
                "dtype bf16-mixed is for the CPU; on CUDA use bf16 (the default there) or f32".into(),
            ))
        }
        PrecisionChoice::Fixed(Precision::BF16_MIXED) if !crate::matmul::mixed_products() => {
            return Err(Error::Invalid(
                "dtype bf16-mixed needs the mkl build (cargo build --release -p thrive-cli --features mkl, after \
                 scripts/setup-mkl.sh); use f32"
                    .into(),
            ))
        }
        PrecisionChoice::Fixed(p) => p,
    };
    Ok((device, precision))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `device_for` with `dtype` parsed as `--dtype` is.
    fn on_cpu(dtype: Option<&str>) -> Result<(Device, Precision)> {
        device_for("cpu", dtype.map(str::parse).transpose()?.unwrap_or_default())
    }

    #[test]
    fn dtype_names_and_errors() {
        let (_, p) = on_cpu(None).unwrap();
        assert_eq!(p.name(), "f32");
        assert_eq!(on_cpu(Some("auto")).unwrap().1.name(), "f32");
        assert_eq!(on_cpu(Some("bf16")).unwrap().1.name(), "bf16");
        let err = on_cpu(Some("f16")).unwrap_err().to_string();
        assert!(err.contains("f16") && err.contains("auto") && err.contains("bf16-mixed"), "{err}");
        match on_cpu(Some("bf16-mixed")) {
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

    /// Every name parses back to what displays it, in serde (a run.toml string) too.
    #[test]
    fn names_round_trip() {
        for name in ["auto", "f32", "bf16", "bf16-mixed"] {
            let choice: PrecisionChoice = name.parse().unwrap();
            assert_eq!(choice.to_string(), name);
            let json = serde_json::to_string(&choice).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<PrecisionChoice>(&json).unwrap(), choice);
            assert_eq!(name.parse::<DecodeWeights>().unwrap(), DecodeWeights::Precision(choice));
        }
        assert_eq!("gguf".parse::<DecodeWeights>().unwrap(), DecodeWeights::Gguf);
        assert_eq!(DecodeWeights::Gguf.to_string(), "gguf");
        let err = serde_json::from_str::<PrecisionChoice>("\"gguf\"").unwrap_err().to_string();
        assert!(err.contains("expected auto, f32, bf16 or bf16-mixed"), "{err}");
        let err = "q4".parse::<DecodeWeights>().unwrap_err().to_string();
        assert!(err.contains("bf16-mixed or gguf"), "{err}");
        assert!("auto".parse::<Precision>().is_err());
    }
}
