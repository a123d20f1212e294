//! The operators' commands (SPEC 7): `jobs list`, `jobs show`, `replay`. PostgreSQL is the
//! truth: replay re-publishes from the job record (never from a dead-letter body), keeping
//! the job id and its history.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use common::amqp::{Outgoing, Publisher};
use common::commands::{Commands, RefreshRefused};
use common::error::Error;
use common::mail_job::{self, JobState};
use common::schema::{mail_attempts, mail_jobs, users};
use common::time::rfc3339_ms;
use diesel::prelude::*;
use serde::Serialize;
use serde_json::json;

use crate::cli::{ListArgs, ReplayArgs};

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = mail_jobs)]
struct JobSummary {
    id: i64,
    user_id: i64,
    purpose: String,
    recipient: String,
    state: String,
    attempts: i32,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    next_attempt_at: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobJson {
    id: String,
    user_id: String,
    purpose: String,
    recipient: String,
    state: String,
    attempts: i32,
    last_error: Option<String>,
    created_at: String,
    updated_at: String,
    next_attempt_at: Option<String>,
}

impl From<JobSummary> for JobJson {
    fn from(j: JobSummary) -> Self {
        JobJson {
            id: j.id.to_string(),
            user_id: j.user_id.to_string(),
            purpose: j.purpose,
            recipient: j.recipient,
            state: j.state,
            attempts: j.attempts,
            last_error: j.last_error,
            created_at: rfc3339_ms(j.created_at),
            updated_at: rfc3339_ms(j.updated_at),
            next_attempt_at: j.next_attempt_at.map(rfc3339_ms),
        }
    }
}

fn connect(url: &str) -> Result<PgConnection, String> {
    PgConnection::establish(url).map_err(|e| format!("cannot connect to PostgreSQL: {e}"))
}

/// `worker jobs list`.
pub fn list(args: &ListArgs) -> Result<String, String> {
    let mut conn = connect(&args.database.database_url)?;
    let mut query = mail_jobs::table
        .select(JobSummary::as_select())
        .into_boxed();
    if let Some(state) = args.status {
        query = query.filter(mail_jobs::state.eq(state.as_str()));
    }
    if let Some(user) = args.user {
        query = query.filter(mail_jobs::user_id.eq(user));
    }
    if let Some(since) = args.since {
        query = query.filter(mail_jobs::created_at.ge(since.0));
    }
    if let Some(until) = args.until {
        query = query.filter(mail_jobs::created_at.lt(until.0));
    }
    let jobs: Vec<JobSummary> = query
        .order((mail_jobs::created_at.desc(), mail_jobs::id.desc()))
        .limit(args.limit)
        .load(&mut conn)
        .map_err(|e| e.to_string())?;
    if args.json {
        let out: Vec<JobJson> = jobs.into_iter().map(JobJson::from).collect();
        return serde_json::to_string_pretty(&out).map_err(|e| e.to_string());
    }
    let mut out = format!(
        "{:<20} {:<11} {:<14} {:>8}  {:<24} {:<32} {}\n",
        "ID", "STATE", "PURPOSE", "ATTEMPTS", "CREATED", "RECIPIENT", "LAST ERROR"
    );
    for j in jobs {
        out.push_str(&format!(
            "{:<20} {:<11} {:<14} {:>8}  {:<24} {:<32} {}\n",
            j.id,
            j.state,
            j.purpose,
            j.attempts,
            rfc3339_ms(j.created_at),
            j.recipient,
            j.last_error.unwrap_or_default().replace('\n', " ")
        ));
    }
    Ok(out.trim_end().to_owned())
}

/// `worker jobs show ID`; `Ok(None)` for an unknown id.
pub fn show(database_url: &str, raw_id: &str, as_json: bool) -> Result<Option<String>, String> {
    let Ok(id) = raw_id.trim().parse::<i64>() else {
        return Ok(None);
    };
    let mut conn = connect(database_url)?;
    let Some(job) = mail_jobs::table
        .find(id)
        .select(JobSummary::as_select())
        .first(&mut conn)
        .optional()
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let history: Vec<(DateTime<Utc>, String, Option<String>, i32)> = mail_attempts::table
        .filter(mail_attempts::job_id.eq(id))
        .order(mail_attempts::id.asc())
        .select((
            mail_attempts::at,
            mail_attempts::outcome,
            mail_attempts::smtp_reply,
            mail_attempts::duration_ms,
        ))
        .load(&mut conn)
        .map_err(|e| e.to_string())?;
    if as_json {
        let mut value = serde_json::to_value(JobJson::from(job)).map_err(|e| e.to_string())?;
        value["history"] = history
            .into_iter()
            .map(|(at, outcome, reply, ms)| {
                json!({ "at": rfc3339_ms(at), "outcome": outcome, "smtpReply": reply, "durationMs": ms })
            })
            .collect();
        return serde_json::to_string_pretty(&value)
            .map(Some)
            .map_err(|e| e.to_string());
    }
    let mut out = String::new();
    out.push_str(&format!("id:              {}\n", job.id));
    out.push_str(&format!("user:            {}\n", job.user_id));
    out.push_str(&format!("purpose:         {}\n", job.purpose));
    out.push_str(&format!("recipient:       {}\n", job.recipient));
    out.push_str(&format!("state:           {}\n", job.state));
    out.push_str(&format!("attempts:        {}\n", job.attempts));
    out.push_str(&format!(
        "last error:      {}\n",
        job.last_error.as_deref().unwrap_or("-")
    ));
    out.push_str(&format!(
        "created:         {}\n",
        rfc3339_ms(job.created_at)
    ));
    out.push_str(&format!(
        "updated:         {}\n",
        rfc3339_ms(job.updated_at)
    ));
    out.push_str(&format!(
        "next attempt:    {}\n",
        job.next_attempt_at
            .map(rfc3339_ms)
            .unwrap_or_else(|| "-".into())
    ));
    out.push_str("history:\n");
    if history.is_empty() {
        out.push_str("  (no attempts)\n");
    }
    for (at, outcome, reply, ms) in history {
        out.push_str(&format!(
            "  {}  {:<10} {:>6} ms  {}\n",
            rfc3339_ms(at),
            outcome,
            ms,
            reply.unwrap_or_default().replace('\n', " ")
        ));
    }
    Ok(Some(out.trim_end().to_owned()))
}

/// What replay does with one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Replay { refresh: bool },
    Skip(&'static str),
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = mail_jobs)]
struct ReplayCandidate {
    id: i64,
    user_id: i64,
    email_id: i64,
    state: String,
    code_ciphertext: Option<Vec<u8>>,
    code_expires_at: DateTime<Utc>,
}

