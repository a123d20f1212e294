//! Phase 6: the API at a fixed request rate (an open loop). Requests are started on a
//! schedule (every 1/rate seconds) whether or not earlier ones have answered, and each
//! latency is measured from the moment the request was *meant* to start: a slow answer
//! cannot hold back the next request and so hide its own cost (no coordinated omission).
//! The same run measures, for each request, the time from its intended start to its mail
//! arriving in the sink.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use harness::TestEnv;

use crate::load;
use crate::stats::Latency;

/// What phase 6 measured.
#[derive(Debug, Clone, Default)]
pub struct OpenLoopPhase {
    /// Requests per second asked for, and for how long.
    pub rate: u32,
    pub duration: Duration,
    /// Requests started, and those answered with something else than 200.
    pub sent: usize,
    pub errors: usize,
    /// From each request's intended start to its answer.
    pub latency: Latency,
    /// How late the schedule started requests (the load generator's own lag).
    pub start_lag: Latency,
    /// From each request's intended start to its mail received.
    pub to_mail: Latency,
    /// Mails that had not arrived at the end of the wait.
    pub mails_missing: usize,
}

impl OpenLoopPhase {
    /// Requests per second actually started.
    pub fn achieved_rate(&self) -> f64 {
        crate::stats::per_second(self.sent as f64, self.duration)
    }
}

/// Runs `rate` set-email requests per second for `duration` against `env` (api and worker
/// running), over `users` in turn, each to an address of its own (`ol<tag>-<i>@...`).
pub async fn run(
    env: &TestEnv,
    users: &[String],
    rate: u32,
    duration: Duration,
    tag: &str,
) -> OpenLoopPhase {
    let prefix = format!("ol{tag}-");
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let total = (duration.as_secs_f64() * f64::from(rate)).round() as usize;
    // A few clients, each with its own connection pool: connections are opened as the
    // load needs them, and none waits for another's answer.
    let clients: Vec<_> = (0..8).map(|_| load::fresh_client(&env.api())).collect();
    let users = Arc::new(users.to_vec());
    let start = Instant::now() + Duration::from_millis(200);
    let start_wall = Utc::now() + chrono::Duration::milliseconds(200);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let offset = interval * i as u32;
        let intended = start + offset;
        tokio::time::sleep_until(intended.into()).await;
        let lag = intended.elapsed();
        let api = clients[i % clients.len()].clone();
        let user = users[i % users.len()].clone();
        let address = format!("{prefix}{i}@bench.example.com");
        tasks.spawn(async move {
            let (_, outcome) = load::set_email(&api, &user, &address).await;
            (address, intended.elapsed(), lag, outcome.is_ok())
        });
    }
    let mut latencies = Vec::with_capacity(total);
    let mut lags = Vec::with_capacity(total);
    let mut intended_at: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut errors = 0;
    let mut index = 0usize;
    let mut answered = Vec::new();
    while let Some(done) = tasks.join_next().await {
        answered.push(done.expect("an open-loop request task panicked"));
    }
    for (address, latency, lag, ok) in answered {
        index += 1;
        lags.push(lag);
        if ok {
            latencies.push(latency);
            let i: u32 = address
                .trim_start_matches(prefix.as_str())
                .split('@')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let offset = chrono::Duration::from_std(interval * i).unwrap_or_default();
            intended_at.insert(address, start_wall + offset);
        } else {
            errors += 1;
        }
    }
    // Every answered request's mail, or the wait runs out.
    let deadline = Instant::now() + Duration::from_secs(60);
    let to_mail = loop {
        let mails = env.sink.messages();
        let arrived: Vec<_> = mails
            .iter()
            .filter_map(|m| {
                let to = m.recipients.iter().find(|r| r.starts_with(&prefix))?;
                let at = intended_at.get(to)?;
                Some((m.received_at - *at).to_std().unwrap_or_default())
            })
            .collect();
        if arrived.len() >= intended_at.len() || Instant::now() >= deadline {
            break arrived;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    OpenLoopPhase {
        rate,
        duration,
        sent: index,
        errors,
        latency: Latency::of(&latencies),
        start_lag: Latency::of(&lags),
        mails_missing: intended_at.len().saturating_sub(to_mail.len()),
        to_mail: Latency::of(&to_mail),
    }
}
