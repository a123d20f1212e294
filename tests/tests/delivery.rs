//! Delivery as a client and an operator see it (SPEC 7 and 8): transient SMTP failures are
//! retried until the mail arrives, with the attempts recorded; superseded, expired and
//! cancelled jobs are never sent; two workers on one queue send each mail once.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use support::*;
use tests::{SinkMode, TestEnv, eventually};

/// Parses an RFC 3339 time of the CLI's JSON and checks the SPEC's form (UTC, milliseconds).
#[track_caller]
fn time(value: &Value) -> DateTime<Utc> {
    let raw = value
        .as_str()
        .unwrap_or_else(|| panic!("not a time string: {value}"));
    let parsed = DateTime::parse_from_rfc3339(raw)
        .unwrap_or_else(|e| panic!("{raw:?} is not RFC 3339: {e}"))
        .with_timezone(&Utc);
    let fraction = raw
        .rsplit_once('.')
        .map(|(_, f)| f.trim_end_matches('Z'))
        .unwrap_or("");
    assert!(
        raw.ends_with('Z') && fraction.len() == 3,
        "{raw:?}: SPEC 7 asks for RFC 3339 UTC with milliseconds"
    );
    parsed
}

#[tokio::test]
async fn transient_smtp_failures_are_retried_until_every_mail_arrives() {
    let env = fast_retries().env("MAIL_MAX_ATTEMPTS", "30").start().await;
    let api = env.api();
    env.sink.mode(SinkMode::TempFail);
    let users = users_with_mail(&api, "flaky", 3).await;
    let addresses: Vec<String> = users.iter().map(|(_, a)| a.clone()).collect();

    // While the sink answers 451 the job waits for its next attempt, and says why.
    let retrying = wait_state(&env, &users[0].0, "retrying", WAIT).await;
    let last_error = retrying["lastError"].as_str().unwrap_or_default();
    assert!(
        last_error.contains("451"),
        "lastError of a retrying job should carry the SMTP reply: {retrying:#}"
    );
    let next = time(&retrying["nextAttemptAt"]);
    assert!(
        next > time(&retrying["createdAt"]),
        "nextAttemptAt of a retrying job must lie after its creation: {retrying:#}"
    );

    // 451 at RCPT is as transient as 451 after DATA.
    env.sink.wait_for_rejections(2 * users.len(), WAIT).await;
    env.sink.mode(SinkMode::TempFailRcpt);
    let before = env.sink.rejected_count();
    env.sink.wait_for_rejections(before + 2, WAIT).await;
    assert_eq!(env.sink.count(), 0, "no mail may be accepted while failing");

    env.sink.mode(SinkMode::Accept);
    wait_all_recipients(&env, &addresses, WAIT).await;
    for (user, _) in &users {
        wait_state(&env, user, "sent", WAIT).await;
    }
    env.sink
        .assert_count_stays(users.len(), Duration::from_secs(1))
        .await;
    for (user, address) in &users {
        assert_eq!(
            env.sink.messages_to(address).len(),
            1,
            "exactly one mail to {address} (user {user})"
        );
    }

    for (user, _) in &users {
        let job = only_job_of(&env, user).await;
        let shown = show(&env, &id_of(&job)).await;
        assert_eq!(shown["state"], "sent", "{shown:#}");
        assert_eq!(shown["id"], job["id"]);
        let attempts = shown["attempts"]
            .as_u64()
            .unwrap_or_else(|| panic!("attempts is not a count: {shown:#}"));
        assert!(
            attempts > 1,
            "retried job must record >1 attempts: {shown:#}"
        );
        let history = shown["history"]
            .as_array()
            .unwrap_or_else(|| panic!("no history array: {shown:#}"));
        assert_eq!(
            history.len() as u64,
            attempts,
            "one history entry per attempt: {shown:#}"
        );
        let mut previous: Option<DateTime<Utc>> = None;
        let mut longest_gap = Duration::ZERO;
        for (i, entry) in history.iter().enumerate() {
            let at = time(&entry["at"]);
            if let Some(prev) = previous {
                assert!(at >= prev, "history must be oldest first: {shown:#}");
                longest_gap = longest_gap.max((at - prev).to_std().unwrap_or_default());
            }
            previous = Some(at);
            assert!(
                entry["outcome"].as_str().is_some_and(|o| !o.is_empty()),
                "history[{i}].outcome: {shown:#}"
            );
            assert!(
                entry["durationMs"].as_u64().is_some(),
                "history[{i}].durationMs must be a non-negative number: {shown:#}"
            );
            let reply = entry["smtpReply"]
                .as_str()
                .unwrap_or_else(|| panic!("history[{i}].smtpReply must be a string: {shown:#}"));
            let last = i + 1 == history.len();
            let expected = if last { "250" } else { "451" };
            assert!(
                reply.contains(expected),
                "history[{i}].smtpReply should be the server's {expected} reply: {shown:#}"
            );
        }
        let first = &history[0]["outcome"];
        let last = &history[history.len() - 1]["outcome"];
        assert_ne!(
            first, last,
            "a failed and a successful attempt must not have the same outcome: {shown:#}"
        );
        // MAIL_RETRY_INITIAL=1s (±30 % jitter): the job waited between deliveries instead
        // of hammering the server.
        assert!(
            longest_gap >= Duration::from_millis(650),
            "no backoff between attempts (longest gap {longest_gap:?}): {shown:#}"
        );
    }

    // The mail sent after the retries is a working one.
    let (user, address) = &users[0];
    let mail = env.sink.messages_to(address).remove(0);
    verify(&api, user, &contact_code(&mail))
        .await
        .expect_status(200);
    assert!(is_verified(&api, user).await);
}

