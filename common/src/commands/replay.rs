//! Replay (`worker replay`, SPEC 7): which failed jobs may go out again, with their own code
//! or a new one, and why the others are left alone. The worker's `ops.rs` picks the jobs,
//! prints and publishes; the rules are here. A dry run asks every question the real run
//! asks, so both print the same.

use std::fmt;

use chrono::Utc;
use diesel::prelude::*;
use serde_json::json;

use super::address::{self, EmailRow};
use super::email::{EmailTarget, event_prefix, target_payload};
use super::{Commands, UserRow, append_event};
use crate::error::Error;
use crate::mail_job::{self, JobState, Purpose, ReplayCandidate};
use crate::schema::users;
use crate::time::now_ms;

/// Why replay leaves a job alone; printed as `skipped <id>: <reason>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// No job has the id the operator gave.
    NotFound,
    Sent,
    /// A newer code replaced the job's, or the address was verified, changed or removed.
    Superseded,
    UserDeleted,
    /// The code expired and `--refresh-code` was not given.
    Expired,
    /// The job is neither `failed` nor (with `--refresh-code`) `expired`.
    NotFailed,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotFound => "not found",
            SkipReason::Sent => "sent",
            SkipReason::Superseded => "superseded",
            SkipReason::UserDeleted => "user deleted",
            SkipReason::Expired => "expired",
            SkipReason::NotFailed => "not failed",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What replay does with one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Replay { refresh: bool },
    Skip(SkipReason),
}

impl Commands {
    /// Replays one job: decides, and unless `dry_run` puts it back on the queue (one
    /// transaction with its outbox row), with a new code when its own is void and
    /// `refresh_code` allows one. `Ok(None)` when the job is (or would be) replayed.
    pub fn replay_job(
        &self,
        conn: &mut PgConnection,
        job: &ReplayCandidate,
        refresh_code: bool,
        dry_run: bool,
    ) -> Result<Option<SkipReason>, Error> {
        match self.decide(conn, job, refresh_code)? {
            Decision::Skip(reason) => Ok(Some(reason)),
            Decision::Replay { .. } if dry_run => Ok(None),
            Decision::Replay { refresh } => self.requeue(conn, job.id, refresh),
        }
    }

    fn decide(
        &self,
        conn: &mut PgConnection,
        job: &ReplayCandidate,
        refresh_code: bool,
    ) -> Result<Decision, Error> {
        let user_deleted = live_user(conn, job.user_id, false)?.is_none();
        let decision = match job.state {
            JobState::Sent => Decision::Skip(SkipReason::Sent),
            JobState::Superseded => Decision::Skip(SkipReason::Superseded),
            _ if user_deleted => Decision::Skip(SkipReason::UserDeleted),
            JobState::Expired if refresh_code => Decision::Replay { refresh: true },
            JobState::Expired => Decision::Skip(SkipReason::Expired),
            JobState::Failed => self.decide_failed(conn, job, refresh_code),
            _ => Decision::Skip(SkipReason::NotFailed),
        };
        // A dry run must say what the real run will do: a refresh can still be refused.
        if decision == (Decision::Replay { refresh: true }) {
            return Ok(match refresh_target(conn, job.id, false)? {
                Ok(_) => decision,
                Err(refused) => Decision::Skip(refused),
            });
        }
        Ok(decision)
    }

    /// A `failed` job goes out with its own code while that is valid and still the
    /// address's pending one; otherwise only with a new code.
    fn decide_failed(
        &self,
        conn: &mut PgConnection,
        job: &ReplayCandidate,
        refresh_code: bool,
    ) -> Decision {
        let expired = job.code_expires_at <= Utc::now() || job.code_ciphertext.is_none();
        let current = !expired
            && job.code_ciphertext.as_deref().is_some_and(|ct| {
                self.job_code_is_current(conn, job.id, job.email_id, ct)
                    .unwrap_or(false)
            });
        match (current, refresh_code) {
            (true, _) => Decision::Replay { refresh: false },
            (false, true) => Decision::Replay { refresh: true },
            (false, false) if expired => Decision::Skip(SkipReason::Expired),
            (false, false) => Decision::Skip(SkipReason::Superseded),
        }
    }

