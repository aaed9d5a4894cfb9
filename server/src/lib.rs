//! kinko's server: the HTTP router, the engines behind it, and the model
//! store. `main.rs` parses the command line and calls into here.

pub mod cli;
pub mod config;
pub mod csp;
pub mod embed;
pub mod engine;
pub mod error;
pub mod history;
pub mod limits;
pub mod metrics;
pub mod models;
pub mod net;
pub mod routes;
pub mod security;
pub mod sse;
pub mod threads;

use crate::config::ServeConfig;
use crate::engine::ChatEngine;
use crate::error::ApiError;
use crate::limits::Admission;
use crate::metrics::Metrics;
use crate::models::ModelStore;
use crate::security::Security;
use app::App;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRef, Request, State};
use axum::http::Uri;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::Router;
use leptos::config::LeptosOptions;
use leptos_axum::{generate_route_list, LeptosRoutes};
use std::sync::Arc;
use tower_http::trace::TraceLayer;

/// Everything a handler may need; cheap to clone.
#[derive(Clone, FromRef)]
pub struct AppState {
    /// The inference engine.
    pub engine: Arc<dyn ChatEngine>,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    /// Settings of `kinko serve`.
    pub config: Arc<ServeConfig>,
    /// Which engine this is, for `/health`.
    pub engine_name: &'static str,
    /// Where the UI bundle lives and how it is named.
    pub leptos_options: LeptosOptions,
    /// Generation slots and queues per model.
    pub admission: Arc<Admission>,
    /// Host, Origin and API key checks.
    pub security: Arc<Security>,
    /// The model store, when the engine serves one (not the fake engine).
    pub store: Option<ModelStore>,
    /// The embedding models, when the engine serves a store.
    pub embeddings: Option<Arc<crate::engine::embeddings::Embeddings>>,
    /// The upstream engines, when there are any (for `/health`).
    pub upstreams: Option<crate::engine::remote::Upstreams>,
    /// Turns true when the server begins shutting down.
    #[from_ref(skip)]
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    #[from_ref(skip)]
    shutdown_tx: Arc<tokio::sync::watch::Sender<bool>>,
}

impl AppState {
    /// State for `engine` with `config` (its `api_key`, if any, is the key
    /// clients must present); the UI bundle is looked up under
    /// `config.site_root`.
    pub fn new(
        engine: Arc<dyn ChatEngine>,
        engine_name: &'static str,
        metrics: Metrics,
        config: ServeConfig,
    ) -> Self {
        let leptos_options = LeptosOptions::builder()
            .output_name("kinko")
            .site_root(config.site_root.to_string_lossy().to_string())
            .site_pkg_dir("pkg")
            .site_addr(config.addr)
            .build();
        let security = Security::new(
            config.addr,
            config.api_key.as_deref(),
            &config.allowed_origins,
            &config.allowed_hosts,
        );
        let admission = Admission::new(config.max_concurrent_per_model, config.max_queue_per_model);
        let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
        Self {
            engine,
            metrics,
            config: Arc::new(config),
            engine_name,
            leptos_options,
            admission: Arc::new(admission),
            security: Arc::new(security),
            store: None,
            embeddings: None,
            upstreams: None,
            shutdown,
            shutdown_tx: Arc::new(shutdown_tx),
        }
    }

    /// The same state, with the model store the engine serves from.
    pub fn with_store(mut self, store: ModelStore) -> Self {
        self.store = Some(store);
        self
    }

    /// The same state, with the embedding models of its store.
    pub fn with_embeddings(mut self, embeddings: crate::engine::embeddings::Embeddings) -> Self {
        self.embeddings = Some(Arc::new(embeddings));
        self
    }

    /// The same state, with the upstreams the engine fronts (shown by
    /// `/health`).
    pub fn with_upstreams(mut self, upstreams: crate::engine::remote::Upstreams) -> Self {
        self.upstreams = Some(upstreams);
        self
    }

    /// Begin shutting down: open answers end with a final event.
    pub fn begin_shutdown(&self) {
        let _ = self.shutdown_tx.send(true);
    }
}

