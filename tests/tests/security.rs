//! The defences of docs/security.md, each tried from outside as an attacker would: a
//! self-service token cannot skip the mailbox proof, nobody can mail-bomb an address, the
//! service refuses to run on a public key and rotates keys without failing a code, link
//! templates cannot carry free text, tokens are checked, expire and can be revoked, `/metrics`
//! cannot load the database, and mails on disk are private.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::scenario::*;
use tests::{TestEnv, both_families, eventually};

/// The 429 of the resend limits, with a `Retry-After` of whole seconds within `max`.
#[track_caller]
fn assert_limited(out: Out, max: u64) -> u64 {
    let out = out.err(429, 8, ids::RESEND_COOLDOWN);
    let seconds: u64 = out
        .resp
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without a whole-seconds Retry-After: {out:?}"));
    assert!(
        (1..=max).contains(&seconds),
        "Retry-After {seconds} > {max}"
    );
    seconds
}

/// A token whose subject is the user (no permission) may not mark an address verified nor get
/// the code returned, on any call (403 `AUTHZ-HKJD33`, nothing changes); the ways that prove
/// the mailbox still work.
async fn self_service_must_prove_the_mailbox(f: Family) {
    let w = World::start().await;
    let user = w.user().await;
    let me = w
        .token_client(&["--instance", &w.instance_id(), "--subject", &user])
        .await;
    let fam = w.fam(f).with_api(me);
    let victim = "ceo@victim.example";

    let before = w.seq(&user).await;
    for body in [
        json!({"address": victim, "isVerified": true}),
        json!({"address": victim, "returnCode": {}}),
    ] {
        fam.set(&user, body.clone())
            .await
            .err(403, 7, ids::PERMISSION_DENIED);
        fam.add_otp(&user, body)
            .await
            .err(403, 7, ids::PERMISSION_DENIED);
    }
    assert_eq!(
        w.seq(&user).await,
        before,
        "a refused call changed the user"
    );
    assert_eq!(w.contact(&user).await, Value::Null);
    assert_eq!(w.get_user(&user).await["otpEmail"], json!([]));

    // sendCode proves the mailbox: allowed, and the code goes to the mailbox only.
    let out = fam.set(&user, json!({"address": victim})).await.ok();
    out.expect_no_code();
    fam.resend(&user, json!({"returnCode": {}}))
        .await
        .err(403, 7, ids::PERMISSION_DENIED);
    let code = contact_code(&w.mail_to(victim, 1).await);
    fam.verify(&user, &code).await.ok();
    assert_eq!(w.contact(&user).await["isVerified"], true);

    let otp_id = fam
        .add_otp(&user, json!({"address": "otp@victim.example"}))
        .await
        .ok()
        .otp_id();
    fam.resend_otp(&user, &otp_id, json!({"returnCode": {}}))
        .await
        .err(403, 7, ids::PERMISSION_DENIED);
    fam.remove_otp(&user, &otp_id).await.ok();

    // With user.write the same token may skip the proof (as in ZITADEL).
    let admin_me = w
        .token_client(&[
            "--instance",
            &w.instance_id(),
            "--subject",
            &user,
            "--permission",
            "user.write",
        ])
        .await;
    w.fam(f)
        .with_api(admin_me)
        .set(
            &user,
            json!({"address": "new@victim.example", "returnCode": {}}),
        )
        .await
        .ok()
        .expect_code();
}

/// Creating a user with `isVerified` needs `user.write` like any create.
#[tokio::test]
async fn a_subject_token_cannot_create_a_verified_user() {
    let w = World::start().await;
    let user = w.user().await;
    let me = w
        .token_client(&["--instance", &w.instance_id(), "--subject", &user])
        .await;
    let resp = me
        .post(
            "/v3alpha/users",
            json!({"email": {"address": "x@victim.example", "isVerified": true}}),
        )
        .await;
    assert_error(&resp, 403, 7, Some(ids::PERMISSION_DENIED));
}

