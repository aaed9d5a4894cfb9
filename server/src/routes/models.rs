//! `GET /api/models`: the installed models, for the picker.

use crate::AppState;
use app::api::ModelList;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

/// The model routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/models", get(list_models))
}

async fn list_models(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        models: state.engine.list_models().await,
    })
}
