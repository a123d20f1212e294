//! The unauthenticated supporting calls (SPEC 3.5): liveness, readiness, metrics and the
//! OpenAPI document. Ready means PostgreSQL answers; a broker outage only degrades publishing
//! (mail waits in the outbox), so it never makes the API unready.

use std::sync::OnceLock;
use std::time::Duration;

use crate::state::AppState;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "Operations",
    responses((status = 200, description = "Alive", body = Object, example = json!({"status": "ok"}))))]
pub(super) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// PostgreSQL reachable; RabbitMQ `ok` or `degraded` (mail waits in the outbox).
#[utoipa::path(get, path = "/readyz", tag = "Operations",
    responses(
        (status = 200, description = "Ready", body = Object, example = json!({"database": "ok", "broker": "ok"})),
        (status = 503, description = "PostgreSQL unreachable", body = Object, example = json!({"database": "unavailable", "broker": "degraded"}))))]
pub(super) async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = common::db::ping(&state.pool, Duration::from_secs(2)).await;
    let broker = if state.publisher.is_healthy() {
        "ok"
    } else {
        "degraded"
    };
    let body = json!({ "database": if database { "ok" } else { "unavailable" }, "broker": broker });
    let status = if database {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// Prometheus metrics (OpenMetrics text format).
#[utoipa::path(get, path = "/metrics", tag = "Operations",
    responses((status = 200, description = "Metrics", content_type = "application/openmetrics-text", body = String)))]
pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = state.metrics.scrape(&state.pool).await;
    (
        [(header::CONTENT_TYPE, common::metrics::CONTENT_TYPE)],
        body,
    )
}

/// This document.
async fn openapi() -> impl IntoResponse {
    static DOC: OnceLock<String> = OnceLock::new();
    let doc = DOC.get_or_init(|| super::openapi::document().to_string());
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str())
}
