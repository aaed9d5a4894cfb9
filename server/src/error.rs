//! `ApiError`: every error a request can meet before streaming starts, each
//! with its status, written as `{"error": {"code", "message"}}`.

use app::api::ErrorBody;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;

use crate::engine::{EngineError, UpstreamFailure};

/// An error answered with a status and a JSON body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not valid JSON.
    #[error("{0}")]
    MalformedJson(String),
    /// 413: the body is larger than the limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: the body is not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: the JSON is well formed but the request is not valid.
    #[error("{message}")]
    Invalid {
        /// Machine-readable code, e.g. `invalid_request`, `context_overflow`.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// 404: no installed model has this name.
    #[error("model `{0}` is not installed")]
    UnknownModel(String),
    /// 400: the model is of another kind than the request needs (a chat
    /// request to an embedding model, or the other way round).
    #[error("{0}")]
    WrongKind(String),
    /// 400: the request needs something the model cannot do (tools,
    /// thinking, vision), in Ollama's words.
    #[error("{0}")]
    Unsupported(String),
    /// 400: a request that cannot be taken as sent (an upload whose digest
    /// does not match, a file that is not a model).
    #[error("{message}")]
    BadRequest {
        /// Machine-readable code, e.g. `digest_mismatch`.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// 404: no such route.
    #[error("no route for {0}")]
    NotFound(String),
    /// 405: the route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 401: no API key, or a wrong one.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the Host or Origin is not allowed.
    #[error("{message}")]
    Forbidden {
        /// `host_not_allowed` or `origin_not_allowed`.
        code: &'static str,
        /// What is wrong and how to allow it.
        message: String,
    },
    /// 503: every generation slot and queue place for the model is taken.
    #[error("model `{model}` is busy ({running} answering, {waiting} waiting); retry in {retry_after} s")]
    Busy {
        /// The model.
        model: String,
        /// Generations running.
        running: usize,
        /// Requests waiting.
        waiting: usize,
        /// Seconds to wait before retrying.
        retry_after: u64,
    },
    /// 503: the engine could not load the model or is unavailable.
    #[error("{0}")]
    Unavailable(String),
    /// 500: the engine failed before the stream started.
    #[error("{0}")]
    Engine(String),
    /// 502 or 503: an upstream engine failed, refused kinko's key, or
    /// cannot be reached.
    #[error("{message}")]
    Upstream {
        /// 502 (it answered badly) or 503 (unreachable).
        status: StatusCode,
        /// What happened.
        message: String,
    },
}

impl ApiError {
    /// A 422 with code `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::Invalid {
            code: "invalid_request",
            message: message.into(),
        }
    }

    /// A 503 for `model`, whose slots and queue are all taken.
    pub fn busy(model: &str, busy: crate::limits::Busy) -> Self {
        ApiError::Busy {
            model: model.to_string(),
            running: busy.running,
            waiting: busy.waiting,
            retry_after: 2,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_)
            | ApiError::WrongKind(_)
            | ApiError::Unsupported(_)
            | ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UnknownModel(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::Busy { .. } | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Engine(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Upstream { status, .. } => *status,
        }
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Invalid { code, .. } => code,
            ApiError::UnknownModel(_) => "unknown_model",
            ApiError::WrongKind(_) => "wrong_model_kind",
            ApiError::Unsupported(_) => "unsupported_capability",
            ApiError::BadRequest { code, .. } => code,
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden { code, .. } => code,
            ApiError::Busy { .. } => "busy",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Engine(_) => "engine_error",
            ApiError::Upstream { .. } => "upstream",
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::UnknownModel(name) => ApiError::UnknownModel(name),
            e @ EngineError::Load { .. } => ApiError::Unavailable(e.to_string()),
            e @ EngineError::Generation(_) => ApiError::Engine(e.to_string()),
            EngineError::Upstream { kind, message } => ApiError::Upstream {
                status: match kind {
                    UpstreamFailure::Unreachable => StatusCode::SERVICE_UNAVAILABLE,
                    UpstreamFailure::Refused | UpstreamFailure::Failed => StatusCode::BAD_GATEWAY,
                },
                message,
            },
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let text = kinko_parse::requests::one_line(&rejection.body_text());
        match rejection {
            JsonRejection::JsonDataError(_) => ApiError::invalid(text),
            JsonRejection::JsonSyntaxError(_) => ApiError::MalformedJson(text),
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
                "expected a request with `Content-Type: application/json`".into(),
            ),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge("the request body is larger than the limit".into())
            }
            _ => ApiError::MalformedJson(text),
        }
    }
}

