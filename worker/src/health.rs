//! The worker's HTTP endpoints on WORKER_ADDR: `/healthz` (alive), `/readyz` (consuming,
//! PostgreSQL reachable, and no SMTP configuration fault) and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use common::db::PgPool;
use common::metrics::Metrics;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Clone)]
pub struct HealthState {
    pub pool: PgPool,
    pub consuming: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
    pub smtp: Arc<crate::transport::SmtpHealth>,
}

/// Serves the endpoints on `listener` until `stop` turns true (or its sender is gone).
pub async fn serve(listener: TcpListener, state: HealthState, mut stop: watch::Receiver<bool>) {
    let _ = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        })
        .await;
}

pub fn router(state: HealthState) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn metrics(State(state): State<HealthState>) -> impl IntoResponse {
    let body = state.metrics.scrape(&state.pool).await;
    (
        [(header::CONTENT_TYPE, common::metrics::CONTENT_TYPE)],
        body,
    )
}

async fn readyz(State(state): State<HealthState>) -> (StatusCode, Json<Value>) {
    let database = common::db::ping(&state.pool, Duration::from_secs(2)).await;
    let consuming = state.consuming.load(Ordering::Relaxed);
    let smtp_fault = state.smtp.failing();
    let mut body = json!({
        "database": if database { "ok" } else { "unavailable" },
        "broker": if consuming { "consuming" } else { "not consuming" },
        "smtp": if smtp_fault.is_some() { "failing" } else { "ok" },
    });
    if let Some(reason) = &smtp_fault {
        body["reason"] = json!(reason);
    }
    let status = if database && consuming && smtp_fault.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