/// The cooldown is per instance, recipient (any case) and purpose, whoever asks: removing and
/// re-adding an OTP Email authenticator, another user, or the other route family cannot mail
/// the victim again within `RESEND_COOLDOWN`; another purpose can.
async fn the_cooldown_follows_the_recipient(f: Family) {
    let w = World::start_with(&[("RESEND_COOLDOWN", "30s")]).await;
    let fam = w.fam(f);
    let user = w.user().await;
    let victim = "victim@example.org";

    let otp = fam
        .add_otp(&user, json!({"address": victim}))
        .await
        .ok()
        .otp_id();
    w.mail_to(victim, 1).await;
    fam.remove_otp(&user, &otp).await.ok();
    let seq = w.seq(&user).await;
    assert_limited(fam.add_otp(&user, json!({"address": victim})).await, 30);
    assert_limited(
        fam.add_otp(&user, json!({"address": "Victim@Example.ORG"}))
            .await,
        30,
    );
    assert_eq!(w.seq(&user).await, seq, "a 429 changed the user");
    assert_eq!(w.get_user(&user).await["otpEmail"], json!([]));

    let other = w.user().await;
    assert_limited(
        w.fam(Family::A)
            .add_otp(&other, json!({"address": victim}))
            .await,
        30,
    );
    assert_limited(
        w.fam(Family::B)
            .add_otp(&other, json!({"address": victim}))
            .await,
        30,
    );
    // returnCode is not limited (no mail); the contact email is another purpose.
    fam.add_otp(&other, json!({"address": victim, "returnCode": {}}))
        .await
        .ok()
        .expect_code();
    fam.set(&other, json!({"address": victim})).await.ok();
    w.mail_to(victim, 2).await;
    w.assert_mails_stay(2).await;
}

/// At most `MAIL_RECIPIENT_HOURLY_LIMIT` mails per recipient per instance in a rolling hour,
/// all purposes and users together; the 429 says how long until the oldest leaves the hour.
#[tokio::test]
async fn the_hourly_cap_counts_every_mail_to_the_recipient() {
    let w = World::start_with(&[("MAIL_RECIPIENT_HOURLY_LIMIT", "3")]).await;
    let fam = w.fam(Family::A);
    let victim = "capped@example.org";
    let a = w.user().await;
    let b = w.user().await;
    let c = w.user().await;
    fam.set(&a, json!({"address": victim})).await.ok();
    fam.add_otp(&b, json!({"address": victim})).await.ok();
    fam.set(&c, json!({"address": victim})).await.ok();
    // Delivered before a's code is replaced below (which would supersede an unsent mail).
    w.env.sink.wait_for_to(victim, 3, MAIL_WAIT).await;
    let seconds = assert_limited(fam.set(&b, json!({"address": victim})).await, 3600);
    assert!(
        seconds > 3500,
        "Retry-After {seconds}: the oldest mail is seconds old"
    );
    assert_limited(fam.resend(&a, json!({})).await, 3600);
    // Not limited: another recipient, and codes that are not mailed.
    fam.set(&b, json!({"address": "other@example.org"}))
        .await
        .ok();
    fam.resend(&a, json!({"returnCode": {}}))
        .await
        .ok()
        .expect_code();
    w.env
        .sink
        .wait_for_to("other@example.org", 1, MAIL_WAIT)
        .await;
    w.env.sink.assert_count_stays(4, NO_MAIL_WAIT).await;
}

/// Parallel requests of many users for one recipient cannot slip past the limits: with the
/// cooldown on, exactly one of 12 concurrent calls mails the victim.
#[tokio::test]
async fn concurrent_requests_cannot_race_the_limits() {
    let w = World::start_with(&[("RESEND_COOLDOWN", "30s")]).await;
    let victim = "race@example.org";
    let mut users = Vec::new();
    for _ in 0..12 {
        users.push(w.user().await);
    }
    let mut calls = tokio::task::JoinSet::new();
    for (i, user) in users.into_iter().enumerate() {
        let fam = w.fam(if i % 2 == 0 { Family::A } else { Family::B });
        calls.spawn(async move {
            if i % 3 == 0 {
                fam.add_otp(&user, json!({"address": victim})).await
            } else {
                fam.set(&user, json!({"address": victim})).await
            }
            .status()
        });
    }
    let statuses: Vec<u16> = calls.join_all().await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    // Contact email and OTP Email are separate purposes: one mail each.
    assert_eq!((ok, limited), (2, 10), "statuses {statuses:?}");
    w.env.sink.wait_for_to(victim, 2, MAIL_WAIT).await;
    w.assert_mails_stay(2).await;

    // The hourly cap holds under the same race.
    let w = World::start_with(&[("MAIL_RECIPIENT_HOURLY_LIMIT", "4")]).await;
    let mut users = Vec::new();
    for _ in 0..12 {
        users.push(w.user().await);
    }
    let mut calls = tokio::task::JoinSet::new();
    for user in users {
        let fam = w.fam(Family::A);
        calls.spawn(async move { fam.set(&user, json!({"address": victim})).await.status() });
    }
    let statuses: Vec<u16> = calls.join_all().await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(ok, 4, "statuses {statuses:?}");
    w.env.sink.wait_for_to(victim, 4, MAIL_WAIT).await;
    w.assert_mails_stay(4).await;
}

