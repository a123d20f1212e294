//! Per-instance mail settings (SPEC 9): `GET|PUT /v3alpha/instances/{id}/mail_settings` with
//! `instance.read` / `instance.write`, secrets stored encrypted and shown as `***`; the
//! worker sends an instance's mail from its sender, in its default language, through its own
//! SMTP relay or HTTP provider (signed JSON; 5xx retried, 4xx permanent); a change applies to
//! the mail after it; `api instance mail-settings show|set|test`; and one instance's hanging
//! provider does not hold up another instance's mail.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tests::SmtpSink;
use tests::app::{spawn_app, spawn_app_with};
use tests::client::Api;
use tests::scenario::*;

/// The stand-in providers of these tests listen on 127.0.0.1, which instance providers may
/// reach only when the operator allows private networks.
const PRIVATE_PROVIDERS: &[(&str, &str)] = &[("MAIL_PROVIDERS_ALLOW_PRIVATE", "true")];

fn settings_path(instance: &str) -> String {
    format!("/v3alpha/instances/{instance}/mail_settings")
}

/// A client whose token has `permissions` in the test's instance.
async fn with_permissions(w: &World, permissions: &str) -> Api {
    w.token_client(&["--instance", &w.instance_id(), "--permission", permissions])
        .await
}

/// `api instance mail-settings test` of the test's instance, to ops@acme.example.
async fn send_test_mail(w: &World) -> tests::CliOutput {
    w.env
        .run_api(&[
            "instance",
            "mail-settings",
            "test",
            "--instance",
            &w.instance_id(),
            "--to",
            "ops@acme.example",
        ])
        .await
}

/// `api instance mail-settings show --json` of the test's instance.
async fn show_settings(w: &World) -> tests::CliOutput {
    w.env
        .run_api(&[
            "instance",
            "mail-settings",
            "show",
            "--instance",
            &w.instance_id(),
            "--json",
        ])
        .await
}