fn api_routes() -> Router<AppState> {
    Router::new()
        .merge(routes::chat::router())
        .merge(routes::models::router())
        .merge(routes::health::router())
        .merge(routes::ollama::router())
        .merge(routes::openai::router())
        .merge(routes::embed::router())
        // Answers end when their client hangs up, even mid-prompt.
        .layer(axum::middleware::from_fn(net::end_with_client))
}

/// The layers every request passes: Host and Origin checks (outermost), CORS
/// for allowed origins, a body announced over the limit refused, the API
/// key, and the body limit while reading.
fn secured(router: Router, state: &AppState) -> Router {
    let sec = state.security.clone();
    router
        .layer(from_fn_with_state(sec.clone(), security::require_key))
        .layer(from_fn_with_state(
            state.config.body_limit,
            refuse_announced_oversize,
        ))
        .layer(sec.cors_layer())
        .layer(from_fn_with_state(sec, security::check_host_and_origin))
        .layer(DefaultBodyLimit::max(state.config.body_limit))
}

/// A request whose `Content-Length` announces more than the body limit gets
/// 413 at once, before any of its body is read, and its connection closes.
async fn refuse_announced_oversize(
    State(limit): State<usize>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let announced = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    // Uploads of model files have their own, larger limit.
    let upload = req.uri().path().starts_with("/api/blobs/");
    match announced {
        Some(n) if n > limit as u64 && !upload => {
            let err = ApiError::PayloadTooLarge(format!(
                "the request body ({n} bytes) is larger than the limit ({limit} bytes)"
            ));
            let mut response = routes::error_for_path(req.uri().path(), err);
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            response
        }
        _ => next.run(req).await,
    }
}

/// The HTTP API alone (no UI pages): chat stream, models, health, metrics,
/// login, with every guard.
pub fn api_router(state: AppState) -> Router {
    let router = api_routes()
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(|uri: Uri| async move {
            routes::error_for_path(uri.path(), ApiError::NotFound(uri.path().to_string()))
        })
        .with_state(state.clone())
        .merge(security::login_router(state.security.clone()))
        .layer(axum::middleware::from_fn(routes::health::server_probe));
    secured(router, &state)
}

/// 405 in the shape of the API the path belongs to.
async fn method_not_allowed(uri: Uri) -> Response {
    routes::error_for_path(uri.path(), ApiError::MethodNotAllowed)
}

/// The whole application: the API plus the server-rendered, hydrated UI and
/// its static files.
pub fn router(state: AppState) -> Router {
    let routes = generate_route_list(App);
    let options = state.leptos_options.clone();
    let router = api_routes()
        .leptos_routes(&state, routes, move || csp::page_shell(options.clone()))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(fallback)
        .with_state(state.clone())
        .merge(security::login_router(state.security.clone()))
        .layer(axum::middleware::from_fn(routes::health::server_probe));
    secured(router, &state)
        .layer(axum::middleware::from_fn(csp::default_policy))
        .layer(TraceLayer::new_for_http())
}

const NOT_FOUND_PAGE: &str = "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Not found · kinko</title><link rel=\"stylesheet\" href=\"/pkg/kinko.css\"></head>\
<body><p class=\"not-found\">Page not found. <a href=\"/\">Back to the chat</a></p></body></html>";

/// API paths get a JSON 404; everything else is a static file or the UI's
/// own not-found page.
async fn fallback(uri: Uri, State(state): State<AppState>, req: Request<Body>) -> Response {
    let path = uri.path();
    if path.starts_with("/api/") || path.starts_with("/v1/") || path == "/metrics" {
        return routes::error_for_path(path, ApiError::NotFound(path.to_string()));
    }
    // A static file of the UI bundle, or the not-found page (the chat page
    // lives at `/` only, so nothing is rendered for other paths).
    let files = tower_http::services::ServeDir::new(state.leptos_options.site_root.as_ref());
    match tower::ServiceExt::oneshot(files, req).await {
        Ok(response) if response.status() != axum::http::StatusCode::NOT_FOUND => {
            response.map(Body::new)
        }
        _ => (
            axum::http::StatusCode::NOT_FOUND,
            axum::response::Html(NOT_FOUND_PAGE),
        )
            .into_response(),
    }
}
