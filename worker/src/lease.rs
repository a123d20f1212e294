//! The claims this worker holds. A claim ([`mail_job::claim`]) gives the job a short lease;
//! while the mail is being sent, one task renews the leases of every job held here in one
//! statement. So a second message for a job being sent (its holder's broker link failed and
//! the broker redelivered it elsewhere) finds the lease alive and waits, and a job whose
//! holder died is free again within [`LEASE`].

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use common::db::{self, PgPool};
use common::mail_job;
use tokio::sync::watch;

/// How long a claim protects a job without being renewed.
pub const LEASE: Duration = Duration::from_secs(30);
/// How often the leases of held jobs are renewed (a third of [`LEASE`]: two renewals may
/// fail before another worker can take a job over).
const RENEW_EVERY: Duration = Duration::from_secs(10);

/// The jobs held by deliveries in flight in this process.
#[derive(Debug, Default)]
pub struct Leases {
    held: Mutex<HashSet<i64>>,
}

/// A job held while this value lives; dropping it (the delivery ended, or was aborted)
/// stops the renewals.
#[must_use]
pub struct Held {
    leases: Arc<Leases>,
    id: i64,
}

impl Leases {
    pub fn hold(self: &Arc<Self>, id: i64) -> Held {
        self.lock().insert(id);
        Held {
            leases: self.clone(),
            id,
        }
    }

    /// The jobs held now.
    pub fn held(&self) -> Vec<i64> {
        self.lock().iter().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.leases.lock().remove(&self.id);
    }
}

/// Renews the leases of the held jobs every [`RENEW_EVERY`] until `stop`.
pub async fn keep_renewed(leases: Arc<Leases>, pool: PgPool, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RENEW_EVERY) => {}
            _ = stop.changed() => return,
        }
        let ids = leases.held();
        if ids.is_empty() {
            continue;
        }
        if let Err(e) = db::run(&pool, move |c| Ok(mail_job::renew_leases(c, &ids, LEASE)?)).await {
            tracing::warn!(error = %e, "cannot renew the leases of the jobs being sent");
        }
    }
}

/// Hands jobs back (see [`mail_job::release`]): called with the jobs of the deliveries a
/// stop aborted at the end of the grace period.
pub async fn release(ids: Vec<i64>, pool: &PgPool) {
    if ids.is_empty() {
        return;
    }
    let count = ids.len();
    match db::run(pool, move |c| {
        Ok(mail_job::release(
            c,
            &ids,
            "handed back: the worker stopped before the mail went out",
        )?)
    })
    .await
    {
        Ok(n) => tracing::warn!(jobs = n, "handed back jobs still being sent at shutdown"),
        Err(e) => {
            tracing::warn!(jobs = count, error = %e, "cannot hand back the jobs still held; their leases run out")
        }
    }
}
