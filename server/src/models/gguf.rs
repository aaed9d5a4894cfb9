//! Reading what the store needs from a GGUF header (architecture, weight
//! format, parameter count, context length) with candle's GGUF reader.

use super::StoreError;
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;
use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

/// Facts read from a GGUF header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufInfo {
    /// `general.architecture`, e.g. `llama`.
    pub architecture: String,
    /// The format holding most parameters, e.g. `Q4_1`.
    pub quantization: String,
    /// Total parameters.
    pub parameter_count: u64,
    /// `<arch>.context_length`.
    pub context_length: usize,
    /// `tokenizer.chat_template`: the Jinja template that formats prompts.
    pub chat_template: Option<String>,
    /// The header's numbers and names Ollama's clients read in
    /// `model_info` (`general.*` and `<arch>.*`: embedding length, block
    /// count, head counts, …), plus `general.parameter_count`.
    pub model_info: serde_json::Map<String, serde_json::Value>,
}

/// A header value `model_info` shows: numbers, booleans and short strings
/// (no arrays: the vocabulary alone is megabytes).
fn shown_value(v: &Value) -> Option<serde_json::Value> {
    Some(match v {
        Value::U8(x) => (*x).into(),
        Value::I8(x) => (*x).into(),
        Value::U16(x) => (*x).into(),
        Value::I16(x) => (*x).into(),
        Value::U32(x) => (*x).into(),
        Value::I32(x) => (*x).into(),
        Value::U64(x) => (*x).into(),
        Value::I64(x) => (*x).into(),
        Value::F32(x) => serde_json::Number::from_f64(f64::from(*x))?.into(),
        Value::F64(x) => serde_json::Number::from_f64(*x)?.into(),
        Value::Bool(x) => (*x).into(),
        Value::String(x) if x.len() <= 256 => x.clone().into(),
        _ => return None,
    })
}

/// The llama.cpp-style name of a weight format.
pub fn dtype_name(dtype: GgmlDType) -> &'static str {
    match dtype {
        GgmlDType::F32 => "F32",
        GgmlDType::F16 => "F16",
        GgmlDType::BF16 => "BF16",
        GgmlDType::Q4_0 => "Q4_0",
        GgmlDType::Q4_1 => "Q4_1",
        GgmlDType::Q5_0 => "Q5_0",
        GgmlDType::Q5_1 => "Q5_1",
        GgmlDType::Q8_0 => "Q8_0",
        GgmlDType::Q8_1 => "Q8_1",
        GgmlDType::Q2K => "Q2_K",
        GgmlDType::Q3K => "Q3_K",
        GgmlDType::Q4K => "Q4_K",
        GgmlDType::Q5K => "Q5_K",
        GgmlDType::Q6K => "Q6_K",
        GgmlDType::Q8K => "Q8_K",
    }
}

/// Open `path` only if it is a regular file, without blocking on a FIFO or
/// a device. Anything else (missing, unreadable, a directory, a device, a
/// FIFO) is `NotFound`, one message for all, so the answer tells a client
/// nothing about files it did not send. `O_NONBLOCK`: opening a FIFO must
/// not wait for a writer (reads of a regular file ignore the flag).
pub fn open_regular(path: &Path) -> Result<File, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|_| not_found(path))?;
    match file.metadata() {
        Ok(m) if m.is_file() => Ok(file),
        _ => Err(not_found(path)),
    }
}

/// The one answer for every path that is not a readable GGUF file.
fn not_found(path: &Path) -> StoreError {
    StoreError::NotFound(path.display().to_string())
}

/// Check the GGUF file at `path` with kinko's own validator: a file that is
/// not GGUF at all is `NotFound` (see [`open_regular`]); a broken one is
/// `NotGguf` with one line saying what is wrong.
pub fn validate(path: &Path) -> Result<File, StoreError> {
    let file = open_regular(path)?;
    let len = file.metadata().map_err(|_| not_found(path))?.len();
    let reader = file.try_clone().map_err(|_| not_found(path))?;
    match super::validate::validate(reader, len) {
        Ok(_) => Ok(file),
        Err(super::validate::Refused::NotGguf) => Err(not_found(path)),
        Err(super::validate::Refused::Invalid(reason)) => Err(StoreError::NotGguf {
            path: path.display().to_string(),
            reason,
        }),
    }
}

