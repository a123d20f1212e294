//! RabbitMQ: the topology both processes declare at start (DESIGN decision 5), the job
//! message (ids only: the claim check of decision 2), and a publisher that reconnects and
//! treats anything but a confirmed, routed message as a failure.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use lapin::Confirmation;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

/// The direct exchange every mail message goes through.
pub const EXCHANGE: &str = "mail";
/// Work queue of the workers.
pub const SEND_QUEUE: &str = "mail.send";
pub const SEND_KEY: &str = "send";
/// Where permanently failed jobs' messages end up (for inspection; replay reads PostgreSQL).
pub const DEAD_QUEUE: &str = "mail.dead";
pub const DEAD_KEY: &str = "dead";
/// Redeliveries of one message before the broker gives up on it (poison message stop).
pub const DELIVERY_LIMIT: i64 = 20;
/// How long a dead-lettered message is kept in `mail.dead`.
const DEAD_TTL: Duration = Duration::from_secs(14 * 24 * 3600);

/// How long one publish (send and confirm) may take before it counts as failed.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long opening a channel and declaring the topology may take on a connection that is
/// open: a node that hangs (paused, partitioned) must not hold a process for longer.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(5);
/// The heartbeat asked for when `AMQP_URL` names none: the link to a node that stops
/// answering is dropped after two missed intervals (10 s) instead of the server's 120 s.
pub const HEARTBEAT_SECS: u16 = 5;

/// A delay queue: messages wait there for its TTL, then dead-letter back to `mail.send`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryTier {
    pub delay: Duration,
    pub name: &'static str,
    pub key: &'static str,
}

/// The tiers, shortest first.
pub const RETRY_TIERS: [RetryTier; 5] = [
    RetryTier {
        delay: Duration::from_secs(1),
        name: "mail.retry.1s",
        key: "retry.1s",
    },
    RetryTier {
        delay: Duration::from_secs(5),
        name: "mail.retry.5s",
        key: "retry.5s",
    },
    RetryTier {
        delay: Duration::from_secs(30),
        name: "mail.retry.30s",
        key: "retry.30s",
    },
    RetryTier {
        delay: Duration::from_secs(300),
        name: "mail.retry.5m",
        key: "retry.5m",
    },
    RetryTier {
        delay: Duration::from_secs(1800),
        name: "mail.retry.30m",
        key: "retry.30m",
    },
];

impl RetryTier {
    /// The smallest tier at or above `delay` (the longest one for longer delays: the worker
    /// parks the message again until the job is due).
    pub fn for_delay(delay: Duration) -> RetryTier {
        RETRY_TIERS
            .into_iter()
            .find(|t| t.delay >= delay)
            .unwrap_or(RETRY_TIERS[RETRY_TIERS.len() - 1])
    }
}

/// Where a message is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Send,
    Retry(RetryTier),
    Dead,
}

impl Route {
    fn key(self) -> &'static str {
        match self {
            Route::Send => SEND_KEY,
            Route::Retry(t) => t.key,
            Route::Dead => DEAD_KEY,
        }
    }
}

/// The message body: which job to work on. Never an address or a code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobMessage {
    pub job_id: String,
}

impl JobMessage {
    pub fn encode(job_id: i64) -> Vec<u8> {
        serde_json::to_vec(&JobMessage {
            job_id: job_id.to_string(),
        })
        .unwrap_or_default()
    }

    pub fn decode(body: &[u8]) -> Option<i64> {
        serde_json::from_slice::<JobMessage>(body)
            .ok()
            .and_then(|m| m.job_id.parse().ok())
    }
}

/// One message to publish: the job and the trace context of the request that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub job_id: i64,
    pub traceparent: Option<String>,
}

impl Outgoing {
    pub fn new(job_id: i64, traceparent: Option<String>) -> Self {
        Outgoing {
            job_id,
            traceparent,
        }
    }
}

/// Trace context carried in the AMQP headers (W3C `traceparent`), so the worker's spans join
/// the request's trace.
pub const TRACEPARENT: &str = "traceparent";

