//! The operators' commands (SPEC 7): `jobs list`, `jobs show`, `replay`. PostgreSQL is the
//! truth: replay re-publishes from the job record (never from a dead-letter body), keeping
//! the job id and its history.

use secrecy::ExposeSecret;
use std::sync::Arc;

use common::amqp::{Outgoing, Publisher};
use common::commands::{Commands, SkipReason};
use common::config::StartupError;
use common::db::PgPool;
use common::mail_job::{self, JobFilter, JobState, JobSummary, ReplayCandidate};
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
    let mut conn = connect(args.database.database_url.expose_secret())?;
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

/// `worker replay`: prints `skipped <id>: <reason>` lines and the summary on stdout. The
/// rules of a replay are `Commands::replay_job`'s; this picks the jobs, reports and publishes.
/// A key or code setting it cannot use is a configuration error (exit 2); the rest is
/// operational (exit 1).
pub async fn replay(args: ReplayArgs) -> Result<(), StartupError> {
    let keys = args.keys.keys()?;
    let policy = args.codes.policy()?;
    let commands = Arc::new(Commands { keys, policy });
    let pool = common::db::pool(args.database.database_url.expose_secret(), 2);

    let (candidates, unknown) = select_jobs(&pool, &args)
        .await
        .map_err(StartupError::Operational)?;
    for raw in &unknown {
        println!("skipped {raw}: {}", SkipReason::NotFound);
    }
    let (replayed, skipped) = replay_each(&pool, &commands, candidates, &args)
        .await
        .map_err(StartupError::Operational)?;
    if !args.dry_run && !replayed.is_empty() {
        publish(&pool, args.amqp.amqp_url.expose_secret(), &replayed).await;
    }
    println!(
        "replayed {}, skipped {}",
        replayed.len(),
        unknown.len() + skipped
    );
    Ok(())
}

/// The jobs a replay weighs: `--failed` (and with `--refresh-code`, the expired ones too)
/// created in the window, or the `--id`s given; the ids that name no job come back apart.
async fn select_jobs(
    pool: &PgPool,
    args: &ReplayArgs,
) -> Result<(Vec<ReplayCandidate>, Vec<String>), String> {
    let ids = args.ids.clone();
    let failed = args.failed;
    let refresh_code = args.refresh_code;
    let since = args.since.map(|s| s.0);
    let until = args.until.map(|s| s.0);
    common::db::run(pool, move |conn| {
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
            let job = match raw.trim().parse::<i64>() {
                Ok(id) => mail_job::replay_candidate(conn, id)?,
                Err(_) => None,
            };
            match job {
                Some(job) => found.push(job),
                None => unknown.push(raw),
            }
        }
        Ok((found, unknown))
    })
    .await
    .map_err(|e| e.to_string())
}

/// Replays (or, in a dry run, weighs) each job, printing why one is skipped, with a progress
/// bar on stderr for long runs. Returns the jobs replayed and how many were skipped.
async fn replay_each(
    pool: &PgPool,
    commands: &Arc<Commands>,
    candidates: Vec<ReplayCandidate>,
    args: &ReplayArgs,
) -> Result<(Vec<i64>, usize), String> {
    let bar = progress_bar(candidates.len());
    let mut skipped = 0usize;
    let mut replayed = Vec::new();
    for job in candidates {
        let commands = commands.clone();
        let (refresh_code, dry_run) = (args.refresh_code, args.dry_run);
        let id = job.id;
        let outcome = common::db::run(pool, move |conn| {
            commands.replay_job(conn, &job, refresh_code, dry_run)
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
    Ok((replayed, skipped))
}

/// A progress bar on stderr, only for runs long enough to want one.
fn progress_bar(len: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len as u64);
    if len < 20 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    }
    bar
}

/// Publishes the replayed jobs now; what RabbitMQ does not take stays in the outbox for the
/// relay of a running api or worker.
async fn publish(pool: &PgPool, amqp_url: &str, replayed: &[i64]) {
    let publisher = Publisher::new(amqp_url.to_owned(), "contact-email-replay");
    for chunk in replayed.chunks(500) {
        let jobs = chunk.iter().map(|id| Outgoing::new(*id, None)).collect();
        match common::outbox::publish_and_forget(pool, &publisher, jobs).await {
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
