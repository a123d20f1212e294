//! Small helpers shared by the delivery, fault and ops CLI tests: making users with a pending
//! contact email mail, reading jobs through `worker jobs list/show --json`, and pulling the
//! code out of a mail. Every helper goes through the API, the CLI or the SMTP sink.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};
use tests::{Api, CliOutput, ReceivedMail, Resp, TestEnv, TestEnvBuilder, eventually, scenario};

/// How long a mail or a state change may take in the ordinary case.
pub const WAIT: Duration = Duration::from_secs(30);

/// `EMAIL_CODE_ALPHABET` default (SPEC 3.4).
pub const EMAIL_ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// The environment with short retry settings so retries happen within seconds.
pub fn fast_retries() -> TestEnvBuilder {
    TestEnv::builder()
        .env("MAIL_RETRY_INITIAL", "1s")
        .env("MAIL_RETRY_MAX", "5s")
}

/// An address unique to this test run and `name`.
pub fn address(name: &str) -> String {
    format!("{name}@delivery.example.com")
}

/// `POST /v3alpha/users` with `username`; returns the new user's id.
pub async fn create_user(api: &Api, username: &str) -> String {
    scenario::create_user(api, json!({ "username": username })).await
}

/// `PUT /v3alpha/users/{user}/email` asking for a mailed code (the default); expects 200.
pub async fn set_email(api: &Api, user: &str, address: &str) -> Resp {
    api.put(
        &format!("/v3alpha/users/{user}/email"),
        json!({ "email": { "address": address, "sendCode": {} } }),
    )
    .await
    .expect_status(200)
}

/// A new user whose contact email is `address(name)`, with a mail job enqueued. Returns the
/// user id and the address.
pub async fn user_with_mail(api: &Api, name: &str) -> (String, String) {
    let user = create_user(api, name).await;
    let address = address(name);
    set_email(api, &user, &address).await;
    (user, address)
}

/// `n` users with a pending mail each (`{prefix}-{i}`), made 8 at a time. Returns
/// `(user id, address)` in index order.
pub async fn users_with_mail(api: &Api, prefix: &str, n: usize) -> Vec<(String, String)> {
    let mut out = vec![(String::new(), String::new()); n];
    let mut set = tokio::task::JoinSet::new();
    let mut next = 0;
    while next < n || !set.is_empty() {
        while next < n && set.len() < 8 {
            let api = api.clone();
            let name = format!("{prefix}-{next}");
            let i = next;
            set.spawn(async move { (i, user_with_mail(&api, &name).await) });
            next += 1;
        }
        let (i, pair) = set
            .join_next()
            .await
            .expect("a request task")
            .expect("a request task panicked");
        out[i] = pair;
    }
    out
}

/// `POST /v3alpha/users/{user}/email/verify`.
pub async fn verify(api: &Api, user: &str, code: &str) -> Resp {
    api.post(
        &format!("/v3alpha/users/{user}/email/verify"),
        json!({ "verificationCode": code }),
    )
    .await
}

/// Whether the user's contact email is verified (`GET /v3alpha/users/{user}`).
pub async fn is_verified(api: &Api, user: &str) -> bool {
    let got = scenario::get_user(api, user).await;
    got.pointer("/contact/email/isVerified")
        .and_then(Value::as_bool)
        .unwrap_or_else(|| panic!("no isVerified in {got}"))
}

/// The contact email code of a mail sent with the default URL template: the `code`
/// parameter of the link, which the text part must also show on its own.
pub fn contact_code(mail: &ReceivedMail) -> String {
    let code = mail
        .link_param("code")
        .unwrap_or_else(|| panic!("no code in the link of:\n{}", mail.raw_text()));
    assert!(
        mail.standalone_codes(6, EMAIL_ALPHABET).contains(&code),
        "the text part does not show the link's code {code} on its own:\n{}",
        mail.text_body()
    );
    code
}

/// The jobs of one user (`worker jobs list --json --user ID`), newest first.
pub async fn jobs_of(env: &TestEnv, user: &str) -> Vec<Value> {
    env.jobs(&["--user", user]).await
}

/// The one job of a user; panics if there is not exactly one.
pub async fn only_job_of(env: &TestEnv, user: &str) -> Value {
    let jobs = jobs_of(env, user).await;
    assert_eq!(jobs.len(), 1, "expected one job for user {user}: {jobs:#?}");
    jobs.into_iter().next().unwrap()
}

/// A job's string id.
pub fn id_of(job: &Value) -> String {
    job["id"]
        .as_str()
        .unwrap_or_else(|| panic!("job id is not a string: {job}"))
        .to_owned()
}

