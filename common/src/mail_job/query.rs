//! Reading mail jobs: the worker's view of one job, the operators' list and history, the
//! candidates of a replay, and what the resend limits count.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use super::{JobState, Purpose};
use crate::db::Prepared;
use crate::schema::{mail_attempts, mail_jobs};

/// A job as the worker reads it to deliver it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = mail_jobs)]
pub struct MailJob {
    pub id: i64,
    /// Whose mail settings apply (SPEC 9).
    pub instance_id: i64,
    pub org_id: i64,
    pub user_id: i64,
    pub purpose: Purpose,
    pub recipient: String,
    pub url_template: String,
    pub code_ciphertext: Option<Vec<u8>>,
    pub code_expires_at: DateTime<Utc>,
    pub state: JobState,
    pub attempts: i32,
    /// Deliveries that ended without the mail since the job was made or last replayed
    /// (what MAIL_MAX_ATTEMPTS limits).
    pub failed_deliveries: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// While `sending`: until when the holder's claim protects it (renewed while it sends).
    pub lease_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub trace_context: Option<String>,
    /// The reader's language (BCP 47), if the user has one.
    pub language: Option<String>,
}

/// The jobs of `ids` that exist, in no particular order.
pub fn load(conn: &mut PgConnection, ids: &[i64]) -> QueryResult<Vec<MailJob>> {
    mail_jobs::table
        .filter(mail_jobs::id.eq_any(ids))
        .select(MailJob::as_select())
        .load(conn)
}

/// The state of a job (an unknown id is `NotFound`).
pub fn state_of(conn: &mut PgConnection, id: i64) -> QueryResult<JobState> {
    mail_jobs::table
        .find(id)
        .select(mail_jobs::state)
        .first(conn)
}

/// A job as `worker jobs list` and `jobs show` print it. Never the code.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = mail_jobs)]
pub struct JobSummary {
    pub id: i64,
    pub user_id: i64,
    pub purpose: Purpose,
    pub recipient: String,
    pub state: JobState,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// The filters of `worker jobs list`.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub user_id: Option<i64>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
}

/// The newest `limit` jobs that pass `filter`, newest first.
pub fn list(
    conn: &mut PgConnection,
    filter: JobFilter,
    limit: i64,
) -> QueryResult<Vec<JobSummary>> {
    let mut query = mail_jobs::table
        .select(JobSummary::as_select())
        .into_boxed();
    if let Some(state) = filter.state {
        query = query.filter(mail_jobs::state.eq(state));
    }
    if let Some(user) = filter.user_id {
        query = query.filter(mail_jobs::user_id.eq(user));
    }
    if let Some(since) = filter.since {
        query = query.filter(mail_jobs::created_at.ge(since));
    }
    if let Some(until) = filter.until {
        query = query.filter(mail_jobs::created_at.lt(until));
    }
    query
        .order((mail_jobs::created_at.desc(), mail_jobs::id.desc()))
        .limit(limit)
        .load(conn)
}

pub fn summary(conn: &mut PgConnection, id: i64) -> QueryResult<Option<JobSummary>> {
    mail_jobs::table
        .find(id)
        .select(JobSummary::as_select())
        .first(conn)
        .optional()
}

/// One SMTP attempt of a job's history.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = mail_attempts)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    pub outcome: String,
    pub smtp_reply: Option<String>,
    pub duration_ms: i32,
}

/// Every attempt of a job, oldest first.
pub fn attempts(conn: &mut PgConnection, job_id: i64) -> QueryResult<Vec<Attempt>> {
    mail_attempts::table
        .filter(mail_attempts::job_id.eq(job_id))
        .order(mail_attempts::id.asc())
        .select(Attempt::as_select())
        .load(conn)
}

/// A job as replay weighs it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = mail_jobs)]
pub struct ReplayCandidate {
    pub id: i64,
    pub user_id: i64,
    pub email_id: i64,
    pub state: JobState,
    pub code_ciphertext: Option<Vec<u8>>,
    pub code_expires_at: DateTime<Utc>,
}

