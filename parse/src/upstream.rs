//! Upstream engines kinko fronts (vLLM, llama.cpp's server, Ollama, another
//! kinko): their specs as given on the command line (`PREFIX=KIND:URL`,
//! the same prefix twice for replicas) and the model lists they answer
//! (`/v1/models`, `/api/tags`), which come from another machine and are
//! read as untrusted input.

use serde_json::Value;

/// The API an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamKind {
    /// OpenAI-compatible (`/v1/models`, `/v1/chat/completions`): vLLM,
    /// llama.cpp's server.
    OpenAi,
    /// Ollama-compatible (`/api/tags`, `/api/chat`): Ollama, another kinko.
    Ollama,
}

impl UpstreamKind {
    /// The name used in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamKind::OpenAi => "openai",
            UpstreamKind::Ollama => "ollama",
        }
    }
}

/// One replica of an upstream: `lab=openai:http://10.0.0.5:8000/v1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSpec {
    /// The prefix its models are listed under (`lab/llama3:8b`).
    pub prefix: String,
    /// The API it speaks.
    pub kind: UpstreamKind,
    /// Its base URL, without a trailing `/`.
    pub url: String,
}

/// The longest prefix.
const PREFIX_MAX: usize = 32;

/// Whether `prefix` can name an upstream: lowercase letters, digits, `-`
/// and `_`, starting with a letter or digit (it also names an environment
/// variable, `KINKO_UPSTREAM_KEY_<PREFIX>`, with `-` as `_`).
pub fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= PREFIX_MAX
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && prefix
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
}

/// The environment variable that holds an upstream's key.
pub fn key_variable(prefix: &str) -> String {
    format!(
        "KINKO_UPSTREAM_KEY_{}",
        prefix.to_ascii_uppercase().replace('-', "_")
    )
}

/// Read one spec, `PREFIX=KIND:URL`.
pub fn parse_spec(spec: &str) -> Result<UpstreamSpec, String> {
    let spec = spec.trim();
    let (prefix, rest) = spec.split_once('=').ok_or_else(|| {
        format!("upstream `{spec}`: write PREFIX=KIND:URL, e.g. lab=openai:http://10.0.0.5:8000/v1")
    })?;
    let prefix = prefix.trim();
    if !valid_prefix(prefix) {
        return Err(format!(
            "upstream `{spec}`: the prefix must be 1 to {PREFIX_MAX} lowercase letters, digits, '-' or '_'"
        ));
    }
    let (kind, url) = rest.split_once(':').ok_or_else(|| {
        format!("upstream `{spec}`: name its kind, openai: or ollama:, before the URL")
    })?;
    let kind = match kind.trim() {
        "openai" => UpstreamKind::OpenAi,
        "ollama" => UpstreamKind::Ollama,
        other => {
            return Err(format!(
                "upstream `{spec}`: unknown kind `{other}` (openai or ollama)"
            ))
        }
    };
    let url = url.trim().trim_end_matches('/');
    let host = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""))
        .unwrap_or("");
    if host.is_empty()
        || host.contains('@')
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "upstream `{spec}`: the URL must be http:// or https:// with a host (and no user:password@; keys go in {})",
            key_variable(prefix)
        ));
    }
    Ok(UpstreamSpec {
        prefix: prefix.into(),
        kind,
        url: url.into(),
    })
}

/// Read a comma-separated list of specs (`KINKO_UPSTREAMS`).
pub fn parse_list(list: &str) -> Result<Vec<UpstreamSpec>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_spec)
        .collect()
}

/// One model an upstream serves, as its listing says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpstreamModel {
    /// Its name on the upstream.
    pub name: String,
    /// Its context window, when the listing gives one.
    pub context_length: Option<usize>,
    /// Its file size in bytes (Ollama's listing), else 0.
    pub size: u64,
    /// Its weight format (Ollama's `details.quantization_level`), else empty.
    pub quantization: String,
    /// Its family (Ollama's `details.family`), else empty.
    pub family: String,
}