/// Waits until the user's newest job is in `state` and returns it (from `jobs list`).
pub async fn wait_state(env: &TestEnv, user: &str, state: &str, timeout: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let newest = jobs_of(env, user).await.into_iter().next();
        if let Some(job) = &newest
            && job["state"] == state
        {
            return job.clone();
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for the newest job of user {user} to be \
                 {state}; last seen: {newest:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the user's newest job has left `queued`, `sending` and `retrying`, and
/// returns it.
pub async fn wait_settled(env: &TestEnv, user: &str, timeout: Duration) -> Value {
    let what = format!("the newest job of user {user} to settle");
    eventually(&what, timeout, || async move {
        let newest = jobs_of(env, user).await.into_iter().next()?;
        let moving = ["queued", "sending", "retrying"]
            .iter()
            .any(|s| newest["state"] == *s);
        (!moving).then_some(newest)
    })
    .await
}

/// Waits until the job `id` has at least one recorded attempt.
pub async fn wait_attempted(env: &TestEnv, id: &str, timeout: Duration) {
    let what = format!("job {id} to record an attempt");
    eventually(&what, timeout, || async move {
        let jobs = env.jobs(&["--limit", "1000"]).await;
        jobs.iter()
            .any(|j| id_of(j) == id && j["attempts"].as_u64() >= Some(1))
            .then_some(())
    })
    .await
}

/// `worker jobs show ID --json`, parsed; panics unless it exits 0.
pub async fn show(env: &TestEnv, id: &str) -> Value {
    let out = env.run_worker(&["jobs", "show", id, "--json"]).await;
    out.expect_success();
    out.json()
}

/// `worker replay ARGS...` (exit status not checked).
pub async fn replay(env: &TestEnv, args: &[&str]) -> CliOutput {
    let mut full = vec!["replay"];
    full.extend_from_slice(args);
    env.run_worker(&full).await
}

/// The stdout lines of a replay, and a check that it exited 0 and ended with the summary
/// `replayed N, skipped M`.
#[track_caller]
pub fn replay_lines(out: &CliOutput, replayed: usize, skipped: usize) -> Vec<String> {
    out.expect_success();
    let lines: Vec<String> = out.stdout.lines().map(str::to_owned).collect();
    assert_eq!(
        lines.last().map(String::as_str),
        Some(format!("replayed {replayed}, skipped {skipped}").as_str()),
        "the last stdout line must be the summary\nstdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    lines
}

/// The `skipped <id>: <reason>` lines of a replay as a sorted set (their order is not fixed).
pub fn skip_lines(lines: &[String]) -> BTreeSet<String> {
    lines
        .iter()
        .filter(|l| l.starts_with("skipped "))
        .cloned()
        .collect()
}

/// Mails grouped by `Message-ID`.
pub fn by_message_id(mails: &[ReceivedMail]) -> BTreeMap<String, Vec<&ReceivedMail>> {
    let mut map: BTreeMap<String, Vec<&ReceivedMail>> = BTreeMap::new();
    for mail in mails {
        map.entry(mail.message_id().to_owned())
            .or_default()
            .push(mail);
    }
    map
}

/// Distinct envelope recipients among `mails`, lower-cased.
pub fn recipients(mails: &[ReceivedMail]) -> BTreeSet<String> {
    mails
        .iter()
        .flat_map(|m| m.recipients.iter().map(|r| r.to_ascii_lowercase()))
        .collect()
}

/// Waits until every address in `addresses` got at least one mail; returns all mails.
pub async fn wait_all_recipients(
    env: &TestEnv,
    addresses: &[String],
    timeout: Duration,
) -> Vec<ReceivedMail> {
    let wanted: BTreeSet<String> = addresses.iter().map(|a| a.to_ascii_lowercase()).collect();
    let what = format!("a mail to each of {} addresses", wanted.len());
    env.sink
        .wait_until(timeout, &what, |mails| wanted.is_subset(&recipients(mails)))
        .await
}

/// Waits until `n` jobs are in `state` (`worker jobs list --status STATE`), returns them.
pub async fn wait_jobs_in_state(
    env: &TestEnv,
    state: &str,
    n: usize,
    timeout: Duration,
) -> Vec<Value> {
    let what = format!("{n} jobs in state {state}");
    eventually(&what, timeout, || async move {
        let jobs = env.jobs(&["--status", state, "--limit", "1000"]).await;
        (jobs.len() >= n).then_some(jobs)
    })
    .await
}

/// A compact `state` count of all jobs, for failure messages.
pub async fn state_summary(env: &TestEnv) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for job in env.jobs(&["--limit", "1000"]).await {
        *counts
            .entry(job["state"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    counts
}
