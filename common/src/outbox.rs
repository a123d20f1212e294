//! The transactional outbox (DESIGN decision 1). A command commits its mail job with an
//! outbox row; after commit the job id is handed to [`OutboxPublisher`] which publishes it
//! without making the response wait. Rows that were not published (broker down, crash,
//! full hand-off queue) are picked up by [`run_relay`], in every replica: rows are claimed
//! with `FOR UPDATE SKIP LOCKED` and a lease, so replicas never block each other.

use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;
use tokio::sync::{mpsc, watch};

use crate::amqp::{Outgoing, Publisher, Route};
use crate::db::{self, PgPool};
use crate::error::Error;
use crate::schema::outbox;

/// Rows younger than this are left to the immediate publisher.
pub const RELAY_GRACE: Duration = Duration::from_secs(3);
/// How often the relay looks for rows.
pub const RELAY_INTERVAL: Duration = Duration::from_secs(1);
/// Rows per relay round.
const RELAY_BATCH: i64 = 500;
/// Ids handed over in one publish batch.
const HANDOFF_BATCH: usize = 256;

/// Records that `job_id` has to be (re)published; the publisher or the relay takes it from
/// there. Runs in the caller's transaction, with the change that makes the job due.
pub fn add(conn: &mut PgConnection, job_id: i64) -> QueryResult<()> {
    diesel::insert_into(outbox::table)
        .values(outbox::job_id.eq(job_id))
        .execute(conn)?;
    Ok(())
}

/// Takes up to `limit` rows older than `grace`, and leases them (their time is moved to now)
/// so another replica does not take them while they are being published.
pub fn claim_due(
    conn: &mut PgConnection,
    grace: Duration,
    limit: i64,
) -> QueryResult<Vec<Outgoing>> {
    diesel::sql_query(
        "WITH claimed AS ( \
           UPDATE outbox SET created_at = now() WHERE id IN ( \
             SELECT id FROM outbox WHERE created_at < now() - make_interval(secs => $1) \
             ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) \
           RETURNING job_id) \
         SELECT claimed.job_id, mail_jobs.trace_context FROM claimed \
         LEFT JOIN mail_jobs ON mail_jobs.id = claimed.job_id",
    )
    .bind::<diesel::sql_types::Double, _>(grace.as_secs_f64())
    .bind::<diesel::sql_types::BigInt, _>(limit)
    .load::<ClaimedRow>(conn)
    .map(|rows| {
        rows.into_iter()
            .map(|r| Outgoing::new(r.job_id, r.trace_context))
            .collect()
    })
}

#[derive(QueryableByName)]
struct ClaimedRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    job_id: i64,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    trace_context: Option<String>,
}

/// Forgets the rows of jobs the broker confirmed.
pub fn remove(conn: &mut PgConnection, job_ids: &[i64]) -> QueryResult<usize> {
    diesel::delete(outbox::table.filter(outbox::job_id.eq_any(job_ids))).execute(conn)
}

/// Rows waiting, and the age in seconds of the oldest.
pub fn backlog(conn: &mut PgConnection) -> QueryResult<(i64, f64)> {
    #[derive(QueryableByName)]
    struct Backlog {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
        #[diesel(sql_type = diesel::sql_types::Double)]
        age: f64,
    }
    let b: Backlog = diesel::sql_query(
        "SELECT count(*) AS n, \
         coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS age FROM outbox",
    )
    .get_result(conn)?;
    Ok((b.n, b.age))
}

/// Publishes `jobs` and deletes the outbox rows of those the broker confirmed.
pub async fn publish_and_forget(
    pool: &PgPool,
    publisher: &Publisher,
    jobs: Vec<Outgoing>,
) -> Result<usize, Error> {
    if jobs.is_empty() {
        return Ok(0);
    }
    let confirmed = match publisher.publish(&jobs, Route::Send).await {
        Ok(c) => c,
        Err(_) => return Ok(0),
    };
    let n = confirmed.len();
    if n > 0 {
        db::run(pool, move |conn| Ok(remove(conn, &confirmed)?)).await?;
    }
    Ok(n)
}

/// The after-commit hand-off: callers `notify` job ids; a task publishes them in batches.
#[derive(Clone)]
pub struct OutboxPublisher {
    tx: mpsc::Sender<Outgoing>,
}

impl OutboxPublisher {
    /// Starts the publishing task. `capacity` bounds memory: when full, ids are left to the
    /// relay rather than making a request wait.
    pub fn start(
        pool: PgPool,
        publisher: Arc<Publisher>,
        capacity: usize,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Outgoing>(capacity);
        let handle = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(HANDOFF_BATCH);
            while rx.recv_many(&mut batch, HANDOFF_BATCH).await > 0 {
                let jobs = std::mem::take(&mut batch);
                if let Err(e) = publish_and_forget(&pool, &publisher, jobs).await {
                    tracing::warn!(error = %e, "could not clear published outbox rows; the relay retries");
                }
            }
        });
        (OutboxPublisher { tx }, handle)
    }

    /// Hands a committed job (and the trace context of its request) to the publisher
    /// without waiting.
    pub fn notify(&self, job_id: i64, traceparent: Option<String>) {
        if self
            .tx
            .try_send(Outgoing::new(job_id, traceparent))
            .is_err()
        {
            tracing::debug!(
                job_id,
                "publish queue full or closed; the relay will publish the job"
            );
        }
    }
}

/// Publishes outbox rows left behind, until `shutdown` turns true.
pub async fn run_relay(
    pool: PgPool,
    publisher: Arc<Publisher>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RELAY_INTERVAL) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        loop {
            let claimed =
                db::run(&pool, |conn| Ok(claim_due(conn, RELAY_GRACE, RELAY_BATCH)?)).await;
            let ids = match claimed {
                Ok(ids) if !ids.is_empty() => ids,
                Ok(_) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "outbox relay cannot reach PostgreSQL");
                    break;
                }
            };
            let wanted = ids.len();
            match publish_and_forget(&pool, &publisher, ids).await {
                Ok(n) if n > 0 => {
                    tracing::info!(published = n, "outbox relay published pending jobs")
                }
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay failed");
                    break;
                }
            }
            if wanted < RELAY_BATCH as usize {
                break;
            }
        }
    }
}