/// The models in an upstream's listing: OpenAI's `{"data": [{"id": …}]}`
/// (llama.cpp's server adds `meta.n_ctx_train`, vLLM `max_model_len`) or
/// Ollama's `{"models": [{"name": …}]}`. Names with control characters or
/// over 200 bytes are skipped; a listing of another shape is an error.
pub fn parse_models(kind: UpstreamKind, body: &[u8]) -> Result<Vec<UpstreamModel>, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the model list is not JSON: {e}"))?;
    let (list, name_key) = match kind {
        UpstreamKind::OpenAi => (value.get("data"), "id"),
        UpstreamKind::Ollama => (value.get("models"), "name"),
    };
    let list = list.and_then(Value::as_array).ok_or_else(|| {
        format!(
            "the model list has no `{}` array",
            match kind {
                UpstreamKind::OpenAi => "data",
                UpstreamKind::Ollama => "models",
            }
        )
    })?;
    let context = |m: &Value| {
        [
            m.get("max_model_len"),
            m.pointer("/meta/n_ctx_train"),
            m.get("context_length"),
        ]
        .into_iter()
        .flatten()
        .find_map(Value::as_u64)
        .filter(|&n| n > 0)
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
    };
    Ok(list
        .iter()
        .filter_map(|m| {
            let name = m.get(name_key).and_then(Value::as_str)?;
            (!name.is_empty() && name.len() <= 200 && !name.chars().any(char::is_control)).then(
                || UpstreamModel {
                    name: name.to_string(),
                    context_length: context(m),
                    size: m.get("size").and_then(Value::as_u64).unwrap_or(0),
                    quantization: short_text(m.pointer("/details/quantization_level")),
                    family: short_text(m.pointer("/details/family")),
                },
            )
        })
        .collect())
}

/// A short label from an upstream (at most 64 bytes, no control
/// characters), or empty.
fn short_text(v: Option<&Value>) -> String {
    v.and_then(Value::as_str)
        .filter(|s| s.len() <= 64 && !s.chars().any(char::is_control))
        .unwrap_or("")
        .to_string()
}

/// The context window in an Ollama `/api/show` answer: the
/// `model_info` entry `<architecture>.context_length`.
pub fn parse_show_context(body: &[u8]) -> Option<usize> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value
        .get("model_info")?
        .as_object()?
        .iter()
        .find(|(k, _)| k.ends_with(".context_length"))
        .and_then(|(_, v)| v.as_u64())
        .filter(|&n| n > 0)
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// Token counts an upstream reports at the end of an answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamUsage {
    /// Prompt tokens.
    pub prompt_tokens: Option<usize>,
    /// Generated tokens.
    pub completion_tokens: Option<usize>,
}

/// Times an upstream reports at the end of an answer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UpstreamTimings {
    /// Milliseconds spent reading the prompt.
    pub prompt_ms: Option<f64>,
    /// Milliseconds spent generating.
    pub decode_ms: Option<f64>,
}

/// One piece of an upstream's streamed answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Piece {
    /// New text (may be empty).
    pub text: String,
    /// Why the answer ended, when this piece ends it (`stop`, `length`, …).
    pub finish: Option<String>,
    /// Token counts, when given.
    pub usage: Option<UpstreamUsage>,
    /// Times, when given.
    pub timings: Option<UpstreamTimings>,
    /// The stream's own end marker (OpenAI's `[DONE]`, Ollama's `done: true`).
    pub end: bool,
}

/// The longest error message taken from an upstream.
const ERROR_MAX: usize = 300;

/// An upstream's error text made safe to show: its first line, control
/// characters removed, at most 300 bytes.
pub fn clean_message(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut out: String = line.chars().filter(|c| !c.is_control()).collect();
    crate::requests::shorten(&mut out, ERROR_MAX);
    out.trim().to_string()
}

/// The message of an upstream's error body, in either API's shape
/// (`{"error": "…"}`, `{"error": {"message": "…"}}`, FastAPI's
/// `{"detail": …}`), or its text.
pub fn error_message(body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        let e = v.get("error").or_else(|| v.get("detail"))?;
        match e {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("message").and_then(Value::as_str).map(String::from),
            other => Some(other.to_string()),
        }
    });
    clean_message(&from_json.unwrap_or_else(|| String::from_utf8_lossy(body).into_owned()))
}

