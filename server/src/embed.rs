//! Sentence embeddings with a BERT model in sentence-transformers' layout
//! (all-MiniLM-L6-v2 by default): candle-transformers' BERT (the same
//! candle as mistral.rs), the `tokenizers` crate, then pooling and
//! normalisation as the model's own configuration says (`modules.json`,
//! `1_Pooling/config.json`, `sentence_bert_config.json`).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use serde::Deserialize;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use tokenizers::{Encoding, Tokenizer, TruncationParams};

/// The most texts run through the model together (sorted by length first,
/// so a batch pads little).
pub const BATCH: usize = 32;

/// The most tokens (padding included) in one batch: long texts go in
/// smaller batches, whose attention scores stay in the CPU's caches.
pub const BATCH_TOKENS: usize = 2048;

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over the text's tokens (padding left out).
    Mean,
    /// The `[CLS]` token's vector.
    Cls,
    /// The largest value of each dimension over the text's tokens.
    Max,
}

/// `1_Pooling/config.json`.
#[derive(Debug, Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

/// `sentence_bert_config.json`.
#[derive(Debug, Deserialize)]
struct SentenceBertConfig {
    max_seq_length: usize,
}

/// One entry of `modules.json`.
#[derive(Debug, Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
}

/// Why embedding failed.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The model directory is not a sentence-transformers BERT kinko reads.
    #[error("cannot load the embedding model: {0}")]
    Load(String),
    /// An input is longer than the model reads and truncation is off.
    #[error("input {index} has {tokens} tokens, more than the model's limit of {limit} (send `truncate: true` to cut it)")]
    TooLong {
        /// Which input (0-based).
        index: usize,
        /// Its tokens.
        tokens: usize,
        /// The model's limit.
        limit: usize,
    },
    /// The computation failed.
    #[error("embedding failed: {0}")]
    Compute(String),
    /// Nobody waits for the vectors any more.
    #[error("cancelled")]
    Cancelled,
}

fn compute(e: impl std::fmt::Display) -> EmbedError {
    EmbedError::Compute(e.to_string())
}

/// Vectors for some texts, in their order, and the tokens they took.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    /// One vector per text.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens read, special tokens included, after truncation.
    pub tokens: usize,
}

/// A loaded embedding model.
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    /// The same tokenizer without truncation, for counting.
    counter: Tokenizer,
    /// The padding token.
    pad_id: u32,
    pooling: Pooling,
    normalize: bool,
    /// The most tokens a text may have (special tokens included).
    pub max_tokens: usize,
    /// The vectors' length.
    pub dimensions: usize,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, EmbedError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EmbedError::Load(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| EmbedError::Load(format!("{}: {e}", path.display())))
}

/// Refuse a configuration candle's BERT would fail on (or panic on) only
/// when it runs, and sizes no model of this kind has.
fn check_config(c: &Config) -> Result<(), EmbedError> {
    let bad = |what: &str| Err(EmbedError::Load(format!("config.json: {what}")));
    if c.hidden_size == 0 || c.hidden_size > 16_384 {
        return bad("hidden_size is out of range");
    }
    if c.num_attention_heads == 0 || c.hidden_size % c.num_attention_heads != 0 {
        return bad("hidden_size is not a multiple of num_attention_heads");
    }
    if c.num_hidden_layers == 0 || c.num_hidden_layers > 128 {
        return bad("num_hidden_layers is out of range");
    }
    if c.intermediate_size == 0 || c.intermediate_size > 65_536 {
        return bad("intermediate_size is out of range");
    }
    if c.vocab_size == 0 || c.vocab_size > 1 << 22 {
        return bad("vocab_size is out of range");
    }
    if c.type_vocab_size == 0 {
        return bad("type_vocab_size is 0");
    }
    if c.max_position_embeddings < 2 || c.max_position_embeddings > 1 << 16 {
        return bad("max_position_embeddings is out of range");
    }
    Ok(())
}

/// The texts of `encodings` (by index) in batches: shortest first, so a
/// batch pads little; at most [`BATCH`] texts and [`BATCH_TOKENS`] tokens
/// (padding included) in one, and at least one batch per thread when there
/// are texts enough, so that a request of a few texts is split too.
fn batches(encodings: &[Encoding], threads: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..encodings.len()).collect();
    order.sort_by_key(|&i| encodings[i].len());
    let most = encodings.len().div_ceil(threads).clamp(1, BATCH);
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut batch: Vec<usize> = Vec::new();
    for i in order {
        // Sorted: this text is the batch's longest so far.
        let width = encodings[i].len().max(1);
        if !batch.is_empty() && (batch.len() == most || (batch.len() + 1) * width > BATCH_TOKENS) {
            out.push(std::mem::take(&mut batch));
        }
        batch.push(i);
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    out
}