fn decide(
    commands: &Commands,
    conn: &mut PgConnection,
    job: &ReplayCandidate,
    refresh_code: bool,
) -> Result<Decision, Error> {
    let state: JobState = job.state.parse().map_err(Error::Internal)?;
    let user_deleted: bool = diesel::select(diesel::dsl::not(diesel::dsl::exists(
        users::table
            .filter(users::id.eq(job.user_id))
            .filter(users::deleted_at.is_null()),
    )))
    .get_result(conn)?;
    let decision = match state {
        JobState::Sent => Decision::Skip("sent"),
        JobState::Superseded => Decision::Skip("superseded"),
        _ if user_deleted => Decision::Skip("user deleted"),
        JobState::Expired if refresh_code => Decision::Replay { refresh: true },
        JobState::Expired => Decision::Skip("expired"),
        JobState::Failed => {
            let expired = job.code_expires_at <= Utc::now() || job.code_ciphertext.is_none();
            match (expired, refresh_code) {
                (true, true) => Decision::Replay { refresh: true },
                (true, false) => Decision::Skip("expired"),
                (false, _) => {
                    let current = job.code_ciphertext.as_deref().is_some_and(|ct| {
                        commands
                            .job_code_is_current(conn, job.id, job.email_id, ct)
                            .unwrap_or(false)
                    });
                    if current {
                        Decision::Replay { refresh: false }
                    } else if refresh_code {
                        Decision::Replay { refresh: true }
                    } else {
                        Decision::Skip("superseded")
                    }
                }
            }
        }
        _ => Decision::Skip("not failed"),
    };
    // A dry run must say what the real run will do: a refresh can still be refused.
    if decision == (Decision::Replay { refresh: true }) {
        return Ok(match commands.can_refresh_job_code(conn, job.id)? {
            Ok(()) => decision,
            Err(RefreshRefused::UserDeleted) => Decision::Skip("user deleted"),
            Err(RefreshRefused::Superseded) => Decision::Skip("superseded"),
        });
    }
    Ok(decision)
}

