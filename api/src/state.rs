//! What every handler shares: the pool, the domain commands and the after-commit publisher.

use std::sync::Arc;

use common::amqp::Publisher;
use common::commands::Commands;
use common::db::PgPool;
use common::metrics::Metrics;
use common::outbox::OutboxPublisher;

use crate::http::metrics::HttpMetrics;
use crate::token_cache::TokenCache;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub commands: Arc<Commands>,
    pub outbox: OutboxPublisher,
    pub publisher: Arc<Publisher>,
    pub metrics: Arc<Metrics>,
    /// The HTTP request counters, also registered in `metrics`.
    pub http_metrics: HttpMetrics,
    /// Tokens that authenticated in the last 2 s.
    pub tokens: Arc<TokenCache>,
}