fn count(v: Option<&Value>) -> Option<usize> {
    v.and_then(Value::as_u64)
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

fn millis(v: Option<&Value>, per_ms: f64) -> Option<f64> {
    v.and_then(Value::as_f64)
        .filter(|x| x.is_finite() && *x >= 0.0)
        .map(|x| x / per_ms)
}

/// Read one `data:` payload of an OpenAI-style chat stream: `[DONE]`, a
/// chunk with `choices[0].delta.content` and `finish_reason`, `usage`
/// (with `stream_options.include_usage`), llama.cpp's `timings`, or an
/// `error` object (returned as `Err`).
pub fn parse_openai_event(data: &str) -> Result<Piece, String> {
    let data = data.trim();
    if data == "[DONE]" {
        return Ok(Piece {
            end: true,
            ..Piece::default()
        });
    }
    let v: Value = serde_json::from_str(data)
        .map_err(|e| format!("the upstream sent an event that is not JSON: {e}"))?;
    if v.get("error").is_some() {
        return Err(error_message(data.as_bytes()));
    }
    let choice = v.pointer("/choices/0");
    let text = choice
        .and_then(|c| c.pointer("/delta/content").or_else(|| c.get("text")))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let finish = choice
        .and_then(|c| c.get("finish_reason"))
        .and_then(Value::as_str)
        .map(String::from);
    let usage = v
        .get("usage")
        .filter(|u| u.is_object())
        .map(|u| UpstreamUsage {
            prompt_tokens: count(u.get("prompt_tokens")),
            completion_tokens: count(u.get("completion_tokens")),
        });
    let timings = v
        .get("timings")
        .filter(|t| t.is_object())
        .map(|t| UpstreamTimings {
            prompt_ms: millis(t.get("prompt_ms"), 1.0),
            decode_ms: millis(t.get("predicted_ms"), 1.0),
        });
    Ok(Piece {
        text,
        finish,
        usage,
        timings,
        end: false,
    })
}

/// Read one line of an Ollama chat stream (`/api/chat`): a piece of
/// `message.content`, the final line (`done: true`, with `done_reason`,
/// counts and durations in nanoseconds), or `{"error": …}` (as `Err`).
pub fn parse_ollama_line(line: &[u8]) -> Result<Piece, String> {
    let v: Value = serde_json::from_slice(line)
        .map_err(|e| format!("the upstream sent a line that is not JSON: {e}"))?;
    if v.get("error").is_some() {
        return Err(error_message(line));
    }
    let text = v
        .pointer("/message/content")
        .or_else(|| v.get("response"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if v.get("done").and_then(Value::as_bool) != Some(true) {
        return Ok(Piece {
            text,
            ..Piece::default()
        });
    }
    Ok(Piece {
        text,
        finish: Some(
            v.get("done_reason")
                .and_then(Value::as_str)
                .unwrap_or("stop")
                .to_string(),
        ),
        usage: Some(UpstreamUsage {
            prompt_tokens: count(v.get("prompt_eval_count")),
            completion_tokens: count(v.get("eval_count")),
        }),
        timings: Some(UpstreamTimings {
            prompt_ms: millis(v.get("prompt_eval_duration"), 1e6),
            decode_ms: millis(v.get("eval_duration"), 1e6),
        }),
        end: true,
    })
}

/// The longest line an upstream's stream may send (one JSON piece).
pub const LINE_MAX: usize = 1 << 20;

/// Splits an upstream's streamed body into lines (NDJSON for Ollama, SSE
/// for OpenAI), whatever the chunking, with a bound on a line's length so a
/// broken upstream cannot fill memory.
#[derive(Debug, Default)]
pub struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    /// Add `bytes`; returns the lines they complete (without `\n` or `\r\n`).
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while let Some(at) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..at]);
            rest = &rest[at + 1..];
            let mut line = std::mem::take(&mut self.partial);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            out.push(
                String::from_utf8(line)
                    .map_err(|_| "the upstream sent a line that is not UTF-8".to_string())?,
            );
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > LINE_MAX {
            return Err(format!(
                "the upstream sent a line longer than {LINE_MAX} bytes"
            ));
        }
        Ok(out)
    }

    /// What is left once the body has ended (a last line without `\n`).
    pub fn finish(&mut self) -> Option<String> {
        let line = std::mem::take(&mut self.partial);
        let line = String::from_utf8(line).ok()?;
        let line = line.trim_end_matches('\r');
        (!line.trim().is_empty()).then(|| line.to_string())
    }
}

