//! `worker run` as a value. [`Application::build`] checks the configuration, sets up the
//! mail transport and the deliverer and binds the health port; [`Application::run_until`]
//! runs the consume loop, the health endpoints, the outbox relay and the sweeper of stranded
//! jobs until the [`Shutdown`], then stops them in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::amqp::Publisher;
use common::config::{ConfigError, DatabaseArgs, StartupError};
use common::db::{self, PgPool};
use common::mail_job;
use common::metrics::{Metrics, Process};
use common::shutdown::Shutdown;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::batch::Batcher;
use crate::cli::{DeliveryArgs, RetryArgs, RunArgs};
use crate::consumer::ConsumerLoop;
use crate::deliver::{self, Deliverer};
use crate::health::{self, HealthState};
use crate::mail::MailRenderer;
use crate::providers::Providers;
use crate::retry::RetryPolicy;
use crate::transport::destination::Destinations;
use crate::transport::{MailTransport, SmtpHealth, SmtpSettings, default_helo_name};

/// How often stranded jobs are looked for, and how quiet a job must have been.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
const STRANDED_AFTER: Duration = Duration::from_secs(600);

/// The worker, built and bound, not consuming yet.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    deliverer: Arc<Deliverer>,
    health: HealthState,
    amqp_url: SecretString,
    prefetch: u16,
    grace: Duration,
}

impl Application {
    /// Everything `worker run` does before it consumes. A refused setting is
    /// [`StartupError::Configuration`]; a port that cannot be had is
    /// [`StartupError::Operational`]. The database may still be down: the worker waits for
    /// it. `WORKER_ADDR` with port 0 binds a free port: see [`Application::port`].
    pub async fn build(config: RunArgs) -> Result<Self, StartupError> {
        let keys = config.keys.keys()?;
        let retry = retry_policy(&config.retry)?;
        let renderer = MailRenderer::new(
            &config.delivery.mail_from,
            config.delivery.mail_templates_dir.as_deref(),
        )
        .map_err(|e| ConfigError::new("MAIL_FROM/MAIL_TEMPLATES_DIR", e))?;
        let transport = mail_transport(&config.delivery, &renderer, config.worker_concurrency)?;
        tracing::info!(transport = %transport.describe(), "mail transport ready");

        prepare_database(&config.database).await?;
        let pool = db::pool(
            config.database.database_url.expose_secret(),
            config.database.database_pool_size,
        );
        let metrics = Arc::new(Metrics::new(Process::Worker));
        let publisher = Arc::new(
            Publisher::new(
                config.amqp.amqp_url.expose_secret(),
                "contact-email-worker-publisher",
            )
            .with_reconnect_counter(metrics.amqp_reconnects.clone()),
        );
        let smtp_health = Arc::new(SmtpHealth::default());
        let providers = Providers::new(
            helo_name(&config.delivery, &renderer),
            config.delivery.smtp_tls_ca_file.clone(),
            config.worker_concurrency,
            config.delivery.provider_destinations(),
        );
        let desk = {
            let keys = keys.clone();
            Batcher::start(pool.clone(), move |c, asks: &[deliver::Ask]| {
                deliver::serve_desk(c, &keys, asks)
            })
        };
        let deliverer = Arc::new(Deliverer {
            pool: pool.clone(),
            keys,
            renderer,
            transport,
            providers,
            retry,
            publisher,
            metrics: metrics.clone(),
            smtp_health: smtp_health.clone(),
            leases: Arc::default(),
            desk,
        });

        let listener = TcpListener::bind(config.worker_addr).await.map_err(|e| {
            StartupError::Operational(format!(
                "cannot listen on WORKER_ADDR {}: {e}",
                config.worker_addr
            ))
        })?;
        let addr = listener.local_addr().map_err(StartupError::operational)?;
        Ok(Application {
            listener,
            addr,
            deliverer,
            health: HealthState {
                pool,
                consuming: Arc::new(AtomicBool::new(false)),
                metrics,
                smtp: smtp_health,
            },
            amqp_url: config.amqp.amqp_url,
            prefetch: config.worker_concurrency,
            grace: config.worker_shutdown_grace,
        })
    }

