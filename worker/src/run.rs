//! `worker run`: wires the deliverer, the consume loop, the health endpoints, the outbox
//! relay and the sweeper of stranded jobs, and stops them in order on SIGTERM/SIGINT.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::amqp::Publisher;
use common::db::{self, PgPool};
use common::metrics::{Metrics, Process};
use tokio::sync::watch;

use crate::cli::RunArgs;
use crate::consumer::ConsumerLoop;
use crate::deliver::Deliverer;
use crate::health::{self, HealthState};
use crate::mail::MailRenderer;
use crate::retry::RetryPolicy;
use crate::store;
use crate::transport::{MailTransport, SmtpHealth, SmtpSettings, default_helo_name};

/// How often stranded jobs are looked for, and how quiet a job must have been.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
const STRANDED_AFTER: Duration = Duration::from_secs(600);

pub async fn run(args: RunArgs) -> Result<(), String> {
    let keys = args.keys.keys().map_err(|e| e.to_string())?;
    if args.retry.mail_retry_initial.is_zero()
        || args.retry.mail_retry_max < args.retry.mail_retry_initial
    {
        return Err(
            "configuration error: MAIL_RETRY_INITIAL: must be above 0s and at most MAIL_RETRY_MAX"
                .into(),
        );
    }
    let renderer = MailRenderer::new(
        &args.delivery.mail_from,
        args.delivery.mail_templates_dir.as_deref(),
    )
    .map_err(|e| format!("configuration error: MAIL_FROM/MAIL_TEMPLATES_DIR: {e}"))?;
    let helo_name = match &args.delivery.smtp_helo_name {
        Some(name) => name.clone(),
        None => default_helo_name(renderer.from_domain()),
    };
    let transport = MailTransport::new(
        args.delivery.smtp_url.as_deref().map(|url| SmtpSettings {
            url,
            ca_file: args.delivery.smtp_tls_ca_file.as_deref(),
            helo_name: &helo_name,
            pool_size: u32::from(args.worker_concurrency),
        }),
        args.delivery.mail_dir.clone(),
    )
    .map_err(|e| format!("configuration error: {e}"))?;
    let smtp_health = Arc::new(SmtpHealth::default());
    tracing::info!(transport = %transport.describe(), "mail transport ready");

    let url = args.database.database_url.clone();
    let prepared = tokio::task::spawn_blocking(move || db::prepare(&url))
        .await
        .map_err(|e| e.to_string())?;
    if let Err(e) = prepared {
        // The api migrates too; the worker can wait for the database to come up.
        tracing::warn!(error = %e, "database not ready at start; will keep trying");
    }
    let pool = db::pool(
        &args.database.database_url,
        args.database.database_pool_size,
    );
    let metrics = Arc::new(Metrics::new(Process::Worker));
    let publisher = Arc::new(
        Publisher::new(args.amqp.amqp_url.clone(), "contact-email-worker-publisher")
            .with_reconnect_counter(metrics.amqp_reconnects.clone()),
    );
    let deliverer = Arc::new(Deliverer {
        pool: pool.clone(),
        keys,
        renderer,
        transport,
        retry: RetryPolicy {
            initial: args.retry.mail_retry_initial,
            max: args.retry.mail_retry_max,
            max_attempts: args.retry.mail_max_attempts,
        },
        publisher: publisher.clone(),
        metrics: metrics.clone(),
        smtp_health: smtp_health.clone(),
    });
    let consuming = Arc::new(AtomicBool::new(false));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let listener = tokio::net::TcpListener::bind(args.worker_addr)
        .await
        .map_err(|e| format!("cannot listen on WORKER_ADDR {}: {e}", args.worker_addr))?;
    let health_app = health::router(HealthState {
        pool: pool.clone(),
        consuming: consuming.clone(),
        metrics: metrics.clone(),
        smtp: smtp_health,
    });
    let mut health_shutdown = shutdown_rx.clone();
    let health = tokio::spawn(async move {
        let _ = axum::serve(listener, health_app)
            .with_graceful_shutdown(async move {
                let _ = health_shutdown.changed().await;
            })
            .await;
    });
    let relay = tokio::spawn(common::outbox::run_relay(
        pool.clone(),
        publisher.clone(),
        shutdown_rx.clone(),
    ));
    let sweeper = tokio::spawn(sweep_stranded(pool.clone(), shutdown_rx.clone()));
    let consumer = tokio::spawn(
        ConsumerLoop {
            deliverer,
            amqp_url: args.amqp.amqp_url.clone(),
            prefetch: args.worker_concurrency,
            consuming,
            reconnects: metrics.amqp_reconnects.clone(),
        }
        .run(shutdown_rx),
    );

    crate::shutdown_signal().await;
    let _ = shutdown_tx.send(true);
    let _ = consumer.await;
    let _ = tokio::time::timeout(Duration::from_secs(5), relay).await;
    sweeper.abort();
    let _ = health.await;
    publisher.close().await;
    tracing::info!("worker stopped");
    Ok(())
}

/// Gives jobs that lost their message an outbox row again (see `store::requeue_stranded`).
async fn sweep_stranded(pool: PgPool, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        match db::run(&pool, |c| Ok(store::requeue_stranded(c, STRANDED_AFTER)?)).await {
            Ok(ids) if !ids.is_empty() => {
                tracing::warn!(
                    jobs = ids.len(),
                    "requeued stranded jobs through the outbox"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "sweep skipped"),
        }
    }
}