/// The jobs in one of `states` created in `[since, until)`, oldest first (`replay --failed`).
pub fn replay_candidates(
    conn: &mut PgConnection,
    states: &[JobState],
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> QueryResult<Vec<ReplayCandidate>> {
    let mut query = mail_jobs::table
        .filter(mail_jobs::state.eq_any(states))
        .select(ReplayCandidate::as_select())
        .into_boxed();
    if let Some(s) = since {
        query = query.filter(mail_jobs::created_at.ge(s));
    }
    if let Some(u) = until {
        query = query.filter(mail_jobs::created_at.lt(u));
    }
    query.order(mail_jobs::id.asc()).load(conn)
}

pub fn replay_candidate(conn: &mut PgConnection, id: i64) -> QueryResult<Option<ReplayCandidate>> {
    mail_jobs::table
        .find(id)
        .select(ReplayCandidate::as_select())
        .first(conn)
        .optional()
}

/// Whom a job mails, and for which address of theirs.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = mail_jobs)]
pub struct Addressee {
    pub user_id: i64,
    pub email_id: i64,
    pub purpose: Purpose,
    pub recipient: String,
}

pub fn addressee(conn: &mut PgConnection, id: i64) -> QueryResult<Addressee> {
    mail_jobs::table
        .find(id)
        .select(Addressee::as_select())
        .first(conn)
}

/// The newest job to `recipient` (any case), of `purpose` if given (`worker mail code`).
pub fn newest_to(
    conn: &mut PgConnection,
    recipient: &str,
    purpose: Option<Purpose>,
) -> QueryResult<Option<i64>> {
    let mut query = mail_jobs::table
        .filter(recipient_is(recipient))
        .order((mail_jobs::created_at.desc(), mail_jobs::id.desc()))
        .select(mail_jobs::id)
        .into_boxed();
    if let Some(p) = purpose {
        query = query.filter(mail_jobs::purpose.eq(p));
    }
    query.first(conn).optional()
}

/// How many jobs are in each state (states without jobs are left out).
pub fn count_by_state(conn: &mut PgConnection) -> QueryResult<Vec<(JobState, i64)>> {
    mail_jobs::table
        .group_by(mail_jobs::state)
        .select((mail_jobs::state, diesel::dsl::count_star()))
        .load(conn)
}

/// Advisory-lock class of [`lock_recipient`] (the first key of PostgreSQL's two-key form).
const RECIPIENT_LOCK_CLASS: i32 = 0x4d41_494c; // "MAIL"

/// [`lock_recipient`]'s statement (`$1` the lock class, `$2` `instance:recipient`).
pub const LOCK_RECIPIENT_SQL: &str = "SELECT pg_advisory_xact_lock($1, hashtext($2))";

/// Serializes, until the end of the transaction, the calls that may mail `recipient` of an
/// instance, so the resend limits are checked and the new job enqueued as one step.
pub fn lock_recipient(
    conn: &mut PgConnection,
    instance_id: i64,
    recipient: &str,
) -> QueryResult<()> {
    use diesel::sql_types::{Integer, Text};
    Prepared::new(LOCK_RECIPIENT_SQL)
        .bind::<Integer, _>(RECIPIENT_LOCK_CLASS)
        .bind::<Text, _>(format!("{instance_id}:{}", recipient.to_lowercase()))
        .execute(conn)?;
    Ok(())
}

/// The `lower(recipient)` condition (served by the index `mail_jobs_recipient` on
/// `(instance_id, lower(recipient), created_at)`).
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

/// [`recent_mails_to`]'s statement: `$1` instance, `$2` recipient, `$3` purpose, `$4` the
/// start of the cooldown, `$5` the start of the hour, `$6` the hourly cap minus one (the
/// latest mails to skip). Both parts are served by the index `mail_jobs_recipient` on
/// `(instance_id, lower(recipient), created_at)`.
pub const RECENT_MAILS_TO_SQL: &str = "\
    SELECT (SELECT max(created_at) FROM mail_jobs \
             WHERE instance_id = $1 AND lower(recipient) = lower($2) AND created_at > $4 \
               AND purpose = $3) AS last_of_purpose, \
           (SELECT created_at FROM mail_jobs \
             WHERE instance_id = $1 AND lower(recipient) = lower($2) AND created_at > $5 \
             ORDER BY created_at DESC OFFSET $6 LIMIT 1) AS nth_latest";

/// What the resend limits count of the mails to a recipient of an instance (all jobs, by
/// their creation, whatever became of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct RecentMails {
    /// When the last mail for the purpose was enqueued, if after the cooldown's start.
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>)]
    pub last_of_purpose: Option<DateTime<Utc>>,
    /// The enqueue time of the n-th latest mail (all purposes) after the hour's start:
    /// `Some` when n mails were enqueued in that window.
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>)]
    pub nth_latest: Option<DateTime<Utc>>,
}

/// The resend cooldown's and the hourly cap's view of the mails to `recipient` of an
/// instance, in one statement: the last one for `purpose` after `cooldown_since`, and the
/// `n`-th latest after `hour_since`.
pub fn recent_mails_to(
    conn: &mut PgConnection,
    instance_id: i64,
    recipient: &str,
    purpose: Purpose,
    cooldown_since: DateTime<Utc>,
    n: u32,
    hour_since: DateTime<Utc>,
) -> QueryResult<RecentMails> {
    use diesel::sql_types::{BigInt, Text, Timestamptz};
    Prepared::new(RECENT_MAILS_TO_SQL)
        .bind::<BigInt, _>(instance_id)
        .bind::<Text, _>(recipient)
        .bind::<Text, _>(purpose.as_str())
        .bind::<Timestamptz, _>(cooldown_since)
        .bind::<Timestamptz, _>(hour_since)
        .bind::<BigInt, _>(i64::from(n.max(1)) - 1)
        .get_result(conn)
}
