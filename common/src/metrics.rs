//! Prometheus metrics of both processes (`/metrics`). Labels carry only outcomes, tiers and
//! states (and the api's own HTTP metrics, registered through [`Metrics::with_own`], routes,
//! methods and statuses): never a code, token, address or id.
//!
//! The job and outbox gauges are read from PostgreSQL when scraped, so every replica shows
//! the truth of the whole system rather than its own share. The readings are cached: at
//! most one query set per [`DB_READING_TTL`] per process, one at a time, each bounded by a
//! server-side statement timeout, so unauthenticated scrapes cannot load the database.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::db::{self, PgPool};
use crate::mail_job::JobState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// A send attempt by the kind of provider it went through (`smtp`, `http`, `files`), never
/// by instance: one series per kind and outcome, however many instances there are.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabels {
    pub tier: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// Which process the metrics are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    Api,
    Worker,
}

pub struct Metrics {
    registry: Registry,
    pub deliveries: Family<OutcomeLabels, Counter>,
    pub provider_sends: Family<ProviderLabels, Counter>,
    pub delivery_latency: Histogram,
    pub retries: Family<TierLabels, Counter>,
    pub amqp_reconnects: Counter,
    outbox_backlog: Gauge,
    outbox_oldest_age: Gauge<f64, AtomicU64>,
    jobs: Family<StateLabels, Gauge>,
    /// When the database gauges were last read; held while a reading is in flight.
    db_read_at: tokio::sync::Mutex<Option<Instant>>,
}

/// How long the database gauges are served from the last reading.
pub const DB_READING_TTL: Duration = Duration::from_secs(5);

impl Metrics {
    pub fn new(process: Process) -> Self {
        Self::with_own(process, |_| {})
    }

    /// The metrics of `process`, with the ones only its own crate knows (the api's HTTP
    /// metrics) registered by `own` first, under the same `contact_email` prefix.
    pub fn with_own(process: Process, own: impl FnOnce(&mut Registry)) -> Self {
        let mut registry = Registry::with_prefix("contact_email");
        own(&mut registry);
        let m = Metrics {
            registry: Registry::default(),
            deliveries: Family::default(),
            provider_sends: Family::default(),
            delivery_latency: Histogram::new(exponential_buckets(0.01, 2.0, 18)),
            retries: Family::default(),
            amqp_reconnects: Counter::default(),
            outbox_backlog: Gauge::default(),
            outbox_oldest_age: Gauge::default(),
            jobs: Family::default(),
            db_read_at: tokio::sync::Mutex::new(None),
        };
        if process == Process::Worker {
            registry.register(
                "mail_deliveries",
                "Delivery attempts by outcome (sent, transient, permanent) and jobs ended as expired",
                m.deliveries.clone(),
            );
            registry.register(
                "mail_provider_sends",
                "Send attempts by provider kind (smtp, http, files) and outcome",
                m.provider_sends.clone(),
            );
            registry.register(
                "mail_delivery_latency_seconds",
                "Time from enqueue (the request) to the SMTP server accepting the mail",
                m.delivery_latency.clone(),
            );
            registry.register(
                "mail_retries",
                "Jobs parked in a delay tier for a later attempt, by tier",
                m.retries.clone(),
            );
        }
        registry.register(
            "amqp_reconnects",
            "Connections to RabbitMQ opened again after the first",
            m.amqp_reconnects.clone(),
        );
        registry.register(
            "outbox_backlog",
            "Mail jobs waiting in the outbox to be published",
            m.outbox_backlog.clone(),
        );
        registry.register(
            "outbox_oldest_age_seconds",
            "Age of the oldest outbox row",
            m.outbox_oldest_age.clone(),
        );
        registry.register("mail_jobs", "Mail jobs by state", m.jobs.clone());
        Metrics { registry, ..m }
    }

    /// Refreshes the database gauges when the last reading is older than
    /// [`DB_READING_TTL`] (and PostgreSQL answers), then encodes everything in the
    /// OpenMetrics text format. A scrape that arrives while another one reads the database
    /// does not wait for it: it shows the previous reading.
    pub async fn scrape(&self, pool: &PgPool) -> String {
        if let Ok(mut read_at) = self.db_read_at.try_lock()
            && read_at.is_none_or(|at| at.elapsed() >= DB_READING_TTL)
        {
            *read_at = Some(Instant::now());
            self.read_database(pool).await;
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    async fn read_database(&self, pool: &PgPool) {
        let read = db::run(pool, |conn| {
            conn.transaction::<_, diesel::result::Error, _>(|conn| {
                // The server gives up on its own: a timed-out scrape leaves no query behind.
                diesel::sql_query("SET LOCAL statement_timeout = '2s'").execute(conn)?;
                let backlog = crate::outbox::backlog(conn)?;
                let by_state: Vec<(String, i64)> = crate::schema::mail_jobs::table
                    .group_by(crate::schema::mail_jobs::state)
                    .select((crate::schema::mail_jobs::state, diesel::dsl::count_star()))
                    .load(conn)?;
                Ok((backlog, by_state))
            })
            .map_err(crate::error::Error::from)
        });
        let Ok(Ok(((n, age), by_state))) = tokio::time::timeout(Duration::from_secs(3), read).await
        else {
            return;
        };
        self.outbox_backlog.set(n);
        self.outbox_oldest_age.set(age);
        for state in JobState::ALL {
            let count = by_state
                .iter()
                .find(|(s, _)| s == state.as_str())
                .map_or(0, |(_, c)| *c);
            self.jobs
                .get_or_create(&StateLabels {
                    state: state.as_str(),
                })
                .set(count);
        }
    }
}

/// The content type of [`Metrics::scrape`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