/// A user has at most `OTP_EMAIL_MAX_PER_USER` OTP Email authenticators: one more is 400
/// code 9 and changes nothing, also when the adds race.
#[tokio::test]
async fn otp_email_authenticators_per_user_are_capped() {
    let w = World::start_with(&[("OTP_EMAIL_MAX_PER_USER", "3")]).await;
    let user = w.user().await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..8 {
        let fam = w.fam(if i % 2 == 0 { Family::A } else { Family::B });
        let user = user.clone();
        calls.spawn(async move {
            fam.add_otp(
                &user,
                json!({"address": format!("otp{i}@example.org"), "isVerified": true}),
            )
            .await
        });
    }
    let outs: Vec<Out> = calls.join_all().await;
    let mut ok = 0;
    for out in outs {
        if out.status() == 200 {
            ok += 1;
        } else {
            out.err_code(400, 9);
        }
    }
    assert_eq!(ok, 3);
    assert_eq!(
        w.get_user(&user).await["otpEmail"].as_array().map(Vec::len),
        Some(3)
    );
    let seq = w.seq(&user).await;
    w.fam(Family::A)
        .add_otp(
            &user,
            json!({"address": "one-more@example.org", "returnCode": {}}),
        )
        .await
        .err_code(400, 9);
    assert_eq!(w.seq(&user).await, seq);
}

/// URL templates cannot carry free text into the mail (SPEC 5): whitespace, control
/// characters and backslashes outside `{{ }}`, `https:host` without `//`, and user info are
/// `DOMAIN-ieYa7`, on every call that takes a template.
async fn url_templates_are_one_url_and_nothing_else(f: Family) {
    let w = World::start().await;
    let fam = w.fam(f);
    let (user, _) = w.user_with_pending("tmpl@example.org").await;
    for template in [
        "https://ex.com/{{Code}}\n\nURGENT: call +1-555-0100",
        "https://ex.com/{{Code}}\r\nBcc: x@evil.example",
        "https://ex.com/{{Code}}\tcall us",
        "https://ex.com/{{Code}} call us",
        "https://ex.com\\@evil.example/{{Code}}",
        "https:ex.com/{{Code}}",
        "https://a@evil.example/{{Code}}",
        "https://ex.com@evil.example/{{Code}}",
    ] {
        let send = json!({"urlTemplate": template});
        let seq = w.seq(&user).await;
        fam.set(
            &user,
            json!({"address": "t2@example.org", "sendCode": send}),
        )
        .await
        .err(400, 3, ids::TEMPLATE_INVALID);
        fam.resend(&user, json!({"sendCode": send}))
            .await
            .err(400, 3, ids::TEMPLATE_INVALID);
        fam.add_otp(
            &user,
            json!({"address": "t3@example.org", "sendCode": send}),
        )
        .await
        .err(400, 3, ids::TEMPLATE_INVALID);
        assert_eq!(w.seq(&user).await, seq, "{template:?} changed the user");
    }
    // Spaces inside the tags are fine, and the mail's link is exactly the rendered URL.
    fam.resend(
        &user,
        json!({"sendCode": {"urlTemplate": "https://ex.com/v?c={{ .Code }}&u={{ UserID }}"}}),
    )
    .await
    .ok();
    let mail = w.mail_to("tmpl@example.org", 1).await;
    let code = mail.link_param("c").expect("the link's code");
    assert!(
        mail.text_body()
            .contains(&format!("https://ex.com/v?c={code}&u={user}")),
        "{}",
        mail.text_body()
    );
    w.assert_mails_stay(1).await;
}

both_families!(
    self_service_must_prove_the_mailbox,
    the_cooldown_follows_the_recipient,
    url_templates_are_one_url_and_nothing_else,
);

/// Without `CODE_ENCRYPTION_KEY` (and without `DEV_MODE=true`) neither process starts: exit 2
/// with one line naming the variable and how to make a key. A malformed key is refused the
/// same way without echoing it.
#[tokio::test]
async fn no_key_no_start() {
    let env = TestEnv::builder()
        .without_api()
        .without_worker()
        .remove_env("CODE_ENCRYPTION_KEY")
        .start()
        .await;
    for (bin, args) in [("api", ["serve"]), ("worker", ["run"])] {
        for key in [None, Some("c2hvcnQ=")] {
            let mut cmd = env.command(bin);
            cmd.args(args);
            if let Some(key) = key {
                cmd.env("CODE_ENCRYPTION_KEY", key);
            }
            let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
                .await
                .expect("the process exits at once")
                .expect("run the process");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{bin} {key:?}: {stderr}");
            assert!(
                stderr.contains("CODE_ENCRYPTION_KEY")
                    && stderr.contains("openssl rand -base64 32"),
                "{bin} {key:?}: {stderr}"
            );
            if let Some(key) = key {
                assert!(!stderr.contains(key), "{bin}: the key is echoed: {stderr}");
            }
        }
    }
}

