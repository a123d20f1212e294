//! What an operator relies on (issue "ready for production"): health and readiness, metrics
//! that move, JSON logs with request ids and without secrets, the OpenAPI document, and
//! configuration errors that name the variable.

use std::time::Duration;

use serde_json::json;
use tests::{Api, Role, TestEnv, eventually};

/// The value of a sample line `name{labels} value` in Prometheus text output, summed over
/// every line whose labels contain all of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn health_readiness_and_metrics_of_both_processes() {
    let env = TestEnv::start().await;
    let api = env.api();
    let anonymous = api.without_token();
    anonymous.get("/healthz").await.expect_status(200);
    let ready = anonymous.get("/readyz").await.expect_status(200);
    assert_eq!(ready["database"], "ok");
    assert_eq!(ready["broker"], "ok");
    let worker = Api::new(env.worker_url(), None);
    worker.get("/healthz").await.expect_status(200);
    worker.get("/readyz").await.expect_status(200);

    let before = anonymous.get("/metrics").await.expect_status(200).text;
    let user = api
        .post("/v3alpha/users", json!({"username": "metrics"}))
        .await
        .expect_status(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    api.put(
        &format!("/v3alpha/users/{user}/email"),
        json!({"email": {"address": "metrics@example.com"}}),
    )
    .await
    .expect_status(200);
    api.get("/v3alpha/users/not-a-user")
        .await
        .expect_status(404);
    env.sink.wait_for(1, Duration::from_secs(20)).await;

    let after = anonymous.get("/metrics").await.expect_status(200).text;
    let put_route = "route=\"/v3alpha/users/{userId}/email\"";
    assert_eq!(
        metric(
            &after,
            "contact_email_http_requests_total",
            &[put_route, "status=\"200\""]
        ) - metric(
            &before,
            "contact_email_http_requests_total",
            &[put_route, "status=\"200\""]
        ),
        1.0,
        "{after}"
    );
    assert!(
        metric(
            &after,
            "contact_email_http_requests_total",
            &["status=\"404\""]
        ) >= 1.0
    );
    assert!(
        metric(
            &after,
            "contact_email_http_request_duration_seconds_count",
            &[put_route]
        ) >= 1.0
    );
    assert!(after.contains("contact_email_outbox_backlog"));
    assert!(
        !after.contains("metrics@example.com"),
        "no address in metrics"
    );
    assert!(!after.contains(env.token()), "no token in metrics");

    // The job gauges are read from PostgreSQL at most every 5 s (SPEC 7): wait for a reading
    // that shows the sent job too.
    let worker_metrics = eventually(
        "the delivery to be counted",
        Duration::from_secs(20),
        || {
            let worker = worker.clone();
            async move {
                let text = worker.get("/metrics").await.text;
                (metric(
                    &text,
                    "contact_email_mail_delivery_latency_seconds_count",
                    &[],
                ) >= 1.0
                    && metric(&text, "contact_email_mail_jobs", &["state=\"sent\""]) >= 1.0)
                    .then_some(text)
            }
        },
    )
    .await;
    assert_eq!(
        metric(
            &worker_metrics,
            "contact_email_mail_deliveries_total",
            &["outcome=\"sent\""]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &worker_metrics,
            "contact_email_mail_jobs",
            &["state=\"sent\""]
        ),
        1.0,
        "{worker_metrics}"
    );
}

#[tokio::test]
async fn readiness_turns_unready_when_the_database_is_unreachable() {
    let mut env = TestEnv::builder()
        .without_worker()
        .without_api()
        .start()
        .await;
    // A closed port: nothing listens on port 1.
    env.set_env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nowhere");
    env.set_env("RUN_MIGRATIONS", "false");
    env.spawn_process(Role::Api);
    let api = Api::new(env.api_url(), None);
    eventually(
        "the api to answer /healthz",
        Duration::from_secs(20),
        || {
            let api = api.clone();
            async move {
                api.try_send(tests::Method::GET, "/healthz", None)
                    .await
                    .ok()
                    .filter(|r| r.status == 200)
            }
        },
    )
    .await;
    let ready = api.get("/readyz").await;
    assert_eq!(ready.status, 503, "{ready:?}");
    assert_eq!(ready["database"], "unavailable");
}