impl Embedder {
    /// Load the model in `dir`: `config.json`, `model.safetensors`,
    /// `tokenizer.json`, and sentence-transformers' `modules.json`,
    /// `1_Pooling/config.json` and `sentence_bert_config.json`.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let config: Config = read_json(&dir.join("config.json"))?;
        let modules: Vec<Module> = read_json(&dir.join("modules.json"))?;
        let pooling_config: PoolingConfig = read_json(&dir.join("1_Pooling").join("config.json"))?;
        let sentence: SentenceBertConfig = read_json(&dir.join("sentence_bert_config.json"))?;
        let pooling = match (
            pooling_config.pooling_mode_mean_tokens,
            pooling_config.pooling_mode_cls_token,
            pooling_config.pooling_mode_max_tokens,
            pooling_config.pooling_mode_mean_sqrt_len_tokens,
        ) {
            (true, false, false, false) => Pooling::Mean,
            (false, true, false, false) => Pooling::Cls,
            (false, false, true, false) => Pooling::Max,
            _ => {
                return Err(EmbedError::Load(
                    "its pooling is not one of mean, cls or max alone".into(),
                ))
            }
        };
        check_config(&config)?;
        let normalize = modules.iter().any(|m| m.kind.ends_with("models.Normalize"));
        let max_tokens = sentence.max_seq_length.min(config.max_position_embeddings);
        let mut counter = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| EmbedError::Load(format!("tokenizer.json: {e}")))?;
        counter
            .with_truncation(None)
            .map_err(|e| EmbedError::Load(format!("tokenizer.json: {e}")))?;
        counter.with_padding(None);
        // Every id the tokenizer makes must have a row in the weights.
        let vocab = counter.get_vocab_size(true);
        if vocab > config.vocab_size || config.pad_token_id >= config.vocab_size {
            return Err(EmbedError::Load(format!(
                "the tokenizer has {vocab} tokens, the model {}",
                config.vocab_size
            )));
        }
        let mut tokenizer = counter.clone();
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..TruncationParams::default()
            }))
            .map_err(|e| EmbedError::Load(format!("tokenizer.json: {e}")))?;
        let pad_id = config.pad_token_id as u32;
        let weights = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| EmbedError::Load(format!("model.safetensors: {e}")))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|e| EmbedError::Load(format!("model.safetensors: {e}")))?;
        let dimensions = config.hidden_size;
        let model =
            BertModel::load(vb, &config).map_err(|e| EmbedError::Load(format!("weights: {e}")))?;
        Ok(Self {
            model,
            tokenizer,
            counter,
            pad_id,
            pooling,
            normalize,
            max_tokens,
            dimensions,
        })
    }

    /// Embed `texts`. A text longer than the model reads is cut to fit when
    /// `truncate`, else refused.
    pub fn embed(&self, texts: &[String], truncate: bool) -> Result<Embedded, EmbedError> {
        self.embed_until(texts, truncate, &AtomicBool::new(false))
    }

    /// [`Embedder::embed`], giving up (before the next batch) once
    /// `cancel` is set.
    pub fn embed_until(
        &self,
        texts: &[String],
        truncate: bool,
        cancel: &AtomicBool,
    ) -> Result<Embedded, EmbedError> {
        use rayon::prelude::*;
        let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let encodings = self.tokenizer.encode_batch(inputs, true).map_err(compute)?;
        if !truncate {
            if let Some(i) = encodings
                .iter()
                .position(|e| !e.get_overflowing().is_empty())
            {
                return Err(EmbedError::TooLong {
                    index: i,
                    tokens: self.count_tokens(&texts[i]),
                    limit: self.max_tokens,
                });
            }
        }
        let tokens = encodings.iter().map(Encoding::len).sum();
        let threads = rayon::current_num_threads().max(1);
        let batches = batches(&encodings, threads);
        // Batches run side by side on the compute threads (one forward
        // pass keeps about one core busy).
        let done: Vec<Vec<Vec<f32>>> = batches
            .par_iter()
            .map(|batch| {
                if cancel.load(Ordering::Relaxed) {
                    return Err(EmbedError::Cancelled);
                }
                let rows: Vec<&Encoding> = batch.iter().map(|&i| &encodings[i]).collect();
                self.embed_batch(&rows)
            })
            .collect::<Result<_, _>>()?;
        let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for (batch, rows) in batches.iter().zip(done) {
            for (row, &i) in rows.into_iter().zip(batch) {
                vectors[i] = row;
            }
        }
        Ok(Embedded { vectors, tokens })
    }

    /// The vectors of some tokenized texts, in their order.
    fn embed_batch(&self, rows: &[&Encoding]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let width = rows.iter().map(|e| e.len()).max().unwrap_or(0);
        let (mut ids, mut mask) = (Vec::new(), Vec::new());
        for e in rows {
            let pad = width - e.len();
            ids.extend_from_slice(e.get_ids());
            ids.extend(std::iter::repeat_n(self.pad_id, pad));
            mask.extend(std::iter::repeat_n(1u32, e.len()));
            mask.extend(std::iter::repeat_n(0u32, pad));
        }
        let shape = (rows.len(), width);
        let ids = Tensor::from_vec(ids, shape, &Device::Cpu).map_err(compute)?;
        let types = ids.zeros_like().map_err(compute)?;
        let mask = Tensor::from_vec(mask, shape, &Device::Cpu).map_err(compute)?;
        let hidden = self
            .model
            .forward(&ids, &types, Some(&mask))
            .map_err(compute)?;
        let pooled = self.pool(&hidden, &mask).map_err(compute)?;
        let pooled = if self.normalize {
            let norm = pooled
                .sqr()
                .and_then(|s| s.sum_keepdim(1))
                .and_then(|s| s.sqrt())
                .and_then(|n| n.clamp(1e-12f32, f32::MAX))
                .map_err(compute)?;
            pooled.broadcast_div(&norm).map_err(compute)?
        } else {
            pooled
        };
        pooled.to_vec2().map_err(compute)
    }

    /// One vector per row of `hidden` (batch, tokens, dimensions), padding
    /// left out by `mask` (batch, tokens).
    fn pool(&self, hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        match self.pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1),
            Pooling::Mean => {
                let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
                let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?;
                summed.broadcast_div(&counts)
            }
            Pooling::Max => {
                // Padding gets a very low value, so it is never the largest.
                let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                let low = ((mask.ones_like()? - &mask)? * -1e9)?;
                hidden.broadcast_add(&low)?.max(1)
            }
        }
    }

    /// Tokens `text` takes, special tokens included, before truncation.
    pub fn count_tokens(&self, text: &str) -> usize {
        self.counter
            .encode(text, true)
            .map(|e| e.len())
            .unwrap_or(0)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// all-MiniLM-L6-v2 as scripts/default-model.sh unpacks it (the unit
    /// tests of the store use it too).
    pub(crate) fn model_dir() -> std::path::PathBuf {
        let cache = std::env::var("KINKO_CACHE")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| {
                dirs::home_dir()
                    .unwrap_or_default()
                    .join(".cache")
                    .join("kinko")
            });
        let dir = cache.join("unpacked").join("all-minilm");
        assert!(
            dir.join("model.safetensors").exists(),
            "{} is missing: run scripts/default-model.sh",
            dir.display()
        );
        dir
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn all_minilm_gives_unit_vectors_that_rank_meaning() {
        let e = Embedder::load(&model_dir()).unwrap();
        assert_eq!(e.dimensions, 384);
        assert_eq!(e.max_tokens, 256);
        let texts: Vec<String> = [
            "A man is playing a guitar.",
            "Someone plays an instrument.",
            "The stock market fell sharply today.",
            "猫が窓辺で眠っている。",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = e.embed(&texts, true).unwrap();
        for v in &out.vectors {
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "{norm}");
        }
        let (a, b, c) = (&out.vectors[0], &out.vectors[1], &out.vectors[2]);
        assert!(
            cosine(a, b) > cosine(a, c) + 0.2,
            "{} {}",
            cosine(a, b),
            cosine(a, c)
        );
        // Alone or in a batch with padding: the same vector.
        let alone = e.embed(&texts[..1], true).unwrap();
        assert!(cosine(&alone.vectors[0], a) > 0.9999);
        // Past the limit: cut, or refused.
        let long = vec!["word ".repeat(400)];
        assert_eq!(e.count_tokens(&long[0]), 402);
        let cut = e.embed(&long, true).unwrap();
        assert_eq!(cut.tokens, 256);
        match e.embed(&long, false) {
            Err(EmbedError::TooLong { tokens, limit, .. }) => {
                assert_eq!((tokens, limit), (402, 256))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_cancelled_request_stops_before_its_batches() {
        let e = Embedder::load(&model_dir()).unwrap();
        let texts = vec!["a few words".to_string(); 100];
        let cancel = AtomicBool::new(true);
        assert!(matches!(
            e.embed_until(&texts, true, &cancel),
            Err(EmbedError::Cancelled)
        ));
    }

    /// The vectors `sentence-transformers` computes for the same model
    /// files (server/tests/embeddings/reference.py wrote the fixture).
    #[test]
    fn vectors_match_sentence_transformers() {
        #[derive(Deserialize)]
        struct Reference {
            texts: Vec<String>,
            tokens_untruncated: Vec<usize>,
            vectors: Vec<Vec<f32>>,
        }
        let reference: Reference = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/embeddings/reference.json"
        )))
        .unwrap();
        let e = Embedder::load(&model_dir()).unwrap();
        let out = e.embed(&reference.texts, true).unwrap();
        let mut worst = f32::MAX;
        for (i, (ours, theirs)) in out.vectors.iter().zip(&reference.vectors).enumerate() {
            let norm: f32 = theirs.iter().map(|x| x * x).sum::<f32>().sqrt();
            let sim = cosine(ours, theirs) / norm;
            assert!(sim >= 0.999, "{:?}: cosine {sim}", reference.texts[i]);
            assert_eq!(
                e.count_tokens(&reference.texts[i]),
                reference.tokens_untruncated[i]
            );
            worst = worst.min(sim);
        }
        println!("lowest cosine similarity to sentence-transformers: {worst:.7}");
    }
}
