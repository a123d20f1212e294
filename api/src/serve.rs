//! `api serve`: migrations, the HTTP server (JSON and gRPC on one port), the after-commit
//! publisher and the outbox relay, and a graceful shutdown that drains requests and flushes
//! the publisher.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::amqp::Publisher;
use common::commands::Commands;
use common::metrics::{Metrics, Process};
use common::outbox::{self, OutboxPublisher};
use tokio::sync::watch;

use crate::cli::ServeArgs;
use crate::grpc::health::Readiness;
use crate::http::cors::Cors;
use crate::state::AppState;

/// Ids waiting for the publisher before new ones are left to the relay.
const HANDOFF_CAPACITY: usize = 10_000;
/// How often the broker link is re-tried while it is down.
const BROKER_PROBE_INTERVAL: Duration = Duration::from_secs(2);

pub async fn run(args: ServeArgs) -> Result<(), String> {
    let cors = Cors::from_setting(&args.cors_allowed_origins).map_err(|e| e.to_string())?;
    let keys = args.keys.keys().map_err(|e| e.to_string())?;
    let policy = args.codes.policy().map_err(|e| e.to_string())?;
    if args.run_migrations {
        let url = args.database.database_url.clone();
        let applied = tokio::task::spawn_blocking(move || common::db::prepare(&url))
            .await
            .map_err(|e| e.to_string())??;
        tracing::info!(applied, "database ready");
    }
    let pool = common::db::pool(
        &args.database.database_url,
        args.database.database_pool_size,
    );
    let metrics = Arc::new(Metrics::new(Process::Api));
    let publisher = Arc::new(
        Publisher::new(args.amqp.amqp_url.clone(), "contact-email-api")
            .with_reconnect_counter(metrics.amqp_reconnects.clone()),
    );
    let (outbox_publisher, publisher_task) =
        OutboxPublisher::start(pool.clone(), publisher.clone(), HANDOFF_CAPACITY);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let relay = tokio::spawn(outbox::run_relay(
        pool.clone(),
        publisher.clone(),
        shutdown_rx.clone(),
    ));
    let probe = tokio::spawn(keep_broker_link(publisher.clone(), shutdown_rx));

    let state = AppState {
        pool,
        commands: Arc::new(Commands { keys, policy }),
        outbox: outbox_publisher,
        publisher: publisher.clone(),
        metrics,
    };
    let listener = tokio::net::TcpListener::bind(args.api_addr)
        .await
        .map_err(|e| format!("cannot listen on API_ADDR {}: {e}", args.api_addr))?;
    let local: SocketAddr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(addr = %local, "api listening");

    // grpc.health.v1.Health follows readiness from the first answer on, and turns
    // NOT_SERVING as soon as the shutdown starts.
    let readiness = Readiness::new().await;
    readiness.probe(&state.pool).await;
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let health = tokio::spawn(readiness.clone().follow(state.pool.clone(), async move {
        let _ = stopping_rx.await;
    }));
    let grpc = crate::grpc::router(state.clone(), &readiness).map_err(|e| e.to_string())?;
    let app = crate::http::app(state, grpc, cors);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            let _ = stopping_tx.send(());
        })
        .await
        .map_err(|e| format!("server failed: {e}"))?;
    let _ = tokio::time::timeout(Duration::from_secs(5), health).await;

    // Requests are drained; the handlers' clones of the hand-off sender are gone with the
    // router, so the publisher task finishes what it holds and ends.
    tracing::info!("draining the outbox publisher");
    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), publisher_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), relay).await;
    probe.abort();
    publisher.close().await;
    tracing::info!("api stopped");
    Ok(())
}

/// Checks the broker link every few seconds and reconnects it when it is down, so readiness
/// says the truth and the topology exists before the first publish.
async fn keep_broker_link(publisher: Arc<Publisher>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(e) = publisher.ensure_connected().await {
            tracing::debug!(error = %e, "RabbitMQ not reachable");
        }
        tokio::select! {
            _ = tokio::time::sleep(BROKER_PROBE_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
}