#[tokio::test]
async fn logs_are_json_with_request_ids_and_never_show_codes_or_tokens() {
    let env = TestEnv::start().await;
    let api = env.api();
    let created = api
        .post(
            "/v3alpha/users",
            json!({"email": {"address": "logs@example.com", "returnCode": {}}}),
        )
        .await
        .expect_status(201);
    let user = created["id"].as_str().unwrap().to_owned();
    let returned_code = created["verificationCode"].as_str().unwrap().to_owned();
    let resend = api
        .with_header("x-request-id", "test-request-42")
        .post(&format!("/v3alpha/users/{user}/email/resend"), json!({}))
        .await
        .expect_status(200);
    assert_eq!(resend.request_id(), Some("test-request-42"));
    let mail = env
        .sink
        .wait_for(1, Duration::from_secs(20))
        .await
        .remove(0);
    let mailed_code = mail.link_param("code").expect("code in the default link");
    api.post(
        &format!("/v3alpha/users/{user}/email/verify"),
        json!({"verificationCode": "WRONG1"}),
    )
    .await
    .expect_status(400);
    api.post(
        &format!("/v3alpha/users/{user}/email/verify"),
        json!({"verificationCode": mailed_code}),
    )
    .await
    .expect_status(200);
    // Let the processes write their last lines.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let api_logs = env.api_logs();
    let worker_logs = env.worker_logs();
    for (name, logs) in [("api", &api_logs), ("worker", &worker_logs)] {
        for line in logs.lines().filter(|l| !l.trim().is_empty()) {
            let parsed: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name} log line is not JSON ({e}): {line}"));
            assert!(parsed.get("level").is_some(), "{line}");
        }
        assert!(
            !logs.contains(&returned_code),
            "{name} logs show a returned code"
        );
        assert!(
            !logs.contains(&mailed_code),
            "{name} logs show a mailed code"
        );
        assert!(!logs.contains(env.token()), "{name} logs show the token");
    }
    let served: Vec<serde_json::Value> = api_logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["message"] == "request served")
        .collect();
    assert!(served.len() >= 4);
    assert!(
        served.iter().all(|v| v["span"]["request_id"].is_string()),
        "every request line carries its request id"
    );
    assert!(
        served
            .iter()
            .any(|v| v["span"]["request_id"] == "test-request-42")
    );
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let env = TestEnv::builder().without_worker().start().await;
    let doc = env
        .api()
        .without_token()
        .get("/openapi.json")
        .await
        .expect_status(200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().expect("paths");
    let expected = [
        ("/v3alpha/users", "post"),
        ("/v3alpha/users/{userId}", "get"),
        ("/v3alpha/users/{userId}", "delete"),
        ("/v3alpha/users/{userId}/email", "put"),
        ("/v3alpha/users/{userId}/email/verify", "post"),
        ("/v3alpha/users/{userId}/email/resend", "post"),
        ("/v3alpha/users/{userId}/otp_email", "post"),
        ("/v3alpha/users/{userId}/otp_email/{otpEmailId}", "delete"),
        (
            "/v3alpha/users/{userId}/otp_email/{otpEmailId}/verify",
            "post",
        ),
        (
            "/v3alpha/users/{userId}/otp_email/{otpEmailId}/resend",
            "post",
        ),
        ("/resources/v3alpha/users/{id}/email", "put"),
        ("/resources/v3alpha/users/{id}/email/_verify", "post"),
        ("/resources/v3alpha/users/{id}/email/_resend", "post"),
        ("/resources/v3alpha/users/{id}/otp_email", "post"),
        (
            "/resources/v3alpha/users/{id}/otp_email/{otpEmailId}",
            "delete",
        ),
        (
            "/resources/v3alpha/users/{id}/otp_email/{otpEmailId}/_verify",
            "post",
        ),
        (
            "/resources/v3alpha/users/{id}/otp_email/{otpEmailId}/_resend",
            "post",
        ),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ];
    for (path, method) in expected {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from /openapi.json"
        );
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}

#[tokio::test]
async fn a_bad_variable_stops_the_process_with_its_name() {
    let env = TestEnv::builder()
        .without_worker()
        .without_api()
        .start()
        .await;
    for (bin, args, var, value) in [
        ("api", &["serve"][..], "RESEND_COOLDOWN", "soon"),
        ("api", &["serve"], "VERIFY_MAX_ATTEMPTS", "many"),
        ("api", &["serve"], "DEFAULT_URL_TEMPLATE", "{{Nope}}"),
        ("api", &["serve"], "AMQP_URL", "http://user:secret@example"),
        ("api", &["serve"], "CODE_ENCRYPTION_KEY", "short"),
        ("worker", &["run"], "MAIL_RETRY_INITIAL", "later"),
        ("worker", &["run"], "SMTP_URL", "mail.example.com:25"),
        ("worker", &["run"], "LOG_FORMAT", "xml"),
    ] {
        let out = env
            .command(bin)
            .args(args)
            .env(var, value)
            .output()
            .await
            .expect("run the binary");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{bin} with {var}={value}: {stderr}"
        );
        assert!(
            stderr.contains(var),
            "{bin} with {var}={value} names it: {stderr}"
        );
        assert!(
            !stderr.contains("secret"),
            "the value of a URL is not echoed: {stderr}"
        );
    }
    let out = env
        .command("api")
        .args(["serve"])
        .env("DEV_MODE", "false")
        .env_remove("CODE_ENCRYPTION_KEY")
        .output()
        .await
        .expect("run api");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CODE_ENCRYPTION_KEY"));
    let help = env
        .command("api")
        .args(["serve", "--help"])
        .output()
        .await
        .expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    for var in [
        "DATABASE_URL",
        "AMQP_URL",
        "API_ADDR",
        "RESEND_COOLDOWN",
        "EMAIL_CODE_TTL",
    ] {
        assert!(help.contains(var), "api serve --help lists {var}");
    }
    assert!(help.contains("[default: 30s]"), "defaults are shown");
}
