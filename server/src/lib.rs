//! kinko's server: the HTTP router, the engines behind it, and the model
//! store. `main.rs` parses the command line and calls into here.

pub mod config;
pub mod engine;
pub mod error;
pub mod history;
pub mod metrics;
pub mod models;
pub mod routes;
pub mod sse;

use crate::config::ServeConfig;
use crate::engine::ChatEngine;
use crate::error::ApiError;
use crate::metrics::Metrics;
use app::{shell, App};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRef, Request, State};
use axum::http::Uri;
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
    /// Turns true when the server begins shutting down.
    #[from_ref(skip)]
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    #[from_ref(skip)]
    shutdown_tx: Arc<tokio::sync::watch::Sender<bool>>,
}

impl AppState {
    /// State for `engine` with `config`; the UI bundle is looked up under
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
        let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
        Self {
            engine,
            metrics,
            config: Arc::new(config),
            engine_name,
            leptos_options,
            shutdown,
            shutdown_tx: Arc::new(shutdown_tx),
        }
    }

    /// Begin shutting down: open answers end with a final event.
    pub fn begin_shutdown(&self) {
        let _ = self.shutdown_tx.send(true);
    }
}

/// The HTTP API alone (no UI): chat stream, models, health, metrics.
pub fn api_router(state: AppState) -> Router {
    let body_limit = state.config.body_limit;
    Router::new()
        .merge(routes::chat::router())
        .merge(routes::models::router())
        .merge(routes::health::router())
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .fallback(|uri: Uri| async move { ApiError::NotFound(uri.path().to_string()) })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// The whole application: the API plus the server-rendered, hydrated UI and
/// its static files.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.body_limit;
    let routes = generate_route_list(App);
    let options = state.leptos_options.clone();
    Router::new()
        .merge(routes::chat::router())
        .merge(routes::models::router())
        .merge(routes::health::router())
        .leptos_routes(&state, routes, move || shell(options.clone()))
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// API paths get a JSON 404; everything else is a static file or the UI's
/// own not-found page.
async fn fallback(uri: Uri, State(state): State<AppState>, req: Request<Body>) -> Response {
    let path = uri.path();
    if path.starts_with("/api/") || path.starts_with("/v1/") || path == "/metrics" {
        return ApiError::NotFound(path.to_string()).into_response();
    }
    let handler = leptos_axum::file_and_error_handler::<AppState, _>(shell);
    handler(uri, State(state), req).await
}
