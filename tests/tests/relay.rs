//! What a real relay expects (SPEC 6 and 8), checked on what the SMTP server receives: CRLF
//! everywhere, the code on a line of its own, `Auto-Submitted`, `Date`, the `Message-ID`
//! domain, the EHLO name; retries that outlast greylisting; and configuration faults that
//! never burn a job but make `/readyz` say what is wrong. (Against Postfix itself:
//! tests/real_mta.rs.)

use std::time::Duration;

use serde_json::{Value, json};
use tests::scenario::*;
use tests::{Api, ReceivedMail, Role, SinkMode, TestEnv, eventually};

/// Every line of what the server received ends in CRLF, also inside encoded parts; no line is
/// longer than 998 octets; the decoded text part shows the code on a line of its own.
#[track_caller]
fn assert_wire_format(mail: &ReceivedMail, code: &str) {
    let raw = &mail.raw;
    for (i, &b) in raw.iter().enumerate() {
        if b == b'\n' {
            assert!(
                i > 0 && raw[i - 1] == b'\r',
                "bare LF at byte {i}:\n{}",
                mail.raw_text()
            );
        }
    }
    let text = String::from_utf8_lossy(raw);
    assert!(
        text.split("\r\n").all(|l| l.len() <= 998),
        "a line over 998 octets"
    );
    assert!(
        !text.contains("=0A") && !text.contains("=0D"),
        "encoded line breaks:\n{text}"
    );
    assert!(
        mail.text_body().lines().any(|l| l.trim() == code),
        "the code {code} is not on a line of its own:\n{}",
        mail.text_body()
    );
    assert!(mail.html_body().contains(code));
}

fn header<'a>(mail: &'a ReceivedMail, name: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(&mail.raw).ok()?;
    let head = text.split("\r\n\r\n").next()?;
    head.split("\r\n")
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

/// Both purposes, the default and a custom link, ASCII and non-ASCII templates: the wire
/// format holds, with `Auto-Submitted`, `Date`, a `Message-ID` in MAIL_FROM's domain, and
/// EHLO sending `SMTP_HELO_NAME`.
#[tokio::test]
async fn mails_are_what_relays_and_spam_filters_expect() {
    let templates = tempdir("relay-templates");
    std::fs::write(
        templates.join("contact_email.txt.hbs"),
        "Grüße! Bitte bestätige {{address}}.\n\nDein Code:\n\n    {{code}}\n\nOder öffne diesen Link, er ist länger als sechsundsiebzig Zeichen: {{link}}\n",
    )
    .unwrap();
    std::fs::write(
        templates.join("otp_email.html.hbs"),
        "<p>Ihr Code für die Anmeldung: <strong>{{code}}</strong></p>\n<p><a href=\"{{link}}\">Bestätigen</a></p>\n",
    )
    .unwrap();
    for dir in [None, Some(&templates)] {
        let mut builder = TestEnv::builder().env("SMTP_HELO_NAME", "mailer.ce-test.example");
        if let Some(dir) = dir {
            builder = builder.env("MAIL_TEMPLATES_DIR", dir.display().to_string());
        }
        let w = World::from_builder(builder, &[]).await;
        let fam = w.fam(Family::A);
        let user = w.user().await;
        fam.set(&user, json!({"address": "wire@example.org"}))
            .await
            .ok();
        let mail = w.mail_to("wire@example.org", 1).await;
        assert_wire_format(&mail, &contact_code(&mail));
        fam.resend(
            &user,
            json!({"sendCode": {"urlTemplate": "https://login.example.com/a/very/long/path/that/makes/the/line/long?user={{UserID}}&code={{Code}}&org={{OrgID}}"}}),
        )
        .await
        .ok();
        let mail = w.mail_to("wire@example.org", 2).await;
        let code = mail.link_param("code").expect("the code in the link");
        assert_wire_format(&mail, &code);
        fam.add_otp(&user, json!({"address": "wire@example.org"}))
            .await
            .ok();
        let mail = w.mail_to("wire@example.org", 3).await;
        assert_wire_format(&mail, &otp_code(&mail));

        for mail in w.env.sink.messages() {
            assert_eq!(header(&mail, "Auto-Submitted"), Some("auto-generated"));
            assert!(header(&mail, "Date").is_some(), "no Date");
            let id = header(&mail, "Message-ID").expect("a Message-ID");
            assert!(id.ends_with("@ce-test.localhost>"), "Message-ID {id}");
        }
        let names = w.env.sink.helo_names();
        assert!(!names.is_empty());
        assert!(
            names.iter().all(|n| n == "mailer.ce-test.example"),
            "{names:?}"
        );
    }
    std::fs::remove_dir_all(&templates).ok();
}

/// Without `SMTP_HELO_NAME` the worker never sends a bare short name: a fully qualified host
/// name, else the domain of MAIL_FROM.
#[tokio::test]
async fn ehlo_is_never_a_bare_short_name() {
    let w = World::start().await;
    let user = w.user().await;
    w.fam(Family::A)
        .set(&user, json!({"address": "helo@example.org"}))
        .await
        .ok();
    w.mail_to("helo@example.org", 1).await;
    for name in w.env.sink.helo_names() {
        assert!(name.contains('.'), "EHLO {name}");
    }
}

