//! What every client and newcomer relies on beyond the endpoints themselves: every error
//! carries the JSON error body (405 included), a CLI prints its error once and readably,
//! usage lines show what is required, and `worker mail code` hands the quick start the code
//! of the newest mail, never an older one.

use serde_json::json;
use tests::TestEnv;
use tests::scenario::*;

/// A known path with a method it does not serve: 405 with the error body of every error.
#[tokio::test]
async fn method_not_allowed_has_the_error_body() {
    let w = World::from_builder(TestEnv::builder().without_worker(), &[]).await;
    let user = w.user().await;
    for path in [
        format!("/v3alpha/users/{user}/email/verify"),
        format!("/resources/v3alpha/users/{user}/email"),
        "/v3alpha/users".to_string(),
    ] {
        let resp = w.api.delete(&path).await;
        assert_eq!(resp.status, 405, "DELETE {path}: {:?}", resp.text);
        assert_error(&resp, 405, 12, Some("API-M405x"));
    }
}

/// With `LOG_FORMAT=json`, a failing CLI command prints its error once, as a readable line on
/// stderr (no JSON log line repeating it); stdout stays empty.
#[tokio::test]
async fn a_cli_error_is_printed_once() {
    let env = TestEnv::builder().without_worker().start().await;
    let out = env
        .run_api(&["token", "revoke", "123456789012345678"])
        .await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines,
        ["error: token 123456789012345678 not found"],
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty());
    let out = env
        .run_worker(&["jobs", "show", "123456789012345678"])
        .await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(!lines[0].starts_with('{'), "{}", out.stderr);
}

/// `worker replay` without `--id` or `--failed` says what is missing; its usage line does not
/// present the variables set in the environment (DATABASE_URL, AMQP_URL, ...) as required
/// arguments, and never shows their values.
#[tokio::test]
async fn replay_usage_shows_what_is_required() {
    let env = TestEnv::builder()
        .without_api()
        .without_worker()
        .without_bootstrap()
        .start()
        .await;
    let out = env
        .run_worker(&["jobs", "list", "--user", "not-a-user"])
        .await;
    assert_eq!(
        out.code,
        Some(2),
        "a bad --user is bad usage: {}",
        out.stderr
    );
    let out = env.run_worker(&["replay"]).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("--id") && out.stderr.contains("--failed"),
        "{}",
        out.stderr
    );
    for shown in [
        "--database-url",
        "--amqp-url",
        env.database_url(),
        env.amqp_url(),
    ] {
        assert!(
            !out.stderr.contains(shown),
            "usage shows {shown}:\n{}",
            out.stderr
        );
    }
}

/// `worker mail code --to ADDR` waits for the newest mail to the address and prints its code,
/// for both purposes and with the default and a custom link; a second mail right after the
/// first gives the second code, not the first.
#[tokio::test]
async fn worker_mail_code_reads_the_newest_mail() {
    let w = World::from_builder(TestEnv::builder().file_mail(), &[]).await;
    let fam = w.fam(Family::A);
    let user = w.user().await;
    let address = "Mini+1@Mouse.com";
    let mail_dir = w.env.mail_dir().display().to_string();
    let code_of = |purpose: &'static str| {
        let env = &w.env;
        let dir = mail_dir.clone();
        async move {
            let out = env
                .run_worker(&[
                    "mail",
                    "code",
                    "--to",
                    "mini+1@mouse.com",
                    "--purpose",
                    purpose,
                    "--mail-dir",
                    &dir,
                    "--wait",
                    "20s",
                ])
                .await;
            out.expect_success();
            out.stdout.trim().to_string()
        }
    };

    fam.set(&user, json!({"address": address})).await.ok();
    let first = code_of("contact_email").await;
    assert_code_shape(&first, 6, CONTACT_ALPHABET);
    // Asked again at once after a resend: the new mail's code, never the old one.
    fam.resend(
        &user,
        json!({"sendCode": {"urlTemplate": "https://example.com/v?u={{.UserID}}&c={{.Code}}"}}),
    )
    .await
    .ok();
    let second = code_of("contact_email").await;
    assert_ne!(second, first);
    fam.verify(&user, &second).await.ok();

    let otp = fam
        .add_otp(&user, json!({"address": address}))
        .await
        .ok()
        .otp_id();
    let otp_code = code_of("otp_email").await;
    assert_code_shape(&otp_code, 8, OTP_ALPHABET);
    fam.verify_otp(&user, &otp, &otp_code).await.ok();

    let none = w
        .env
        .run_worker(&[
            "mail",
            "code",
            "--to",
            "nobody@mouse.com",
            "--mail-dir",
            &mail_dir,
        ])
        .await;
    assert_eq!(none.code, Some(1), "{}", none.stderr);
}
