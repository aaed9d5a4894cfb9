//! `GET /api/models`: the installed models, for the picker.

use crate::AppState;
use app::api::{ModelList, ModelPromptCost, SamplingDefaults};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

/// The model routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/models", get(list_models))
}

async fn list_models(State(state): State<AppState>) -> Json<ModelList> {
    let models = state.engine.list_models().await;
    let mut prompt_costs = Vec::new();
    for m in &models {
        if let Some(cost) = state.engine.prompt_cost(&m.name).await {
            prompt_costs.push(ModelPromptCost {
                model: m.name.clone(),
                cost,
            });
        }
    }
    Json(ModelList {
        models,
        default_model: state.config.default_model.clone(),
        default_num_ctx: state.config.default_num_ctx,
        prompt_costs,
        defaults: SamplingDefaults {
            temperature: state.config.default_temperature,
            top_p: state.config.default_top_p,
            top_k: state.config.default_top_k,
            max_tokens: state.config.default_max_tokens,
        },
    })
}
