//! Reads safetensors files straight into the dtype the model keeps, one tensor and one slice at a
//! time. candle's `safetensors::load` reads the whole file into memory, makes a tensor of every
//! entry in the file's dtype and only then converts: loading Gemma 3 270M's f32 file into bf16
//! peaked at 2.6 GB for 0.54 GB of weights. Here the file is mapped, each slice is converted
//! into the tensor's final buffer, and the mapped pages already read are released, so the peak
//! is the converted weights plus one slice.

use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};
use std::path::Path;

/// Bytes of the file converted between releases of its mapped pages.
const SLICE_BYTES: usize = 64 << 20;

/// Every tensor of the safetensors file `path`, converted to `dtype` (f32, bf16 or f16; stored
/// f32, bf16 or f16), on `device`. The values are those of candle's `to_dtype` after its loader:
/// rounding to nearest, ties to even.
pub fn read(path: &Path, dtype: DType, device: &Device) -> Result<Vec<(String, Tensor)>> {
    read_in_slices(path, dtype, device, SLICE_BYTES)
}

fn read_in_slices(path: &Path, dtype: DType, device: &Device, slice_bytes: usize) -> Result<Vec<(String, Tensor)>> {
    let bad = |why: String| Error::bad_model(path, why);
    let file = std::fs::File::open(path).map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
    // SAFETY: the file is only read; a file changed on disk while loading gives wrong values
    // (or an error), as with any reader, not memory unsafety in this process's own data.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
    let st = SafeTensors::deserialize(&map).map_err(|e| bad(format!("not readable safetensors: {e}")))?;
    let base = map.as_ptr() as usize;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let from = view.dtype();
        let size = match from {
            Dtype::F32 => 4,
            Dtype::BF16 | Dtype::F16 => 2,
            other => return Err(bad(format!("tensor `{name}` is {other:?}; expected F32, BF16 or F16"))),
        };
        let data = view.data();
        let mut values = Converted::with_capacity(dtype, data.len() / size)
            .ok_or_else(|| bad(format!("cannot load tensor `{name}` as {dtype:?} (f32, bf16 or f16)")))?;
        for slice in data.chunks((slice_bytes - slice_bytes % size).max(size)) {
            values.extend(slice, from);
            release(&map, slice.as_ptr() as usize - base, slice.len());
        }
        out.push((name, values.into_tensor(view.shape(), device)?));
    }
    Ok(out)
}

/// Gives back the whole pages of `map[offset..offset + len]`: they were read once and are not
/// needed again (the page cache keeps the file; a mapped page counts as this process's memory).
fn release(map: &memmap2::Mmap, offset: usize, len: usize) {
    let page = 4096;
    let start = offset.div_ceil(page) * page;
    let end = (offset + len) / page * page;
    if end > start {
        // SAFETY: a read-only private file mapping: dropped pages are read again from the file if
        // touched, and these are not touched again.
        let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
    }
}

/// A tensor's values in the wanted dtype, filled slice by slice.
enum Converted {
    F32(Vec<f32>),
    BF16(Vec<bf16>),
    F16(Vec<f16>),
}

impl Converted {
    fn with_capacity(dtype: DType, n: usize) -> Option<Self> {
        Some(match dtype {
            DType::F32 => Converted::F32(Vec::with_capacity(n)),
            DType::BF16 => Converted::BF16(Vec::with_capacity(n)),
            DType::F16 => Converted::F16(Vec::with_capacity(n)),
            _ => return None,
        })
    }

    /// Appends the little-endian values of `bytes`, stored as `from` (F32, BF16 or F16).
    fn extend(&mut self, bytes: &[u8], from: Dtype) {
        let f32s = || bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let u16s = || bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        match (self, from) {
            (Converted::F32(v), Dtype::F32) => v.extend(f32s()),
            (Converted::F32(v), Dtype::BF16) => v.extend(u16s().map(|x| bf16::from_bits(x).to_f32())),
            (Converted::F32(v), _) => v.extend(u16s().map(|x| f16::from_bits(x).to_f32())),
            (Converted::BF16(v), Dtype::F32) => v.extend(f32s().map(bf16::from_f32)),
            (Converted::BF16(v), Dtype::BF16) => v.extend(u16s().map(bf16::from_bits)),
            (Converted::BF16(v), _) => v.extend(u16s().map(|x| bf16::from_f32(f16::from_bits(x).to_f32()))),
            (Converted::F16(v), Dtype::F32) => v.extend(f32s().map(f16::from_f32)),
            (Converted::F16(v), Dtype::BF16) => v.extend(u16s().map(|x| f16::from_f32(bf16::from_bits(x).to_f32()))),
            (Converted::F16(v), _) => v.extend(u16s().map(f16::from_bits)),
        }
    }

    fn into_tensor(self, shape: &[usize], device: &Device) -> Result<Tensor> {
        Ok(match self {
            Converted::F32(v) => Tensor::from_vec(v, shape, device)?,
            Converted::BF16(v) => Tensor::from_vec(v, shape, device)?,
            Converted::F16(v) => Tensor::from_vec(v, shape, device)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stored dtype into every kept one equals candle's loader followed by `to_dtype`,
    /// bit for bit, across slice edges; other dtypes are refused with the tensor's name.
    #[test]
    fn reads_as_candles_loader_then_to_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let n = 3 * 1024 + 5;
        let v: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.377).sin() * 1e3 / (1 + i % 17) as f32).collect();
        let base = Tensor::from_vec(v, (1, n), &Device::Cpu).unwrap();
        let mut stored = std::collections::HashMap::new();
        for dt in [DType::F32, DType::BF16, DType::F16] {
            stored.insert(format!("w.{dt:?}"), base.to_dtype(dt).unwrap());
        }
        let path = dir.path().join("model.safetensors");
        candle_core::safetensors::save(&stored, &path).unwrap();
        let want = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        for keep in [DType::F32, DType::BF16, DType::F16] {
            // Slices of 1,001 bytes: whole values of 4 or 2 bytes, edges inside the tensors.
            let got = read_in_slices(&path, keep, &Device::Cpu, 1001).unwrap();
            assert_eq!(got.len(), read(&path, keep, &Device::Cpu).unwrap().len());
            assert_eq!(got.len(), 3);
            for (name, t) in got {
                let w = want[&name].to_dtype(keep).unwrap();
                assert_eq!((t.dtype(), t.dims()), (keep, w.dims()), "{name} as {keep:?}");
                let bits =
                    |x: &Tensor| x.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let (a, b) = (bits(&t), bits(&w));
                assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{name} as {keep:?}");
            }
        }
        let ints = dir.path().join("ints.safetensors");
        let i = Tensor::new(&[1i64, 2, 3], &Device::Cpu).unwrap();
        candle_core::safetensors::save(&std::collections::HashMap::from([("ids".to_string(), i)]), &ints).unwrap();
        let err = read(&ints, DType::F32, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("`ids`") && err.contains("I64"), "{err}");
        let junk = dir.path().join("junk.safetensors");
        std::fs::write(&junk, b"not a safetensors file").unwrap();
        let err = read(&junk, DType::F32, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("junk.safetensors") && err.contains("not readable"), "{err}");
    }
}
