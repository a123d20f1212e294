//! The worker's side of `mail_jobs`: claiming a job with a conditional update (so two
//! deliveries of one message send once), recording each attempt, and the state moves that
//! end a delivery. Every move is conditional on the state the worker saw.

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::mail_job::{self, JobState, UNSENT};
use common::schema::{mail_attempts, mail_jobs};
use diesel::prelude::*;

/// A job as the worker reads it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = mail_jobs)]
pub struct JobRow {
    pub id: i64,
    pub org_id: i64,
    pub user_id: i64,
    pub purpose: String,
    pub recipient: String,
    pub url_template: String,
    pub code_ciphertext: Option<Vec<u8>>,
    pub code_expires_at: DateTime<Utc>,
    pub state: String,
    pub attempts: i32,
    /// Deliveries that ended without the mail since the job was made or last replayed
    /// (what MAIL_MAX_ATTEMPTS limits).
    pub failed_deliveries: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub trace_context: Option<String>,
}

pub fn load(conn: &mut PgConnection, id: i64) -> QueryResult<Option<JobRow>> {
    mail_jobs::table
        .find(id)
        .select(JobRow::as_select())
        .first(conn)
        .optional()
}

/// Takes the job for sending: from `queued` or `retrying`, or from `sending` when the
/// previous holder's lease ran out or the broker redelivered its message (the holder died).
pub fn claim(
    conn: &mut PgConnection,
    id: i64,
    redelivered: bool,
    lease: Duration,
) -> QueryResult<Option<JobRow>> {
    let now = Utc::now();
    let lease_until =
        now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::minutes(5));
    let stale_sending =
        mail_jobs::state
            .eq(JobState::Sending.as_str())
            .and(
                mail_jobs::lease_until
                    .lt(now)
                    .or(diesel::dsl::sql::<diesel::sql_types::Bool>(
                        if redelivered { "true" } else { "false" },
                    )),
            );
    diesel::update(
        mail_jobs::table
            .filter(mail_jobs::id.eq(id))
            .filter(mail_jobs::state.eq_any(UNSENT).or(stale_sending)),
    )
    .set((
        mail_jobs::state.eq(JobState::Sending.as_str()),
        mail_jobs::lease_until.eq(Some(lease_until)),
        mail_jobs::updated_at.eq(now),
    ))
    .returning(JobRow::as_returning())
    .get_result(conn)
    .optional()
}

/// The job as it stands after an attempt was recorded: another process may have superseded
/// or cancelled it meanwhile, and its code may have expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfterAttempt {
    /// Still held by this worker (`sending`).
    pub held: bool,
    pub code_expired: bool,
}

/// Appends an attempt to the history and counts it.
pub fn record_attempt(
    conn: &mut PgConnection,
    id: i64,
    at: DateTime<Utc>,
    outcome: &str,
    reply: &str,
    duration: Duration,
) -> QueryResult<AfterAttempt> {
    conn.transaction(|conn| {
        diesel::insert_into(mail_attempts::table)
            .values((
                mail_attempts::job_id.eq(id),
                mail_attempts::at.eq(at),
                mail_attempts::outcome.eq(outcome),
                mail_attempts::smtp_reply.eq(Some(truncate(reply))),
                mail_attempts::duration_ms.eq(duration.as_millis().min(i32::MAX as u128) as i32),
            ))
            .execute(conn)?;
        let (state, expires): (String, DateTime<Utc>) = diesel::update(mail_jobs::table.find(id))
            .set(mail_jobs::attempts.eq(mail_jobs::attempts + 1))
            .returning((mail_jobs::state, mail_jobs::code_expires_at))
            .get_result(conn)?;
        Ok(AfterAttempt {
            held: state == JobState::Sending.as_str(),
            code_expired: expires <= Utc::now(),
        })
    })
}

/// Keeps replies readable and bounded in the database.
fn truncate(reply: &str) -> String {
    reply.chars().take(1000).collect()
}

