//! `ApiError`: every error a request can meet before streaming starts, each
//! with its status, written as `{"error": {"code", "message"}}`.

use app::api::ErrorBody;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;

use crate::engine::EngineError;

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
}

impl ApiError {
    /// A 422 with code `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::Invalid {
            code: "invalid_request",
            message: message.into(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UnknownModel(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::Busy { .. } | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Engine(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden { code, .. } => code,
            ApiError::Busy { .. } => "busy",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Engine(_) => "engine_error",
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::UnknownModel(name) => ApiError::UnknownModel(name),
            e @ EngineError::Load { .. } => ApiError::Unavailable(e.to_string()),
            e @ EngineError::Generation(_) => ApiError::Engine(e.to_string()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let text = rejection.body_text();
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

impl ApiError {
    /// This error's status, `Retry-After` and log line, with `body` (each
    /// API writes errors in its own shape).
    pub fn respond_with(self, body: serde_json::Value) -> Response {
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
