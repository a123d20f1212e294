//! The HTTP side of the benchmark: creating users through the API, the closed-loop load of
//! `PUT /v3alpha/users/{id}/email` with `sendCode` over a fixed number of connections (each
//! connection its own HTTP client, so its own TCP connection), and single timed requests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::scenario::create_user;
use harness::{Api, Body, Method};
use serde_json::json;

use crate::stats::Latency;

/// The URL template every benchmark request sends (the README's example), so each request
/// also pays for the template check of SPEC 5.
pub const URL_TEMPLATE: &str = "https://example.com/verify?user={{.UserID}}&code={{.Code}}";

/// Creates `count` users (usernames `bench-<tag>-<i>`, no email) with `concurrency` requests
/// in flight; returns their ids in order. Aborts the benchmark if one is refused.
pub async fn create_users(api: &Api, tag: &str, count: usize, concurrency: usize) -> Vec<String> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let api = fresh_client(api);
        let next = next.clone();
        let tag = tag.to_string();
        tasks.spawn(async move {
            let mut made = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return made;
                }
                let body = json!({ "username": format!("bench-{tag}-{i}") });
                made.push((i, create_user(&api, body).await));
            }
        });
    }
    let mut all = Vec::with_capacity(count);
    while let Some(done) = tasks.join_next().await {
        all.extend(done.expect("a user-creating task panicked"));
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, id)| id).collect()
}

/// A client for the same API and token with its own connection pool.
pub fn fresh_client(api: &Api) -> Api {
    Api::new(api.base_url(), api.token().map(str::to_string))
}

/// The body of a set-email request with `sendCode` for `address`.
pub fn set_email_body(address: &str) -> Body {
    let body =
        json!({ "email": { "address": address, "sendCode": { "urlTemplate": URL_TEMPLATE } } });
    Body {
        bytes: serde_json::to_vec(&body).expect("serialize a JSON body"),
        content_type: Some("application/json".to_string()),
    }
}

/// One set-email request; returns its latency and `Ok(())` for a 200, else a short error.
pub async fn set_email(api: &Api, user_id: &str, address: &str) -> (Duration, Result<(), String>) {
    let path = format!("/v3alpha/users/{user_id}/email");
    let started = Instant::now();
    let result = api
        .try_send(Method::PUT, &path, Some(set_email_body(address)))
        .await;
    let elapsed = started.elapsed();
    let outcome = match result {
        Ok(resp) if resp.status == 200 => Ok(()),
        Ok(resp) => Err(format!(
            "HTTP {} {}",
            resp.status,
            resp.error_id().unwrap_or("")
        )),
        Err(e) => Err(format!("transport: {}", short_error(&e.to_string()))),
    };
    (elapsed, outcome)
}

fn short_error(text: &str) -> String {
    text.chars().take(80).collect()
}

/// What the closed-loop load measured.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub warmup: Duration,
    pub window: Duration,
    /// 200 answers to requests started inside the measuring window.
    pub ok: u64,
    /// Other answers and transport errors inside the window, by kind.
    pub errors: BTreeMap<String, u64>,
    /// Errors during warm-up and after the window (not counted above).
    pub errors_outside: u64,
    /// Requests (of any outcome) sent during the whole run, warm-up included.
    pub total_sent: u64,
    pub latency: Latency,
}

