//! Mail jobs: one mail to deliver, its states (SPEC 7) and its history. Commands enqueue a
//! job inside their own transaction together with an outbox row (DESIGN decision 1); the
//! worker moves the job through its states with conditional updates (decision 3).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use crate::db::next_id;
use crate::domain::{CodeKeys, UrlTemplate};
use crate::schema::{mail_jobs, outbox};

/// What a mail is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    ContactEmail,
    OtpEmail,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::ContactEmail => "contact_email",
            Purpose::OtpEmail => "otp_email",
        }
    }
}

impl FromStr for Purpose {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "contact_email" => Ok(Purpose::ContactEmail),
            "otp_email" => Ok(Purpose::OtpEmail),
            other => Err(format!("unknown purpose {other:?}")),
        }
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The life of a job. `queued` and `retrying` may be sent; the rest of the states but
/// `sending` are final until an operator replays a `failed` (or `expired`) job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Sending,
    Retrying,
    Sent,
    Failed,
    Superseded,
    Cancelled,
    Expired,
}

impl JobState {
    pub const ALL: [JobState; 8] = [
        JobState::Queued,
        JobState::Sending,
        JobState::Retrying,
        JobState::Sent,
        JobState::Failed,
        JobState::Superseded,
        JobState::Cancelled,
        JobState::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Sending => "sending",
            JobState::Retrying => "retrying",
            JobState::Sent => "sent",
            JobState::Failed => "failed",
            JobState::Superseded => "superseded",
            JobState::Cancelled => "cancelled",
            JobState::Expired => "expired",
        }
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown state {s:?} (known: queued, sending, retrying, sent, failed, superseded, cancelled, expired)"
                )
            })
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// States a job can still be sent from without an operator.
pub const UNSENT: [&str; 2] = ["queued", "retrying"];

/// States whose job is not sent yet: [`UNSENT`] and `sending` (an attempt running). A newer
/// code or a deleted user takes these away from the worker; it checks after each attempt.
const NOT_YET_SENT: [&str; 3] = ["queued", "retrying", "sending"];

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub instance_id: i64,
    pub org_id: i64,
    pub user_id: i64,
    pub email_id: i64,
    pub purpose: Purpose,
    pub recipient: &'a str,
    pub url_template: &'a UrlTemplate,
    pub code: &'a str,
    pub code_expires_at: DateTime<Utc>,
}

/// Inserts the job (its code encrypted) and its outbox row; returns the job id. Runs in the
/// caller's transaction.
pub fn enqueue(
    conn: &mut PgConnection,
    keys: &CodeKeys,
    job: NewJob<'_>,
    now: DateTime<Utc>,
) -> QueryResult<i64> {
    let id = next_id(conn)?;
    diesel::insert_into(mail_jobs::table)
        .values((
            mail_jobs::id.eq(id),
            mail_jobs::instance_id.eq(job.instance_id),
            mail_jobs::org_id.eq(job.org_id),
            mail_jobs::user_id.eq(job.user_id),
            mail_jobs::email_id.eq(job.email_id),
            mail_jobs::purpose.eq(job.purpose.as_str()),
            mail_jobs::recipient.eq(job.recipient),
            mail_jobs::url_template.eq(job.url_template.as_str()),
            mail_jobs::code_ciphertext.eq(Some(keys.encrypt(id, job.code))),
            mail_jobs::code_expires_at.eq(job.code_expires_at),
            mail_jobs::state.eq(JobState::Queued.as_str()),
            mail_jobs::trace_context.eq(crate::trace::current()),
            mail_jobs::created_at.eq(now),
            mail_jobs::updated_at.eq(now),
        ))
        .execute(conn)?;
    add_to_outbox(conn, id)?;
    Ok(id)
}

/// Records that `job_id` has to be (re)published; the publisher or the relay takes it from
/// there.
pub fn add_to_outbox(conn: &mut PgConnection, job_id: i64) -> QueryResult<()> {
    diesel::insert_into(outbox::table)
        .values(outbox::job_id.eq(job_id))
        .execute(conn)?;
    Ok(())
}