/// The stored row as text, to check what is at rest.
async fn stored_row(w: &World) -> String {
    let out = tokio::process::Command::new("psql")
        .arg(w.env.database_url())
        .args([
            "-At",
            "-c",
            "SELECT row_to_json(s)::text FROM instance_mail_settings s",
        ])
        .output()
        .await
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn settings_are_read_and_replaced_with_their_permissions_and_secrets_stay_hidden() {
    let (w, _app) = spawn_app().await;
    let instance = w.instance_id();
    let path = settings_path(&instance);
    let admin = with_permissions(&w, "instance.read,instance.write").await;

    // Nothing set yet: an empty object.
    let resp = admin.get(&path).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json, json!({}));

    let resp = admin
        .put(
            &path,
            json!({
                "from": "Acme Support <help@acme.example>",
                "replyTo": "support@acme.example",
                "defaultLanguage": "DE",
                "urlTemplate": "https://login.acme.example/verify?user={{.UserID}}&code={{.Code}}",
                "provider": {"smtp": {"url": "smtp://mailer:s3cret-pw@relay.acme.example:587?tls=required"}},
            }),
        )
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let expected = json!({
        "from": "Acme Support <help@acme.example>",
        "replyTo": "support@acme.example",
        "defaultLanguage": "de",
        "urlTemplate": "https://login.acme.example/verify?user={{.UserID}}&code={{.Code}}",
        "provider": {"smtp": {"url": "smtp://mailer:***@relay.acme.example:587?tls=required"}},
    });
    assert_eq!(resp.json, expected);
    let read = with_permissions(&w, "instance.read").await;
    let resp = read.get(&path).await;
    assert_eq!(resp.json, expected, "{resp:?}");
    let row = stored_row(&w).await;
    assert!(
        !row.contains("s3cret"),
        "the password is stored in the clear: {row}"
    );

    // GET then PUT keeps the stored password (`***`); a new provider kind needs its secret.
    let resp = admin.put(&path, expected.clone()).await;
    assert_eq!(resp.json, expected, "{resp:?}");
    let resp = admin
        .put(
            &path,
            json!({"provider": {"http": {"url": "https://hooks.acme.example/mail"}}}),
        )
        .await;
    assert_error(&resp, 400, 3, Some("INSTANCE-Ms9tq"));

    // Bad input is 400 and changes nothing.
    for bad in [
        json!({"from": "not an address"}),
        json!({"replyTo": "a@"}),
        json!({"defaultLanguage": "not a tag"}),
        json!({"urlTemplate": "ftp://x.example/{{.Code}}"}),
        json!({"provider": {"smtp": {"url": "http://relay.example"}}}),
        json!({"provider": {"smtp": {"url": "smtp://relay.example?tls=sometimes"}}}),
        json!({"provider": {"http": {"url": "not a url", "signingKey": "k"}}}),
        json!({"provider": {"pigeon": {}}}),
        json!({"from": 7}),
    ] {
        let resp = admin.put(&path, bad.clone()).await;
        assert_error(&resp, 400, 3, None);
        assert_eq!(
            admin.get(&path).await.json,
            expected,
            "{bad} changed the settings"
        );
    }

    // An HTTP provider: the signing key is shown as ***, and kept by ***.
    let http = json!({"from": "help@acme.example",
        "provider": {"http": {"url": "https://hooks.acme.example/mail", "signingKey": "hook-key-123"}}});
    let resp = admin.put(&path, http).await;
    assert_eq!(
        resp.json,
        json!({"from": "help@acme.example",
            "provider": {"http": {"url": "https://hooks.acme.example/mail", "signingKey": "***"}}})
    );
    assert!(!stored_row(&w).await.contains("hook-key-123"));
    let resp = admin.put(&path, resp.json.clone()).await;
    assert_eq!(resp.status, 200, "{resp:?}");

    // Permissions: 401 without a token, 403 without instance.*, 403 to write with read
    // only, 404 for another instance (or no instance id at all).
    assert_error(&admin.without_token().get(&path).await, 401, 16, None);
    assert_error(&w.api.get(&path).await, 403, 7, Some("AUTHZ-HKJD33"));
    assert_error(
        &read.put(&path, json!({})).await,
        403,
        7,
        Some("AUTHZ-HKJD33"),
    );
    let other: i64 = instance.parse::<i64>().unwrap() + 1000;
    assert_error(
        &admin.get(&settings_path(&other.to_string())).await,
        404,
        5,
        None,
    );
    assert_error(
        &admin.put(&settings_path("abc"), json!({})).await,
        404,
        5,
        None,
    );

    // PUT of `{}` unsets everything.
    let resp = admin.put(&path, json!({})).await;
    assert_eq!(resp.json, json!({}));
    assert_eq!(stored_row(&w).await.matches("hooks.acme").count(), 0);
}

#[tokio::test]
async fn an_instances_mail_uses_its_sender_language_and_relay_and_changes_apply_to_later_mail() {
    let (w, _app) = spawn_app_with(PRIVATE_PROVIDERS).await;
    let path = settings_path(&w.instance_id());
    let admin = with_permissions(&w, "instance.write").await;
    let relay = SmtpSink::spawn().await;
    let resp = admin
        .put(
            &path,
            json!({
                "from": "Acme <help@acme.example>",
                "replyTo": "support@acme.example",
                "defaultLanguage": "de",
                "urlTemplate": "https://login.acme.example/v?user={{.UserID}}&code={{.Code}}",
                "provider": {"smtp": {"url": relay.url()}},
            }),
        )
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");

    // A user without a language: the instance's default (German), from the instance's
    // sender, through the instance's relay.
    let user = w
        .create_user_with(json!({"email": {"address": "tenant-1@acme.example"}}))
        .await;
    let mails = relay
        .wait_for_to("tenant-1@acme.example", 1, MAIL_WAIT)
        .await;
    let mail = &mails[0];
    assert_eq!(mail.subject(), "Bestätigen Sie Ihre E-Mail-Adresse");
    assert!(mail.from().contains("help@acme.example"), "{}", mail.from());
    assert!(
        mail.header("Reply-To")
            .is_some_and(|r| r.contains("support@acme.example")),
        "{:?}",
        mail.headers()
    );
    assert_eq!(w.env.sink.messages_to("tenant-1@acme.example").len(), 0);
    // The instance's link, as `sendCode` named none.
    assert!(
        mail.text_body()
            .contains(&format!("https://login.acme.example/v?user={user}&code=")),
        "{}",
        mail.text_body()
    );
    let code = contact_code(mail);
    w.fam(Family::A).verify(&user, &code).await.ok();

    // The user's own language comes first.
    w.create_user_with(
        json!({"preferredLanguage": "fr", "email": {"address": "tenant-2@acme.example"}}),
    )
    .await;
    let mails = relay
        .wait_for_to("tenant-2@acme.example", 1, MAIL_WAIT)
        .await;
    assert_eq!(mails[0].header("Content-Language"), Some("fr"));

    // Settings unset: the next mail goes the global way, in English, from MAIL_FROM.
    let resp = admin.put(&path, json!({})).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    w.create_user_with(json!({"email": {"address": "tenant-3@acme.example"}}))
        .await;
    let mail = w.mail_to("tenant-3@acme.example", 1).await;
    assert_eq!(mail.subject(), "Verify your email address");
    assert!(!mail.from().contains("acme.example"), "{}", mail.from());
    assert_eq!(relay.messages_to("tenant-3@acme.example").len(), 0);
}