/// Read the header of the GGUF file at `path`, once it passed [`validate`].
pub fn inspect(path: &Path) -> Result<GgufInfo, StoreError> {
    let not_gguf = |reason: String| StoreError::NotGguf {
        path: path.display().to_string(),
        reason,
    };
    let mut file = validate(path)?;
    std::io::Seek::rewind(&mut file).map_err(|_| not_found(path))?;
    let content = Content::read(&mut BufReader::new(file)).map_err(|e| {
        // candle's errors may carry a backtrace: the log gets it, the
        // client one line.
        tracing::warn!(path = %path.display(), error = %e, "GGUF header not readable");
        not_gguf("its header could not be read".into())
    })?;
    let architecture = content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .ok_or_else(|| not_gguf("no general.architecture".into()))?;
    let context_length = content
        .metadata
        .get(&format!("{architecture}.context_length"))
        .and_then(|v| v.to_u64().ok())
        .ok_or_else(|| not_gguf(format!("no {architecture}.context_length")))?
        as usize;
    let mut by_dtype: HashMap<&'static str, u64> = HashMap::new();
    let mut parameter_count = 0u64;
    for info in content.tensor_infos.values() {
        let n = info.shape.elem_count() as u64;
        parameter_count += n;
        *by_dtype.entry(dtype_name(info.ggml_dtype)).or_default() += n;
    }
    let quantization = by_dtype
        .into_iter()
        .max_by_key(|(name, n)| (*n, *name))
        .map(|(name, _)| name.to_string())
        .ok_or_else(|| not_gguf("no tensors".into()))?;
    let chat_template = content
        .metadata
        .get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok())
        .cloned();
    let prefix = format!("{architecture}.");
    let mut model_info: serde_json::Map<String, serde_json::Value> = content
        .metadata
        .iter()
        .filter(|(k, _)| k.starts_with("general.") || k.starts_with(&prefix))
        .filter_map(|(k, v)| Some((k.clone(), shown_value(v)?)))
        .collect();
    model_info.insert("general.parameter_count".into(), parameter_count.into());
    Ok(GgufInfo {
        architecture,
        quantization,
        parameter_count,
        context_length,
        chat_template,
        model_info,
    })
}

/// Write a tiny (not runnable) llama-shaped GGUF file: enough for store tests.
pub fn write_tiny_test_model(path: &Path) -> candle_core::Result<()> {
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};
    let weights = Tensor::zeros((4, 32), candle_core::DType::F32, &Device::Cpu)?;
    let q = QTensor::quantize(&weights, GgmlDType::Q8_0)?;
    let arch = Value::String("llama".into());
    let ctx = Value::U32(128);
    let mut f = File::create(path)?;
    candle_core::quantized::gguf_file::write(
        &mut f,
        &[
            ("general.architecture", &arch),
            ("llama.context_length", &ctx),
        ],
        &[("token_embd.weight", &q)],
    )
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::GgmlDType;

    /// The validator's own table of tensor types is candle's.
    #[test]
    fn the_validators_tensor_types_are_candles() {
        let candle = [
            (0, GgmlDType::F32),
            (1, GgmlDType::F16),
            (2, GgmlDType::Q4_0),
            (3, GgmlDType::Q4_1),
            (6, GgmlDType::Q5_0),
            (7, GgmlDType::Q5_1),
            (8, GgmlDType::Q8_0),
            (9, GgmlDType::Q8_1),
            (10, GgmlDType::Q2K),
            (11, GgmlDType::Q3K),
            (12, GgmlDType::Q4K),
            (13, GgmlDType::Q5K),
            (14, GgmlDType::Q6K),
            (15, GgmlDType::Q8K),
            (30, GgmlDType::BF16),
        ];
        for (id, dtype) in candle {
            let ours = super::super::validate::known_type(id).expect("known");
            assert_eq!(ours.block_size, dtype.block_size(), "{dtype:?}");
            assert_eq!(ours.type_size, dtype.type_size(), "{dtype:?}");
        }
        let known = (0..64)
            .filter(|&id| super::super::validate::known_type(id).is_some())
            .count();
        assert_eq!(known, candle.len());
    }
}
