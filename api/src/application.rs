//! `api serve` as a value. [`Application::build`] checks the configuration, applies the
//! migrations, binds the port and assembles the router; [`Application::run_until`] serves
//! JSON and gRPC on that port with the after-commit publisher, the outbox relay and the
//! broker probe beside it, until the [`Shutdown`], then drains requests and flushes the
//! publisher. `main` runs it until SIGTERM/SIGINT; the in-process tests on port 0 until the
//! test ends.

use secrecy::ExposeSecret;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use common::amqp::Publisher;
use common::commands::Commands;
use common::config::{DatabaseArgs, StartupError};
use common::metrics::{Metrics, Process};
use common::outbox::{self, OutboxPublisher};
use common::shutdown::Shutdown;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::cli::ServeArgs;
use crate::grpc::health::Readiness;
use crate::http::cors::Cors;
use crate::http::metrics::HttpMetrics;
use crate::state::AppState;

/// Ids waiting for the publisher before new ones are left to the relay.
const HANDOFF_CAPACITY: usize = 10_000;
/// How often the broker link is re-tried while it is down.
const BROKER_PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// The API, built and bound, not serving yet.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    state: AppState,
    router: Router,
    readiness: Readiness,
    /// Publishes what the handlers hand over; ends when the last handler's sender is gone.
    publisher_task: JoinHandle<()>,
    /// Keeps the broker link up from the start, so readiness is true by the first request.
    probe: JoinHandle<()>,
    /// Stops the probe and, once serving, the outbox relay (also when dropped).
    stop_background: watch::Sender<bool>,
}

impl Application {
    /// Everything `api serve` does before it serves. A refused setting is
    /// [`StartupError::Configuration`]; a database or port that cannot be had is
    /// [`StartupError::Operational`]. `API_ADDR` with port 0 binds a free port: see
    /// [`Application::port`].
    pub async fn build(config: ServeArgs) -> Result<Self, StartupError> {
        let cors = Cors::from_setting(&config.cors_allowed_origins)?;
        let keys = config.keys.keys()?;
        let policy = config.codes.policy()?;
        if config.run_migrations {
            let applied = migrate(&config.database).await?;
            tracing::info!(applied, "database ready");
        }
        let pool = common::db::pool(
            config.database.database_url.expose_secret(),
            config.database.database_pool_size,
        );
        let http_metrics = HttpMetrics::default();
        let metrics = Arc::new(Metrics::with_own(Process::Api, |registry| {
            http_metrics.register(registry)
        }));
        let publisher = Arc::new(
            Publisher::new(config.amqp.amqp_url.expose_secret(), "contact-email-api")
                .with_reconnect_counter(metrics.amqp_reconnects.clone()),
        );
        let (outbox_publisher, publisher_task) =
            OutboxPublisher::start(pool.clone(), publisher.clone(), HANDOFF_CAPACITY);
        let (stop_background, background_stop) = watch::channel(false);
        let probe = tokio::spawn(keep_broker_link(publisher.clone(), background_stop));
        let state = AppState {
            pool,
            commands: Arc::new(Commands { keys, policy }),
            outbox: outbox_publisher,
            publisher,
            metrics,
            http_metrics,
            tokens: Arc::default(),
        };

        let listener = TcpListener::bind(config.api_addr).await.map_err(|e| {
            StartupError::Operational(format!(
                "cannot listen on API_ADDR {}: {e}",
                config.api_addr
            ))
        })?;
        let addr = listener.local_addr().map_err(StartupError::operational)?;
        tracing::info!(addr = %addr, "api listening");

        // grpc.health.v1.Health follows readiness from the first answer on.
        let readiness = Readiness::new().await;
        readiness.probe(&state.pool).await;
        let grpc =
            crate::grpc::router(state.clone(), &readiness).map_err(StartupError::operational)?;
        let router = crate::http::app(state.clone(), grpc, cors);
        Ok(Application {
            listener,
            addr,
            state,
            router,
            readiness,
            publisher_task,
            probe,
            stop_background,
        })
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port the API listens on (the one the OS chose for `API_ADDR` port 0).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Serves until `shutdown`, then stops in order: gRPC health turns NOT_SERVING (its
    /// `Watch` streams end), requests in flight are finished, the publisher sends what it
    /// was handed, the relay and the broker link stop.
    pub async fn run_until(self, shutdown: Shutdown) -> Result<(), StartupError> {
        let Application {
            listener,
            addr: _,
            state,
            router,
            readiness,
            publisher_task,
            probe,
            stop_background,
        } = self;
        let pool = state.pool.clone();
        let publisher = state.publisher.clone();
        // The router holds the handlers' clones of the hand-off sender: only the server may
        // keep it, so the publisher task ends once the requests are drained.
        drop(state);

        // The relay starts here, not in `build`: it must not outlive an unused Application.
        let relay = tokio::spawn(outbox::run_relay(
            pool.clone(),
            publisher.clone(),
            stop_background.subscribe(),
        ));
        let (stopping_tx, stopping_rx) = oneshot::channel::<()>();
        let health = tokio::spawn(readiness.follow(pool, async move {
            let _ = stopping_rx.await;
        }));

        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown.requested().await;
                let _ = stopping_tx.send(());
            })
            .await
            .map_err(|e| StartupError::Operational(format!("server failed: {e}")))?;
        let _ = tokio::time::timeout(Duration::from_secs(5), health).await;

        tracing::info!("draining the outbox publisher");
        let _ = stop_background.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), publisher_task).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), relay).await;
        probe.abort();
        publisher.close().await;
        tracing::info!("api stopped");
        Ok(())
    }
}

/// Creates the database if missing and applies pending migrations (`api migrate`, and
/// `api serve` with `RUN_MIGRATIONS`); returns how many were applied.
pub async fn migrate(database: &DatabaseArgs) -> Result<usize, StartupError> {
    let url = database.database_url.expose_secret().to_owned();
    tokio::task::spawn_blocking(move || common::db::prepare(&url))
        .await
        .map_err(StartupError::operational)?
        .map_err(StartupError::Operational)
}

/// Checks the broker link every few seconds and reconnects it when it is down, so readiness
/// says the truth and the topology exists before the first publish.
async fn keep_broker_link(publisher: Arc<Publisher>, mut stop: watch::Receiver<bool>) {
    loop {
        if let Err(e) = publisher.ensure_connected().await {
            tracing::debug!(error = %e, "RabbitMQ not reachable");
        }
        tokio::select! {
            _ = tokio::time::sleep(BROKER_PROBE_INTERVAL) => {}
            _ = stop.changed() => return,
        }
    }
}
