//! Modelfiles: named presets on top of a model, in Ollama's format.
//!
//! ```text
//! # comments start with '#'
//! FROM smollm2:135m            (an installed model, or a path to a GGUF file)
//! SYSTEM """You are terse.
//! Answer in one line."""
//! PARAMETER temperature 0.2
//! PARAMETER stop "<|im_end|>"
//! TEMPLATE """{{ .Prompt }}"""
//! ```
//!
//! Instructions are case-insensitive; values may be bare, "quoted" or
//! """triple-quoted""" (which may span lines). Errors name their line.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Sampling and context parameters a preset may set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Parameters {
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus mass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Top-k.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    /// Context window to use (at most the model's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_ctx: Option<usize>,
    /// Default `max_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_predict: Option<usize>,
    /// Stop strings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// Repetition penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_penalty: Option<f32>,
}

/// A parsed Modelfile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Modelfile {
    /// The base: an installed model name or a GGUF path.
    pub from: String,
    /// System prompt.
    pub system: Option<String>,
    /// Chat template (kept and shown; the GGUF's own template is used).
    pub template: Option<String>,
    /// Parameters.
    pub parameters: Parameters,
}

/// A Modelfile problem, with its line (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelfileError {
    /// Where.
    pub line: usize,
    /// What.
    pub message: String,
}

impl fmt::Display for ModelfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ModelfileError {}

fn err(line: usize, message: impl Into<String>) -> ModelfileError {
    ModelfileError {
        line,
        message: message.into(),
    }
}

/// Read one value starting at `rest` on line `line_no`; a triple-quoted
/// value may continue on the following lines, taken from `lines`.
fn read_value<'a>(
    rest: &str,
    line_no: usize,
    lines: &mut impl Iterator<Item = (usize, &'a str)>,
) -> Result<String, ModelfileError> {
    let rest = rest.trim();
    if let Some(body) = rest.strip_prefix("\"\"\"") {
        if let Some(end) = body.find("\"\"\"") {
            if !body[end + 3..].trim().is_empty() {
                return Err(err(line_no, "unexpected text after the closing \"\"\""));
            }
            return Ok(body[..end].to_string());
        }
        let mut value = body.to_string();
        for (_, next) in lines.by_ref() {
            value.push('\n');
            if let Some(end) = next.find("\"\"\"") {
                value.push_str(&next[..end]);
                return Ok(value.trim_start_matches('\n').to_string());
            }
            value.push_str(next);
        }
        return Err(err(line_no, "unterminated \"\"\" (no closing \"\"\")"));
    }
    if let Some(body) = rest.strip_prefix('"') {
        return match body.strip_suffix('"') {
            Some(inner) => Ok(unescape(inner)),
            None => Err(err(line_no, "unterminated quoted value")),
        };
    }
    if rest.is_empty() {
        return Err(err(line_no, "missing value"));
    }
    Ok(rest.to_string())
}

fn number<T: std::str::FromStr>(
    name: &str,
    value: &str,
    line: usize,
    ok: impl Fn(&T) -> bool,
    range: &str,
) -> Result<T, ModelfileError> {
    match value.parse::<T>() {
        Ok(v) if ok(&v) => Ok(v),
        _ => Err(err(
            line,
            format!("PARAMETER {name} must be {range}, got `{value}`"),
        )),
    }
}

