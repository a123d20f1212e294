//! The consume loop of `worker run`: one AMQP session at a time (reconnecting with backoff
//! after a broker or database outage), deliveries handled concurrently up to the prefetch,
//! and a graceful stop that takes no new message and finishes or hands back the ones in
//! flight.

use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::amqp::{self, JobMessage, SEND_QUEUE};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::deliver::{Deliverer, Disposition};
use crate::retry::Reconnect;

pub struct ConsumerLoop {
    pub deliverer: Arc<Deliverer>,
    pub amqp_url: SecretString,
    pub prefetch: u16,
    /// True while consuming: what `/readyz` reports.
    pub consuming: Arc<AtomicBool>,
    /// Counts sessions opened again after the first.
    pub reconnects: Counter,
    /// How long a stop waits for the deliveries in flight (`WORKER_SHUTDOWN_GRACE`) before
    /// handing them back.
    pub grace: Duration,
}

struct Session {
    connection: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
}

impl ConsumerLoop {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut reconnect = Reconnect::new();
        let mut in_flight: JoinSet<()> = JoinSet::new();
        let mut sessions = 0u64;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let session = match self.open().await {
                Ok(s) => {
                    reconnect.reset();
                    s
                }
                Err(e) => {
                    let wait = reconnect.next_wait();
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "cannot consume yet");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => continue,
                        _ = shutdown.changed() => break,
                    }
                }
            };
            sessions += 1;
            if sessions > 1 {
                self.reconnects.inc();
            }
            tracing::info!(queue = SEND_QUEUE, prefetch = self.prefetch, "consuming");
            self.consuming.store(true, Ordering::Relaxed);
            let stop = self.consume(session, &mut in_flight, &mut shutdown).await;
            self.consuming.store(false, Ordering::Relaxed);
            if stop {
                return;
            }
        }
        self.drain(&mut in_flight).await;
    }

    async fn open(&self) -> Result<Session, String> {
        if !common::db::ping(&self.deliverer.pool, Duration::from_secs(2)).await {
            return Err("PostgreSQL is unreachable".into());
        }
        self.deliverer
            .publisher
            .ensure_connected()
            .await
            .map_err(|e| e.to_string())?;
        let connection = amqp::connect(self.amqp_url.expose_secret(), "contact-email-worker")
            .await
            .map_err(|e| e.to_string())?;
        let setup = async {
            let channel = connection.create_channel().await?;
            amqp::declare_topology(&channel).await?;
            channel
                .basic_qos(self.prefetch, BasicQosOptions::default())
                .await?;
            let consumer = channel
                .basic_consume(
                    SEND_QUEUE.into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, lapin::Error>((channel, consumer))
        };
        let (channel, consumer) = match tokio::time::timeout(amqp::SETUP_TIMEOUT, setup).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => {
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    connection.close(200, "setup timed out".into()),
                )
                .await;
                return Err("the node did not answer the consumer setup in time".into());
            }
        };
        Ok(Session {
            connection,
            channel,
            consumer,
        })
    }

    /// Waits for the deliveries in flight, up to the grace period; those still running are
    /// aborted and their jobs handed back (`retrying`, due now), and their messages return
    /// to the queue when the channel closes.
    async fn drain(&self, in_flight: &mut JoinSet<()>) {
        let all_done = async { while in_flight.join_next().await.is_some() {} };
        if tokio::time::timeout(self.grace, all_done).await.is_ok() {
            return;
        }
        tracing::warn!(
            left = in_flight.len(),
            grace_ms = self.grace.as_millis() as u64,
            "deliveries still running at the end of the grace period; handing them back"
        );
        // Which jobs they hold, before aborting them drops their claims.
        let held = self.deliverer.leases.held();
        in_flight.abort_all();
        while in_flight.join_next().await.is_some() {}
        crate::lease::release(held, &self.deliverer.pool).await;
    }

    /// Runs one session; returns true when the process should stop.
    async fn consume(
        &self,
        mut session: Session,
        in_flight: &mut JoinSet<()>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let database_down = Arc::new(Notify::new());
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    tracing::info!(in_flight = in_flight.len(), "stopping: no new messages; finishing those in flight");
                    let tag = session.consumer.tag();
                    let _ = session.channel.basic_cancel(tag, BasicCancelOptions::default()).await;
                    self.drain(in_flight).await;
                    close(session).await;
                    return true;
                }
                _ = database_down.notified() => {
                    tracing::warn!("PostgreSQL unreachable: pausing; unstarted messages go back to the queue");
                    close(session).await;
                    return false;
                }
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                next = session.consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        let deliverer = self.deliverer.clone();
                        let database_down = database_down.clone();
                        in_flight.spawn(handle(deliverer, delivery, database_down));
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "consumer failed; reconnecting");
                        close(session).await;
                        return false;
                    }
                    None => {
                        tracing::warn!("consumer cancelled by the broker; reconnecting");
                        close(session).await;
                        return false;
                    }
                }
            }
        }
    }
}

async fn handle(
    deliverer: Arc<Deliverer>,
    delivery: lapin::message::Delivery,
    database_down: Arc<Notify>,
) {
    let Some(job_id) = JobMessage::decode(&delivery.data) else {
        tracing::warn!("message without a job id; dropped");
        ack(&delivery).await;
        return;
    };
    let traceparent = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(amqp::TRACEPARENT))
        .and_then(|v| match v {
            lapin::types::AMQPValue::LongString(s) => Some(s.to_string()),
            _ => None,
        });
    match deliverer
        .deliver(job_id, delivery.redelivered, traceparent.as_deref())
        .await
    {
        Disposition::Done => ack(&delivery).await,
        Disposition::Retry(_) => {
            // Not at once: give the broker or database a moment.
            tokio::time::sleep(Duration::from_secs(1)).await;
            hand_back(&delivery).await;
        }
        Disposition::DatabaseDown(_) => {
            hand_back(&delivery).await;
            database_down.notify_one();
        }
    }
}

/// How long an ack or a hand-back may take: on a node that hangs, the message is left to
/// the broker (it redelivers it when the channel closes; the claim sends no job twice).
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

async fn ack(delivery: &lapin::message::Delivery) {
    match tokio::time::timeout(ACK_TIMEOUT, delivery.ack(BasicAckOptions::default())).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "ack failed; the broker will redeliver (the job is not sent twice)")
        }
        Err(_) => {
            tracing::warn!("ack timed out; the broker will redeliver (the job is not sent twice)")
        }
    }
}

async fn hand_back(delivery: &lapin::message::Delivery) {
    let nack = delivery.nack(BasicNackOptions {
        requeue: true,
        multiple: false,
    });
    let _ = tokio::time::timeout(ACK_TIMEOUT, nack).await;
}

async fn close(session: Session) {
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        session.channel.close(200, "bye".into()),
    )
    .await;
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        session.connection.close(200, "bye".into()),
    )
    .await;
}