    /// The address of the health and metrics endpoints.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port of the health and metrics endpoints (the one the OS chose for port 0).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Consumes until `shutdown`, then stops in order: no new message, deliveries in flight
    /// finished (or handed back), the relay, the sweeper, the health endpoints, the
    /// publisher's connection.
    pub async fn run_until(self, shutdown: Shutdown) -> Result<(), StartupError> {
        let pool = self.deliverer.pool.clone();
        let publisher = self.deliverer.publisher.clone();
        let (stop_tx, stop) = watch::channel(false);
        let health = tokio::spawn(health::serve(
            self.listener,
            self.health.clone(),
            stop.clone(),
        ));
        let relay = tokio::spawn(common::outbox::run_relay(
            pool.clone(),
            publisher.clone(),
            stop.clone(),
        ));
        let sweeper = tokio::spawn(sweep_stranded(pool.clone(), stop.clone()));
        let idle_providers =
            tokio::spawn(close_idle_providers(self.deliverer.clone(), stop.clone()));
        // Leases are renewed until the last delivery has ended, after the consumer stops.
        let (leases_stop_tx, leases_stop) = watch::channel(false);
        let renewer = tokio::spawn(crate::lease::keep_renewed(
            self.deliverer.leases.clone(),
            pool,
            leases_stop,
        ));
        let consumer = tokio::spawn(
            ConsumerLoop {
                deliverer: self.deliverer,
                amqp_url: self.amqp_url,
                prefetch: self.prefetch,
                consuming: self.health.consuming.clone(),
                reconnects: self.health.metrics.amqp_reconnects.clone(),
                grace: self.grace,
            }
            .run(stop),
        );

        shutdown.requested().await;
        let _ = stop_tx.send(true);
        let _ = consumer.await;
        let _ = leases_stop_tx.send(true);
        let _ = renewer.await;
        let _ = tokio::time::timeout(Duration::from_secs(5), relay).await;
        sweeper.abort();
        idle_providers.abort();
        let _ = health.await;
        publisher.close().await;
        tracing::info!("worker stopped");
        Ok(())
    }
}

/// The retry schedule of `MAIL_RETRY_INITIAL`, `MAIL_RETRY_MAX` and `MAIL_MAX_ATTEMPTS`.
fn retry_policy(args: &RetryArgs) -> Result<RetryPolicy, ConfigError> {
    if args.mail_retry_initial.is_zero() || args.mail_retry_max < args.mail_retry_initial {
        return Err(ConfigError::new(
            "MAIL_RETRY_INITIAL",
            "must be above 0s and at most MAIL_RETRY_MAX",
        ));
    }
    Ok(RetryPolicy {
        initial: args.mail_retry_initial,
        max: args.mail_retry_max,
        max_attempts: args.mail_max_attempts,
    })
}

/// The relay of `SMTP_URL` (a pool of `concurrency` connections), or `.eml` files in
/// `MAIL_DIR` without one.
pub(crate) fn mail_transport(
    args: &DeliveryArgs,
    renderer: &MailRenderer,
    concurrency: u16,
) -> Result<MailTransport, ConfigError> {
    let helo_name = helo_name(args, renderer);
    MailTransport::new(
        args.smtp_url.as_ref().map(|url| SmtpSettings {
            url: url.expose_secret(),
            ca_file: args.smtp_tls_ca_file.as_deref(),
            helo_name: &helo_name,
            pool_size: u32::from(concurrency),
            destinations: Destinations::Any,
        }),
        args.mail_dir.clone(),
    )
    .map_err(ConfigError::stated)
}

/// `SMTP_HELO_NAME`, or the host's fully qualified name, or MAIL_FROM's domain.
pub(crate) fn helo_name(args: &DeliveryArgs, renderer: &MailRenderer) -> String {
    match &args.smtp_helo_name {
        Some(name) => name.clone(),
        None => default_helo_name(renderer.sender_domain()),
    }
}

/// Creates the database and applies migrations when PostgreSQL is up. The api migrates too,
/// so a database that is not reachable yet is only a warning: the worker waits for it.
async fn prepare_database(database: &DatabaseArgs) -> Result<(), StartupError> {
    let url = database.database_url.expose_secret().to_owned();
    let prepared = tokio::task::spawn_blocking(move || db::prepare(&url))
        .await
        .map_err(StartupError::operational)?;
    if let Err(e) = prepared {
        tracing::warn!(error = %e, "database not ready at start; will keep trying");
    }
    Ok(())
}

/// Drops instances' mail providers that went idle, closing their connections.
async fn close_idle_providers(deliverer: Arc<Deliverer>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(crate::providers::IDLE / 4) => deliverer.providers.sweep(),
            _ = stop.changed() => return,
        }
    }
}

/// Gives jobs that lost their message an outbox row again (see
/// [`mail_job::requeue_stranded`]).
async fn sweep_stranded(pool: PgPool, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
            _ = stop.changed() => return,
        }
        match db::run(&pool, |c| {
            Ok(mail_job::requeue_stranded(c, STRANDED_AFTER)?)
        })
        .await
        {
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