/// Rotation (`CODE_ENCRYPTION_KEYS_PREVIOUS`): a code returned and a mail enqueued under the
/// old key still verify and send after both processes move to a new key.
#[tokio::test]
async fn the_key_rotates_without_a_failed_verification() {
    let mut w = World::from_builder(TestEnv::builder().without_worker(), &[]).await;
    let fam = w.fam(Family::A);
    let (returned_user, returned_code) = w.user_with_pending("rot1@example.org").await;
    let mailed_user = w.user().await;
    fam.set(&mailed_user, json!({"address": "rot2@example.org"}))
        .await
        .ok();

    let new_key = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
    w.env.set_env("CODE_ENCRYPTION_KEY", new_key);
    w.env.set_env(
        "CODE_ENCRYPTION_KEYS_PREVIOUS",
        tests::env::CODE_ENCRYPTION_KEY,
    );
    w.env.restart_api().await;
    w.env.spawn_worker().await;
    fam.verify(&returned_user, &returned_code).await.ok();
    let code = contact_code(&w.mail_to("rot2@example.org", 1).await);
    fam.verify(&mailed_user, &code).await.ok();
    // New codes are made under the new key alone.
    let (user, code) = w.user_with_pending("rot3@example.org").await;
    w.env.remove_env("CODE_ENCRYPTION_KEYS_PREVIOUS");
    w.env.restart_api().await;
    fam.verify(&user, &code).await.ok();
}

/// `api token create` refuses a subject outside `--org`, or one that does not exist (exit 2,
/// no token printed).
#[tokio::test]
async fn token_subject_and_organization_are_checked_together() {
    let mut w = World::from_builder(TestEnv::builder().without_worker(), &[]).await;
    let instance = w.instance_id();
    let o1 = w.org_id();
    let o2 = w
        .env
        .run_bootstrap(&["--domain", "localhost", "--org-name", "second"])
        .await
        .org_id;
    let u1 = w
        .create_user_with(json!({"organization": {"orgId": o1}}))
        .await;
    for args in [
        vec!["--org", o2.as_str(), "--subject", u1.as_str()],
        vec!["--subject", "123456789012345678"],
        vec!["--org", o1.as_str(), "--subject", "123456789012345678"],
    ] {
        let mut full = vec!["token", "create", "--instance", instance.as_str()];
        full.extend(args.iter().copied());
        let out = w.env.run_api(&full).await;
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(
            out.stdout.trim().is_empty(),
            "{args:?}: printed {}",
            out.stdout
        );
    }
    // Subject and organization that agree are fine.
    let me = w
        .token_client(&["--instance", &instance, "--org", &o1, "--subject", &u1])
        .await;
    get_user(&me, &u1).await;
}