#[tokio::test]
async fn an_unreachable_smtp_server_is_retried_until_it_is_back() {
    let env = fast_retries().env("MAIL_MAX_ATTEMPTS", "30").start().await;
    let api = env.api();
    env.sink.stop().await;
    let (user, address) = user_with_mail(&api, "offline").await;

    let retrying = wait_state(&env, &user, "retrying", WAIT).await;
    assert!(
        retrying["lastError"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "a retrying job says why: {retrying:#}"
    );
    assert!(retrying["nextAttemptAt"].is_string(), "{retrying:#}");

    env.sink.start().await;
    let mails = env.sink.wait_for_to(&address, 1, WAIT).await;
    let sent = wait_state(&env, &user, "sent", WAIT).await;
    let attempts = sent["attempts"].as_u64().unwrap_or_default();
    assert!(attempts > 1, "{sent:#}");
    let shown = show(&env, &id_of(&sent)).await;
    assert_eq!(
        shown["history"].as_array().map(Vec::len),
        Some(attempts as usize),
        "{shown:#}"
    );
    verify(&api, &user, &contact_code(&mails[0]))
        .await
        .expect_status(200);
    env.sink.assert_count_stays(1, Duration::from_secs(1)).await;
}

/// One queue of `rabbitmqctl list_queues`: type, durable, arguments (raw), messages.
#[derive(Debug, Clone)]
struct Queue {
    kind: String,
    durable: bool,
    arguments: String,
    messages: u64,
}

async fn rabbitmqctl(args: &[&str]) -> String {
    let out = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .args(["-q", "--no-table-headers"])
        .output()
        .await
        .expect("run rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The queues of the test's vhost, by name.
async fn queues(env: &TestEnv) -> BTreeMap<String, Queue> {
    let out = rabbitmqctl(&[
        "list_queues",
        "-p",
        env.vhost(),
        "name",
        "type",
        "durable",
        "arguments",
        "messages",
    ])
    .await;
    out.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            let [name, kind, durable, arguments, messages] = cols[..] else {
                return None;
            };
            Some((
                name.to_owned(),
                Queue {
                    kind: kind.to_owned(),
                    durable: durable == "true",
                    arguments: arguments.to_owned(),
                    messages: messages.trim().parse().unwrap_or(0),
                },
            ))
        })
        .collect()
}

#[tokio::test]
async fn exhausted_retries_fail_the_job_into_mail_dead_and_replay_renews_them() {
    // The first wait (4-5 s) is long enough to see the message parked in a delay tier.
    let env = TestEnv::builder()
        .env("MAIL_RETRY_INITIAL", "4s")
        .env("MAIL_RETRY_MAX", "5s")
        .env("MAIL_MAX_ATTEMPTS", "4")
        .start()
        .await;
    let api = env.api();

    // The topology, as an operator sees it in RabbitMQ.
    let exchanges = rabbitmqctl(&[
        "list_exchanges",
        "-p",
        env.vhost(),
        "name",
        "type",
        "durable",
    ])
    .await;
    assert!(
        exchanges.lines().any(|l| l.trim() == "mail\tdirect\ttrue"),
        "a durable direct exchange `mail`:\n{exchanges}"
    );
    let declared = queues(&env).await;
    let send = declared
        .get("mail.send")
        .unwrap_or_else(|| panic!("no mail.send: {declared:#?}"));
    assert_eq!(send.kind, "quorum", "{send:?}");
    assert!(send.durable, "{send:?}");
    assert!(send.arguments.contains("x-delivery-limit"), "{send:?}");
    let dead = declared
        .get("mail.dead")
        .unwrap_or_else(|| panic!("no mail.dead: {declared:#?}"));
    assert_eq!(dead.kind, "quorum", "{dead:?}");
    let tiers: Vec<(&String, &Queue)> = declared
        .iter()
        .filter(|(name, _)| name.starts_with("mail.retry."))
        .collect();
    assert!(!tiers.is_empty(), "delay tiers mail.retry.*: {declared:#?}");
    for (name, tier) in &tiers {
        assert!(
            tier.arguments.contains("x-message-ttl")
                && tier
                    .arguments
                    .contains(r#"{"x-dead-letter-exchange","mail"}"#),
            "{name} must dead-letter back to `mail` after its TTL: {tier:?}"
        );
    }

    env.sink.mode(SinkMode::TempFail);
    let (user, address) = user_with_mail(&api, "doomed").await;
    wait_state(&env, &user, "retrying", WAIT).await;
    let env_ref = &env;
    let parked = eventually(
        "the job's message in a mail.retry.* tier",
        WAIT,
        || async move {
            let queues = queues(env_ref).await;
            queues
                .into_iter()
                .find(|(name, q)| name.starts_with("mail.retry.") && q.messages > 0)
        },
    )
    .await;
    eprintln!("parked in {}", parked.0);

    // MAIL_MAX_ATTEMPTS counts deliveries; each delivery makes up to 3 quick tries (SPEC 8).
    let failed = wait_state(&env, &user, "failed", WAIT).await;
    assert_eq!(
        failed["attempts"], 12,
        "MAIL_MAX_ATTEMPTS=4 deliveries: {failed:#}"
    );
    assert!(
        failed["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("451") && e.contains("4 deliveries")),
        "{failed:#}"
    );
    assert_eq!(failed["nextAttemptAt"], Value::Null, "{failed:#}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        env.sink.rejected_count(),
        12,
        "no attempt after the job failed"
    );
    eventually(
        "the failed job's message in mail.dead",
        WAIT,
        || async move {
            let queues = queues(env_ref).await;
            (queues.get("mail.dead")?.messages >= 1).then_some(())
        },
    )
    .await;

    // A replay gets a fresh budget of attempts.
    env.sink.mode(SinkMode::Accept);
    let id = id_of(&failed);
    let out = replay(&env, &["--id", &id]).await;
    assert_eq!(replay_lines(&out, 1, 0), ["replayed 1, skipped 0"]);
    env.sink.wait_for_to(&address, 1, WAIT).await;
    let sent = wait_state(&env, &user, "sent", WAIT).await;
    assert_eq!(sent["attempts"], 13, "{sent:#}");
}

#[tokio::test]
async fn two_workers_on_one_queue_send_each_mail_exactly_once() {
    const N: usize = 24;
    let mut env = TestEnv::builder()
        .env("WORKER_CONCURRENCY", "4")
        .without_worker()
        .start()
        .await;
    let api = env.api();
    let users = users_with_mail(&api, "pair", N).await;
    let addresses: Vec<String> = users.iter().map(|(_, a)| a.clone()).collect();
    // Slow acceptance keeps both workers busy at the same time.
    env.sink.data_delay(Duration::from_millis(150));

    let first = env.add_worker();
    let second = env.add_worker();
    env.spawn_process(first);
    env.spawn_process(second);
    env.wait_ready(first).await;
    env.wait_ready(second).await;

    wait_all_recipients(&env, &addresses, Duration::from_secs(60)).await;
    wait_jobs_in_state(&env, "sent", N, WAIT).await;
    env.sink.assert_count_stays(N, Duration::from_secs(2)).await;

    let mails = env.sink.messages();
    let ids = by_message_id(&mails);
    assert_eq!(ids.len(), N, "one Message-ID per job");
    for address in &addresses {
        assert_eq!(env.sink.messages_to(address).len(), 1, "mails to {address}");
    }
    for job in env.jobs(&["--limit", "1000"]).await {
        assert_eq!(job["state"], "sent", "{job:#}");
        assert_eq!(
            job["attempts"], 1,
            "sent once, at the first attempt: {job:#}"
        );
    }
}

#[tokio::test]
async fn a_newer_code_supersedes_the_unsent_mails_of_the_same_purpose() {
    let mut env = TestEnv::builder().without_worker().start().await;
    let api = env.api();
    let user = create_user(&api, "fickle").await;
    let old = address("fickle-old");
    let new = address("fickle-new");
    let otp = address("fickle-otp");

    // Contact email: a mail, a resend (new code, same address), a new address.
    set_email(&api, &user, &old).await;
    api.post(&format!("/v3alpha/users/{user}/email/resend"), json!({}))
        .await
        .expect_status(200);
    set_email(&api, &user, &new).await;
    // OTP Email: its own purpose; a resend supersedes its first mail only.
    let added = api
        .post(
            &format!("/v3alpha/users/{user}/otp_email"),
            json!({ "email": { "address": otp } }),
        )
        .await
        .expect_status(200);
    let otp_id = added.str_at("/otpEmailId").to_owned();
    api.post(
        &format!("/v3alpha/users/{user}/otp_email/{otp_id}/resend"),
        json!({}),
    )
    .await
    .expect_status(200);

    // Before any worker ran, the older jobs are already superseded.
    let jobs = jobs_of(&env, &user).await;
    assert_eq!(jobs.len(), 5, "{jobs:#?}");
    let states: Vec<(&str, &str, &str)> = jobs
        .iter()
        .map(|j| {
            (
                j["purpose"].as_str().unwrap_or("?"),
                j["recipient"].as_str().unwrap_or("?"),
                j["state"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    // Newest first.
    assert_eq!(
        states,
        [
            ("otp_email", otp.as_str(), "queued"),
            ("otp_email", otp.as_str(), "superseded"),
            ("contact_email", new.as_str(), "queued"),
            ("contact_email", old.as_str(), "superseded"),
            ("contact_email", old.as_str(), "superseded"),
        ],
        "{jobs:#?}"
    );

    // Other ways a pending code becomes void (SPEC 3.4): a new address with a returned code,
    // a new address set verified, removing the OTP Email authenticator.
    let other = create_user(&api, "voided").await;
    let email_path = format!("/v3alpha/users/{other}/email");
    set_email(&api, &other, &address("voided-1")).await;
    let returned = api
        .put(
            &email_path,
            json!({ "email": { "address": address("voided-2"), "returnCode": {} } }),
        )
        .await
        .expect_status(200);
    assert!(returned["verificationCode"].is_string(), "{returned:?}");
    set_email(&api, &other, &address("voided-3")).await;
    api.put(
        &email_path,
        json!({ "email": { "address": address("voided-4"), "isVerified": true } }),
    )
    .await
    .expect_status(200);
    let removed = api
        .post(
            &format!("/v3alpha/users/{other}/otp_email"),
            json!({ "email": { "address": address("voided-otp") } }),
        )
        .await
        .expect_status(200);
    api.delete(&format!(
        "/v3alpha/users/{other}/otp_email/{}",
        removed.str_at("/otpEmailId")
    ))
    .await
    .expect_status(200);
    let voided = jobs_of(&env, &other).await;
    let voided_states: Vec<(&str, &str)> = voided
        .iter()
        .map(|j| {
            (
                j["recipient"].as_str().unwrap_or("?"),
                j["state"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        voided_states,
        [
            (address("voided-otp").as_str(), "superseded"),
            (address("voided-3").as_str(), "superseded"),
            (address("voided-1").as_str(), "superseded"),
        ],
        "{voided:#?}"
    );

    env.restart_worker().await;
    wait_all_recipients(&env, &[new.clone(), otp.clone()], WAIT).await;
    // The superseded jobs' messages are in the queue too; give the worker time to (not) send.
    env.sink.assert_count_stays(2, Duration::from_secs(2)).await;
    assert!(
        env.sink.messages_to(&old).is_empty(),
        "superseded mail sent"
    );
    for job in jobs_of(&env, &other).await {
        assert_eq!(job["state"], "superseded", "{job:#}");
    }

    let contact = env.sink.messages_to(&new).remove(0);
    verify(&api, &user, &contact_code(&contact))
        .await
        .expect_status(200);
    let otp_mail = env.sink.messages_to(&otp).remove(0);
    let otp_codes = otp_mail.standalone_codes(8, "0123456789");
    assert_eq!(
        otp_codes.len(),
        1,
        "one OTP code in:\n{}",
        otp_mail.text_body()
    );
    api.post(
        &format!("/v3alpha/users/{user}/otp_email/{otp_id}/verify"),
        json!({ "verificationCode": otp_codes[0] }),
    )
    .await
    .expect_status(200);

    let jobs = jobs_of(&env, &user).await;
    let states: Vec<&str> = jobs.iter().map(|j| j["state"].as_str().unwrap()).collect();
    assert_eq!(
        states,
        ["sent", "superseded", "sent", "superseded", "superseded"],
        "{jobs:#?}"
    );
    for job in jobs.iter().filter(|j| j["state"] == "superseded") {
        assert_eq!(
            job["attempts"], 0,
            "a superseded job is never tried: {job:#}"
        );
    }
}

#[tokio::test]
async fn a_job_whose_code_expired_before_sending_is_not_sent() {
    let mut env = fast_retries()
        .env("EMAIL_CODE_TTL", "1s")
        .without_worker()
        .start()
        .await;
    let api = env.api();
    let (user, address) = user_with_mail(&api, "late").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    env.restart_worker().await;
    let job = wait_state(&env, &user, "expired", WAIT).await;
    assert_eq!(job["lastError"], "expired", "{job:#}");
    env.sink.assert_count_stays(0, Duration::from_secs(1)).await;
    let id = id_of(&job);

    // An expired job is replayed only with a new code.
    let out = replay(&env, &["--id", &id]).await;
    let lines = replay_lines(&out, 0, 1);
    assert_eq!(
        lines,
        [
            format!("skipped {id}: expired"),
            "replayed 0, skipped 1".into()
        ]
    );
    assert_eq!(only_job_of(&env, &user).await["state"], "expired");

    // The replay makes the new code with its own EMAIL_CODE_TTL.
    env.set_env("EMAIL_CODE_TTL", "1h");
    let out = replay(&env, &["--id", &id, "--refresh-code"]).await;
    assert_eq!(replay_lines(&out, 1, 0), ["replayed 1, skipped 0"]);
    let mails = env.sink.wait_for_to(&address, 1, WAIT).await;
    let code = contact_code(&mails[0]);
    verify(&api, &user, &code).await.expect_status(200);
    assert!(is_verified(&api, &user).await);
    let job = wait_state(&env, &user, "sent", WAIT).await;
    assert_eq!(id_of(&job), id, "replay keeps the job id");

    // A job whose code expires while it waits for a retry ends the same way.
    env.sink.mode(SinkMode::TempFail);
    let created = tokio::time::Instant::now();
    let (retried, retried_address) = user_with_mail(&api, "late-retry").await;
    env.sink.wait_for_rejections(1, WAIT).await;
    // The sink answers 451 until the code is past its lifetime.
    tokio::time::sleep_until(created + Duration::from_millis(1300)).await;
    env.sink.mode(SinkMode::Accept);
    let job = wait_state(&env, &retried, "expired", WAIT).await;
    assert_eq!(job["lastError"], "expired", "{job:#}");
    assert!(job["attempts"].as_u64() >= Some(1), "{job:#}");
    env.sink.assert_count_stays(1, Duration::from_secs(2)).await;
    assert!(env.sink.messages_to(&retried_address).is_empty());

    // A code that expires during a slow attempt answered 451 is not tried again either.
    env.sink.data_delay(Duration::from_millis(1500));
    env.sink.mode(SinkMode::TempFail);
    let (slow, slow_address) = user_with_mail(&api, "late-slow").await;
    let slow_job = id_of(&only_job_of(&env, &slow).await);
    wait_attempted(&env, &slow_job, WAIT).await;
    env.sink.data_delay(Duration::ZERO);
    env.sink.mode(SinkMode::Accept);
    let job = wait_settled(&env, &slow, WAIT).await;
    assert_eq!(
        job["state"], "expired",
        "sent after its code expired: {job:#}"
    );
    assert_eq!(job["lastError"], "expired", "{job:#}");
    assert!(env.sink.messages_to(&slow_address).is_empty());
}

/// The newest job of `user` and the one before it.
async fn newest_two(env: &TestEnv, user: &str) -> (Value, Value) {
    let jobs = jobs_of(env, user).await;
    assert!(jobs.len() >= 2, "{jobs:#?}");
    (jobs[0].clone(), jobs[1].clone())
}

// Slow-ish (~15 s): waits out the retries a superseded or cancelled job must not get.
#[tokio::test]
async fn jobs_waiting_for_a_retry_or_in_flight_are_superseded_and_cancelled_too() {
    let env = TestEnv::builder()
        .env("MAIL_RETRY_INITIAL", "3s")
        .env("MAIL_RETRY_MAX", "3s")
        .start()
        .await;
    let api = env.api();

    // Waiting for a retry (after 451s) when a newer code comes or the user is deleted.
    env.sink.mode(SinkMode::TempFail);
    let (r_new, r_old_address) = user_with_mail(&api, "retry-swap").await;
    let (r_gone, r_gone_address) = user_with_mail(&api, "retry-gone").await;
    wait_state(&env, &r_new, "retrying", WAIT).await;
    wait_state(&env, &r_gone, "retrying", WAIT).await;
    let r_new_address = address("retry-swap-new");
    set_email(&api, &r_new, &r_new_address).await;
    api.delete(&format!("/v3alpha/users/{r_gone}"))
        .await
        .expect_status(200);
    let (_, old) = newest_two(&env, &r_new).await;
    assert_eq!(old["state"], "superseded", "{old:#}");
    assert_eq!(only_job_of(&env, &r_gone).await["state"], "cancelled");

    // In flight (the SMTP server is slow to answer 451) when a newer code comes or the user
    // is deleted: the failed attempt must not be retried.
    env.sink.data_delay(Duration::from_secs(2));
    let (f_new, f_old_address) = user_with_mail(&api, "flight-swap").await;
    let (f_gone, f_gone_address) = user_with_mail(&api, "flight-gone").await;
    wait_state(&env, &f_new, "sending", WAIT).await;
    wait_state(&env, &f_gone, "sending", WAIT).await;
    let f_new_address = address("flight-swap-new");
    set_email(&api, &f_new, &f_new_address).await;
    api.delete(&format!("/v3alpha/users/{f_gone}"))
        .await
        .expect_status(200);
    // Once both in-flight attempts got their 451 (and were recorded), the server is fixed.
    let f_old_id = id_of(&newest_two(&env, &f_new).await.1);
    let f_gone_id = id_of(&only_job_of(&env, &f_gone).await);
    wait_attempted(&env, &f_old_id, WAIT).await;
    wait_attempted(&env, &f_gone_id, WAIT).await;
    env.sink.data_delay(Duration::ZERO);
    env.sink.mode(SinkMode::Accept);

    wait_all_recipients(&env, &[r_new_address.clone(), f_new_address.clone()], WAIT).await;
    // Longer than the quick retries and the longest wait between deliveries (3 s + jitter).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let jobs = env.jobs(&[]).await;
    for unwanted in [
        &r_old_address,
        &r_gone_address,
        &f_old_address,
        &f_gone_address,
    ] {
        assert!(
            env.sink.messages_to(unwanted).is_empty(),
            "a mail went to {unwanted} after its code was void; jobs: {jobs:#?}"
        );
    }
    assert_eq!(env.sink.count(), 2, "{jobs:#?}");
    let (new, old) = newest_two(&env, &r_new).await;
    assert_eq!(
        (&new["state"], &old["state"]),
        (&json!("sent"), &json!("superseded"))
    );
    let (new, old) = newest_two(&env, &f_new).await;
    assert_eq!(new["state"], "sent", "{new:#}");
    assert_eq!(old["state"], "superseded", "{old:#}");
    assert_eq!(only_job_of(&env, &r_gone).await["state"], "cancelled");
    assert_eq!(only_job_of(&env, &f_gone).await["state"], "cancelled");
}

#[tokio::test]
async fn a_deleted_users_pending_mails_are_cancelled_and_not_sent() {
    let mut env = TestEnv::builder().without_worker().start().await;
    let api = env.api();
    let (gone, gone_address) = user_with_mail(&api, "gone").await;
    let (kept, kept_address) = user_with_mail(&api, "kept").await;
    // A second pending mail of the deleted user (OTP Email).
    api.post(
        &format!("/v3alpha/users/{gone}/otp_email"),
        json!({ "email": { "address": address("gone-otp") } }),
    )
    .await
    .expect_status(200);

    api.delete(&format!("/v3alpha/users/{gone}"))
        .await
        .expect_status(200);
    let cancelled = jobs_of(&env, &gone).await;
    assert_eq!(cancelled.len(), 2, "{cancelled:#?}");
    for job in &cancelled {
        assert_eq!(job["state"], "cancelled", "{job:#}");
    }

    env.restart_worker().await;
    env.sink.wait_for_to(&kept_address, 1, WAIT).await;
    env.sink.assert_count_stays(1, Duration::from_secs(2)).await;
    assert!(env.sink.messages_to(&gone_address).is_empty());
    assert!(env.sink.messages_to(&address("gone-otp")).is_empty());
    wait_state(&env, &kept, "sent", WAIT).await;

    let ids: BTreeSet<String> = cancelled.iter().map(id_of).collect();
    for job in jobs_of(&env, &gone).await {
        assert!(ids.contains(&id_of(&job)));
        assert_eq!(job["state"], "cancelled", "{job:#}");
        assert_eq!(job["attempts"], 0, "{job:#}");
    }
    // Replay refuses them with the reason.
    let args: Vec<&str> = ids.iter().flat_map(|id| ["--id", id.as_str()]).collect();
    let out = replay(&env, &args).await;
    let lines = replay_lines(&out, 0, 2);
    let expected: BTreeSet<String> = ids
        .iter()
        .map(|id| format!("skipped {id}: user deleted"))
        .collect();
    assert_eq!(skip_lines(&lines), expected, "{}", out.stdout);
    env.sink.assert_count_stays(1, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn copies_of_one_jobs_message_arriving_together_send_one_mail() {
    // The worker claims the jobs of the messages that arrive together in one statement: copies
    // of one job's message in the same batch must still send it once.
    const N: usize = 4;
    const COPIES: usize = 6;
    let mut env = TestEnv::builder().without_worker().start().await;
    let api = env.api();
    let users = users_with_mail(&api, "copies", N).await;
    let addresses: Vec<String> = users.iter().map(|(_, a)| a.clone()).collect();
    let mut ids = Vec::new();
    for (user, _) in &users {
        let job = only_job_of(&env, user).await;
        ids.push(id_of(&job).parse::<i64>().expect("numeric job id"));
    }
    // Extra copies of every job's message, queued behind the originals.
    let publisher = common::amqp::Publisher::new(env.amqp_url(), "copies-test");
    let copies: Vec<common::amqp::Outgoing> = (0..COPIES)
        .flat_map(|_| ids.iter().map(|id| common::amqp::Outgoing::new(*id, None)))
        .collect();
    let confirmed = publisher
        .publish(&copies, common::amqp::Route::Send)
        .await
        .expect("publish the copies");
    assert_eq!(confirmed.len(), copies.len(), "every copy confirmed");

    let worker = env.add_worker();
    env.spawn_process(worker);
    env.wait_ready(worker).await;

    wait_all_recipients(&env, &addresses, WAIT).await;
    wait_jobs_in_state(&env, "sent", N, WAIT).await;
    env.sink.assert_count_stays(N, Duration::from_secs(2)).await;
    for address in &addresses {
        assert_eq!(env.sink.messages_to(address).len(), 1, "mails to {address}");
    }
    for (user, _) in &users {
        let job = only_job_of(&env, user).await;
        let shown = show(&env, &id_of(&job)).await;
        assert_eq!(shown["state"], "sent", "{shown:#}");
        assert_eq!(shown["attempts"], 1, "one attempt recorded: {shown:#}");
    }
}
