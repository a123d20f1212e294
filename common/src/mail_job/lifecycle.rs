//! Every state move of a mail job, named after what happened (the table of moves is on
//! [`JobState`]). Each move is an UPDATE conditional on the states it may start from, so two
//! processes that race for a job cannot both move it: a second delivery of one message finds
//! the job claimed or finished (DESIGN decision 3), a worker whose job was superseded
//! meanwhile moves nothing.
//!
//! The commands enqueue, supersede and cancel inside their own transaction; the worker
//! claims, records attempts and finishes; the ops CLI requeues for replay.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::dsl::case_when;
use diesel::prelude::*;
use diesel::sql_types::Bool;

use super::{AttemptOutcome, JobState, MailJob, Purpose};
use crate::db::{Prepared, next_id};
use crate::domain::{CodeKeys, UrlTemplate};
use crate::outbox;
use crate::schema::{mail_attempts, mail_jobs};

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
    /// The `traceparent` of the request that asked for the mail: the worker's delivery joins
    /// its trace.
    pub trace_context: Option<&'a str>,
    /// The reader's language (the user's `preferredLanguage`), if any.
    pub language: Option<&'a str>,
}

/// [`enqueue`]'s statement: the job's code made the address's pending code (`$14` its hash,
/// `$10` its expiry; the wrong-code count starts again), the supersede of the address's
/// unsent jobs, the job (`$1` id ... `$13` time, in the column order below) and its outbox
/// row. The UPDATE of `mail_jobs` sees the table as it was before the statement, so never
/// the new job.
pub const ENQUEUE_SQL: &str = "\
    WITH pending AS ( \
        UPDATE user_emails SET code_hash = $14, code_expires_at = $10, code_failures = 0, \
               updated_at = $13 \
         WHERE id = $5 \
    ), superseded AS ( \
        UPDATE mail_jobs SET state = 'superseded', superseded_by = $1, \
               code_ciphertext = NULL, updated_at = $13 \
         WHERE email_id = $5 AND state IN ('queued', 'retrying', 'sending') \
    ), job AS ( \
        INSERT INTO mail_jobs (id, instance_id, org_id, user_id, email_id, purpose, \
               recipient, url_template, code_ciphertext, code_expires_at, state, \
               trace_context, language, created_at, updated_at) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'queued', $11, $12, $13, $13) \
    ) \
    INSERT INTO outbox (job_id) VALUES ($1)";

/// Mails a new code: the job is inserted `queued` (its code encrypted) with its outbox row,
/// the code becomes the address's pending code (the previous one stops working), and the
/// address's older unsent jobs are superseded (their codes are void now); returns the job
/// id. Two statements in the caller's transaction: the id (the code's encryption is bound
/// to it), then the rest in one.
pub fn enqueue(
    conn: &mut PgConnection,
    keys: &CodeKeys,
    job: NewJob<'_>,
    now: DateTime<Utc>,
) -> QueryResult<i64> {
    use diesel::sql_types::{BigInt, Bytea, Nullable, Text, Timestamptz};
    let id = next_id(conn)?;
    Prepared::new(ENQUEUE_SQL)
        .bind::<BigInt, _>(id)
        .bind::<BigInt, _>(job.instance_id)
        .bind::<BigInt, _>(job.org_id)
        .bind::<BigInt, _>(job.user_id)
        .bind::<BigInt, _>(job.email_id)
        .bind::<Text, _>(job.purpose.as_str())
        .bind::<Text, _>(job.recipient)
        .bind::<Text, _>(job.url_template.as_str())
        .bind::<Bytea, _>(keys.encrypt(id, job.code))
        .bind::<Timestamptz, _>(job.code_expires_at)
        .bind::<Nullable<Text>, _>(job.trace_context)
        .bind::<Nullable<Text>, _>(job.language)
        .bind::<Timestamptz, _>(now)
        .bind::<Bytea, _>(keys.hash(job.email_id, job.code))
        .execute(conn)?;
    Ok(id)
}

/// Marks the unsent jobs of an address `superseded` (a newer code, a verified or removed
/// address) and wipes their codes. `by` is the newer job, if any; it is left alone.
pub fn supersede_unsent(
    conn: &mut PgConnection,
    email_id: i64,
    by: Option<i64>,
    now: DateTime<Utc>,
) -> QueryResult<usize> {
    use diesel::sql_types::{BigInt, Nullable, Timestamptz};
    Prepared::new(SUPERSEDE_UNSENT_SQL)
        .bind::<Nullable<BigInt>, _>(by)
        .bind::<Timestamptz, _>(now)
        .bind::<BigInt, _>(email_id)
        .bind::<BigInt, _>(by.unwrap_or(0))
        .execute(conn)
}

