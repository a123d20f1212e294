//! Liveness and readiness (SPEC 3.5). Ready means PostgreSQL answers; a broker outage only
//! degrades publishing (mail waits in the outbox), so it never makes the API unready.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
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