/// Moves a job this worker holds (`sending`) to its next state; 0 rows when it is no longer
/// held (superseded or cancelled meanwhile).
fn finish(
    conn: &mut PgConnection,
    id: i64,
    state: JobState,
    last_error: Option<&str>,
    next_attempt_at: Option<DateTime<Utc>>,
    wipe_code: bool,
) -> QueryResult<usize> {
    let now = Utc::now();
    let target = mail_jobs::table
        .filter(mail_jobs::id.eq(id))
        .filter(mail_jobs::state.eq(JobState::Sending.as_str()));
    let common = (
        mail_jobs::state.eq(state.as_str()),
        mail_jobs::last_error.eq(last_error.map(truncate)),
        mail_jobs::next_attempt_at.eq(next_attempt_at),
        mail_jobs::lease_until.eq(None::<DateTime<Utc>>),
        mail_jobs::updated_at.eq(now),
    );
    if wipe_code {
        diesel::update(target)
            .set((common, mail_jobs::code_ciphertext.eq(None::<Vec<u8>>)))
            .execute(conn)
    } else {
        diesel::update(target).set(common).execute(conn)
    }
}

/// The SMTP server accepted the mail: `sent`, even if the job was superseded or cancelled
/// while the mail was on its way (it did go out).
pub fn mark_sent(conn: &mut PgConnection, id: i64) -> QueryResult<usize> {
    let now = Utc::now();
    diesel::update(
        mail_jobs::table
            .filter(mail_jobs::id.eq(id))
            .filter(mail_jobs::state.eq_any(["sending", "superseded", "cancelled"])),
    )
    .set((
        mail_jobs::state.eq(JobState::Sent.as_str()),
        mail_jobs::last_error.eq(None::<String>),
        mail_jobs::next_attempt_at.eq(None::<DateTime<Utc>>),
        mail_jobs::lease_until.eq(None::<DateTime<Utc>>),
        mail_jobs::code_ciphertext.eq(None::<Vec<u8>>),
        mail_jobs::sent_at.eq(Some(now)),
        mail_jobs::updated_at.eq(now),
    ))
    .execute(conn)
}

pub fn mark_retrying(
    conn: &mut PgConnection,
    id: i64,
    next_attempt_at: DateTime<Utc>,
    last_error: &str,
    count_delivery: bool,
) -> QueryResult<usize> {
    conn.transaction(|conn| {
        let moved = finish(
            conn,
            id,
            JobState::Retrying,
            Some(last_error),
            Some(next_attempt_at),
            false,
        )?;
        if moved > 0 && count_delivery {
            diesel::update(mail_jobs::table.find(id))
                .set(mail_jobs::failed_deliveries.eq(mail_jobs::failed_deliveries + 1))
                .execute(conn)?;
        }
        Ok(moved)
    })
}

/// Failed: the code is kept (encrypted) so that a replay can still send it while valid.
pub fn mark_failed(conn: &mut PgConnection, id: i64, last_error: &str) -> QueryResult<usize> {
    finish(conn, id, JobState::Failed, Some(last_error), None, false)
}

pub fn mark_expired(conn: &mut PgConnection, id: i64) -> QueryResult<usize> {
    finish(conn, id, JobState::Expired, Some("expired"), None, true)
}

/// Jobs that should be moving but have no message any more (a message dead-lettered by the
/// broker's delivery limit, a lease that ran out): they get an outbox row again. Each is
/// touched at most once per `quiet` so a long backlog is not republished over and over.
pub fn requeue_stranded(conn: &mut PgConnection, quiet: Duration) -> QueryResult<Vec<i64>> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    conn.transaction(|conn| {
        let ids: Vec<i64> = diesel::sql_query(
            "UPDATE mail_jobs SET updated_at = now() WHERE id IN ( \
               SELECT id FROM mail_jobs \
               WHERE ((state IN ('queued', 'retrying') \
                       AND coalesce(next_attempt_at, updated_at) < now() - make_interval(secs => $1) \
                       AND updated_at < now() - make_interval(secs => $1)) \
                  OR (state = 'sending' AND lease_until < now() - make_interval(secs => $1))) \
                 AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.job_id = mail_jobs.id) \
               ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED) \
             RETURNING id",
        )
        .bind::<diesel::sql_types::Double, _>(quiet.as_secs_f64())
        .load::<Id>(conn)?
        .into_iter()
        .map(|r| r.id)
        .collect();
        for id in &ids {
            mail_job::add_to_outbox(conn, *id)?;
        }
        Ok(ids)
    })
}