/// [`supersede_unsent`]'s statement (`$1` the newer job or NULL, `$2` time, `$3` the
/// address row, `$4` the job to leave alone or 0).
pub const SUPERSEDE_UNSENT_SQL: &str = "\
    UPDATE mail_jobs SET state = 'superseded', superseded_by = $1, code_ciphertext = NULL, \
           updated_at = $2 \
     WHERE email_id = $3 AND state IN ('queued', 'retrying', 'sending') AND id <> $4";

/// Cancels every unsent job of a deleted user.
pub fn cancel_unsent_for_user(
    conn: &mut PgConnection,
    user_id: i64,
    now: DateTime<Utc>,
) -> QueryResult<usize> {
    diesel::update(
        mail_jobs::table
            .filter(mail_jobs::user_id.eq(user_id))
            .filter(mail_jobs::state.eq_any(JobState::NOT_YET_SENT)),
    )
    .set((
        mail_jobs::state.eq(JobState::Cancelled),
        mail_jobs::last_error.eq(Some("user deleted")),
        mail_jobs::code_ciphertext.eq(None::<Vec<u8>>),
        mail_jobs::updated_at.eq(now),
    ))
    .execute(conn)
}

/// A state test of a statement that finds its jobs by id, as
/// `CASE WHEN test THEN TRUE ELSE FALSE END`.
///
/// PostgreSQL scans a partial index only for a query whose conditions imply the index's
/// predicate, and it does not look inside a `CASE`; so the index of unsent jobs
/// (`mail_jobs_email_pending`, `state IN (queued, retrying, sending)`) is never scanned whole
/// to find one id. With the plain test the planner picks that index whenever its statistics
/// say few jobs are unsent (after a quiet spell, until ANALYZE catches up with a burst), and
/// each claim then reads the whole backlog (seen in the growth benchmark's plans).
macro_rules! opaque {
    ($test:expr) => {
        case_when::<_, _, Bool>($test, true).otherwise(false)
    };
}

/// Takes the jobs of `ids` for sending, in one statement: each from `queued`, from
/// `retrying` once it is due (within `early_slack`), or from `sending` once the previous
/// holder's lease ran out (it died, or lost the database). A live holder renews its lease
/// ([`renew_leases`]), so a second message for a job being sent (a redelivery after its
/// holder's broker link failed) never takes it over. Returns the jobs taken; one not among
/// them is not to be taken now, and [`super::load`] says why.
pub fn claim(
    conn: &mut PgConnection,
    ids: &[i64],
    lease: Duration,
    early_slack: Duration,
) -> QueryResult<Vec<MailJob>> {
    let now = Utc::now();
    let lease_until = now + chrono_duration(lease);
    let due = mail_jobs::state.eq(JobState::Queued).or(mail_jobs::state
        .eq(JobState::Retrying)
        .and(mail_jobs::next_attempt_at.le(now + chrono_duration(early_slack))));
    let retrying_without_time = mail_jobs::state
        .eq(JobState::Retrying)
        .and(mail_jobs::next_attempt_at.is_null());
    let stale_sending = mail_jobs::state
        .eq(JobState::Sending)
        .and(mail_jobs::lease_until.lt(now));
    let takeable = due
        .or(retrying_without_time)
        .or(stale_sending)
        .assume_not_null();
    diesel::update(
        mail_jobs::table
            .filter(mail_jobs::id.eq_any(ids))
            .filter(opaque!(takeable)),
    )
    .set((
        mail_jobs::state.eq(JobState::Sending),
        mail_jobs::lease_until.eq(Some(lease_until)),
        mail_jobs::updated_at.eq(now),
    ))
    .returning(MailJob::as_returning())
    .get_results(conn)
}

/// Extends the leases of the jobs a worker still sends, in one statement; returns how many
/// it still holds.
pub fn renew_leases(conn: &mut PgConnection, ids: &[i64], lease: Duration) -> QueryResult<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    diesel::update(
        mail_jobs::table
            .filter(mail_jobs::id.eq_any(ids))
            .filter(opaque!(mail_jobs::state.eq(JobState::Sending))),
    )
    .set(mail_jobs::lease_until.eq(Some(Utc::now() + chrono_duration(lease))))
    .execute(conn)
}

