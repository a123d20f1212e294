//! The operators' commands (SPEC 7): `jobs list`, `jobs show`, `replay`. PostgreSQL is the
//! truth: replay re-publishes from the job record (never from a dead-letter body), keeping
//! the job id and its history.

use std::sync::Arc;

use chrono::Utc;
use common::amqp::{Outgoing, Publisher};
use common::commands::{Commands, RefreshRefused};
use common::error::Error;
use common::mail_job::{self, JobFilter, JobState, JobSummary, ReplayCandidate};
use common::schema::users;
use common::time::rfc3339_ms;
use diesel::prelude::*;
use serde::Serialize;
use serde_json::json;

use crate::cli::{ListArgs, ReplayArgs};

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
            purpose: j.purpose.to_string(),
            recipient: j.recipient,
            state: j.state.to_string(),
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
    let filter = JobFilter {
        state: args.status,
        user_id: args.user,
        since: args.since.map(|s| s.0),
        until: args.until.map(|u| u.0),
    };
    let jobs = mail_job::list(&mut conn, filter, args.limit).map_err(|e| e.to_string())?;
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
            j.state.as_str(),
            j.purpose.as_str(),
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
    let Some(job) = mail_job::summary(&mut conn, id).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let history = mail_job::attempts(&mut conn, id).map_err(|e| e.to_string())?;
    if as_json {
        let mut value = serde_json::to_value(JobJson::from(job)).map_err(|e| e.to_string())?;
        value["history"] = history
            .into_iter()
            .map(|a| {
                json!({ "at": rfc3339_ms(a.at), "outcome": a.outcome, "smtpReply": a.smtp_reply, "durationMs": a.duration_ms })
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
    for a in history {
        out.push_str(&format!(
            "  {}  {:<10} {:>6} ms  {}\n",
            rfc3339_ms(a.at),
            a.outcome,
            a.duration_ms,
            a.smtp_reply.unwrap_or_default().replace('\n', " ")
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

fn decide(
    commands: &Commands,
    conn: &mut PgConnection,
    job: &ReplayCandidate,
    refresh_code: bool,
) -> Result<Decision, Error> {
    let user_deleted: bool = diesel::select(diesel::dsl::not(diesel::dsl::exists(
        users::table
            .filter(users::id.eq(job.user_id))
            .filter(users::deleted_at.is_null()),
    )))
    .get_result(conn)?;
    let decision = match job.state {
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
        if !mail_job::lock_for_replay(conn, job_id)? {
            return Ok(Some("not failed"));
        }
        if refresh {
            match commands.refresh_job_code(conn, job_id)? {
                Ok(()) => {}
                Err(RefreshRefused::UserDeleted) => return Ok(Some("user deleted")),
                Err(RefreshRefused::Superseded) => return Ok(Some("superseded")),
            }
        }
        mail_job::requeue_for_replay(conn, job_id)?;
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
                let states: &[JobState] = if refresh_code {
                    &JobState::REPLAYABLE
                } else {
                    &[JobState::Failed]
                };
                let found = mail_job::replay_candidates(conn, states, since, until)?;
                return Ok((found, Vec::new()));
            }
            let mut found = Vec::new();
            let mut unknown = Vec::new();
            for raw in ids {
                let row = match raw.trim().parse::<i64>() {
                    Ok(id) => mail_job::replay_candidate(conn, id)?,
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
