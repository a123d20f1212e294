//! The worker against a real MTA: a private Postfix instance per test (tests/src/postfix.rs)
//! with a plain listener, a STARTTLS-only listener, an smtps listener and an AUTH-only
//! listener, a throwaway CA, and a recipient access map answering 450 or 550 (SPEC 6 and 8).
//!
//! Each test is skipped, with the reason printed on stderr, where `/usr/sbin/postfix` is
//! absent or the tests do not run as root; docs/testing-with-postfix.md says how to install
//! Postfix here. Postfix stores what it receives with LF line ends, so the byte-level checks
//! of the mails (CRLF, line lengths) stay in the tests that use the in-process SMTP sink;
//! these tests check delivery, the headers Postfix saw and the job states.

use std::time::Duration;

use serde_json::{Value, json};
use tests::postfix::{self, AUTH_PASSWORD, AUTH_USER, DOMAIN, HOSTNAME, Postfix};
use tests::scenario::{Family, World, contact_code, otp_code};
use tests::{Api, Method, ReceivedMail, Resp, Role, TestEnv, TestEnvBuilder};

/// How long a mail or a state change may take.
const WAIT: Duration = Duration::from_secs(30);
/// `SMTP_HELO_NAME` of the workers here; Postfix's `Received` header shows it.
const HELO: &str = "worker.ce-test.localhost";
/// The envelope sender and `From` address (`MAIL_FROM` of the test environment).
const SENDER: &str = "no-reply@ce-test.localhost";

/// Starts the private Postfix for `$test`, or returns from the test after printing why it
/// cannot run here.
macro_rules! postfix_or_skip {
    ($test:literal) => {
        match Postfix::start_or_skip($test).await {
            Some(postfix) => postfix,
            None => return,
        }
    };
}

/// Like `postfix_or_skip!`, for the tests that also need SMTP AUTH (Cyrus SASL).
macro_rules! postfix_with_auth_or_skip {
    ($test:literal) => {{
        if postfix::skip_reason().is_none()
            && let Some(reason) = postfix::auth_skip_reason()
        {
            postfix::report_skip($test, &reason);
            return;
        }
        postfix_or_skip!($test)
    }};
}

/// An address of the Postfix instance's domain, unique to this run.
fn address(tag: &str) -> String {
    format!("{tag}-{:08x}@{DOMAIN}", rand::random::<u32>())
}

/// The test environment with the worker pointed at `smtp_url`, quick retries and a fixed
/// HELO name.
fn builder(smtp_url: &str) -> TestEnvBuilder {
    TestEnv::builder()
        .env("SMTP_URL", smtp_url)
        .env("SMTP_HELO_NAME", HELO)
        .env("MAIL_RETRY_INITIAL", "1s")
        .env("MAIL_RETRY_MAX", "2s")
}

/// A new user whose contact email `address` gets a mailed code (family A, `sendCode`).
async fn user_with_mailed_code(w: &World, address: &str) -> String {
    let user = w.user().await;
    w.fam(Family::A)
        .set(&user, json!({"address": address, "sendCode": {}}))
        .await
        .ok()
        .expect_no_code();
    user
}

/// The user's newest job from `worker jobs list --json --user`, if any.
async fn newest_job(env: &TestEnv, user: &str) -> Option<Value> {
    env.jobs(&["--user", user]).await.into_iter().next()
}

