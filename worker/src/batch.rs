//! Group commit: the deliveries in flight ask for database work (a claim, the record of a
//! sent mail) and one task runs what is asked meanwhile as one trip to PostgreSQL, one trip
//! at a time. A request that finds the task idle goes at once, alone, so a quiet worker
//! waits for nothing; under load the requests that arrive during a trip share the next one,
//! and the work per mail (transactions, round trips, trips to the blocking pool) shrinks
//! with the batch.
//!
//! A batch answers each request on its own: if the batch's statement fails while the
//! connection stays up (a row the statement refuses), the requests are run again one by one
//! on the same connection, so one bad request cannot fail the others.

use std::sync::Arc;

use common::db::{self, PgPool};
use common::error::Error;
use diesel::PgConnection;
use tokio::sync::{mpsc, oneshot};

/// At most this many requests share one trip.
const MAX_BATCH: usize = 64;

type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// Runs `work` for batches of requests, one trip at a time. (Two trips at a time made the
/// batches smaller and the worker slower in the benchmark: the trips compete for the same
/// two cores.)
pub struct Batcher<Req, Resp> {
    requests: mpsc::UnboundedSender<(Req, Reply<Resp>)>,
}

impl<Req, Resp> Batcher<Req, Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    /// Starts the task. `work` gets the requests of a batch and answers each, in order.
    pub fn start<W>(pool: PgPool, work: W) -> Self
    where
        W: Fn(&mut PgConnection, &[Req]) -> Result<Vec<Resp>, Error> + Send + Sync + 'static,
    {
        let (requests, queue) = mpsc::unbounded_channel();
        tokio::spawn(serve(pool, Arc::new(work), queue));
        Batcher { requests }
    }

    /// Asks for one request's work and waits for its answer.
    pub async fn call(&self, request: Req) -> Result<Resp, Error> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((request, reply))
            .map_err(|_| Error::Internal("the batch task has stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Internal("the batch task dropped a request".into()))?
    }
}

async fn serve<Req, Resp, W>(
    pool: PgPool,
    work: Arc<W>,
    mut queue: mpsc::UnboundedReceiver<(Req, Reply<Resp>)>,
) where
    Req: Send + 'static,
    Resp: Send + 'static,
    W: Fn(&mut PgConnection, &[Req]) -> Result<Vec<Resp>, Error> + Send + Sync + 'static,
{
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Ends when every sender is gone (the worker stops).
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (requests, replies): (Vec<Req>, Vec<Reply<Resp>>) = batch.drain(..).unzip();
        let work = work.clone();
        let answers = db::run(&pool, move |conn| Ok(run_batch(conn, &*work, &requests))).await;
        match answers {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    // A delivery aborted meanwhile (a stop) no longer listens.
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(share(&e)));
                }
            }
        }
    }
}

/// The batch in one go; after a refused statement, each request alone.
fn run_batch<Req, Resp, W>(
    conn: &mut PgConnection,
    work: &W,
    requests: &[Req],
) -> Vec<Result<Resp, Error>>
where
    W: Fn(&mut PgConnection, &[Req]) -> Result<Vec<Resp>, Error>,
{
    match work(conn, requests) {
        Ok(answers) if answers.len() == requests.len() => answers.into_iter().map(Ok).collect(),
        Ok(answers) => {
            let e = Error::Internal(format!(
                "a batch of {} requests got {} answers",
                requests.len(),
                answers.len()
            ));
            requests.iter().map(|_| Err(share(&e))).collect()
        }
        Err(e @ Error::Database(_)) if requests.len() > 1 => {
            tracing::warn!(error = %e, size = requests.len(), "a batch failed; its requests run one by one");
            requests
                .iter()
                .map(|one| {
                    work(conn, std::slice::from_ref(one))?
                        .pop()
                        .ok_or_else(|| Error::Internal("a request got no answer".into()))
                })
                .collect()
        }
        Err(e) => requests.iter().map(|_| Err(share(&e))).collect(),
    }
}

/// The same error for each request of a failed batch. A database error keeps its meaning
/// for the delivery (the database is in trouble: hand back and pause).
fn share(e: &Error) -> Error {
    match e {
        Error::Database(_) | Error::DatabaseUnavailable(_) => {
            Error::DatabaseUnavailable(e.to_string())
        }
        Error::Rejected(r) => Error::Rejected(r.clone()),
        Error::Internal(m) => Error::Internal(m.clone()),
    }
}