/// Tokens expire (`--expires-in`), are listed without their secret, and a revoked token is
/// 401 within 5 s; revoking an unknown id is exit 1.
#[tokio::test]
async fn tokens_expire_and_can_be_revoked() {
    let w = World::from_builder(TestEnv::builder().without_worker(), &[]).await;
    let instance = w.instance_id();
    let user = w.user().await;
    let path = format!("/v3alpha/users/{user}");

    let short = w
        .env
        .create_token(&[
            "--instance",
            &instance,
            "--permission",
            "user.read",
            "--expires-in",
            "2s",
        ])
        .await;
    w.api.with_token(&short).get(&path).await.expect_status(200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let resp = w.api.with_token(&short).get(&path).await;
    assert_error(&resp, 401, 16, None);

    let doomed = w
        .env
        .create_token(&["--instance", &instance, "--subject", &user])
        .await;
    w.api
        .with_token(&doomed)
        .get(&path)
        .await
        .expect_status(200);
    let listed = w
        .env
        .run_api(&["token", "list", "--instance", &instance, "--json"])
        .await;
    listed.expect_success();
    assert!(
        !listed.stdout.contains(&doomed) && !listed.stdout.contains(&short),
        "token list shows a token: {}",
        listed.stdout
    );
    let tokens = listed.json();
    let tokens = tokens.as_array().expect("a JSON array");
    assert_eq!(tokens.len(), 3, "bootstrap, short, doomed: {tokens:?}");
    let entry = tokens
        .iter()
        .find(|t| t["subject"] == json!(user))
        .expect("the subject token");
    assert_eq!(entry["revokedAt"], Value::Null);
    assert!(entry["lastUsedAt"].is_string(), "{entry}");
    let expiring = tokens
        .iter()
        .find(|t| t["permissions"] == json!(["user.read"]))
        .expect("the expiring token");
    assert!(expiring["expiresAt"].is_string(), "{expiring}");
    let id = entry["id"].as_str().expect("an id").to_string();

    w.env
        .run_api(&["token", "revoke", &id])
        .await
        .expect_success();
    let start = Instant::now();
    let api = w.api.with_token(&doomed);
    let path = &path;
    eventually(
        "the revoked token to be refused",
        Duration::from_secs(5),
        || {
            let api = api.clone();
            async move { (api.get(path).await.status == 401).then_some(()) }
        },
    )
    .await;
    assert!(start.elapsed() <= Duration::from_secs(5));
    let listed = w
        .env
        .run_api(&["token", "list", "--instance", &instance, "--json"])
        .await
        .json();
    assert!(
        listed
            .as_array()
            .and_then(|t| t.iter().find(|t| t["id"] == json!(id)))
            .is_some_and(|t| t["revokedAt"].is_string()),
        "{listed}"
    );
    let table = w
        .env
        .run_api(&["token", "list", "--instance", &instance])
        .await;
    table.expect_success();
    assert!(
        table.stdout.contains(&id) && table.stdout.contains("REVOKED"),
        "{}",
        table.stdout
    );

    let unknown = w
        .env
        .run_api(&["token", "revoke", "123456789012345678"])
        .await;
    assert_eq!(unknown.code, Some(1), "{}", unknown.stderr);
    // The admin token still works.
    w.get_user(&user).await;
}

/// `/metrics` reads PostgreSQL at most once per 5 s, however often it is scraped.
#[tokio::test]
async fn metrics_readings_are_cached() {
    let w = World::from_builder(TestEnv::builder().without_worker(), &[]).await;
    let jobs_queued = |body: &str| -> Option<u64> {
        body.lines()
            .find(|l| l.starts_with("contact_email_mail_jobs{state=\"queued\"}"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
    };
    let scrape = || async { w.api.without_token().get("/metrics").await.text };
    let first = jobs_queued(&scrape().await).expect("the mail_jobs gauge");
    let (user, _) = (w.user().await, ());
    w.fam(Family::A)
        .set(&user, json!({"address": "metrics@example.org"}))
        .await
        .ok();
    // Scraped again at once: the cached reading.
    for _ in 0..5 {
        assert_eq!(jobs_queued(&scrape().await), Some(first));
    }
    let refreshed = eventually("a fresh reading", Duration::from_secs(8), || async {
        jobs_queued(&scrape().await).filter(|n| *n == first + 1)
    })
    .await;
    assert_eq!(refreshed, first + 1);
}

/// Mails written to `MAIL_DIR` are readable by their owner only, whatever the umask.
#[tokio::test]
async fn mail_files_are_private() {
    let w = World::from_builder(TestEnv::builder().file_mail(), &[]).await;
    let user = w.user().await;
    w.fam(Family::A)
        .set(&user, json!({"address": "file@example.org"}))
        .await
        .ok();
    let env = &w.env;
    let file = eventually("a mail file", MAIL_WAIT, || async move {
        env.mail_files().into_iter().next()
    })
    .await;
    let mode = std::fs::metadata(&file).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} has mode {mode:o}", file.display());
}

/// A domain PostgreSQL cannot even store (a NUL in it) is simply not found: 404, never 500
/// (found by schemathesis).
#[tokio::test]
async fn impossible_domains_are_not_found() {
    let w = World::from_builder(TestEnv::builder().without_worker(), &[]).await;
    let user = w.user().await;
    for query in [
        "instance.domain=%00",
        "organization.orgDomain=%00",
        "organization.orgDomain=a%00b.localhost",
    ] {
        let resp = w.api.get(&format!("/v3alpha/users/{user}?{query}")).await;
        assert_error(&resp, 404, 5, Some(ids::USER_NOT_FOUND));
    }
    let resp = w
        .api
        .post(
            "/v3alpha/users",
            json!({"organization": {"orgDomain": "a\u{0}"}}),
        )
        .await;
    assert_eq!(resp.status, 404, "{:?}", resp.text);
    assert!(!w.env.api_logs().contains("invalid byte sequence"));
}
