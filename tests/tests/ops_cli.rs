//! The operators' commands (SPEC 7): `worker jobs list`, `worker jobs show` and
//! `worker replay`, against jobs made through the API and delivered to the SMTP sink. A
//! permanent SMTP failure (550) fails a job at once; replay delivers it once the cause is
//! fixed, explains every job it skips, and changes nothing with `--dry-run`.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use support::*;
use tests::{SinkMode, TestEnv};

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[tokio::test]
async fn a_permanent_failure_fails_at_once_and_replay_delivers_it_after_the_fix() {
    let env = fast_retries().env("MAIL_MAX_ATTEMPTS", "5").start().await;
    let api = env.api();
    env.sink.mode(SinkMode::PermFail);
    let (user, address) = user_with_mail(&api, "bounce").await;

    let failed = wait_state(&env, &user, "failed", WAIT).await;
    let id = id_of(&failed);
    let last_error = failed["lastError"].as_str().unwrap_or_default();
    assert!(
        last_error.contains("550"),
        "lastError must be the server's reply: {failed:#}"
    );
    assert_eq!(failed["attempts"], 1, "a 5xx is not retried: {failed:#}");
    assert_eq!(failed["nextAttemptAt"], Value::Null, "{failed:#}");
    // Not tried again behind our back (MAIL_RETRY_INITIAL is 1s).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.sink.rejected_count(), 1, "the 550 must not be retried");
    let shown = show(&env, &id).await;
    let history = shown["history"].as_array().expect("history");
    assert_eq!(history.len(), 1, "{shown:#}");
    assert!(
        history[0]["smtpReply"]
            .as_str()
            .is_some_and(|r| r.contains("550")),
        "{shown:#}"
    );

    // The mail server is fixed.
    env.sink.mode(SinkMode::Accept);

    // Time filters that leave the job out replay nothing.
    let future = rfc3339(Utc::now() + chrono::Duration::hours(1));
    let out = replay(&env, &["--failed", "--since", &future]).await;
    assert_eq!(replay_lines(&out, 0, 0), ["replayed 0, skipped 0"]);
    let out = replay(&env, &["--failed", "--until", "2020-01-01T00:00:00Z"]).await;
    assert_eq!(replay_lines(&out, 0, 0), ["replayed 0, skipped 0"]);

    let dry = replay(&env, &["--failed", "--dry-run"]).await;
    assert_eq!(replay_lines(&dry, 1, 0), ["replayed 1, skipped 0"]);
    env.sink.assert_count_stays(0, Duration::from_secs(2)).await;
    let after_dry = only_job_of(&env, &user).await;
    assert_eq!(after_dry["state"], "failed", "--dry-run changed the job");
    assert_eq!(after_dry["attempts"], 1, "--dry-run changed the job");

    let real = replay(&env, &["--failed"]).await;
    replay_lines(&real, 1, 0);
    assert_eq!(real.stdout, dry.stdout, "--dry-run must print the same");
    let mails = env.sink.wait_for_to(&address, 1, WAIT).await;
    let sent = wait_state(&env, &user, "sent", WAIT).await;
    assert_eq!(id_of(&sent), id, "replay keeps the job id");
    let shown = show(&env, &id).await;
    let history = shown["history"].as_array().expect("history");
    assert_eq!(shown["attempts"], 2, "{shown:#}");
    assert_eq!(history.len(), 2, "replay keeps the history: {shown:#}");
    assert!(
        history[0]["smtpReply"]
            .as_str()
            .is_some_and(|r| r.contains("550")),
        "{shown:#}"
    );
    // The replayed mail carries the (still valid) code.
    verify(&api, &user, &contact_code(&mails[0]))
        .await
        .expect_status(200);

    // A sent job is refused, with or without --dry-run.
    let skip = vec![
        format!("skipped {id}: sent"),
        "replayed 0, skipped 1".into(),
    ];
    let dry = replay(&env, &["--id", &id, "--dry-run"]).await;
    assert_eq!(replay_lines(&dry, 0, 1), skip);
    let real = replay(&env, &["--id", &id]).await;
    assert_eq!(replay_lines(&real, 0, 1), skip);
    env.sink.assert_count_stays(1, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_replay_while_rabbitmq_is_unreachable_still_delivers_or_changes_nothing() {
    let mut env = fast_retries().start().await;
    let api = env.api();
    env.sink.mode(SinkMode::PermFail);
    let (user, address) = user_with_mail(&api, "no-broker").await;
    wait_state(&env, &user, "failed", WAIT).await;
    env.sink.mode(SinkMode::Accept);

    // Nothing listens on port 1.
    let amqp = env.amqp_url().to_owned();
    let dead = format!("amqp://guest:guest@127.0.0.1:1/{}", env.vhost());
    env.set_env("AMQP_URL", dead);
    let out = replay(&env, &["--failed"]).await;
    env.set_env("AMQP_URL", amqp);
    match out.code {
        // It said it replayed the job: the mail must come (the outbox keeps it).
        Some(0) => {
            assert_eq!(replay_lines(&out, 1, 0), ["replayed 1, skipped 0"]);
            env.sink.wait_for_to(&address, 1, WAIT).await;
            wait_state(&env, &user, "sent", WAIT).await;
        }
        // It reported an operational error: the job must still be failed, to replay later.
        Some(1) => {
            assert!(!out.stderr.trim().is_empty(), "exit 1 without a message");
            env.sink.assert_count_stays(0, Duration::from_secs(5)).await;
            assert_eq!(only_job_of(&env, &user).await["state"], "failed");
        }
        other => panic!(
            "replay exited with {other:?}\nstdout:\n{}\nstderr:\n{}",
            out.stdout, out.stderr
        ),
    }
}

#[tokio::test]
async fn replay_skips_an_expired_failed_job_unless_the_code_is_refreshed() {
    let mut env = fast_retries().env("EMAIL_CODE_TTL", "3s").start().await;
    let api = env.api();
    env.sink.mode(SinkMode::PermFail);
    let (user, address) = user_with_mail(&api, "stale").await;
    let created = tokio::time::Instant::now();
    let failed = wait_state(&env, &user, "failed", WAIT).await;
    let id = id_of(&failed);
    env.sink.mode(SinkMode::Accept);
    // Let the code expire.
    tokio::time::sleep_until(created + Duration::from_millis(3500)).await;

    let skipped = vec![
        format!("skipped {id}: expired"),
        "replayed 0, skipped 1".into(),
    ];
    let dry = replay(&env, &["--failed", "--dry-run"]).await;
    assert_eq!(replay_lines(&dry, 0, 1), skipped);
    let real = replay(&env, &["--failed"]).await;
    assert_eq!(replay_lines(&real, 0, 1), skipped);
    env.sink.assert_count_stays(0, Duration::from_secs(2)).await;
    assert_eq!(only_job_of(&env, &user).await["state"], "failed");

    // With a new code (made with the replay's own EMAIL_CODE_TTL).
    env.set_env("EMAIL_CODE_TTL", "1h");
    let dry = replay(&env, &["--failed", "--refresh-code", "--dry-run"]).await;
    assert_eq!(replay_lines(&dry, 1, 0), ["replayed 1, skipped 0"]);
    env.sink.assert_count_stays(0, Duration::from_secs(1)).await;
    assert_eq!(only_job_of(&env, &user).await["state"], "failed");

    let real = replay(&env, &["--failed", "--refresh-code"]).await;
    replay_lines(&real, 1, 0);
    assert_eq!(real.stdout, dry.stdout, "--dry-run must print the same");
    let mails = env.sink.wait_for_to(&address, 1, WAIT).await;
    // The old code had expired: only a new one can verify.
    let code = contact_code(&mails[0]);
    verify(&api, &user, &code).await.expect_status(200);
    assert!(is_verified(&api, &user).await);
    let sent = wait_state(&env, &user, "sent", WAIT).await;
    assert_eq!(id_of(&sent), id, "replay keeps the job id");
    env.sink.assert_count_stays(1, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn replay_explains_every_job_it_skips() {
    let env = fast_retries().start().await;
    let api = env.api();
    env.sink.mode(SinkMode::PermFail);

    // A: failed, then a newer code (a new address) that failed too.
    let (a, _) = user_with_mail(&api, "swap").await;
    let a_old = id_of(&wait_state(&env, &a, "failed", WAIT).await);
    let a_new_address = address("swap-new");
    set_email(&api, &a, &a_new_address).await;
    let a_new = id_of(&wait_state(&env, &a, "failed", WAIT).await);
    assert_ne!(a_old, a_new);
    // B: failed, then the user was deleted.
    let (b, b_address) = user_with_mail(&api, "deleted").await;
    let b_job = id_of(&wait_state(&env, &b, "failed", WAIT).await);
    api.delete(&format!("/v3alpha/users/{b}"))
        .await
        .expect_status(200);
    // C: failed.
    let (c, c_address) = user_with_mail(&api, "plain").await;
    let c_job = id_of(&wait_state(&env, &c, "failed", WAIT).await);

    env.sink.mode(SinkMode::Accept);
    let expected_skips: BTreeSet<String> = [
        format!("skipped {a_old}: superseded"),
        format!("skipped {b_job}: user deleted"),
    ]
    .into();
    let dry = replay(&env, &["--failed", "--dry-run"]).await;
    let dry_lines = replay_lines(&dry, 2, 2);
    assert_eq!(skip_lines(&dry_lines), expected_skips, "{}", dry.stdout);
    assert_eq!(dry_lines.len(), 3, "{}", dry.stdout);
    // A new code does not bring back a job for an address the user no longer has, nor a
    // deleted user's; the other codes are still valid and need no refresh.
    // (Compared with the real run at the end.)
    let dry_refresh = replay(&env, &["--failed", "--refresh-code", "--dry-run"]).await;
    env.sink.assert_count_stays(0, Duration::from_secs(1)).await;

    let real = replay(&env, &["--failed", "--refresh-code"]).await;
    let real_lines = replay_lines(&real, 2, 2);
    assert_eq!(skip_lines(&real_lines), expected_skips, "{}", real.stdout);
    wait_all_recipients(&env, &[a_new_address.clone(), c_address.clone()], WAIT).await;
    env.sink.assert_count_stays(2, Duration::from_secs(2)).await;
    assert!(env.sink.messages_to(&address("swap")).is_empty());
    assert!(env.sink.messages_to(&b_address).is_empty());
    let c_sent = wait_state(&env, &c, "sent", WAIT).await;
    assert_eq!(id_of(&c_sent), c_job, "replay keeps the job id");
    let a_jobs = jobs_of(&env, &a).await;
    assert_eq!(a_jobs[0]["state"], "sent", "{a_jobs:#?}");
    assert_eq!(id_of(&a_jobs[0]), a_new);
    assert_eq!(a_jobs[1]["state"], "failed", "a skipped job is unchanged");
    assert_eq!(jobs_of(&env, &b).await[0]["state"], "failed");

    // By id, several at once: each gets its line.
    let out = replay(&env, &["--id", &a_old, "--id", &a_new, "--id", &b_job]).await;
    let lines = replay_lines(&out, 0, 3);
    let expected: BTreeSet<String> = [
        format!("skipped {a_old}: superseded"),
        format!("skipped {a_new}: sent"),
        format!("skipped {b_job}: user deleted"),
    ]
    .into();
    assert_eq!(skip_lines(&lines), expected, "{}", out.stdout);
    env.sink.assert_count_stays(2, Duration::from_secs(1)).await;

    // `--dry-run` prints what the same command without it prints.
    let dry_refresh_lines = replay_lines(&dry_refresh, 2, 2);
    assert_eq!(
        skip_lines(&dry_refresh_lines),
        expected_skips,
        "--refresh-code --dry-run:\n{}\nthe real run printed:\n{}",
        dry_refresh.stdout,
        real.stdout
    );
}

const JOB_FIELDS: [&str; 10] = [
    "id",
    "userId",
    "purpose",
    "recipient",
    "state",
    "attempts",
    "lastError",
    "createdAt",
    "updatedAt",
    "nextAttemptAt",
];

#[track_caller]
fn assert_job_shape(job: &Value, extra: &[&str]) {
    let keys: BTreeSet<&str> = job
        .as_object()
        .unwrap_or_else(|| panic!("a job is a JSON object: {job}"))
        .keys()
        .map(String::as_str)
        .collect();
    let expected: BTreeSet<&str> = JOB_FIELDS.iter().chain(extra).copied().collect();
    assert_eq!(keys, expected, "fields of {job:#}");
    for key in ["id", "userId", "purpose", "recipient", "state"] {
        assert!(job[key].is_string(), "{key} is a string: {job:#}");
    }
    assert!(job["attempts"].is_u64(), "attempts is a count: {job:#}");
    for key in ["createdAt", "updatedAt"] {
        let raw = job[key].as_str().unwrap_or_default();
        let ok = DateTime::parse_from_rfc3339(raw).is_ok()
            && raw.ends_with('Z')
            && raw.rsplit_once('.').is_some_and(|(_, f)| f.len() == 4);
        assert!(ok, "{key} must be RFC 3339 UTC with milliseconds: {job:#}");
    }
}

fn ids(jobs: &[Value]) -> Vec<String> {
    jobs.iter().map(id_of).collect()
}

#[tokio::test]
async fn jobs_list_and_show_filter_and_never_print_a_code() {
    let mut env = TestEnv::builder().without_worker().start().await;
    let api = env.api();
    let gap = Duration::from_millis(60);

    let (u1, a1) = user_with_mail(&api, "first").await;
    tokio::time::sleep(gap).await;
    let mid1 = Utc::now();
    tokio::time::sleep(gap).await;
    let (u2, a2) = user_with_mail(&api, "second").await;
    tokio::time::sleep(gap).await;
    let mid2 = Utc::now();
    tokio::time::sleep(gap).await;
    let (u3, a3) = user_with_mail(&api, "third").await;
    let otp_address = address("third-otp");
    let added = api
        .post(
            &format!("/v3alpha/users/{u3}/otp_email"),
            json!({ "email": { "address": otp_address } }),
        )
        .await
        .expect_status(200);
    let otp_id = added.str_at("/otpEmailId").to_owned();

    let all = env.jobs(&[]).await;
    assert_eq!(all.len(), 4, "{all:#?}");
    for job in &all {
        assert_job_shape(job, &[]);
        assert_eq!(job["state"], "queued", "{job:#}");
        assert_eq!(job["attempts"], 0, "{job:#}");
        assert_eq!(job["lastError"], Value::Null, "{job:#}");
        assert_eq!(job["nextAttemptAt"], Value::Null, "{job:#}");
    }
    let summary: Vec<(&str, &str, &str)> = all
        .iter()
        .map(|j| {
            (
                j["userId"].as_str().unwrap(),
                j["purpose"].as_str().unwrap(),
                j["recipient"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (u3.as_str(), "otp_email", otp_address.as_str()),
            (u3.as_str(), "contact_email", a3.as_str()),
            (u2.as_str(), "contact_email", a2.as_str()),
            (u1.as_str(), "contact_email", a1.as_str()),
        ],
        "newest first"
    );
    let all_ids = ids(&all);

    assert_eq!(ids(&env.jobs(&["--status", "queued"]).await), all_ids);
    assert!(env.jobs(&["--status", "sent"]).await.is_empty());
    assert_eq!(ids(&env.jobs(&["--user", &u2]).await), [all_ids[2].clone()]);
    assert_eq!(ids(&env.jobs(&["--limit", "2"]).await), all_ids[..2]);
    let (mid1, mid2) = (rfc3339(mid1), rfc3339(mid2));
    assert_eq!(ids(&env.jobs(&["--since", &mid1]).await), all_ids[..3]);
    assert_eq!(ids(&env.jobs(&["--until", &mid1]).await), all_ids[3..]);
    assert_eq!(
        ids(&env.jobs(&["--since", &mid1, "--until", &mid2]).await),
        [all_ids[2].clone()]
    );
    assert_eq!(
        ids(&env
            .jobs(&["--user", &u3, "--status", "queued", "--limit", "1"])
            .await),
        [all_ids[0].clone()]
    );

    // Human-readable forms.
    let table = env.run_worker(&["jobs", "list"]).await;
    table.expect_success();
    for id in &all_ids {
        assert!(table.stdout.contains(id.as_str()), "{}", table.stdout);
    }
    let shown = show(&env, &all_ids[3]).await;
    assert_job_shape(&shown, &["history"]);
    assert_eq!(shown["history"], json!([]), "{shown:#}");
    let plain = env.run_worker(&["jobs", "show", &all_ids[3]]).await;
    plain.expect_success();
    assert!(plain.stdout.contains(&all_ids[3]), "{}", plain.stdout);

    // Unknown ids and bad usage.
    for unknown in ["999999999999", "no-such-job"] {
        let out = env.run_worker(&["jobs", "show", unknown, "--json"]).await;
        out.expect_code(1);
        assert!(out.stdout.trim().is_empty(), "stdout: {}", out.stdout);
        assert!(!out.stderr.trim().is_empty(), "a message on stderr");
    }
    env.run_worker(&["jobs", "list", "--status", "bogus"])
        .await
        .expect_code(2);
    env.run_worker(&["replay"]).await.expect_code(2);

    // A job that is not failed is not replayed.
    let queued = &all_ids[3];
    let out = replay(&env, &["--id", queued]).await;
    assert_eq!(
        replay_lines(&out, 0, 1),
        [
            format!("skipped {queued}: not failed"),
            "replayed 0, skipped 1".into()
        ]
    );

    // Deliver, then look for the codes in everything the CLI prints.
    env.restart_worker().await;
    wait_all_recipients(&env, &[a1, a2, a3.clone(), otp_address.clone()], WAIT).await;
    wait_jobs_in_state(&env, "sent", 4, WAIT).await;
    let contact = env.sink.messages_to(&a3).remove(0);
    let contact_code = contact_code(&contact);
    let otp_mail = env.sink.messages_to(&otp_address).remove(0);
    let otp_codes = otp_mail.standalone_codes(8, "0123456789");
    assert_eq!(otp_codes.len(), 1, "{}", otp_mail.text_body());
    let mut printed = env.run_worker(&["jobs", "list", "--json"]).await.stdout;
    printed += &env.run_worker(&["jobs", "list"]).await.stdout;
    for id in &all_ids {
        printed += &env.run_worker(&["jobs", "show", id, "--json"]).await.stdout;
        printed += &env.run_worker(&["jobs", "show", id]).await.stdout;
    }
    for code in [&contact_code, &otp_codes[0]] {
        assert!(
            !printed.contains(code.as_str()),
            "the CLI printed code {code}"
        );
    }
    for job in env.jobs(&[]).await {
        assert_job_shape(&job, &[]);
        assert_eq!(job["state"], "sent", "{job:#}");
    }
    api.post(
        &format!("/v3alpha/users/{u3}/otp_email/{otp_id}/verify"),
        json!({ "verificationCode": otp_codes[0] }),
    )
    .await
    .expect_status(200);
}
