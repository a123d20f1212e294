//! Phase 8 (`--phases scaling`): do more worker processes drain a backlog faster? The
//! backlog of phase 2 (`--scaling-jobs` jobs, one user each, enqueued through the API with no
//! worker running and published to RabbitMQ) is drained into the sink by 1, then 2, then 4
//! `worker run` processes (`--scaling-workers`), each with phase 2's settings. Between two
//! rounds the same jobs are reset: back to `queued` with their encrypted codes (kept aside
//! before the first round; the worker wipes a code once its mail is sent), their attempts
//! deleted, the tables vacuumed, and an outbox row each, which the api's relay publishes
//! again. The workers of a round are stopped with SIGTERM, so they ack what they sent.

use std::process::Command;
use std::time::{Duration, Instant};

use chrono::Utc;
use harness::{Role, TestEnv};

use crate::mailflow::{self, MailRate};
use crate::procfs::{self, CpuSnapshot};
use crate::report::Settings;

/// The queue the api publishes new jobs to (`common::amqp::SEND_QUEUE`).
const SEND_QUEUE: &str = "mail.send";

/// One round: `workers` processes draining the backlog.
#[derive(Debug, Clone, Default)]
pub struct ScalingRound {
    pub workers: usize,
    /// Messages waiting in `mail.send` when the workers were started.
    pub queued_at_start: String,
    /// From spawning the workers (and from the first mail) to the last mail.
    pub rate: MailRate,
    /// Mails at the sink a second after the last expected one (duplicates show here).
    pub mails_total: usize,
    pub job_states: String,
    /// CPU during the round (`worker`: all the round's workers together).
    pub cpu: CpuSnapshot,
    /// Resetting the jobs and waiting for the relay to publish them (0 for the first round).
    pub reset_time: Duration,
}

/// What phase 8 found.
#[derive(Debug, Clone, Default)]
pub struct ScalingPhase {
    pub jobs: usize,
    pub worker_concurrency: usize,
    pub backlog: mailflow::Backlog,
    pub rounds: Vec<ScalingRound>,
    pub total_time: Duration,
}

impl ScalingPhase {
    /// Steady mails/s of `round` over that of the first round.
    pub fn speedup(&self, round: &ScalingRound) -> f64 {
        let base = self.rounds.first().map_or(0.0, |r| r.rate.rate_steady());
        if base > 0.0 {
            round.rate.rate_steady() / base
        } else {
            0.0
        }
    }
}

/// Runs phase 8 with `jobs` jobs and each number of workers of `counts` in turn.
pub async fn run(settings: &Settings, jobs: usize, counts: &[usize]) -> ScalingPhase {
    let started = Instant::now();
    crate::step("phase 8: starting api (no worker)");
    let mut env = crate::builder(settings).without_worker().start().await;
    crate::step(&format!(
        "phase 8: creating {jobs} users and enqueueing one job each"
    ));
    let backlog = mailflow::enqueue_backlog(&env, jobs, "s").await;
    env.psql(
        "CREATE TABLE bench_scaling_codes AS \
         SELECT id, code_ciphertext FROM mail_jobs WHERE state = 'queued'",
    )
    .await;
    let mut roles: Vec<Role> = Vec::new();
    let mut rounds = Vec::new();
    for (i, &workers) in counts.iter().enumerate() {
        let reset_time = if i > 0 {
            reset_jobs(&env).await
        } else {
            Duration::ZERO
        };
        while roles.len() < workers {
            roles.push(env.add_worker());
        }
        let round = drain(&mut env, &roles[..workers], jobs, reset_time).await;
        crate::step(&format!(
            "phase 8: {workers} worker(s): {:.0} mails/s steady, {:.0} from spawn",
            round.rate.rate_steady(),
            round.rate.rate_from_start()
        ));
        rounds.push(round);
    }
    let phase = ScalingPhase {
        jobs,
        worker_concurrency: settings.worker_concurrency,
        backlog,
        rounds,
        total_time: started.elapsed(),
    };
    crate::step(&format!(
        "phase 8: took {:.0} s",
        phase.total_time.as_secs_f64()
    ));
    phase
}