/// Marks the unsent jobs of an address `superseded` (a newer code, a verified or removed
/// address) and wipes their codes. `by` is the newer job, if any; it is left alone.
pub fn supersede_unsent(
    conn: &mut PgConnection,
    email_id: i64,
    by: Option<i64>,
    now: DateTime<Utc>,
) -> QueryResult<usize> {
    diesel::update(
        mail_jobs::table
            .filter(mail_jobs::email_id.eq(email_id))
            .filter(mail_jobs::state.eq_any(NOT_YET_SENT))
            .filter(mail_jobs::id.ne(by.unwrap_or(0))),
    )
    .set((
        mail_jobs::state.eq(JobState::Superseded.as_str()),
        mail_jobs::superseded_by.eq(by),
        mail_jobs::code_ciphertext.eq(None::<Vec<u8>>),
        mail_jobs::updated_at.eq(now),
    ))
    .execute(conn)
}

/// Cancels every unsent job of a deleted user.
pub fn cancel_unsent_for_user(
    conn: &mut PgConnection,
    user_id: i64,
    now: DateTime<Utc>,
) -> QueryResult<usize> {
    diesel::update(
        mail_jobs::table
            .filter(mail_jobs::user_id.eq(user_id))
            .filter(mail_jobs::state.eq_any(NOT_YET_SENT)),
    )
    .set((
        mail_jobs::state.eq(JobState::Cancelled.as_str()),
        mail_jobs::last_error.eq(Some("user deleted")),
        mail_jobs::code_ciphertext.eq(None::<Vec<u8>>),
        mail_jobs::updated_at.eq(now),
    ))
    .execute(conn)
}

/// Advisory-lock class of [`lock_recipient`] (the first key of PostgreSQL's two-key form).
const RECIPIENT_LOCK_CLASS: i32 = 0x4d41_494c; // "MAIL"

/// Serializes, until the end of the transaction, the calls that may mail `recipient` of an
/// instance, so the resend limits are checked and the new job enqueued as one step.
pub fn lock_recipient(
    conn: &mut PgConnection,
    instance_id: i64,
    recipient: &str,
) -> QueryResult<()> {
    diesel::sql_query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind::<diesel::sql_types::Integer, _>(RECIPIENT_LOCK_CLASS)
        .bind::<diesel::sql_types::Text, _>(format!("{instance_id}:{}", recipient.to_lowercase()))
        .execute(conn)?;
    Ok(())
}

/// The `lower(recipient)` condition of the recipient queries (served by the index
/// `mail_jobs_recipient` on `(instance_id, lower(recipient), created_at)`).
fn recipient_is(
    recipient: &str,
) -> Box<dyn BoxableExpression<mail_jobs::table, diesel::pg::Pg, SqlType = diesel::sql_types::Bool>>
{
    Box::new(
        diesel::dsl::sql::<diesel::sql_types::Bool>("lower(recipient) = lower(")
            .bind::<diesel::sql_types::Text, _>(recipient.to_owned())
            .sql(")"),
    )
}

/// When the last mail to `recipient` of an instance for `purpose` was enqueued, if after
/// `since` (the resend cooldown).
pub fn last_enqueued_to(
    conn: &mut PgConnection,
    instance_id: i64,
    recipient: &str,
    purpose: Purpose,
    since: DateTime<Utc>,
) -> QueryResult<Option<DateTime<Utc>>> {
    mail_jobs::table
        .filter(mail_jobs::instance_id.eq(instance_id))
        .filter(recipient_is(recipient))
        .filter(mail_jobs::created_at.gt(since))
        .filter(mail_jobs::purpose.eq(purpose.as_str()))
        .select(diesel::dsl::max(mail_jobs::created_at))
        .first(conn)
}

/// The enqueue time of the `n`-th latest mail to `recipient` of an instance after `since`,
/// all purposes: `Some` when `n` mails were enqueued in that window (the hourly cap).
pub fn nth_latest_to(
    conn: &mut PgConnection,
    instance_id: i64,
    recipient: &str,
    n: u32,
    since: DateTime<Utc>,
) -> QueryResult<Option<DateTime<Utc>>> {
    mail_jobs::table
        .filter(mail_jobs::instance_id.eq(instance_id))
        .filter(recipient_is(recipient))
        .filter(mail_jobs::created_at.gt(since))
        .order(mail_jobs::created_at.desc())
        .select(mail_jobs::created_at)
        .offset(i64::from(n.max(1)) - 1)
        .first(conn)
        .optional()
}