/// Parse a Modelfile.
pub fn parse(text: &str) -> Result<Modelfile, ModelfileError> {
    let mut out = Modelfile::default();
    let mut from_line = None;
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    while let Some((n, raw)) = lines.next() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        match word.to_ascii_uppercase().as_str() {
            "FROM" => {
                if let Some(first) = from_line {
                    return Err(err(n, format!("FROM given twice (first on line {first})")));
                }
                out.from = read_value(rest, n, &mut lines)?;
                from_line = Some(n);
            }
            "SYSTEM" => out.system = Some(read_value(rest, n, &mut lines)?),
            "TEMPLATE" => out.template = Some(read_value(rest, n, &mut lines)?),
            "PARAMETER" => {
                let rest = rest.trim();
                let (name, value) = rest
                    .split_once(char::is_whitespace)
                    .ok_or_else(|| err(n, "PARAMETER needs a name and a value"))?;
                let value = read_value(value, n, &mut lines)?;
                let p = &mut out.parameters;
                match name.to_ascii_lowercase().as_str() {
                    "temperature" => {
                        p.temperature = Some(number(name, &value, n, |v: &f64| (0.0..=2.0).contains(v), "between 0 and 2")?)
                    }
                    "top_p" => {
                        p.top_p = Some(number(name, &value, n, |v: &f64| *v > 0.0 && *v <= 1.0, "in (0, 1]")?)
                    }
                    "top_k" => {
                        p.top_k = Some(number(name, &value, n, |v: &usize| (1..=1000).contains(v), "between 1 and 1000")?)
                    }
                    "num_ctx" => {
                        p.num_ctx = Some(number(name, &value, n, |v: &usize| *v >= 16, "a whole number of at least 16")?)
                    }
                    "num_predict" => {
                        p.num_predict = Some(number(name, &value, n, |v: &usize| *v >= 1, "a whole number of at least 1")?)
                    }
                    "repeat_penalty" => {
                        p.repeat_penalty = Some(number(name, &value, n, |v: &f32| (0.5..=2.0).contains(v), "between 0.5 and 2")?)
                    }
                    "stop" => p.stop.push(value),
                    other => {
                        return Err(err(
                            n,
                            format!("unknown PARAMETER `{other}` (known: temperature, top_p, top_k, num_ctx, num_predict, stop, repeat_penalty)"),
                        ))
                    }
                }
            }
            other => {
                return Err(err(
                    n,
                    format!(
                        "unknown instruction `{other}` (known: FROM, SYSTEM, PARAMETER, TEMPLATE)"
                    ),
                ))
            }
        }
    }
    if from_line.is_none() {
        return Err(err(
            text.lines().count().max(1),
            "no FROM line: a Modelfile must name its base model",
        ));
    }
    Ok(out)
}