/// Starts the `roles` workers at once and waits for `jobs` mails; stops them afterwards.
async fn drain(
    env: &mut TestEnv,
    roles: &[Role],
    jobs: usize,
    reset_time: Duration,
) -> ScalingRound {
    env.sink.clear();
    // rabbitmqctl's count lags behind the publishes: wait (15 s at most) until it shows the
    // whole backlog.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut queued_at_start = queue_depth(env.vhost());
    while queued_at_start.parse::<usize>().map_or(true, |n| n < jobs) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        queued_at_start = queue_depth(env.vhost());
    }
    crate::step(&format!(
        "phase 8: starting {} worker(s) ({queued_at_start} messages in mail.send)",
        roles.len()
    ));
    let api_pid = env.pid(Role::Api);
    let cpu_before = CpuSnapshot::take(api_pid, None);
    let start = Utc::now();
    for role in roles {
        env.spawn_process(*role);
    }
    let mails = env.sink.wait_for(jobs, Duration::from_secs(900)).await;
    let mut cpu = CpuSnapshot::take(api_pid, None).since(&cpu_before);
    cpu.worker = roles.iter().map(|r| procfs::process_cpu(env.pid(*r))).sum();
    let rate = MailRate::of(&mails[..jobs.min(mails.len())], start);
    drop(mails);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mails_total = env.sink.count();
    for role in roles {
        env.terminate(*role).await;
    }
    let job_states = crate::one_line(
        &env.psql("SELECT state || ': ' || count(*) FROM mail_jobs GROUP BY state ORDER BY state")
            .await,
    );
    ScalingRound {
        workers: roles.len(),
        queued_at_start,
        rate,
        mails_total,
        job_states,
        cpu,
        reset_time,
    }
}

/// Puts every job of the backlog back to `queued` with its code, drops the attempts, vacuums
/// and republishes them through the outbox; returns the time it took.
async fn reset_jobs(env: &TestEnv) -> Duration {
    let started = Instant::now();
    crate::step("phase 8: resetting the jobs and republishing them");
    env.psql(
        "UPDATE mail_jobs j SET state = 'queued', code_ciphertext = c.code_ciphertext, \
         attempts = 0, failed_deliveries = 0, last_error = NULL, next_attempt_at = NULL, \
         lease_until = NULL, sent_at = NULL, updated_at = now() \
         FROM bench_scaling_codes c WHERE c.id = j.id",
    )
    .await;
    env.psql("DELETE FROM mail_attempts").await;
    env.psql("VACUUM ANALYZE mail_jobs").await;
    env.psql("VACUUM ANALYZE mail_attempts").await;
    env.psql("INSERT INTO outbox (job_id) SELECT id FROM bench_scaling_codes ORDER BY id")
        .await;
    mailflow::wait_outbox_empty(env, Duration::from_secs(300)).await;
    started.elapsed()
}

/// Messages in `mail.send` of `vhost`, as `rabbitmqctl` reports them (`?` when it cannot).
fn queue_depth(vhost: &str) -> String {
    let out = Command::new("rabbitmqctl")
        .args(["-q", "list_queues", "-p", vhost, "name", "messages"])
        .output();
    let Ok(out) = out else {
        return "?".to_string();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let mut parts = l.split_whitespace();
            (parts.next() == Some(SEND_QUEUE)).then(|| parts.next().unwrap_or("?").to_string())
        })
        .unwrap_or_else(|| "?".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speedup_is_relative_to_the_first_round() {
        let round = |workers, ms| ScalingRound {
            workers,
            rate: MailRate {
                count: 1001,
                from_start: Duration::from_millis(ms + 500),
                first_to_last: Duration::from_millis(ms),
            },
            ..ScalingRound::default()
        };
        let phase = ScalingPhase {
            rounds: vec![round(1, 2000), round(2, 1000)],
            ..ScalingPhase::default()
        };
        assert_eq!(phase.speedup(&phase.rounds[1]), 2.0);
        assert_eq!(phase.speedup(&phase.rounds[0]), 1.0);
    }
}