/// The payload of an SSE `data:` line (`data: x` or `data:x`); none for
/// other fields, comments and blank lines. OpenAI-style streams put one
/// JSON object on each `data:` line.
pub fn sse_data(line: &str) -> Option<&str> {
    let data = line.strip_prefix("data:")?;
    Some(data.strip_prefix(' ').unwrap_or(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_a_prefix_a_kind_and_a_url() {
        let s = parse_spec(" lab=openai:http://10.0.0.5:8000/v1/ ").unwrap();
        assert_eq!(
            s,
            UpstreamSpec {
                prefix: "lab".into(),
                kind: UpstreamKind::OpenAi,
                url: "http://10.0.0.5:8000/v1".into(),
            }
        );
        let list = parse_list(
            "lab=openai:http://a:1/v1, lab=ollama:https://b:11434,,gpu-2=ollama:http://c",
        )
        .unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[1].kind, UpstreamKind::Ollama);
        assert_eq!(list[2].prefix, "gpu-2");
        assert_eq!(key_variable("gpu-2"), "KINKO_UPSTREAM_KEY_GPU_2");
        assert!(parse_list("").unwrap().is_empty());
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (spec, says) in [
            ("http://a:1", "PREFIX=KIND:URL"),
            ("Lab=openai:http://a", "prefix"),
            ("-x=openai:http://a", "prefix"),
            ("lab=http://a", "unknown kind `http`"),
            ("lab=vllm:http://a", "unknown kind `vllm`"),
            ("lab=openai", "name its kind"),
            ("lab=openai:ftp://a", "http:// or https://"),
            ("lab=openai:http://", "with a host"),
            ("lab=openai:http://user:pw@a/v1", "KINKO_UPSTREAM_KEY_LAB"),
        ] {
            let e = parse_spec(spec).unwrap_err();
            assert!(e.contains(says), "{spec}: {e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn model_lists_of_both_kinds_are_read() {
        let openai = br#"{"object":"list","data":[
            {"id":"smollm2","object":"model","meta":{"n_ctx_train":8192}},
            {"id":"qwen","max_model_len":32768},
            {"id":"bad\nname"},{"id":""},{"x":1}]}"#;
        let models = parse_models(UpstreamKind::OpenAi, openai).unwrap();
        assert_eq!(
            models,
            vec![
                UpstreamModel {
                    name: "smollm2".into(),
                    context_length: Some(8192),
                    ..UpstreamModel::default()
                },
                UpstreamModel {
                    name: "qwen".into(),
                    context_length: Some(32768),
                    ..UpstreamModel::default()
                },
            ]
        );
        let ollama = br#"{"models":[{"name":"smollm2:135m","model":"smollm2:135m","size":1,
            "details":{"family":"llama","quantization_level":"Q8_0"}}]}"#;
        let models = parse_models(UpstreamKind::Ollama, ollama).unwrap();
        assert_eq!(models[0].name, "smollm2:135m");
        assert_eq!(models[0].context_length, None);
        assert_eq!(models[0].size, 1);
        assert_eq!(models[0].quantization, "Q8_0");
        assert_eq!(models[0].family, "llama");
        assert!(parse_models(UpstreamKind::Ollama, openai)
            .unwrap_err()
            .contains("`models`"));
        assert!(parse_models(UpstreamKind::OpenAi, b"<html>")
            .unwrap_err()
            .contains("not JSON"));
    }

    #[test]
    fn show_answers_give_the_context_window() {
        let body =
            br#"{"model_info":{"general.architecture":"llama","llama.context_length":8192}}"#;
        assert_eq!(parse_show_context(body), Some(8192));
        assert_eq!(parse_show_context(br#"{"model_info":{}}"#), None);
        assert_eq!(parse_show_context(b"nope"), None);
    }

    #[test]
    fn openai_stream_events_are_read() {
        let p = parse_openai_event(
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}"#,
        )
        .unwrap();
        assert_eq!(p.text, "Hi");
        assert_eq!(p.finish, None);
        let p = parse_openai_event(
            r#"{"choices":[{"delta":{},"finish_reason":"length"}],"usage":{"prompt_tokens":9,"completion_tokens":4},"timings":{"prompt_ms":12.5,"predicted_ms":80}}"#,
        )
        .unwrap();
        assert_eq!(p.finish.as_deref(), Some("length"));
        assert_eq!(
            p.usage,
            Some(UpstreamUsage {
                prompt_tokens: Some(9),
                completion_tokens: Some(4)
            })
        );
        assert_eq!(p.timings.unwrap().decode_ms, Some(80.0));
        assert!(parse_openai_event(" [DONE] ").unwrap().end);
        let e = parse_openai_event(
            r#"{"error":{"message":"context too long\nsecond line","code":400}}"#,
        )
        .unwrap_err();
        assert_eq!(e, "context too long");
        assert!(parse_openai_event("{").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn ollama_stream_lines_are_read() {
        let p =
            parse_ollama_line(br#"{"message":{"role":"assistant","content":"Hi"},"done":false}"#)
                .unwrap();
        assert_eq!(p.text, "Hi");
        assert!(!p.end);
        let p = parse_ollama_line(
            br#"{"message":{"content":""},"done":true,"done_reason":"length","prompt_eval_count":5,"eval_count":3,"prompt_eval_duration":2000000,"eval_duration":30000000}"#,
        )
        .unwrap();
        assert!(p.end);
        assert_eq!(p.finish.as_deref(), Some("length"));
        assert_eq!(p.usage.unwrap().completion_tokens, Some(3));
        assert_eq!(p.timings.unwrap().prompt_ms, Some(2.0));
        assert_eq!(p.timings.unwrap().decode_ms, Some(30.0));
        assert_eq!(
            parse_ollama_line(br#"{"error":"model 'x' not found"}"#).unwrap_err(),
            "model 'x' not found"
        );
    }

    #[test]
    fn error_bodies_of_every_shape_are_read() {
        assert_eq!(error_message(br#"{"error":"bad key"}"#), "bad key");
        assert_eq!(
            error_message(br#"{"error":{"message":"Invalid API Key","type":"x"}}"#),
            "Invalid API Key"
        );
        assert_eq!(
            error_message(br#"{"detail":"Not authenticated"}"#),
            "Not authenticated"
        );
        assert_eq!(error_message(b"<html>\n<b>502</b>"), "<html>");
        let long = "x".repeat(1000);
        assert!(error_message(long.as_bytes()).len() <= ERROR_MAX + 3);
        assert_eq!(clean_message("a\u{7}b"), "ab");
    }

    #[test]
    fn lines_are_split_whatever_the_chunks() {
        let mut lines = Lines::default();
        assert_eq!(lines.push(b"data: {\"a\"").unwrap(), Vec::<String>::new());
        assert_eq!(
            lines.push(b":1}\r\n\r\ndata: [DONE]\n").unwrap(),
            vec!["data: {\"a\":1}", "", "data: [DONE]"]
        );
        assert_eq!(
            lines.push(b"{\"done\":true}").unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(lines.finish().as_deref(), Some("{\"done\":true}"));
        assert_eq!(lines.finish(), None);
        // A multi-byte character split between chunks.
        let word = "日本".as_bytes();
        assert!(lines.push(&word[..2]).unwrap().is_empty());
        assert_eq!(
            lines.push(&[&word[2..], b"\n"].concat()).unwrap(),
            vec!["日本"]
        );
        assert!(lines.push(&vec![b'x'; LINE_MAX + 1]).is_err());
        assert!(Lines::default().push(b"\xff\n").is_err());
        assert_eq!(sse_data("data: [DONE]"), Some("[DONE]"));
        assert_eq!(sse_data("data:{}"), Some("{}"));
        assert_eq!(sse_data(": keep-alive"), None);
        assert_eq!(sse_data("event: x"), None);
    }
}
