//! Closing a JSON answer within its token budget.
//!
//! A structured answer is generated under its schema's grammar (llguidance,
//! inside mistral.rs), so every token keeps the JSON valid, but nothing in
//! the grammar makes it *end*: a small model, sampled, can write one string
//! until `max_tokens` cuts it off, and a cut answer does not parse. So when
//! only a reserve of the budget is left, [`CloseWithinBudget`] steers
//! towards the end: inside a string, towards tokens holding a `"`; outside,
//! towards tokens opening with `}` or `]`. The grammar still decides what is
//! allowed (a required property still gets written, its string closed at
//! once), so the answer stays valid and now fits. Until the reserve is
//! reached the model writes freely.

use std::sync::{Arc, Mutex, OnceLock};

/// Added to a steered token's logit: far above any real difference, so a
/// steered token allowed by the grammar wins, and among steered tokens the
/// model's own preference still orders them.
const STEER: f32 = 1000.0;

/// The model's tokens as text, and which of them can end a string or a
/// JSON container.
#[derive(Debug, Default)]
pub struct Vocabulary {
    texts: Vec<String>,
    quotes: Vec<u32>,
    closers: Vec<u32>,
}

impl Vocabulary {
    /// From the GGUF's `tokenizer.ggml.tokens` (byte-level and sentencepiece
    /// vocabularies both write `"`, `\`, `}` and `]` as themselves).
    pub fn new(texts: Vec<String>) -> Self {
        let mut quotes = Vec::new();
        let mut closers = Vec::new();
        for (id, t) in texts.iter().enumerate() {
            let Ok(id) = u32::try_from(id) else { break };
            // A `"` that is not escaped (`\"` writes a quote and stays in
            // the string).
            let closes = t
                .char_indices()
                .any(|(i, c)| c == '"' && !t[..i].ends_with('\\'));
            if closes {
                quotes.push(id);
            }
            let lead = t.trim_start_matches(['Ġ', '▁', ' ']);
            if lead.starts_with('}') || lead.starts_with(']') {
                closers.push(id);
            }
        }
        Self {
            texts,
            quotes,
            closers,
        }
    }

    /// Read from the GGUF file at `path`; empty when it has none.
    pub fn from_gguf(path: &std::path::Path) -> Self {
        use candle_core::quantized::gguf_file::Content;
        let read = || -> Option<Vec<String>> {
            let mut file = std::io::BufReader::new(std::fs::File::open(path).ok()?);
            let content = Content::read(&mut file).ok()?;
            let tokens = content
                .metadata
                .get("tokenizer.ggml.tokens")?
                .to_vec()
                .ok()?;
            tokens.iter().map(|t| t.to_string().ok().cloned()).collect()
        };
        Self::new(read().unwrap_or_default())
    }

    fn text(&self, id: u32) -> &str {
        self.texts.get(id as usize).map_or("", String::as_str)
    }
}

/// Where a JSON text stands: inside a string or not.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JsonScan {
    in_string: bool,
    escaped: bool,
}

impl JsonScan {
    /// Read more of the text.
    pub fn feed(&mut self, text: &str) {
        for c in text.chars() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if c == '\\' {
                    self.escaped = true;
                } else if c == '"' {
                    self.in_string = false;
                }
            } else if c == '"' {
                self.in_string = true;
            }
        }
    }

    /// Whether the text so far ends inside a string.
    pub fn in_string(&self) -> bool {
        self.in_string
    }
}

/// How many tokens before `max_tokens` the steering starts: enough to close
/// a few open strings and containers and write the required properties
/// still missing, at most a quarter of a short answer.
pub fn reserve(max_tokens: usize) -> usize {
    (max_tokens / 4).clamp(4, 48)
}

/// The logits processor that steers a structured answer to its end when
/// its budget runs low (see the module's documentation).
pub struct CloseWithinBudget {
    vocab: Arc<Vocabulary>,
    /// Steering starts once this many tokens are generated.
    start_at: usize,
    prompt_len: OnceLock<usize>,
    state: Mutex<(usize, JsonScan)>,
}

impl CloseWithinBudget {
    /// For an answer of at most `max_tokens` tokens.
    pub fn new(vocab: Arc<Vocabulary>, max_tokens: usize) -> Self {
        Self {
            vocab,
            start_at: max_tokens.saturating_sub(reserve(max_tokens)),
            prompt_len: OnceLock::new(),
            state: Mutex::new((0, JsonScan::default())),
        }
    }

    /// The tokens to steer towards after the generated `tokens`, if the
    /// reserve is reached.
    pub fn steer(&self, context: &[u32]) -> Option<&[u32]> {
        let prompt = *self.prompt_len.get_or_init(|| context.len());
        let generated = &context[prompt.min(context.len())..];
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (seen, scan) = &mut *state;
        for &id in generated.iter().skip(*seen) {
            scan.feed(self.vocab.text(id));
        }
        *seen = generated.len().max(*seen);
        if generated.len() < self.start_at || self.vocab.texts.is_empty() {
            return None;
        }
        Some(if scan.in_string() {
            &self.vocab.quotes
        } else {
            &self.vocab.closers
        })
    }
}

impl mistralrs::CustomLogitsProcessor for CloseWithinBudget {
    fn apply(
        &self,
        logits: &mistralrs::Tensor,
        context: &[u32],
    ) -> mistralrs::Result<mistralrs::Tensor> {
        let Some(steered) = self.steer(context) else {
            return Ok(logits.clone());
        };
        let n = logits.dims1()?;
        let mut bias = vec![0f32; n];
        for &id in steered {
            if let Some(b) = bias.get_mut(id as usize) {
                *b = STEER;
            }
        }
        let bias =
            mistralrs::Tensor::from_vec(bias, n, logits.device())?.to_dtype(logits.dtype())?;
        logits + bias
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> Arc<Vocabulary> {
        let texts = [
            "{", "\"", "name", "\":", "Ġ\"", "abc", "\\\"", "}", "Ġ]", ",", "\"}",
        ];
        Arc::new(Vocabulary::new(
            texts.iter().map(|s| s.to_string()).collect(),
        ))
    }

    #[test]
    fn the_scan_knows_when_it_is_inside_a_string() {
        let mut s = JsonScan::default();
        s.feed(r#"{"a": "x\"y"#);
        assert!(s.in_string());
        s.feed(r#"\\"#);
        assert!(s.in_string());
        s.feed(r#"", "b": 1"#);
        assert!(!s.in_string());
    }

    #[test]
    fn steering_starts_at_the_reserve_and_picks_by_position() {
        let v = vocab();
        assert_eq!(v.quotes, vec![1, 3, 4, 10]);
        assert_eq!(v.closers, vec![7, 8]);
        // A 2-token prompt, 12 tokens of budget: steering from token 8.
        let p = CloseWithinBudget::new(v.clone(), 12);
        assert_eq!(reserve(12), 4);
        assert!(p.steer(&[100, 101]).is_none());
        // `{"name": "abcabcabc` — inside a string when token 8 is next.
        let mut ctx = vec![100, 101, 0, 1, 2, 3, 4, 5, 5];
        assert!(p.steer(&ctx).is_none());
        ctx.push(5);
        assert_eq!(p.steer(&ctx), Some(&v.quotes[..]));
        // An escaped quote keeps it inside.
        ctx.push(6);
        assert_eq!(p.steer(&ctx), Some(&v.quotes[..]));
        // Closed: now towards `}` and `]`.
        ctx.push(1);
        assert_eq!(p.steer(&ctx), Some(&v.closers[..]));
        assert_eq!(reserve(10_000), 48);
        assert_eq!(reserve(8), 4);
    }
}