/// Puts one job back on the queue (in one transaction with its outbox row).
fn requeue(
    commands: &Commands,
    conn: &mut PgConnection,
    job_id: i64,
    refresh: bool,
) -> Result<Option<&'static str>, Error> {
    conn.transaction(|conn| {
        let state: String = mail_jobs::table
            .find(job_id)
            .select(mail_jobs::state)
            .for_update()
            .first(conn)?;
        if state != JobState::Failed.as_str() && state != JobState::Expired.as_str() {
            return Ok(Some("not failed"));
        }
        if refresh {
            match commands.refresh_job_code(conn, job_id)? {
                Ok(()) => {}
                Err(RefreshRefused::UserDeleted) => return Ok(Some("user deleted")),
                Err(RefreshRefused::Superseded) => return Ok(Some("superseded")),
            }
        }
        diesel::update(mail_jobs::table.find(job_id))
            .set((
                mail_jobs::state.eq(JobState::Queued.as_str()),
                mail_jobs::next_attempt_at.eq(None::<DateTime<Utc>>),
                mail_jobs::lease_until.eq(None::<DateTime<Utc>>),
                mail_jobs::failed_deliveries.eq(0),
                mail_jobs::updated_at.eq(Utc::now()),
            ))
            .execute(conn)?;
        mail_job::add_to_outbox(conn, job_id)?;
        Ok(None)
    })
}

/// `worker replay`: prints `skipped <id>: <reason>` lines and the summary on stdout.
pub async fn replay(args: ReplayArgs) -> Result<(), String> {
    let keys = args.keys.keys().map_err(|e| e.to_string())?;
    let policy = args.codes.policy().map_err(|e| e.to_string())?;
    let commands = Arc::new(Commands { keys, policy });
    let url = args.database.database_url.clone();
    let pool = common::db::pool(&url, 2);

    let ids = args.ids.clone();
    let failed = args.failed;
    let refresh_code = args.refresh_code;
    let since = args.since.map(|s| s.0);
    let until = args.until.map(|s| s.0);
    let (candidates, unknown): (Vec<ReplayCandidate>, Vec<String>) =
        common::db::run(&pool, move |conn| {
            if failed {
                // With --refresh-code, jobs that expired unsent are worth a new code too.
                let states: &[&str] = if refresh_code {
                    &["failed", "expired"]
                } else {
                    &["failed"]
                };
                let mut q = mail_jobs::table
                    .filter(mail_jobs::state.eq_any(states))
                    .select(ReplayCandidate::as_select())
                    .into_boxed();
                if let Some(s) = since {
                    q = q.filter(mail_jobs::created_at.ge(s));
                }
                if let Some(u) = until {
                    q = q.filter(mail_jobs::created_at.lt(u));
                }
                return Ok((q.order(mail_jobs::id.asc()).load(conn)?, Vec::new()));
            }
            let mut found = Vec::new();
            let mut unknown = Vec::new();
            for raw in ids {
                let row = match raw.trim().parse::<i64>() {
                    Ok(id) => mail_jobs::table
                        .find(id)
                        .select(ReplayCandidate::as_select())
                        .first(conn)
                        .optional()?,
                    Err(_) => None,
                };
                match row {
                    Some(r) => found.push(r),
                    None => unknown.push(raw),
                }
            }
            Ok((found, unknown))
        })
        .await
        .map_err(|e| e.to_string())?;

    let bar = indicatif::ProgressBar::new(candidates.len() as u64);
    if candidates.len() < 20 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    }
    let mut skipped = 0usize;
    let mut replayed = Vec::new();
    for raw in unknown {
        println!("skipped {raw}: not found");
        skipped += 1;
    }
    for job in candidates {
        let commands = commands.clone();
        let dry_run = args.dry_run;
        let refresh_code = args.refresh_code;
        let id = job.id;
        let outcome = common::db::run(&pool, move |conn| {
            let decision = decide(&commands, conn, &job, refresh_code)?;
            match decision {
                Decision::Skip(reason) => Ok(Some(reason)),
                Decision::Replay { .. } if dry_run => Ok(None),
                Decision::Replay { refresh } => requeue(&commands, conn, id, refresh),
            }
        })
        .await
        .map_err(|e| format!("job {id}: {e}"))?;
        match outcome {
            Some(reason) => {
                bar.suspend(|| println!("skipped {id}: {reason}"));
                skipped += 1;
            }
            None => replayed.push(id),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if !args.dry_run && !replayed.is_empty() {
        let publisher = Publisher::new(args.amqp.amqp_url.clone(), "contact-email-replay");
        for chunk in replayed.chunks(500) {
            let jobs = chunk.iter().map(|id| Outgoing::new(*id, None)).collect();
            match common::outbox::publish_and_forget(&pool, &publisher, jobs).await {
                Ok(n) if n == chunk.len() => {}
                Ok(_) => tracing::warn!(
                    "RabbitMQ did not take every job now; the outbox relay of a running api or worker publishes them"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "outbox cleanup failed; the relay publishes the jobs")
                }
            }
        }
        publisher.close().await;
    }
    println!("replayed {}, skipped {skipped}", replayed.len());
    Ok(())
}