/// A double-quoted value's escapes: `\\"`, `\\\\`, `\\n`, `\\r`, `\\t`; any other
/// backslash stays as it is.
fn unescape(inner: &str) -> String {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Whether `candidate` (what follows the instruction) reads back as `value`.
fn reads_back(candidate: &str, value: &str) -> bool {
    let mut lines = candidate.lines().enumerate().map(|(i, l)| (i + 1, l));
    let Some((n, first)) = lines.next() else {
        return false;
    };
    matches!(read_value(first, n, &mut lines), Ok(v) if v == value) && lines.next().is_none()
}

/// `value` written so that it reads back exactly: a multi-line text in
/// triple quotes where that is faithful, else in double quotes with escapes.
fn quoted(value: &str) -> String {
    if value.contains('\n') {
        let triple = format!("\"\"\"{value}\"\"\"");
        if reads_back(&triple, value) {
            return triple;
        }
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A `FROM` value: bare when it reads back so (paths, names), else quoted.
fn from_value(value: &str) -> String {
    if reads_back(value, value) {
        value.to_string()
    } else {
        quoted(value)
    }
}

/// Write a Modelfile back out (what `kinko show --modelfile` prints).
pub fn render(m: &Modelfile) -> String {
    let mut out = format!("FROM {}\n", from_value(&m.from));
    if let Some(s) = &m.system {
        out.push_str(&format!("SYSTEM {}\n", quoted(s)));
    }
    if let Some(t) = &m.template {
        out.push_str(&format!("TEMPLATE {}\n", quoted(t)));
    }
    let p = &m.parameters;
    let mut param = |name: &str, v: Option<String>| {
        if let Some(v) = v {
            out.push_str(&format!("PARAMETER {name} {v}\n"));
        }
    };
    param("temperature", p.temperature.map(|v| v.to_string()));
    param("top_p", p.top_p.map(|v| v.to_string()));
    param("top_k", p.top_k.map(|v| v.to_string()));
    param("num_ctx", p.num_ctx.map(|v| v.to_string()));
    param("num_predict", p.num_predict.map(|v| v.to_string()));
    param("repeat_penalty", p.repeat_penalty.map(|v| v.to_string()));
    for s in &p.stop {
        out.push_str(&format!("PARAMETER stop {}\n", quoted(s)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_modelfile() {
        let m = parse(
            "# a preset\nFROM smollm2:135m\nsystem \"\"\"You are terse.\nOne line only.\"\"\"\n\
             PARAMETER temperature 0.2\nPARAMETER top_k 20\nPARAMETER stop \"<|im_end|>\"\n\
             PARAMETER stop User:\nPARAMETER num_ctx 2048\nPARAMETER num_predict 64\n\
             PARAMETER repeat_penalty 1.2\nPARAMETER top_p 0.8\nTEMPLATE \"\"\"{{ .Prompt }}\"\"\"\n",
        )
        .unwrap();
        assert_eq!(m.from, "smollm2:135m");
        assert_eq!(m.system.as_deref(), Some("You are terse.\nOne line only."));
        assert_eq!(m.template.as_deref(), Some("{{ .Prompt }}"));
        let p = &m.parameters;
        assert_eq!(p.temperature, Some(0.2));
        assert_eq!(p.top_k, Some(20));
        assert_eq!(p.top_p, Some(0.8));
        assert_eq!(p.stop, vec!["<|im_end|>".to_string(), "User:".to_string()]);
        assert_eq!(
            (p.num_ctx, p.num_predict, p.repeat_penalty),
            (Some(2048), Some(64), Some(1.2))
        );
        // Rendering and parsing again gives the same preset.
        assert_eq!(parse(&render(&m)).unwrap(), m);
    }

    #[test]
    fn multi_line_system_on_its_own_lines() {
        let m = parse("FROM ./model.gguf\nSYSTEM \"\"\"\nFirst.\nSecond.\n\"\"\"\n").unwrap();
        assert_eq!(m.from, "./model.gguf");
        assert_eq!(m.system.as_deref(), Some("First.\nSecond.\n"));
    }

    #[test]
    fn errors_name_their_line() {
        let cases = [
            ("SYSTEM hi\n", 1, "no FROM"),
            ("FROM a\nFROM b\n", 2, "FROM given twice"),
            (
                "FROM a\n\nPARAMETER temperature hot\n",
                3,
                "temperature must be between 0 and 2",
            ),
            ("FROM a\nPARAMETER temperature 3\n", 2, "between 0 and 2"),
            (
                "FROM a\nPARAMETER mirostat 1\n",
                2,
                "unknown PARAMETER `mirostat`",
            ),
            ("FROM a\nADAPTER x\n", 2, "unknown instruction `ADAPTER`"),
            (
                "FROM a\nSYSTEM \"\"\"never closed\nstill open\n",
                2,
                "unterminated",
            ),
            ("FROM a\nPARAMETER top_k\n", 2, "needs a name and a value"),
            ("FROM\n", 1, "missing value"),
            ("FROM a\nSYSTEM \"oops\n", 2, "unterminated quoted value"),
        ];
        for (text, line, msg) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.to_string().contains(msg), "{text:?}: {e}");
            assert!(e.to_string().starts_with(&format!("line {line}: ")));
        }
    }

    /// Found by the fuzzer (fuzz/corpus/modelfile/regression-roundtrip): a
    /// stop string of two newlines came back empty from its own rendering;
    /// quotes, backslashes, edges of whitespace and bare `FROM` values
    /// must come back too.
    #[test]
    fn what_render_writes_parses_back_the_same() {
        let texts = [
            "FROM \"a b.gguf\"\nSYSTEM \"one \\\"quoted\\\" line\"\nPARAMETER stop \"\\n\\n\"\n",
            "FROM \" padded \"\nSYSTEM \"\\\\n is not a newline\"\n",
            "FROM x\nSYSTEM \"\"\"first\nends with a quote\"\"\"\"\n",
            "FROM x\nTEMPLATE \"\"\"\n\nstarts with blank lines\"\"\"\n",
            "FROM x\nSYSTEM \"tab\\there and CR\\r\"\n",
            "FROM \"\\\"quoted\\\"\"\n",
        ];
        for text in texts {
            let parsed = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            let rendered = render(&parsed);
            assert_eq!(
                parse(&rendered).unwrap(),
                parsed,
                "{text:?} rendered as {rendered:?}"
            );
        }
        let m = Modelfile {
            from: "a\\b".into(),
            system: Some("\n\nlead\r\n  trail  \n\"\"\"".into()),
            template: Some(String::new()),
            parameters: Parameters {
                stop: vec!["\\".into(), "\"".into(), " ".into()],
                ..Parameters::default()
            },
        };
        assert_eq!(parse(&render(&m)).unwrap(), m);
    }
}
