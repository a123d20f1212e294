//! The resend limits of SPEC 3.4, for every call that would mail a code: at most one mail per
//! `RESEND_COOLDOWN` to a recipient (case-insensitive) for a purpose, and at most
//! `MAIL_RECIPIENT_HOURLY_LIMIT` mails to a recipient in any rolling hour, within an
//! instance, whoever asks. Over either: 429 with the wait until both allow a mail. They count
//! mail jobs by their creation, whatever became of them (DESIGN "Choices where SPEC leaves
//! room").

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use super::Commands;
use crate::error::{Code, Error, Rejection, ids};
use crate::mail_job::{self, Purpose};

impl Commands {
    /// Refuses (429) a mail to `recipient` that the limits do not allow now.
    ///
    /// Calls for different users can mail the same recipient, so the user row lock does not
    /// serialize them: a transaction-scoped advisory lock on (instance, recipient) does, and
    /// the check and the enqueue that follows it are one step for concurrent requests.
    pub(super) fn check_send_limits(
        &self,
        conn: &mut PgConnection,
        instance_id: i64,
        recipient: &str,
        purpose: Purpose,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let cooldown = self.policy.resend_cooldown;
        let hourly = self.policy.recipient_hourly_limit;
        if cooldown.is_zero() && hourly == 0 {
            return Ok(());
        }
        mail_job::lock_recipient(conn, instance_id, recipient)?;
        let wait = cooldown_wait(conn, cooldown, instance_id, recipient, purpose, now)?
            .max(hourly_wait(conn, hourly, instance_id, recipient, now)?);
        if wait.is_zero() {
            return Ok(());
        }
        Err(too_many_mails(wait).into())
    }
}

/// How long until the cooldown after the last mail of `purpose` to `recipient` is over
/// (zero: it is).
fn cooldown_wait(
    conn: &mut PgConnection,
    cooldown: Duration,
    instance_id: i64,
    recipient: &str,
    purpose: Purpose,
    now: DateTime<Utc>,
) -> Result<Duration, Error> {
    if cooldown.is_zero() {
        return Ok(Duration::ZERO);
    }
    let since = now - to_delta(cooldown)?;
    let last = mail_job::last_enqueued_to(conn, instance_id, recipient, purpose, since)?;
    Ok(last.map_or(Duration::ZERO, |last| {
        cooldown.saturating_sub((now - last).to_std().unwrap_or_default())
    }))
}

/// How long until the hourly cap lets one more mail to `recipient` through (zero: it does).
fn hourly_wait(
    conn: &mut PgConnection,
    limit: u32,
    instance_id: i64,
    recipient: &str,
    now: DateTime<Utc>,
) -> Result<Duration, Error> {
    if limit == 0 {
        return Ok(Duration::ZERO);
    }
    let hour = chrono::TimeDelta::hours(1);
    let oldest_counted = mail_job::nth_latest_to(conn, instance_id, recipient, limit, now - hour)?;
    Ok(oldest_counted.map_or(Duration::ZERO, |oldest| {
        (oldest + hour - now).to_std().unwrap_or_default()
    }))
}

/// The 429, with the wait rounded up to whole seconds (at least one) for `Retry-After`.
fn too_many_mails(wait: Duration) -> Rejection {
    let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    let mut rejection = Rejection::new(
        Code::ResourceExhausted,
        ids::RESEND_COOLDOWN,
        format!("Too many mails to this address, try again in {seconds} s"),
    );
    rejection.retry_after = Some(seconds);
    rejection
}

fn to_delta(d: Duration) -> Result<chrono::TimeDelta, Error> {
    chrono::TimeDelta::from_std(d).map_err(|_| Error::Internal("duration out of range".into()))
}
