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
        let hour = chrono::TimeDelta::hours(1);
        // Both limits read in one statement; a limit that is off ignores its part.
        let recent = mail_job::recent_mails_to(
            conn,
            instance_id,
            recipient,
            purpose,
            now - to_delta(cooldown)?,
            hourly,
            now - hour,
        )?;
        let cooldown_wait = match recent.last_of_purpose {
            Some(last) if !cooldown.is_zero() => {
                cooldown.saturating_sub((now - last).to_std().unwrap_or_default())
            }
            _ => Duration::ZERO,
        };
        let hourly_wait = match recent.nth_latest {
            Some(oldest_counted) if hourly > 0 => {
                (oldest_counted + hour - now).to_std().unwrap_or_default()
            }
            _ => Duration::ZERO,
        };
        let wait = cooldown_wait.max(hourly_wait);
        if wait.is_zero() {
            return Ok(());
        }
        Err(too_many_mails(wait).into())
    }
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