impl LoadResult {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Successful requests per second of the window; zero for a phase that did not run (no
    /// window), so a partial run's report reads 0 and not NaN.
    pub fn throughput(&self) -> f64 {
        crate::stats::per_second(self.ok as f64, self.window)
    }
}

/// Runs `connections` closed loops (send, wait for the answer, send the next) for
/// `warmup + window`. Connection `c` cycles through its own slice of `users` (so no two
/// connections ever wait for the same user's row lock), giving each request a new address so
/// every request changes the contact email and enqueues a mail job. Requests *started* inside
/// the window are measured.
pub async fn run(
    api: &Api,
    users: &[String],
    connections: usize,
    warmup: Duration,
    window: Duration,
) -> LoadResult {
    assert!(
        users.len() >= connections,
        "need at least one user per connection ({} users, {connections} connections)",
        users.len()
    );
    let per_conn = users.len() / connections;
    let start = Instant::now();
    let measure_from = start + warmup;
    let measure_until = measure_from + window;
    let run_id = format!("{:06x}", rand_u32() & 0xff_ffff);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..connections {
        let api = fresh_client(api);
        let mine: Vec<String> = users[c * per_conn..(c + 1) * per_conn].to_vec();
        let run_id = run_id.clone();
        tasks.spawn(async move {
            let mut samples = Vec::new();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut errors_outside = 0u64;
            let mut sent = 0u64;
            let mut i = 0usize;
            loop {
                let now = Instant::now();
                if now >= measure_until {
                    break;
                }
                let user = &mine[i % mine.len()];
                let address = format!("l{run_id}-{c}-{i}@bench.example.com");
                i += 1;
                sent += 1;
                let (latency, outcome) = set_email(&api, user, &address).await;
                let measured = now >= measure_from;
                match outcome {
                    Ok(()) if measured => samples.push(latency),
                    Ok(()) => {}
                    Err(kind) if measured => *errors.entry(kind).or_default() += 1,
                    Err(_) => errors_outside += 1,
                }
            }
            (samples, errors, errors_outside, sent)
        });
    }
    let mut samples = Vec::new();
    let mut result = LoadResult {
        warmup,
        window,
        ..LoadResult::default()
    };
    while let Some(done) = tasks.join_next().await {
        let (s, errors, outside, sent) = done.expect("a load connection task panicked");
        samples.extend(s);
        for (kind, n) in errors {
            *result.errors.entry(kind).or_default() += n;
        }
        result.errors_outside += outside;
        result.total_sent += sent;
    }
    result.ok = samples.len() as u64;
    result.latency = Latency::of(&samples);
    result
}

/// Sends one set-email request per user (address `<tag>-<i>@...`) with `concurrency` in
/// flight; returns the time it took and the number of failed requests.
pub async fn each_once(
    api: &Api,
    users: &[String],
    concurrency: usize,
    tag: &str,
) -> (Duration, u64) {
    let users = Arc::new(users.to_vec());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let api = fresh_client(api);
        let users = users.clone();
        let next = next.clone();
        let tag = tag.to_string();
        tasks.spawn(async move {
            let mut errors = 0u64;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(user) = users.get(i) else {
                    return errors;
                };
                let address = format!("{tag}-{i}@bench.example.com");
                if set_email(&api, user, &address).await.1.is_err() {
                    errors += 1;
                }
            }
        });
    }
    let mut errors = 0;
    while let Some(done) = tasks.join_next().await {
        errors += done.expect("an enqueueing task panicked");
    }
    (started.elapsed(), errors)
}

/// A random number without pulling in a random crate: the clock's nanoseconds mixed with the
/// process id. Only used to keep addresses of different runs apart.
fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_a_send_code_request() {
        let body = set_email_body("a@b.example");
        let value: serde_json::Value = serde_json::from_slice(&body.bytes).expect("JSON");
        assert_eq!(value["email"]["address"], "a@b.example");
        assert_eq!(value["email"]["sendCode"]["urlTemplate"], URL_TEMPLATE);
        assert_eq!(body.content_type.as_deref(), Some("application/json"));
    }

    #[test]
    fn throughput_counts_successes_in_the_window() {
        let r = LoadResult {
            ok: 500,
            window: Duration::from_secs(10),
            ..LoadResult::default()
        };
        assert_eq!(r.throughput(), 50.0);
        assert_eq!(r.error_count(), 0);
    }

    #[test]
    fn a_phase_that_did_not_run_reads_zero() {
        assert_eq!(LoadResult::default().throughput(), 0.0);
    }
}
