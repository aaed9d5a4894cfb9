//! Requantizing a GGUF file while importing it (`create --quantize`), with
//! candle's GGUF reader and writer. mistral.rs has fast CPU kernels only for
//! Q4_0, Q8_0 and the K-quants, so a Q4_1 file (like the shipped SmolLM2)
//! runs faster once turned into Q8_0.

use super::gguf::dtype_name;
use super::StoreError;
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;

/// A weight format kinko can requantize to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// 8-bit blocks of 32.
    Q8_0,
    /// 4-bit blocks of 32.
    Q4_0,
}

impl Target {
    /// Parse `q8_0` / `q4_0` (any case).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "q8_0" => Some(Target::Q8_0),
            "q4_0" => Some(Target::Q4_0),
            _ => None,
        }
    }

    fn dtype(self) -> GgmlDType {
        match self {
            Target::Q8_0 => GgmlDType::Q8_0,
            Target::Q4_0 => GgmlDType::Q4_0,
        }
    }

    /// llama.cpp's `general.file_type` for a file mostly in this format.
    fn file_type(self) -> u32 {
        match self {
            Target::Q8_0 => 7,
            Target::Q4_0 => 2,
        }
    }
}

fn is_quantized(dtype: GgmlDType) -> bool {
    !matches!(dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
}

/// Write `source` requantized to `target` as `dest`: every quantized tensor
/// is dequantized and quantized again; float tensors (norms) stay as they
/// are. Blocking; returns how many tensors were converted.
pub fn requantize(source: &Path, dest: &Path, target: Target) -> Result<usize, StoreError> {
    let bad = |reason: String| StoreError::NotGguf {
        path: source.display().to_string(),
        reason,
    };
    let mut reader = BufReader::new(File::open(source).map_err(|e| bad(e.to_string()))?);
    let content = gguf_file::Content::read(&mut reader).map_err(|e| bad(e.to_string()))?;
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
    let mut converted = 0;
    for name in names {
        let q = content
            .tensor(&mut reader, name, &Device::Cpu)
            .map_err(|e| bad(format!("tensor {name}: {e}")))?;
        let block = target.dtype().block_size();
        let row = q.shape().dims().last().copied().unwrap_or(0);
        let q = if is_quantized(q.dtype()) && q.dtype() != target.dtype() && row % block == 0 {
            let f = q
                .dequantize(&Device::Cpu)
                .map_err(|e| bad(format!("dequantize {name}: {e}")))?;
            converted += 1;
            QTensor::quantize(&f, target.dtype()).map_err(|e| {
                bad(format!(
                    "quantize {name} to {}: {e}",
                    dtype_name(target.dtype())
                ))
            })?
        } else {
            q
        };
        tensors.push((name.clone(), q));
    }
    let mut metadata: Vec<(String, Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, v) in metadata.iter_mut() {
        if k == "general.file_type" {
            *v = Value::U32(target.file_type());
        }
    }
    let meta_refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let file = File::create(dest).map_err(|e| StoreError::Io {
        context: format!("create {}", dest.display()),
        source: e,
    })?;
    let mut w = BufWriter::new(file);
    gguf_file::write(&mut w, &meta_refs, &tensor_refs).map_err(|e| StoreError::Io {
        context: format!("write {}", dest.display()),
        source: std::io::Error::other(e.to_string()),
    })?;
    w.into_inner()
        .map_err(|e| StoreError::Io {
            context: format!("write {}", dest.display()),
            source: e.into_error(),
        })?
        .sync_all()
        .map_err(|e| StoreError::Io {
            context: format!("sync {}", dest.display()),
            source: e,
        })?;
    Ok(converted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::gguf::inspect;

    #[test]
    fn a_q8_0_file_becomes_q4_0_and_keeps_its_metadata() {
        let dir = std::env::temp_dir().join(format!("kinko-quant-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("tiny.gguf");
        crate::models::gguf::write_tiny_test_model(&src).unwrap();
        assert_eq!(inspect(&src).unwrap().quantization, "Q8_0");
        let dst = dir.join("tiny-q4.gguf");
        assert_eq!(requantize(&src, &dst, Target::Q4_0).unwrap(), 1);
        let info = inspect(&dst).unwrap();
        assert_eq!(info.quantization, "Q4_0");
        assert_eq!(info.architecture, "llama");
        assert_eq!(info.context_length, 128);
        assert_eq!(Target::parse("Q8_0"), Some(Target::Q8_0));
        assert_eq!(Target::parse("q5_k"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