/// The longest error message a client is shown.
const MAX_MESSAGE: usize = 400;

/// What a client may see of an error message: its first line only (a
/// backtrace never follows), each Rust path (`candle_core::error::Error`)
/// cut to its last name, at most [`MAX_MESSAGE`] bytes. The whole text
/// belongs in the server log.
pub fn public_message(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    // `a::b` is a path when `::` joins a name (or `>`) to a name (or `<`);
    // `[::1]:80` is not.
    let is_path = |word: &str| {
        word.match_indices("::").any(|(at, _)| {
            let before = word[..at].chars().next_back();
            let after = word[at + 2..].chars().next();
            before.is_some_and(|c| ident(c) || c == '>')
                && after.is_some_and(|c| ident(c) || c == '<')
        })
    };
    let words: Vec<&str> = line
        .split(' ')
        .map(|w| match w.rsplit_once("::") {
            Some((_, last)) if is_path(w) => last,
            _ => w,
        })
        .collect();
    let mut out = words.join(" ").trim().to_string();
    kinko_parse::requests::shorten(&mut out, MAX_MESSAGE);
    out
}

/// Every string in an error body, through [`public_message`].
fn scrub(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => *s = public_message(s),
        serde_json::Value::Array(items) => items.iter_mut().for_each(scrub),
        serde_json::Value::Object(map) => map.values_mut().for_each(scrub),
        _ => {}
    }
}

impl From<crate::models::StoreError> for ApiError {
    /// Client mistakes are 422s saying what is wrong; file-system trouble is
    /// a 500 whose details (server paths) stay in the log.
    fn from(err: crate::models::StoreError) -> Self {
        use crate::models::StoreError;
        match err {
            StoreError::InvalidName(_)
            | StoreError::InvalidDigest(_)
            | StoreError::NotGguf { .. }
            | StoreError::NotEmbedding { .. }
            | StoreError::NotFound(_) => ApiError::invalid(err.to_string()),
            StoreError::EmbeddingModel(..) => ApiError::WrongKind(err.to_string()),
            StoreError::Io { .. } => {
                tracing::error!(error = %err, "model store failure");
                ApiError::Engine("the model store could not be changed (see the server log)".into())
            }
        }
    }
}

/// A blocking task that died (a panic): the details go to the log.
pub fn task_failed(err: tokio::task::JoinError) -> ApiError {
    tracing::error!(error = %err, "a blocking task failed");
    ApiError::Engine("internal error (see the server log)".into())
}

impl ApiError {
    /// This error's status, `Retry-After` and log line, with `body` (each
    /// API writes errors in its own shape). Every string in `body` goes
    /// through [`public_message`].
    pub fn respond_with(self, mut body: serde_json::Value) -> Response {
        let status = self.status();
        let retry_after = match &self {
            ApiError::Busy { retry_after, .. } => Some(*retry_after),
            ApiError::Unavailable(_) => Some(5),
            _ => None,
        };
        if matches!(self, ApiError::Busy { .. }) {
            tracing::warn!(error = %self, "refused: busy");
        } else if status.is_server_error() {
            tracing::error!(code = self.code(), error = %self, "request failed");
        }
        scrub(&mut body);
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody::new(self.code(), self.to_string());
        self.respond_with(serde_json::to_value(body).unwrap_or_default())
    }
}

/// `Json` whose rejection is an [`ApiError`], so malformed bodies get the
/// same error shape as everything else.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(ApiJson(value))
    }
}

#[cfg(test)]
mod tests {
    use super::public_message;

    #[test]
    fn clients_see_one_line_without_rust_paths() {
        let leaky = "cannot find tensor token_embd.weight\n   0: candle_core::error::Error::bt\n             at /rustc/abc/library/std/src/backtrace.rs:331:13";
        assert_eq!(
            public_message(leaky),
            "cannot find tensor token_embd.weight"
        );
        assert_eq!(
            public_message("load failed: candle_core::error::Error::WithBacktrace { inner }"),
            "load failed: WithBacktrace { inner }"
        );
        let generic = public_message("at mistralrs_core::pipeline::<impl Foo>::load: bad");
        assert!(!generic.contains("::"), "{generic}");
        assert_eq!(
            public_message("cannot connect to [::1]:8080"),
            "cannot connect to [::1]:8080"
        );
        assert_eq!(public_message("model `a:b` is busy"), "model `a:b` is busy");
        let long = "x".repeat(5000);
        assert!(public_message(&long).len() <= 400 + '…'.len_utf8());
        assert_eq!(public_message("\n\n  second line  \nthird"), "second line");
    }
}
