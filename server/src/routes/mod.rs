//! HTTP routes, one module per area; `crate::router` merges them.

pub mod chat;
pub mod health;
pub mod models;
pub mod ollama;
pub mod openai;