/// One POST: its `X-Signature` header and its body.
type Post = (Option<String>, Vec<u8>);

/// What the stand-in HTTP provider received.
#[derive(Clone, Default)]
struct Received {
    posts: Arc<Mutex<Vec<Post>>>,
    /// Statuses to answer, in order; 200 once they are used up.
    answers: Arc<Mutex<Vec<u16>>>,
}

async fn spawn_http_provider(received: Received) -> String {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    let app = axum::Router::new().route(
        "/mail",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let received = received.clone();
            async move {
                let signature = headers
                    .get("x-signature")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                received
                    .posts
                    .lock()
                    .unwrap()
                    .push((signature, body.to_vec()));
                let mut answers = received.answers.lock().unwrap();
                let status = if answers.is_empty() {
                    200
                } else {
                    answers.remove(0)
                };
                StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://127.0.0.1:{port}/mail")
}

fn hmac_hex(key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn the_http_provider_gets_signed_json_with_5xx_retried_and_4xx_permanent() {
    let (w, _app) = spawn_app_with(PRIVATE_PROVIDERS).await;
    let received = Received::default();
    received.answers.lock().unwrap().push(503);
    let url = spawn_http_provider(received.clone()).await;
    let admin = with_permissions(&w, "instance.write").await;
    let resp = admin
        .put(
            &settings_path(&w.instance_id()),
            json!({"from": "Acme <help@acme.example>",
                "provider": {"http": {"url": url, "signingKey": "hook-key-123"}}}),
        )
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");

    let user = w
        .create_user_with(json!({"email": {"address": "hook-1@acme.example"}}))
        .await;
    // The first answer is 503: the mail is posted again.
    let deadline = Instant::now() + MAIL_WAIT;
    while received.posts.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "the 503 was not retried");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (signature, body) = received.posts.lock().unwrap()[1].clone();
    assert_eq!(
        signature.as_deref(),
        Some(format!("sha256={}", hmac_hex("hook-key-123", &body)).as_str())
    );
    let mail: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(mail["to"], "hook-1@acme.example");
    assert_eq!(mail["from"], "Acme <help@acme.example>");
    assert_eq!(mail["instanceId"], w.instance_id());
    assert_eq!(mail["language"], "en");
    assert!(mail["jobId"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(mail["subject"], "Verify your email address");
    let text = mail["text"].as_str().unwrap();
    let html = mail["html"].as_str().unwrap();
    // The code is in both parts and verifies.
    let code = text
        .lines()
        .map(str::trim)
        .find(|l| l.len() >= 6 && l.chars().all(|c| c.is_ascii_alphanumeric()))
        .expect("a code line in the text")
        .to_owned();
    assert!(html.contains(&code), "{html}");
    w.fam(Family::A).verify(&user, &code).await.ok();
    assert!(mail.get("replyTo").is_none(), "{mail}");

    // A 4xx is permanent: the job fails without another post.
    received.answers.lock().unwrap().push(422);
    let before = received.posts.lock().unwrap().len();
    w.create_user_with(json!({"email": {"address": "hook-2@acme.example"}}))
        .await;
    let deadline = Instant::now() + MAIL_WAIT;
    loop {
        let jobs = w.env.jobs(&["--status", "failed"]).await;
        if !jobs.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the 422 did not fail the job");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(received.posts.lock().unwrap().len(), before + 1);
    assert_eq!(
        w.env.sink.count(),
        0,
        "instance mail went to the global relay"
    );
}

#[tokio::test]
async fn one_instances_hanging_relay_does_not_hold_up_another_instances_mail() {
    // Eight delivery slots: without isolation, the hanging relay's mails would take them all
    // for the 30 s SMTP time limit.
    let (mut w, _app) = spawn_app_with(&[
        ("WORKER_CONCURRENCY", "8"),
        ("MAIL_PROVIDERS_ALLOW_PRIVATE", "true"),
    ])
    .await;
    // A relay that accepts connections and never says a word.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging_port = hanging.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = hanging.accept().await {
            keep.lock().unwrap().push(socket);
        }
    });
    let admin = with_permissions(&w, "instance.write").await;
    let resp = admin
        .put(
            &settings_path(&w.instance_id()),
            json!({"provider": {"smtp": {"url": format!("smtp://127.0.0.1:{hanging_port}")}}}),
        )
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    for i in 0..16 {
        w.create_user_with(json!({"email": {"address": format!("stuck-{i}@acme.example")}}))
            .await;
    }
    // Let the stuck mails take what slots they can.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Another instance, on the global relay.
    let other = w.env.run_bootstrap(&["--domain", "other.example"]).await;
    let other_api = w.api.with_token(other.token.clone());
    let started = Instant::now();
    create_user(
        &other_api,
        json!({"email": {"address": "free@other.example"}}),
    )
    .await;
    w.env
        .sink
        .wait_for_to("free@other.example", 1, Duration::from_secs(5))
        .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the other instance's mail took {took:?}"
    );
    assert!(
        !held.lock().unwrap().is_empty(),
        "the hanging relay was never tried"
    );
}

#[tokio::test]
async fn the_cli_shows_sets_and_tests_an_instances_settings() {
    let (w, _app) = spawn_app_with(PRIVATE_PROVIDERS).await;
    let instance = w.instance_id();
    let relay = SmtpSink::spawn().await;
    let relay_url = relay.url();
    let out = w
        .env
        .run_api(&[
            "instance",
            "mail-settings",
            "set",
            "--instance",
            &instance,
            "--from",
            "Acme <help@acme.example>",
            "--default-language",
            "it",
            "--smtp-url",
            &relay_url,
            "--primary-color",
            "#123456",
        ])
        .await;
    out.expect_success();
    assert!(out.stdout.contains("help@acme.example"), "{}", out.stdout);

    let out = show_settings(&w).await;
    out.expect_success();
    assert_eq!(
        out.json(),
        json!({"from": "Acme <help@acme.example>", "defaultLanguage": "it",
            "provider": {"smtp": {"url": relay_url}}, "branding": {"primaryColor": "#123456"}})
    );
    // The API shows the same.
    let read = with_permissions(&w, "instance.read").await;
    assert_eq!(read.get(&settings_path(&instance)).await.json, out.json());

    // `test` sends one mail through the instance's relay now.
    let out = send_test_mail(&w).await;
    out.expect_success();
    assert!(out.stdout.contains("250"), "{}", out.stdout);
    let mails = relay.wait_for_to("ops@acme.example", 1, MAIL_WAIT).await;
    assert_eq!(mails[0].header("Content-Language"), Some("it"));

    // `--clear` unsets one field and keeps the others; a bad value is exit 2.
    let out = w
        .env
        .run_api(&[
            "instance",
            "mail-settings",
            "set",
            "--instance",
            &instance,
            "--clear",
            "from",
            "--clear",
            "branding",
        ])
        .await;
    out.expect_success();
    let out = show_settings(&w).await;
    assert_eq!(
        out.json(),
        json!({"defaultLanguage": "it", "provider": {"smtp": {"url": relay_url}}})
    );
    let out = w
        .env
        .run_api(&[
            "instance",
            "mail-settings",
            "set",
            "--instance",
            &instance,
            "--default-language",
            "not a tag",
        ])
        .await;
    out.expect_code(2);

    // A relay that is down: `test` says so and exits 1.
    relay.stop().await;
    let out = send_test_mail(&w).await;
    out.expect_code(1);
    assert!(out.stderr.contains("not sent"), "{}", out.stderr);
}

#[tokio::test]
async fn the_html_mail_wears_the_organizations_branding_over_the_instances() {
    let (w, _app) = spawn_app().await;
    let admin = with_permissions(&w, "instance.read,instance.write").await;
    let resp = admin
        .put(
            &settings_path(&w.instance_id()),
            json!({"branding": {"primaryColor": "#AA0000", "logoUrl": "https://cdn.acme.example/i.png"}}),
        )
        .await;
    assert_eq!(
        resp.json,
        json!({"branding": {"primaryColor": "#aa0000", "logoUrl": "https://cdn.acme.example/i.png"}}),
        "{resp:?}"
    );
    let org_path = format!("/v3alpha/organizations/{}/branding", w.org_id());
    assert_eq!(admin.get(&org_path).await.json, json!({}));
    let resp = admin
        .put(
            &org_path,
            json!({"primaryColor": "#00aa00", "fontColor": ""}),
        )
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json, json!({"primaryColor": "#00aa00"}));
    assert_eq!(admin.get(&org_path).await.json, resp.json);

    w.create_user_with(json!({"email": {"address": "brand@acme.example"}}))
        .await;
    let mail = w.mail_to("brand@acme.example", 1).await;
    let html = mail.html_body();
    // The organization's color, the instance's logo, the built-in background.
    assert!(html.contains("color: #00aa00;"), "{html}");
    assert!(!html.contains("#aa0000"), "{html}");
    assert!(
        html.contains(r#"<img src="https://cdn.acme.example/i.png""#),
        "{html}"
    );
    assert!(html.contains("background-color: #ffffff;"), "{html}");

    // Bad input is 400 and changes nothing; permissions and other organizations as for the
    // instance's settings.
    for bad in [
        json!({"primaryColor": "green"}),
        json!({"logoUrl": "javascript:alert(1)"}),
        json!({"backgroundColor": "#fff;x"}),
    ] {
        assert_error(
            &admin.put(&org_path, bad).await,
            400,
            3,
            Some("POLICY-Br4nd9"),
        );
    }
    assert_eq!(
        admin.get(&org_path).await.json,
        json!({"primaryColor": "#00aa00"})
    );
    let resp = admin
        .put(
            &settings_path(&w.instance_id()),
            json!({"branding": {"fontColor": "black"}}),
        )
        .await;
    assert_error(&resp, 400, 3, Some("POLICY-Br4nd9"));
    assert_error(&w.api.get(&org_path).await, 403, 7, Some("AUTHZ-HKJD33"));
    let read = with_permissions(&w, "instance.read").await;
    assert_error(&read.put(&org_path, json!({})).await, 403, 7, None);
    assert_error(
        &admin.get("/v3alpha/organizations/12345/branding").await,
        404,
        5,
        Some("COMMAND-Ggk9n"),
    );
}

#[tokio::test]
async fn an_instance_provider_may_not_reach_private_addresses_unless_the_operator_allows_it() {
    let (w, _app) = spawn_app().await;
    let admin = with_permissions(&w, "instance.write").await;
    let relay = SmtpSink::spawn().await;
    // The worker's own relay (the sink) is on 127.0.0.1 too: the operator's, so allowed.
    let resp = admin
        .put(
            &settings_path(&w.instance_id()),
            json!({"provider": {"smtp": {"url": relay.url()}}}),
        )
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    w.create_user_with(json!({"email": {"address": "inside@acme.example"}}))
        .await;
    // The job waits (its attempts are not spent) and says why; nothing is sent.
    let deadline = Instant::now() + MAIL_WAIT;
    loop {
        let jobs = w.env.jobs(&["--status", "retrying"]).await;
        if let Some(job) = jobs.first() {
            let error = job.to_string();
            assert!(error.contains("public addresses"), "{error}");
            break;
        }
        assert!(Instant::now() < deadline, "the job did not wait");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(relay.count(), 0);
    assert_eq!(w.env.sink.count(), 0);

    // `test` says the same and exits 1.
    let out = send_test_mail(&w).await;
    out.expect_code(1);
    assert!(out.stderr.contains("public addresses"), "{}", out.stderr);

    // An HTTP provider on a private address: refused the same way.
    let resp = admin
        .put(
            &settings_path(&w.instance_id()),
            json!({"provider": {"http": {"url": "http://169.254.169.254/latest", "signingKey": "k"}}}),
        )
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let out = send_test_mail(&w).await;
    out.expect_code(1);
    assert!(out.stderr.contains("public addresses"), "{}", out.stderr);
}