/// Hands jobs a stopping worker could not finish back at once: `retrying`, due now, so the
/// redelivery of their message claims them without waiting for the lease.
pub fn release(conn: &mut PgConnection, ids: &[i64], why: &str) -> QueryResult<usize> {
    let now = Utc::now();
    diesel::update(
        mail_jobs::table
            .filter(mail_jobs::id.eq_any(ids))
            .filter(opaque!(mail_jobs::state.eq(JobState::Sending))),
    )
    .set((
        mail_jobs::state.eq(JobState::Retrying),
        mail_jobs::last_error.eq(Some(why)),
        mail_jobs::next_attempt_at.eq(Some(now)),
        mail_jobs::lease_until.eq(None::<DateTime<Utc>>),
        mail_jobs::updated_at.eq(now),
    ))
    .execute(conn)
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::minutes(5))
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
    outcome: AttemptOutcome,
    reply: &str,
    duration: Duration,
) -> QueryResult<AfterAttempt> {
    conn.transaction(|conn| {
        diesel::insert_into(mail_attempts::table)
            .values((
                mail_attempts::job_id.eq(id),
                mail_attempts::at.eq(at),
                mail_attempts::outcome.eq(outcome.as_str()),
                mail_attempts::smtp_reply.eq(Some(truncate(reply))),
                mail_attempts::duration_ms.eq(millis(duration)),
            ))
            .execute(conn)?;
        let (state, expires): (JobState, DateTime<Utc>) = diesel::update(mail_jobs::table.find(id))
            .set(mail_jobs::attempts.eq(mail_jobs::attempts + 1))
            .returning((mail_jobs::state, mail_jobs::code_expires_at))
            .get_result(conn)?;
        Ok(AfterAttempt {
            held: state == JobState::Sending,
            code_expired: expires <= Utc::now(),
        })
    })
}

/// A mail the relay accepted: the job, when its send started, the relay's reply, how long
/// the send took.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub job_id: i64,
    pub at: DateTime<Utc>,
    pub reply: String,
    pub duration: Duration,
}

/// [`record_sent`]'s statement: the attempts from arrays (`$1` job ids, `$2` send starts,
/// `$3` replies, `$4` durations in ms), the state change, and the count. When `moved`
/// changed a row, the final UPDATE leaves it out (a row is never updated twice in one
/// statement); otherwise the final UPDATE only counts the attempt. The ids must be distinct.
pub const RECORD_SENT_SQL: &str = "\
    WITH attempt AS ( \
        INSERT INTO mail_attempts (job_id, at, outcome, smtp_reply, duration_ms) \
        SELECT job_id, at, 'sent', reply, duration_ms \
          FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::integer[]) \
               AS a (job_id, at, reply, duration_ms) \
    ), moved AS ( \
        UPDATE mail_jobs SET state = 'sent', attempts = attempts + 1, last_error = NULL, \
               next_attempt_at = NULL, lease_until = NULL, code_ciphertext = NULL, \
               sent_at = $5, updated_at = $5 \
         WHERE id = ANY($1) AND state IN ('sending', 'superseded', 'cancelled') \
        RETURNING id \
    ), counted AS ( \
        UPDATE mail_jobs SET attempts = attempts + 1 \
         WHERE id = ANY($1) AND id NOT IN (SELECT id FROM moved) \
    ) \
    SELECT count(*) AS moved FROM moved";

/// Mails of jobs this worker sent were accepted: each attempt is recorded and counted, and
/// each job is `sent` (even if it was superseded or cancelled while the mail was on its way:
/// it did go out), one statement for the lot. A job another process moved on meanwhile (its
/// lease ran out) keeps its state; only the attempt is added. Returns how many jobs became
/// `sent`.
pub fn record_sent(conn: &mut PgConnection, accepted: &[Accepted]) -> QueryResult<usize> {
    use diesel::sql_types::{Array, BigInt, Integer, Text, Timestamptz};
    #[derive(QueryableByName)]
    struct Moved {
        #[diesel(sql_type = BigInt)]
        moved: i64,
    }
    let mut moved = 0;
    // A job twice in one statement would be counted once: a later round takes the repeat.
    let mut left: Vec<&Accepted> = accepted.iter().collect();
    while !left.is_empty() {
        let mut seen = std::collections::HashSet::new();
        let (round, later): (Vec<&Accepted>, Vec<&Accepted>) =
            left.into_iter().partition(|a| seen.insert(a.job_id));
        let row: Moved = Prepared::new(RECORD_SENT_SQL)
            .bind::<Array<BigInt>, _>(round.iter().map(|a| a.job_id).collect::<Vec<_>>())
            .bind::<Array<Timestamptz>, _>(round.iter().map(|a| a.at).collect::<Vec<_>>())
            .bind::<Array<Text>, _>(round.iter().map(|a| truncate(&a.reply)).collect::<Vec<_>>())
            .bind::<Array<Integer>, _>(round.iter().map(|a| millis(a.duration)).collect::<Vec<_>>())
            .bind::<Timestamptz, _>(Utc::now())
            .get_result(conn)?;
        moved += row.moved as usize;
        left = later;
    }
    Ok(moved)
}