/// A relay that greylists (450 to every try for a while, then accepts) gets the mail: the
/// budget counts deliveries, not quick tries, and the waits follow the backoff.
#[tokio::test]
async fn retries_outlast_greylisting() {
    let w = World::start_with(&[
        ("MAIL_RETRY_INITIAL", "1s"),
        ("MAIL_RETRY_MAX", "4s"),
        ("MAIL_MAX_ATTEMPTS", "6"),
    ])
    .await;
    w.env.sink.mode(SinkMode::TempFailRcpt);
    let user = w.user().await;
    w.fam(Family::A)
        .set(&user, json!({"address": "greylisted@example.org"}))
        .await
        .ok();
    // Three deliveries (nine quick tries) fail: more than the old per-try budget of six.
    let env = &w.env;
    eventually(
        "nine refused tries",
        Duration::from_secs(40),
        || async move { (env.sink.rejected_count() >= 9).then_some(()) },
    )
    .await;
    let jobs = w.env.jobs(&["--user", &user]).await;
    assert_eq!(jobs[0]["state"], "retrying", "{jobs:?}");
    w.env.sink.mode(SinkMode::Accept);
    let mail = w.mail_to("greylisted@example.org", 1).await;
    let code = contact_code(&mail);
    w.fam(Family::A).verify(&user, &code).await.ok();
    let jobs = w.env.jobs(&["--user", &user]).await;
    assert_eq!(jobs[0]["state"], "sent");
    assert!(jobs[0]["attempts"].as_i64().unwrap_or(0) >= 10, "{jobs:?}");
}

/// The worker's readiness as JSON, with its status.
async fn worker_ready(w: &World) -> (u16, Value) {
    let resp = Api::new(w.env.worker_url(), None).get("/readyz").await;
    (resp.status, resp.json)
}

/// 530 (authentication required) is the worker's configuration, not the mail's fault: the
/// job keeps waiting (`retrying`, never `failed`, however often), `/readyz` answers 503
/// with `{"smtp": "failing", "reason": ...}` and the metric counts it; once the relay accepts
/// again the mail goes out and the worker is ready.
#[tokio::test]
async fn a_configuration_fault_never_burns_a_job() {
    let w = World::start_with(&[
        ("MAIL_RETRY_INITIAL", "1s"),
        ("MAIL_RETRY_MAX", "2s"),
        ("MAIL_MAX_ATTEMPTS", "2"),
    ])
    .await;
    w.env.sink.mode(SinkMode::AuthRequired);
    let user = w.user().await;
    w.fam(Family::A)
        .set(&user, json!({"address": "config@example.org"}))
        .await
        .ok();
    let ww = &w;
    let reason = eventually(
        "/readyz to report the SMTP fault",
        Duration::from_secs(20),
        || async move {
            match worker_ready(ww).await {
                (503, body) if body["smtp"] == "failing" => {
                    body["reason"].as_str().map(str::to_owned)
                }
                _ => None,
            }
        },
    )
    .await;
    assert!(reason.contains("530"), "{reason}");
    // More tries than MAIL_MAX_ATTEMPTS deliveries: still waiting.
    let env = &w.env;
    eventually(
        "five refused tries",
        Duration::from_secs(30),
        || async move { (env.sink.rejected_count() >= 5).then_some(()) },
    )
    .await;
    let jobs = w.env.jobs(&["--user", &user]).await;
    assert_eq!(jobs[0]["state"], "retrying", "{jobs:?}");
    let metrics = Api::new(w.env.worker_url(), None)
        .get("/metrics")
        .await
        .text;
    assert!(
        metrics.contains("outcome=\"configuration\""),
        "no configuration outcome in the metrics"
    );

    w.env.sink.mode(SinkMode::Accept);
    w.mail_to("config@example.org", 1).await;
    eventually(
        "the worker to be ready again",
        Duration::from_secs(10),
        || async move {
            matches!(worker_ready(ww).await, (200, body) if body["smtp"] == "ok").then_some(())
        },
    )
    .await;
}

/// Credentials against a relay that offers no AUTH are a configuration fault too: nothing
/// is failed; with the URL fixed the mail goes out.
#[tokio::test]
async fn credentials_the_relay_cannot_take_keep_the_job_waiting() {
    let mut w = World::start_with(&[("MAIL_RETRY_INITIAL", "1s"), ("MAIL_RETRY_MAX", "2s")]).await;
    let plain = w.env.process_env("SMTP_URL").expect("SMTP_URL").to_string();
    let with_user = plain.replacen("smtp://", "smtp://mailer:secret@", 1);
    w.env.set_env("SMTP_URL", &with_user);
    w.env.restart_worker().await;
    let user = w.user().await;
    w.fam(Family::A)
        .set(&user, json!({"address": "auth@example.org"}))
        .await
        .ok();
    let ww = &w;
    let reason = eventually(
        "/readyz to report the SMTP fault",
        Duration::from_secs(20),
        || async move {
            match worker_ready(ww).await {
                (503, body) if body["smtp"] == "failing" => {
                    body["reason"].as_str().map(str::to_owned)
                }
                _ => None,
            }
        },
    )
    .await;
    assert!(
        !reason.contains("secret"),
        "the password is shown: {reason}"
    );
    let jobs = w.env.jobs(&["--user", &user]).await;
    assert_ne!(jobs[0]["state"], "failed", "{jobs:?}");
    assert!(!w.env.logs(Role::Worker(0)).contains("secret"));

    w.env.set_env("SMTP_URL", &plain);
    w.env.restart_worker().await;
    w.mail_to("auth@example.org", 1).await;
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ce-{name}-{:016x}", rand_u64()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}