/// Waits until the user's newest job is in `state` and returns it. Panics after `WAIT`,
/// showing the job and the end of Postfix's log.
async fn wait_state(env: &TestEnv, postfix: &Postfix, user: &str, state: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let job = newest_job(env, user).await;
        if let Some(job) = &job
            && job["state"] == state
        {
            return job.clone();
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "the job of user {user} is not {state:?} after {WAIT:?}: {job:#?}\n\
                 last lines of Postfix's log:\n{}",
                postfix.maillog_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The worker's `/readyz` answer (status and JSON), or `None` while it does not answer.
async fn readyz(env: &TestEnv) -> Option<Resp> {
    Api::new(env.worker_url(), None)
        .try_send(Method::GET, "/readyz", None)
        .await
        .ok()
}

/// Waits until the worker's `/readyz` answers 503 with `{"smtp": "failing", "reason": ...}`
/// (SPEC 8) and returns that answer.
async fn wait_smtp_failing(env: &TestEnv) -> Resp {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let last = readyz(env).await;
        if let Some(resp) = &last
            && resp.status == 503
            && resp.json["smtp"] == "failing"
        {
            return resp.clone();
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "the worker's /readyz did not answer 503 with \"smtp\": \"failing\" within \
                 {WAIT:?}; last answer: {last:?}\nlast lines of its log:\n{}",
                env.log_tail(Role::Worker(0), 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What every mail that went through Postfix must show: the envelope and header addresses,
/// `Date`, `Auto-Submitted`, a `Message-ID` in `MAIL_FROM`'s domain (Postfix adds none here:
/// `local_header_rewrite_clients` is empty), and Postfix's `Received` line naming the HELO
/// name and whether the session was encrypted (`ESMTPS`) and authenticated (`ESMTPSA`).
#[track_caller]
fn assert_delivered_as_sent(mail: &ReceivedMail, address: &str, tls: bool) {
    assert_eq!(mail.envelope_from, SENDER, "Return-Path (MAIL FROM)");
    assert_eq!(mail.to(), [address.to_string()], "To of the mail");
    assert_eq!(mail.from(), SENDER, "From of the mail");
    assert!(
        mail.header("Date").is_some(),
        "no Date header:\n{}",
        mail.raw_text()
    );
    assert_eq!(
        mail.header("Auto-Submitted"),
        Some("auto-generated"),
        "Auto-Submitted (RFC 3834)"
    );
    assert!(
        mail.message_id().ends_with("@ce-test.localhost"),
        "the Message-ID's domain is MAIL_FROM's: {}",
        mail.message_id()
    );
    let received = mail
        .header("Received")
        .unwrap_or_else(|| panic!("Postfix added no Received header:\n{}", mail.raw_text()));
    assert!(
        received.starts_with(&format!("from {HELO} ")),
        "Postfix saw another HELO name than SMTP_HELO_NAME={HELO}: {received}"
    );
    assert!(
        received.contains(&format!("by {HOSTNAME} (Postfix)")),
        "{received}"
    );
    let protocol = received
        .split_whitespace()
        .skip_while(|w| *w != "with")
        .nth(1)
        .unwrap_or_default();
    if tls {
        assert!(
            protocol.starts_with("ESMTPS"),
            "the session was not encrypted: {received}"
        );
    } else {
        assert_eq!(protocol, "ESMTP", "a plain session: {received}");
    }
}

/// Sets a contact email, waits for its mail in Postfix's maildir, checks it, verifies the
/// mailed code and waits for the job to be `sent`. Returns the mail.
async fn contact_email_is_delivered(w: &World, postfix: &Postfix, tls: bool) -> ReceivedMail {
    let address = address("contact");
    let user = user_with_mailed_code(w, &address).await;
    let mails = postfix.wait_for_to(&address, 1, WAIT).await;
    assert_eq!(mails.len(), 1, "one mail to {address}");
    let mail = mails.into_iter().next().unwrap();
    assert_delivered_as_sent(&mail, &address, tls);
    let code = contact_code(&mail);
    w.fam(Family::A).verify(&user, &code).await.ok();
    assert_eq!(w.contact(&user).await["isVerified"], true);
    let job = wait_state(&w.env, postfix, &user, "sent").await;
    assert_eq!(job["recipient"], address.as_str(), "{job:#}");
    assert_eq!(
        job["attempts"], 1,
        "delivered at the first attempt: {job:#}"
    );
    mail
}

#[tokio::test]
async fn plain_smtp_delivers_contact_and_otp_mails() {
    let postfix = postfix_or_skip!("plain_smtp_delivers_contact_and_otp_mails");
    let w = World::from_builder(builder(&postfix.plain_url()), &[]).await;
    contact_email_is_delivered(&w, &postfix, false).await;

    // An OTP Email mail, through family B.
    let address = address("otp");
    let user = w.user().await;
    let fam = w.fam(Family::B);
    let otp = fam
        .add_otp(&user, json!({"address": address, "sendCode": {}}))
        .await
        .ok()
        .otp_id();
    let mail = postfix
        .wait_for_to(&address, 1, WAIT)
        .await
        .into_iter()
        .next()
        .unwrap();
    assert_delivered_as_sent(&mail, &address, false);
    let code = otp_code(&mail);
    fam.verify_otp(&user, &otp, &code).await.ok();
    wait_state(&w.env, &postfix, &user, "sent").await;
}

#[tokio::test]
async fn starttls_required_delivers_with_the_ca_file() {
    let postfix = postfix_or_skip!("starttls_required_delivers_with_the_ca_file");
    let ca = postfix.ca_file().display().to_string();
    let builder = builder(&postfix.starttls_url()).env("SMTP_TLS_CA_FILE", ca);
    let w = World::from_builder(builder, &[]).await;
    contact_email_is_delivered(&w, &postfix, true).await;
    assert!(
        postfix
            .maillog()
            .contains("TLS connection established from localhost[127.0.0.1]"),
        "Postfix logged no TLS session:\n{}",
        postfix.maillog_tail(20)
    );
}

#[tokio::test]
async fn opportunistic_tls_upgrades_with_the_ca_file() {
    let postfix = postfix_or_skip!("opportunistic_tls_upgrades_with_the_ca_file");
    let ca = postfix.ca_file().display().to_string();
    // The listener refuses MAIL before STARTTLS, so a delivery proves the upgrade.
    let builder = builder(&postfix.opportunistic_url()).env("SMTP_TLS_CA_FILE", ca);
    let w = World::from_builder(builder, &[]).await;
    contact_email_is_delivered(&w, &postfix, true).await;
}

#[tokio::test]
async fn smtps_delivers_with_the_ca_file() {
    let postfix = postfix_or_skip!("smtps_delivers_with_the_ca_file");
    let ca = postfix.ca_file().display().to_string();
    let builder = builder(&postfix.smtps_url()).env("SMTP_TLS_CA_FILE", ca);
    let w = World::from_builder(builder, &[]).await;
    contact_email_is_delivered(&w, &postfix, true).await;
}

#[tokio::test]
async fn auth_over_starttls_delivers_as_the_authenticated_sender() {
    let postfix =
        postfix_with_auth_or_skip!("auth_over_starttls_delivers_as_the_authenticated_sender");
    let ca = postfix.ca_file().display().to_string();
    let url = postfix.auth_url(AUTH_USER, AUTH_PASSWORD).unwrap();
    let w = World::from_builder(builder(&url).env("SMTP_TLS_CA_FILE", ca), &[]).await;
    let mail = contact_email_is_delivered(&w, &postfix, true).await;
    let received = mail.header("Received").unwrap_or_default();
    assert!(
        received.contains(&format!("(Authenticated sender: {AUTH_USER}@{DOMAIN})")),
        "Postfix did not see an authenticated session: {received}"
    );
    assert!(
        !w.env.worker_logs().contains(AUTH_PASSWORD),
        "the worker logged the SMTP password"
    );
}

/// Every form of `SMTP_URL` delivers through one Postfix (SPEC 8): plain `smtp://`,
/// `?tls=opportunistic` against a relay without STARTTLS (stays plain) and with it
/// (upgrades), `?tls=required`, `smtps://`, and the TLS forms again with credentials (AUTH
/// PLAIN/LOGIN after TLS). Plain `smtp://` with credentials is a configuration fault here
/// (Postfix offers AUTH only over TLS): `credentials_for_a_relay_without_auth_...`.
#[tokio::test]
async fn every_smtp_url_form_delivers() {
    let postfix = postfix_or_skip!("every_smtp_url_form_delivers");
    let ca = postfix.ca_file().display().to_string();
    let mut w = World::from_builder(
        builder(&postfix.plain_url()).env("SMTP_TLS_CA_FILE", &ca),
        &[],
    )
    .await;
    let (plain, starttls, smtps) = (
        postfix.plain_port(),
        postfix.starttls_port(),
        postfix.smtps_port(),
    );
    // (SMTP_URL, whether the session is encrypted)
    let mut forms = vec![
        (format!("smtp://127.0.0.1:{plain}"), false),
        (format!("smtp://127.0.0.1:{plain}?tls=opportunistic"), false),
        (
            format!("smtp://127.0.0.1:{starttls}?tls=opportunistic"),
            true,
        ),
        (format!("smtp://127.0.0.1:{starttls}?tls=required"), true),
        (format!("smtps://127.0.0.1:{smtps}"), true),
    ];
    let auth = postfix::auth_skip_reason().is_none();
    if auth {
        let user = format!("{AUTH_USER}:{}", AUTH_PASSWORD);
        forms.extend([
            (
                format!("smtp://{user}@127.0.0.1:{starttls}?tls=opportunistic"),
                true,
            ),
            (
                format!("smtp://{user}@127.0.0.1:{starttls}?tls=required"),
                true,
            ),
            (format!("smtps://{user}@127.0.0.1:{smtps}"), true),
        ]);
    } else {
        eprintln!(
            "every_smtp_url_form_delivers: the forms with credentials are skipped (no Cyrus SASL)"
        );
    }
    for (url, tls) in forms {
        w.env.set_env("SMTP_URL", &url);
        w.env.restart_worker().await;
        let mail = contact_email_is_delivered(&w, &postfix, tls).await;
        let received = mail.header("Received").unwrap_or_default();
        let authenticated = format!("(Authenticated sender: {AUTH_USER}@{DOMAIN})");
        assert_eq!(
            received.contains(&authenticated),
            url.contains('@'),
            "{url}: authenticated exactly when the URL has credentials: {received}"
        );
    }
    assert!(
        !w.env.worker_logs().contains(AUTH_PASSWORD),
        "the worker logged the SMTP password"
    );
}

/// One faulty SMTP configuration of the worker and how to fix it.
struct Fault<'a> {
    /// `SMTP_URL` while faulty.
    smtp_url: String,
    /// Other variables of the worker from the start (such as `SMTP_TLS_CA_FILE`).
    env: Vec<(&'a str, String)>,
    /// What Postfix's log must show, proving the worker did try.
    evidence: &'a str,
    /// A password that must show nowhere (readyz, the job, the worker's log).
    secret: Option<&'a str>,
    /// The variables that fix the configuration.
    fix: Vec<(&'a str, String)>,
}

/// A fault of the worker's own SMTP configuration (SPEC 8): the mail is not delivered, the job
/// keeps waiting (`retrying`, never `failed`, even past `MAIL_MAX_ATTEMPTS`), `/readyz`
/// answers 503 with `{"smtp": "failing", "reason"}`, and the secret shows nowhere. Then the
/// configuration is fixed and the worker restarted: the same job is delivered and `/readyz`
/// is 200 again.
async fn configuration_fault(postfix: &Postfix, fault: Fault<'_>) {
    let Fault {
        smtp_url,
        env,
        evidence,
        secret,
        fix,
    } = fault;
    // Without the worker: it may well not be ready once SMTP fails, which is the point.
    let mut builder = builder(&smtp_url)
        .env("MAIL_MAX_ATTEMPTS", "2")
        .without_worker();
    for (key, value) in env {
        builder = builder.env(key, value);
    }
    let mut w = World::from_builder(builder, &[]).await;
    let worker = w.env.add_worker();
    w.env.spawn_process(worker);
    let address = address("fault");
    let user = user_with_mailed_code(&w, &address).await;

    let ready = wait_smtp_failing(&w.env).await;
    let reason = ready.json["reason"].as_str().unwrap_or_default();
    assert!(
        !reason.trim().is_empty(),
        "/readyz gives no reason: {ready:?}"
    );
    let job = wait_state(&w.env, postfix, &user, "retrying").await;
    assert!(
        job["lastError"].as_str().is_some_and(|e| !e.is_empty()),
        "a waiting job says why: {job:#}"
    );
    assert!(
        postfix.maillog().contains(evidence),
        "Postfix's log does not show {evidence:?}; the worker may never have tried:\n{}",
        postfix.maillog_tail(30)
    );

    // Well past two attempts of 1-2 s: the job still waits, nothing arrived.
    let until = tokio::time::Instant::now() + Duration::from_secs(8);
    while tokio::time::Instant::now() < until {
        let job = newest_job(&w.env, &user).await.expect("the job");
        assert!(
            job["state"] == "retrying" || job["state"] == "sending",
            "a configuration fault must not end the job: {job:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        postfix.mails_to(&address).is_empty(),
        "a mail was delivered"
    );
    let ready = wait_smtp_failing(&w.env).await;
    if let Some(secret) = secret {
        let job = newest_job(&w.env, &user).await.expect("the job");
        assert!(!ready.text.contains(secret), "/readyz shows the password");
        assert!(
            !job.to_string().contains(secret),
            "the job shows the password"
        );
        assert!(
            !w.env.worker_logs().contains(secret),
            "the worker logged the password"
        );
    }

    for (key, value) in fix {
        w.env.set_env(key, value);
    }
    w.env.restart_worker().await;
    let mail = postfix
        .wait_for_to(&address, 1, WAIT)
        .await
        .into_iter()
        .next()
        .unwrap();
    // The delivered mail carries its code, shown on its own and in the link.
    contact_code(&mail);
    let job = wait_state(&w.env, postfix, &user, "sent").await;
    assert_eq!(job["recipient"], address.as_str());
    let ready = readyz(&w.env).await.expect("the worker answers /readyz");
    assert_eq!(ready.status, 200, "/readyz after the fix: {ready:?}");
}

#[tokio::test]
async fn starttls_without_the_ca_file_waits_and_fails_readiness() {
    let postfix = postfix_or_skip!("starttls_without_the_ca_file_waits_and_fails_readiness");
    let ca = postfix.ca_file().display().to_string();
    let fault = Fault {
        smtp_url: postfix.starttls_url(),
        env: vec![],
        evidence: "SSL_accept error",
        secret: None,
        fix: vec![("SMTP_TLS_CA_FILE", ca)],
    };
    configuration_fault(&postfix, fault).await;
}

#[tokio::test]
async fn smtps_without_the_ca_file_waits_and_fails_readiness() {
    let postfix = postfix_or_skip!("smtps_without_the_ca_file_waits_and_fails_readiness");
    let ca = postfix.ca_file().display().to_string();
    let fault = Fault {
        smtp_url: postfix.smtps_url(),
        env: vec![],
        evidence: "SSL_accept error",
        secret: None,
        fix: vec![("SMTP_TLS_CA_FILE", ca)],
    };
    configuration_fault(&postfix, fault).await;
}

#[tokio::test]
async fn plain_smtp_to_a_starttls_only_relay_is_a_configuration_fault() {
    // Postfix answers MAIL with "530 5.7.0 Must issue a STARTTLS command first".
    let postfix = postfix_or_skip!("plain_smtp_to_a_starttls_only_relay_is_a_configuration_fault");
    let fault = Fault {
        smtp_url: format!("smtp://127.0.0.1:{}", postfix.starttls_port()),
        env: vec![],
        // Postfix's summary of a session whose MAIL was refused.
        evidence: "mail=0/1",
        secret: None,
        fix: vec![
            ("SMTP_URL", postfix.starttls_url()),
            ("SMTP_TLS_CA_FILE", postfix.ca_file().display().to_string()),
        ],
    };
    configuration_fault(&postfix, fault).await;
}

#[tokio::test]
async fn a_refused_password_waits_and_fails_readiness() {
    let postfix = postfix_with_auth_or_skip!("a_refused_password_waits_and_fails_readiness");
    let ca = postfix.ca_file().display().to_string();
    let wrong = "Wrong-pass-4711";
    // Postfix answers AUTH with "535 5.7.8 Error: authentication failed".
    let fault = Fault {
        smtp_url: postfix.auth_url(AUTH_USER, wrong).unwrap(),
        env: vec![("SMTP_TLS_CA_FILE", ca)],
        evidence: "authentication failed",
        secret: Some(wrong),
        fix: vec![(
            "SMTP_URL",
            postfix.auth_url(AUTH_USER, AUTH_PASSWORD).unwrap(),
        )],
    };
    configuration_fault(&postfix, fault).await;
}

#[tokio::test]
async fn a_relay_requiring_auth_without_credentials_waits_and_fails_readiness() {
    let postfix = postfix_with_auth_or_skip!(
        "a_relay_requiring_auth_without_credentials_waits_and_fails_readiness"
    );
    let ca = postfix.ca_file().display().to_string();
    let port = postfix.auth_port().unwrap();
    // Postfix answers RCPT with "530 5.7.0 <...>: Client host rejected: Authentication
    // required".
    let fault = Fault {
        smtp_url: format!("smtp://127.0.0.1:{port}?tls=required"),
        env: vec![("SMTP_TLS_CA_FILE", ca)],
        evidence: "530 5.7.0",
        secret: None,
        fix: vec![(
            "SMTP_URL",
            postfix.auth_url(AUTH_USER, AUTH_PASSWORD).unwrap(),
        )],
    };
    configuration_fault(&postfix, fault).await;
}

#[tokio::test]
async fn credentials_for_a_relay_without_auth_wait_and_fail_readiness() {
    // "Authentication unsupported" (SPEC 8): the plain listener offers no AUTH at all.
    let postfix = postfix_or_skip!("credentials_for_a_relay_without_auth_wait_and_fail_readiness");
    let fault = Fault {
        smtp_url: format!(
            "smtp://{AUTH_USER}:{AUTH_PASSWORD}@127.0.0.1:{}",
            postfix.plain_port()
        ),
        env: vec![],
        evidence: "connect from localhost[127.0.0.1]",
        secret: Some(AUTH_PASSWORD),
        fix: vec![("SMTP_URL", postfix.plain_url())],
    };
    configuration_fault(&postfix, fault).await;
}

#[tokio::test]
async fn a_greylisting_450_is_retried_until_postfix_accepts() {
    let postfix = postfix_or_skip!("a_greylisting_450_is_retried_until_postfix_accepts");
    let address = address("greylisted");
    postfix.greylist(&address).await;
    let builder = builder(&postfix.plain_url()).env("MAIL_MAX_ATTEMPTS", "30");
    let w = World::from_builder(builder, &[]).await;
    let user = user_with_mailed_code(&w, &address).await;

    let job = wait_state(&w.env, &postfix, &user, "retrying").await;
    assert!(
        job["lastError"].as_str().is_some_and(|e| e.contains("450")),
        "lastError carries Postfix's 450: {job:#}"
    );
    assert!(
        postfix.maillog().contains(&format!(
            "450 4.7.1 <{address}>: Recipient address rejected: try later"
        )),
        "Postfix did not log the 450:\n{}",
        postfix.maillog_tail(20)
    );
    // At least one retry is also answered 450.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let job = newest_job(&w.env, &user).await.expect("the job");
        assert_ne!(
            job["state"], "failed",
            "a 450 must not fail the job: {job:#}"
        );
        if job["attempts"].as_u64().unwrap_or(0) >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no second attempt within {WAIT:?}: {job:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(postfix.mails_to(&address).is_empty());
    let ready = readyz(&w.env).await.expect("the worker answers /readyz");
    assert_eq!(
        ready.status, 200,
        "a greylisted recipient is no fault of the worker's configuration: {ready:?}"
    );

    // The greylisting ends: postmap, postfix reload.
    postfix.accept(&address).await;
    postfix.flush().await;
    let mails = postfix.wait_for_to(&address, 1, WAIT).await;
    assert_delivered_as_sent(&mails[0], &address, false);
    let code = contact_code(&mails[0]);
    let job = wait_state(&w.env, &postfix, &user, "sent").await;
    assert!(job["attempts"].as_u64().unwrap_or(0) >= 3, "{job:#}");
    w.fam(Family::A).verify(&user, &code).await.ok();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(postfix.mails_to(&address).len(), 1, "delivered once");
}

#[tokio::test]
async fn a_550_recipient_fails_at_once() {
    let postfix = postfix_or_skip!("a_550_recipient_fails_at_once");
    let address = address("nosuchuser");
    postfix.reject(&address).await;
    let w = World::from_builder(builder(&postfix.plain_url()), &[]).await;
    let user = user_with_mailed_code(&w, &address).await;

    let job = wait_state(&w.env, &postfix, &user, "failed").await;
    assert_eq!(job["attempts"], 1, "a 5xx is not retried: {job:#}");
    assert!(
        job["lastError"].as_str().is_some_and(|e| e.contains("550")),
        "lastError carries Postfix's 550: {job:#}"
    );
    assert_eq!(job["nextAttemptAt"], Value::Null, "{job:#}");
    let id = job["id"].as_str().expect("job id").to_string();
    let shown = w.env.run_worker(&["jobs", "show", &id, "--json"]).await;
    let shown = shown.expect_success().json();
    let history = shown["history"].as_array().expect("history");
    assert_eq!(history.len(), 1, "one attempt: {shown:#}");
    assert!(
        history[0]["smtpReply"]
            .as_str()
            .is_some_and(|r| r.contains("550")),
        "the attempt records the SMTP reply: {shown:#}"
    );
    assert!(
        postfix.maillog().contains(&format!(
            "550 5.1.1 <{address}>: Recipient address rejected: no such user"
        )),
        "Postfix did not log the 550:\n{}",
        postfix.maillog_tail(20)
    );
    assert!(postfix.mails_to(&address).is_empty());
    let ready = readyz(&w.env).await.expect("the worker answers /readyz");
    assert_eq!(
        ready.status, 200,
        "a 550 recipient is no configuration fault: {ready:?}"
    );
}