fn quorum(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    for (k, v) in extra {
        args.insert(ShortString::from(*k), v.clone());
    }
    args
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// Declares exchange, queues and bindings. Idempotent; both processes call it on connect.
pub async fn declare_topology(channel: &Channel) -> lapin::Result<()> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .exchange_declare(
            EXCHANGE.into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let back_to_send = [
        ("x-dead-letter-exchange", long(EXCHANGE)),
        ("x-dead-letter-routing-key", long(SEND_KEY)),
        ("x-dead-letter-strategy", long("at-least-once")),
        ("x-overflow", long("reject-publish")),
    ];
    let queues: Vec<(&str, &str, FieldTable)> = std::iter::once((
        SEND_QUEUE,
        SEND_KEY,
        quorum(&[
            ("x-delivery-limit", AMQPValue::LongLongInt(DELIVERY_LIMIT)),
            ("x-dead-letter-exchange", long(EXCHANGE)),
            ("x-dead-letter-routing-key", long(DEAD_KEY)),
            ("x-dead-letter-strategy", long("at-least-once")),
            ("x-overflow", long("reject-publish")),
        ]),
    ))
    .chain(std::iter::once((
        DEAD_QUEUE,
        DEAD_KEY,
        quorum(&[(
            "x-message-ttl",
            AMQPValue::LongLongInt(DEAD_TTL.as_millis() as i64),
        )]),
    )))
    .chain(RETRY_TIERS.iter().map(|t| {
        let mut extra = back_to_send.to_vec();
        extra.push((
            "x-message-ttl",
            AMQPValue::LongLongInt(t.delay.as_millis() as i64),
        ));
        (t.name, t.key, quorum(&extra))
    }))
    .collect();
    for (queue, key, args) in queues {
        channel.queue_declare(queue.into(), durable, args).await?;
        channel
            .queue_bind(
                queue.into(),
                EXCHANGE.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Why a publish did not count.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker unreachable: {0}")]
    Unreachable(String),
    #[error("publish timed out")]
    Timeout,
    #[error("broker refused the message: {0}")]
    Refused(String),
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
}

/// The nodes of `AMQP_URL`: one URL, or a comma list of the nodes of one cluster.
pub fn nodes(amqp_url: &str) -> Vec<&str> {
    amqp_url
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect()
}

/// Checks every node of `AMQP_URL` (amqp or amqps, with a host); the message never repeats
/// a URL (it may hold a password).
pub fn check_nodes(amqp_url: &str) -> Result<(), String> {
    let nodes = nodes(amqp_url);
    if nodes.is_empty() {
        return Err("no node given".into());
    }
    for (i, node) in nodes.iter().enumerate() {
        crate::config::check_url(node, &["amqp", "amqps"])
            .map_err(|m| format!("node {}: {m}", i + 1))?;
        node.parse::<lapin::uri::AMQPUri>()
            .map_err(|_| format!("node {}: not a valid AMQP URL", i + 1))?;
    }
    Ok(())
}

/// Which node of the list a process tries first when it (re)connects: the one after the
/// node its last connection was opened to, so a process whose node failed moves on.
static NEXT_NODE: AtomicUsize = AtomicUsize::new(0);

/// Opens a connection (each try with a timeout) to a node of `amqp_url`, starting with the
/// node after the one last connected to and going round the list once.
pub async fn connect(amqp_url: &str, name: &str) -> Result<Connection, PublishError> {
    let nodes = nodes(amqp_url);
    if nodes.is_empty() {
        return Err(PublishError::Unreachable("AMQP_URL names no node".into()));
    }
    let start = NEXT_NODE.load(Ordering::Relaxed);
    let mut failures = Vec::new();
    for step in 0..nodes.len() {
        let index = (start + step) % nodes.len();
        match connect_node(nodes[index], name).await {
            Ok(connection) => {
                NEXT_NODE.store(index + 1, Ordering::Relaxed);
                if nodes.len() > 1 {
                    tracing::info!(node = index + 1, nodes = nodes.len(), %name, "connected to RabbitMQ");
                }
                return Ok(connection);
            }
            Err(e) => failures.push(format!("node {}: {e}", index + 1)),
        }
    }
    NEXT_NODE.store(start + 1, Ordering::Relaxed);
    Err(PublishError::Unreachable(failures.join("; ")))
}

async fn connect_node(url: &str, name: &str) -> Result<Connection, String> {
    let mut uri: lapin::uri::AMQPUri = url
        .parse()
        .map_err(|_| "not a valid AMQP URL".to_string())?;
    uri.query.heartbeat.get_or_insert(HEARTBEAT_SECS);
    let props = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect_uri(uri, props)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("connect timed out".into()),
    }
}

/// A publishing channel with confirms that is re-opened (with a new connection if needed)
/// after any failure. Shared by the api (outbox) and the worker (retries, dead letters,
/// replay).
pub struct Publisher {
    url: String,
    name: String,
    link: Mutex<Option<(Connection, Channel)>>,
    healthy: AtomicBool,
    ever_connected: AtomicBool,
    reconnects: Counter,
}

impl Publisher {
    pub fn new(url: impl Into<String>, name: impl Into<String>) -> Self {
        Publisher {
            url: url.into(),
            name: name.into(),
            link: Mutex::new(None),
            healthy: AtomicBool::new(false),
            ever_connected: AtomicBool::new(false),
            reconnects: Counter::default(),
        }
    }

    /// Counts the connections opened again after the first into `counter` (a metric).
    pub fn with_reconnect_counter(mut self, counter: Counter) -> Self {
        self.reconnects = counter;
        self
    }

    /// Whether the last attempt to reach the broker worked.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Connects if not connected (declaring the topology) and records whether the broker is
    /// reachable. Called periodically so health tells the truth between publishes.
    pub async fn ensure_connected(&self) -> Result<(), PublishError> {
        let mut link = self.link.lock().await;
        let result = self.ensure(&mut link).await.map(|_| ());
        self.healthy.store(result.is_ok(), Ordering::Relaxed);
        result
    }

    async fn ensure<'a>(
        &self,
        link: &'a mut Option<(Connection, Channel)>,
    ) -> Result<&'a Channel, PublishError> {
        let usable = link
            .as_ref()
            .is_some_and(|(c, ch)| c.status().connected() && ch.status().connected());
        if !usable {
            if let Some((conn, _)) = link.take() {
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    conn.close(200, "reconnecting".into()),
                )
                .await;
            }
            match self.open().await {
                Ok(pair) => {
                    if self.ever_connected.swap(true, Ordering::Relaxed) {
                        self.reconnects.inc();
                        tracing::info!(name = %self.name, "reconnected to RabbitMQ");
                    }
                    *link = Some(pair);
                }
                Err(e) => {
                    self.healthy.store(false, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        match link.as_ref() {
            Some((_, ch)) => Ok(ch),
            None => Err(PublishError::Unreachable("no channel".into())),
        }
    }

    async fn open(&self) -> Result<(Connection, Channel), PublishError> {
        let conn = connect(&self.url, &self.name).await?;
        let setup = async {
            let channel = conn.create_channel().await?;
            declare_topology(&channel).await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Ok::<_, lapin::Error>(channel)
        };
        match tokio::time::timeout(SETUP_TIMEOUT, setup).await {
            Ok(Ok(channel)) => Ok((conn, channel)),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    conn.close(200, "setup timed out".into()),
                )
                .await;
                Err(PublishError::Unreachable(
                    "the node did not answer the channel setup in time".into(),
                ))
            }
        }
    }

    /// Publishes one message per job (persistent, mandatory, confirmed) and returns the ids
    /// the broker confirmed as routed and stored. The rest stay with the caller (outbox).
    pub async fn publish(&self, jobs: &[Outgoing], route: Route) -> Result<Vec<i64>, PublishError> {
        let mut link = self.link.lock().await;
        let result = self.publish_on(&mut link, jobs, route).await;
        match &result {
            Ok(_) => self.healthy.store(true, Ordering::Relaxed),
            Err(e) => {
                tracing::warn!(error = %e, "publishing to RabbitMQ failed; the outbox keeps the jobs");
                self.healthy.store(false, Ordering::Relaxed);
                // The channel's confirm state is unknown now: start over on a fresh one.
                if let Some((conn, _)) = link.take() {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        conn.close(200, "reset".into()),
                    )
                    .await;
                }
            }
        }
        result
    }

    async fn publish_on(
        &self,
        link: &mut Option<(Connection, Channel)>,
        jobs: &[Outgoing],
        route: Route,
    ) -> Result<Vec<i64>, PublishError> {
        let channel = self.ensure(link).await?;
        let mut pending = Vec::with_capacity(jobs.len());
        for job in jobs {
            let id = job.job_id;
            let mut headers = FieldTable::default();
            if let Some(tp) = &job.traceparent {
                headers.insert(TRACEPARENT.into(), long(tp));
            }
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(ShortString::from(id.to_string()))
                .with_headers(headers);
            let confirm = tokio::time::timeout(
                PUBLISH_TIMEOUT,
                channel.basic_publish(
                    EXCHANGE.into(),
                    route.key().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    &JobMessage::encode(id),
                    props,
                ),
            )
            .await
            .map_err(|_| PublishError::Timeout)??;
            pending.push((id, confirm));
        }
        let mut confirmed = Vec::with_capacity(pending.len());
        let mut refused = None;
        for (id, confirm) in pending {
            match tokio::time::timeout(PUBLISH_TIMEOUT, confirm)
                .await
                .map_err(|_| PublishError::Timeout)??
            {
                Confirmation::Ack(None) => confirmed.push(id),
                Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                    refused = Some(format!(
                        "job {id} returned: {} {}",
                        returned.reply_code, returned.reply_text
                    ));
                }
                Confirmation::Nack(None) => refused = Some(format!("job {id} nacked")),
                Confirmation::NotRequested => {
                    refused = Some("publisher confirms are not enabled".into())
                }
            }
        }
        match refused {
            Some(why) if confirmed.is_empty() => Err(PublishError::Refused(why)),
            Some(why) => {
                tracing::warn!(reason = %why, "some messages were not accepted by the broker");
                Ok(confirmed)
            }
            None => Ok(confirmed),
        }
    }

    /// Closes the connection gracefully (flushes what is in flight).
    pub async fn close(&self) {
        if let Some((conn, _)) = self.link.lock().await.take() {
            let _ =
                tokio::time::timeout(Duration::from_secs(2), conn.close(200, "shutdown".into()))
                    .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tier_is_the_smallest_at_or_above_the_delay() {
        assert_eq!(
            RetryTier::for_delay(Duration::from_millis(200)).name,
            "mail.retry.1s"
        );
        assert_eq!(
            RetryTier::for_delay(Duration::from_secs(5)).name,
            "mail.retry.5s"
        );
        assert_eq!(
            RetryTier::for_delay(Duration::from_secs(6)).name,
            "mail.retry.30s"
        );
        assert_eq!(
            RetryTier::for_delay(Duration::from_secs(299)).name,
            "mail.retry.5m"
        );
        assert_eq!(
            RetryTier::for_delay(Duration::from_secs(7200)).name,
            "mail.retry.30m"
        );
    }

    #[test]
    fn amqp_url_may_list_the_nodes_of_a_cluster() {
        let list = "amqp://u:p@rmq1:5672/vh, amqp://u:p@rmq2:5672/vh,amqp://u:p@rmq3:5672/vh";
        assert_eq!(nodes(list).len(), 3);
        assert_eq!(nodes("amqp://localhost")[0], "amqp://localhost");
        assert!(check_nodes(list).is_ok());
        let bad = check_nodes("amqp://u:secret@rmq1/vh,http://u:secret@rmq2").unwrap_err();
        assert!(bad.starts_with("node 2"), "{bad}");
        assert!(!bad.contains("secret"), "{bad}");
        assert!(check_nodes(" , ").is_err());
    }

    #[test]
    fn the_message_holds_the_job_id_only() {
        let body = JobMessage::encode(42);
        assert_eq!(body, br#"{"jobId":"42"}"#);
        assert_eq!(JobMessage::decode(&body), Some(42));
        assert_eq!(JobMessage::decode(b"nonsense"), None);
    }
}
