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
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamModel {
    /// Its name on the upstream.
    pub name: String,
    /// Its context window, when the listing gives one.
    pub context_length: Option<usize>,
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
                },
            )
        })
        .collect())
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
                    context_length: Some(8192)
                },
                UpstreamModel {
                    name: "qwen".into(),
                    context_length: Some(32768)
                },
            ]
        );
        let ollama = br#"{"models":[{"name":"smollm2:135m","model":"smollm2:135m","size":1}]}"#;
        let models = parse_models(UpstreamKind::Ollama, ollama).unwrap();
        assert_eq!(models[0].name, "smollm2:135m");
        assert_eq!(models[0].context_length, None);
        assert!(parse_models(UpstreamKind::Ollama, openai)
            .unwrap_err()
            .contains("`models`"));
        assert!(parse_models(UpstreamKind::OpenAi, b"<html>")
            .unwrap_err()
            .contains("not JSON"));
    }
}