/// A duration in whole milliseconds, as `mail_attempts.duration_ms` keeps it.
fn millis(d: Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}

/// Keeps replies readable and bounded in the database.
fn truncate(reply: &str) -> String {
    reply.chars().take(1000).collect()
}

/// A delivery ended without the mail but may be tried again at `next_attempt_at`; with
/// `count_delivery` it uses one of the job's `MAIL_MAX_ATTEMPTS`. 0 when the job is no
/// longer held.
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

/// The code expired before the mail went out: no use sending it; the code is wiped.
pub fn mark_expired(conn: &mut PgConnection, id: i64) -> QueryResult<usize> {
    finish(conn, id, JobState::Expired, Some("expired"), None, true)
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
        .filter(opaque!(mail_jobs::state.eq(JobState::Sending)));
    let common = (
        mail_jobs::state.eq(state),
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

/// Locks a job until the end of the transaction and says whether a replay may take it
/// (`failed` or `expired`). The replay's other moves ([`replace_code`],
/// [`requeue_for_replay`]) follow under this lock.
pub fn lock_for_replay(conn: &mut PgConnection, id: i64) -> QueryResult<bool> {
    let state: JobState = mail_jobs::table
        .find(id)
        .select(mail_jobs::state)
        .for_update()
        .first(conn)?;
    Ok(JobState::REPLAYABLE.contains(&state))
}

/// Gives a job a new code (encrypted) and its expiry, for a replay with `--refresh-code`.
pub fn replace_code(
    conn: &mut PgConnection,
    keys: &CodeKeys,
    id: i64,
    code: &str,
    code_expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> QueryResult<usize> {
    diesel::update(mail_jobs::table.find(id))
        .set((
            mail_jobs::code_ciphertext.eq(Some(keys.encrypt(id, code))),
            mail_jobs::code_expires_at.eq(code_expires_at),
            mail_jobs::updated_at.eq(now),
        ))
        .execute(conn)
}

/// A replayed job goes back to `queued` with a fresh delivery budget, and gets an outbox row
/// (the job id and its history are kept). Call under [`lock_for_replay`]'s lock.
pub fn requeue_for_replay(conn: &mut PgConnection, id: i64) -> QueryResult<()> {
    diesel::update(mail_jobs::table.find(id))
        .set((
            mail_jobs::state.eq(JobState::Queued),
            mail_jobs::next_attempt_at.eq(None::<DateTime<Utc>>),
            mail_jobs::lease_until.eq(None::<DateTime<Utc>>),
            mail_jobs::failed_deliveries.eq(0),
            mail_jobs::updated_at.eq(Utc::now()),
        ))
        .execute(conn)?;
    outbox::add(conn, id)
}

/// Jobs that should be moving but have no message any more (a message dead-lettered by the
/// broker's delivery limit, a lease that ran out): they get an outbox row again. Each is
/// touched at most once per `quiet` so a long backlog is not republished over and over.
pub fn requeue_stranded(conn: &mut PgConnection, quiet: Duration) -> QueryResult<Vec<i64>> {
    use crate::schema::sql_types::JobStateText;
    use diesel::sql_types::{Array, BigInt, Double};

    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    conn.transaction(|conn| {
        let ids: Vec<i64> = diesel::sql_query(
            "UPDATE mail_jobs SET updated_at = now() WHERE id IN ( \
               SELECT id FROM mail_jobs \
               WHERE ((state = ANY($2) \
                       AND coalesce(next_attempt_at, updated_at) < now() - make_interval(secs => $1) \
                       AND updated_at < now() - make_interval(secs => $1)) \
                  OR (state = $3 AND lease_until < now() - make_interval(secs => $1))) \
                 AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.job_id = mail_jobs.id) \
               ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED) \
             RETURNING id",
        )
        .bind::<Double, _>(quiet.as_secs_f64())
        .bind::<Array<JobStateText>, _>(&JobState::UNSENT[..])
        .bind::<JobStateText, _>(JobState::Sending)
        .load::<Id>(conn)?
        .into_iter()
        .map(|r| r.id)
        .collect();
        for id in &ids {
            outbox::add(conn, *id)?;
        }
        Ok(ids)
    })
}