    fn requeue(
        &self,
        conn: &mut PgConnection,
        job_id: i64,
        refresh: bool,
    ) -> Result<Option<SkipReason>, Error> {
        conn.transaction(|conn| {
            if !mail_job::lock_for_replay(conn, job_id)? {
                return Ok(Some(SkipReason::NotFailed));
            }
            if refresh && let Err(refused) = self.refresh_job_code(conn, job_id)? {
                return Ok(Some(refused));
            }
            mail_job::requeue_for_replay(conn, job_id)?;
            Ok(None)
        })
    }

    /// Gives a failed or expired job a new code, as a resend would (`--refresh-code`): the
    /// address's pending code is replaced, the job carries the new one, and an event records
    /// it.
    fn refresh_job_code(
        &self,
        conn: &mut PgConnection,
        job_id: i64,
    ) -> Result<Result<(), SkipReason>, Error> {
        let (user, row, purpose) = match refresh_target(conn, job_id, true)? {
            Ok(found) => found,
            Err(refused) => return Ok(Err(refused)),
        };
        let now = now_ms();
        let issued = self.issue_code(conn, row.id, purpose, now)?;
        mail_job::replace_code(
            conn,
            &self.keys,
            job_id,
            &issued.code,
            issued.expires_at,
            now,
        )?;
        mail_job::supersede_unsent(conn, row.id, Some(job_id), now)?;
        let target = match purpose {
            Purpose::ContactEmail => EmailTarget::ContactEmail,
            Purpose::OtpEmail => EmailTarget::OtpEmail(""),
        };
        let mut payload = target_payload(target, &row);
        payload["by"] = json!("replay");
        append_event(
            conn,
            &user,
            &format!("{}.code.resent", event_prefix(target)),
            payload,
            now,
        )?;
        Ok(Ok(()))
    }

    /// Whether a job's code is still the pending code of its address (a replay without a
    /// new code is only worth it then).
    fn job_code_is_current(
        &self,
        conn: &mut PgConnection,
        job_id: i64,
        email_id: i64,
        ciphertext: &[u8],
    ) -> Result<bool, Error> {
        let Ok(code) = self.keys.decrypt(job_id, ciphertext) else {
            return Ok(false);
        };
        let row = address::find(conn, email_id)?;
        Ok(row.is_some_and(|r| {
            r.pending_code_hash()
                .is_some_and(|hash| self.keys.verify(r.id, &code, hash))
        }))
    }
}

/// The user (locked when `lock`) and address a job's code can be refreshed for: the user
/// still exists and the address still waits for verification of the same recipient.
fn refresh_target(
    conn: &mut PgConnection,
    job_id: i64,
    lock: bool,
) -> Result<Result<(UserRow, EmailRow, Purpose), SkipReason>, Error> {
    let mail_job::Addressee {
        user_id,
        email_id,
        purpose,
        recipient,
    } = mail_job::addressee(conn, job_id)?;
    let Some(user) = live_user(conn, user_id, lock)? else {
        return Ok(Err(SkipReason::UserDeleted));
    };
    let row = address::find(conn, email_id)?;
    match row.filter(|r| r.address == recipient && r.has_pending_code()) {
        Some(row) => Ok(Ok((user, row, purpose))),
        None => Ok(Err(SkipReason::Superseded)),
    }
}

/// The user, unless deleted; locked for the transaction when `lock`.
fn live_user(conn: &mut PgConnection, user_id: i64, lock: bool) -> QueryResult<Option<UserRow>> {
    let query = users::table
        .filter(users::id.eq(user_id))
        .filter(users::deleted_at.is_null())
        .select(UserRow::as_select());
    if lock {
        query.for_update().first(conn).optional()
    } else {
        query.first(conn).optional()
    }
}
