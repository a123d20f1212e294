//! What a client generated from ZITADEL's own protos (and a browser running one) needs beyond
//! plain calls (SPEC 4), from outside: gzip-compressed requests and answers over gRPC and
//! gRPC-Web; `application/grpc-web-text` answered in base64 text over HTTP/1.1 and HTTP/2;
//! CORS for gRPC-Web and the JSON API (`CORS_ALLOWED_ORIGINS`: preflights without a token,
//! exposed headers, nothing for an origin not in the list, a bad value refused at start);
//! and `grpc.health.v1.Health`, open to all and following `/readyz` through a database outage.

use std::time::Duration;

use prost::Message;
use reqwest::header::HeaderMap;
use serde_json::json;
use tests::grpc::web::{frame, gzip, http1, http2, web_call};
use tests::grpc::{SERVICE, channel, users_client, with_token};
use tests::{Role, TestEnv, eventually, scenario};
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use tests::grpc::proto::zitadel::resources::user::v3alpha::*;

const HEALTH: &str = "grpc.health.v1.Health";
/// The origin allowed in the CORS tests, and one that is not.
const APP: &str = "https://app.example";
const EVIL: &str = "https://evil.example";

// ---- clients and requests ----------------------------------------------------------------------

/// A new user without an email, made over JSON with the admin token.
async fn create_user(env: &TestEnv) -> String {
    scenario::create_user(&env.api(), json!({})).await
}

/// SetContactEmail returning the code (never rate limited, so any number of calls answer).
fn set_contact_returning(user: &str, address: &str) -> SetContactEmailRequest {
    SetContactEmailRequest {
        id: user.into(),
        email: Some(SetEmail {
            address: address.into(),
            verification: Some(set_email::Verification::ReturnCode(
                ReturnEmailVerificationCode {},
            )),
        }),
        ..Default::default()
    }
}

/// A header as text, `""` when absent.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).map_or("", |v| v.to_str().unwrap())
}

/// The comma list of a header, lower-cased (all values of the header together).
fn header_list(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

fn cors_headers(headers: &HeaderMap) -> Vec<String> {
    headers
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

// ---- compression -------------------------------------------------------------------------------

/// A gzip-compressed request is accepted over gRPC and gRPC-Web, and the answer is gzip
/// exactly when the client sent `grpc-accept-encoding: gzip`.
#[tokio::test]
async fn gzip_requests_are_accepted_and_answers_compressed_when_asked() {
    let env = TestEnv::builder().without_worker().start().await;
    let token = env.token().to_owned();
    let user = create_user(&env).await;

    // gRPC, the generated client compressing its request and accepting gzip.
    let mut client = users_client(&env)
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let answer = client
        .set_contact_email(with_token(
            set_contact_returning(&user, "gzip@example.com"),
            Some(&token),
        ))
        .await
        .expect("a gzip request is accepted over gRPC");
    assert_eq!(
        answer
            .metadata()
            .get("grpc-encoding")
            .map(|v| v.to_str().unwrap()),
        Some("gzip"),
        "the answer is gzip when asked"
    );
    assert!(answer.into_inner().verification_code.is_some());
    // Compressing the request only: the answer is not compressed.
    let mut client = users_client(&env)
        .await
        .send_compressed(CompressionEncoding::Gzip);
    let answer = client
        .set_contact_email(with_token(
            set_contact_returning(&user, "gzip2@example.com"),
            Some(&token),
        ))
        .await
        .expect("a gzip request is accepted over gRPC");
    assert_ne!(
        answer
            .metadata()
            .get("grpc-encoding")
            .map(|v| v.to_str().unwrap()),
        Some("gzip"),
        "not asked for, not compressed"
    );

    // gRPC-Web over HTTP/1.1: a compressed message frame (flag 1) with `grpc-encoding: gzip`.
    let url = format!("{}/{SERVICE}/SetContactEmail", env.api_url());
    let bearer = format!("Bearer {token}");
    for accept_gzip in [true, false] {
        // A new address each time: setting the same one again mails (and returns) nothing.
        let address = format!("web-{accept_gzip}@example.com");
        let message = set_contact_returning(&user, &address).encode_to_vec();
        let mut headers = vec![
            ("authorization", bearer.as_str()),
            ("grpc-encoding", "gzip"),
        ];
        if accept_gzip {
            headers.push(("grpc-accept-encoding", "gzip"));
        }
        let answer = web_call(
            &http1(),
            &url,
            "application/grpc-web+proto",
            &headers,
            frame(true, &gzip(&message)),
        )
        .await;
        assert_eq!(answer.http_status, 200);
        let reply = SetContactEmailResponse::decode(answer.message().as_slice()).unwrap();
        assert!(reply.verification_code.is_some(), "{answer:?}");
        let compressed = answer.messages[0].0 == 1;
        assert_eq!(
            compressed, accept_gzip,
            "the answer is compressed exactly when asked: {answer:?}"
        );
        if accept_gzip {
            assert_eq!(header(&answer.headers, "grpc-encoding"), "gzip");
        }
    }
}

// ---- gRPC-Web text -----------------------------------------------------------------------------

/// `application/grpc-web-text` is answered in base64 text (without `Accept`, or with one that
/// names no gRPC-Web type), unless `Accept` asks for binary; `application/grpc-web` and
/// `+proto` stay binary; all the same over HTTP/1.1 and HTTP/2.
#[tokio::test]
async fn grpc_web_text_is_answered_in_text_over_http1_and_http2() {
    let env = TestEnv::builder().without_worker().start().await;
    let bearer = format!("Bearer {}", env.token());
    let user = create_user(&env).await;
    let url = format!("{}/{SERVICE}/SetContactEmail", env.api_url());
    let text = "application/grpc-web-text";
    let cases: [(&str, Option<&str>, bool); 6] = [
        (text, None, true),
        (text, Some("*/*"), true),
        ("application/grpc-web-text+proto", None, true),
        (text, Some("application/grpc-web+proto"), false),
        ("application/grpc-web", None, false),
        ("application/grpc-web+proto", None, false),
    ];
    for (client, version) in [
        (http1(), reqwest::Version::HTTP_11),
        (http2(), reqwest::Version::HTTP_2),
    ] {
        for (i, (content_type, accept, answer_in_text)) in cases.into_iter().enumerate() {
            let what = format!("{version:?} {content_type} accept {accept:?}");
            // A new address each time: setting the same one again returns no code.
            let address = format!(
                "text-{i}-{}@example.com",
                version == reqwest::Version::HTTP_2
            );
            let message = set_contact_returning(&user, &address).encode_to_vec();
            let mut headers = vec![("authorization", bearer.as_str())];
            if let Some(accept) = accept {
                headers.push(("accept", accept));
            }
            let answer = web_call(
                &client,
                &url,
                content_type,
                &headers,
                frame(false, &message),
            )
            .await;
            assert_eq!(answer.version, version, "{what}");
            assert_eq!(answer.http_status, 200, "{what}: {answer:?}");
            if answer_in_text {
                assert!(
                    answer
                        .content_type()
                        .starts_with("application/grpc-web-text"),
                    "{what}: content type {}",
                    answer.content_type()
                );
            } else {
                assert!(
                    answer.content_type() == "application/grpc-web+proto"
                        || answer.content_type() == "application/grpc-web",
                    "{what}: content type {}",
                    answer.content_type()
                );
            }
            let reply = SetContactEmailResponse::decode(answer.message().as_slice()).unwrap();
            assert!(reply.verification_code.is_some(), "{what}");
        }
    }
}

// ---- CORS --------------------------------------------------------------------------------------

/// Sends a preflight for `method` `path` from `origin` asking for `headers`, without a token.
async fn preflight(
    env: &TestEnv,
    path: &str,
    origin: &str,
    method: &str,
    headers: &str,
) -> reqwest::Response {
    http1()
        .request(reqwest::Method::OPTIONS, format!("{}{path}", env.api_url()))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header("access-control-request-headers", headers)
        .send()
        .await
        .expect("a preflight answer")
}

#[track_caller]
fn assert_allowed_preflight(response: &reqwest::Response, origin: &str, method: &str, what: &str) {
    assert_eq!(response.status(), 204, "{what}: {response:?}");
    let h = response.headers();
    assert_eq!(header(h, "access-control-allow-origin"), origin, "{what}");
    assert!(
        !h.contains_key("access-control-allow-credentials"),
        "{what}: credentials are never allowed"
    );
    let methods = header_list(h, "access-control-allow-methods");
    assert!(
        methods.contains(&method.to_ascii_lowercase()),
        "{what}: {methods:?}"
    );
    let allowed = header_list(h, "access-control-allow-headers");
    for needed in [
        "authorization",
        "content-type",
        "x-grpc-web",
        "x-user-agent",
        "grpc-timeout",
        "x-request-id",
        "traceparent",
    ] {
        assert!(
            allowed.iter().any(|a| a == needed),
            "{what}: {needed} not allowed in {allowed:?}"
        );
    }
}

#[track_caller]
fn assert_exposed(headers: &HeaderMap, origin: &str, what: &str) {
    assert_eq!(
        header(headers, "access-control-allow-origin"),
        origin,
        "{what}"
    );
    assert!(
        !headers.contains_key("access-control-allow-credentials"),
        "{what}"
    );
    let exposed = header_list(headers, "access-control-expose-headers");
    for needed in [
        "grpc-status",
        "grpc-message",
        "grpc-status-details-bin",
        "x-request-id",
    ] {
        assert!(
            exposed.iter().any(|e| e == needed),
            "{what}: {needed} not exposed in {exposed:?}"
        );
    }
}

/// With `CORS_ALLOWED_ORIGINS` a list: a preflight from a listed origin (written differently
/// in the list than a browser writes it) is 204 with the SPEC's headers, before any token
/// check, on a gRPC-Web path and on JSON paths; answers carry the allowed origin and the
/// exposed headers, errors included; an origin not in the list gets no CORS header at all.
#[tokio::test]
async fn cors_with_a_list_of_origins() {
    let env = TestEnv::builder()
        .without_worker()
        .env(
            "CORS_ALLOWED_ORIGINS",
            "https://App.Example/, http://localhost:3000",
        )
        .start()
        .await;
    let user = create_user(&env).await;
    let grpc_path = format!("/{SERVICE}/SetContactEmail");
    let web_headers = "content-type,x-grpc-web,x-user-agent,authorization,grpc-timeout";
    let json_headers = "authorization,content-type,x-request-id,traceparent";
    let preflights = [
        (grpc_path.clone(), "POST", web_headers),
        (format!("/v3alpha/users/{user}/email"), "PUT", json_headers),
        ("/v3alpha/users".to_owned(), "POST", json_headers),
        (
            format!("/resources/v3alpha/users/{user}/email/_resend"),
            "POST",
            json_headers,
        ),
    ];
    for (path, method, headers) in &preflights {
        for origin in [APP, "http://localhost:3000"] {
            let response = preflight(&env, path, origin, method, headers).await;
            assert_allowed_preflight(&response, origin, method, &format!("{origin} {path}"));
            assert!(
                header_list(response.headers(), "vary").contains(&"origin".to_owned()),
                "{path}: the answer varies with Origin"
            );
        }
        let refused = preflight(&env, path, EVIL, method, headers).await;
        assert_eq!(
            cors_headers(refused.headers()),
            Vec::<String>::new(),
            "{path}: an origin not in the list gets no CORS header ({})",
            refused.status()
        );
    }

    // Actual gRPC-Web calls from the allowed origin: a success, and a trailers-only error
    // (no token) whose status the browser must be able to read.
    let url = format!("{}{grpc_path}", env.api_url());
    let message = set_contact_returning(&user, "cors@example.com").encode_to_vec();
    let bearer = format!("Bearer {}", env.token());
    let ok = web_call(
        &http1(),
        &url,
        "application/grpc-web+proto",
        &[("origin", APP), ("authorization", &bearer)],
        frame(false, &message),
    )
    .await;
    assert_eq!(ok.grpc_status(), "0");
    assert_exposed(&ok.headers, APP, "gRPC-Web success");
    let unauthenticated = web_call(
        &http1(),
        &url,
        "application/grpc-web+proto",
        &[("origin", APP)],
        frame(false, &message),
    )
    .await;
    assert_eq!(unauthenticated.grpc_status(), "16");
    assert_exposed(&unauthenticated.headers, APP, "gRPC-Web error");
    let refused = web_call(
        &http1(),
        &url,
        "application/grpc-web+proto",
        &[("origin", EVIL), ("authorization", &bearer)],
        frame(false, &message),
    )
    .await;
    assert_eq!(cors_headers(&refused.headers), Vec::<String>::new());

    // The JSON API alike.
    let path = format!("/v3alpha/users/{user}");
    let got = env.api().with_header("origin", APP).get(&path).await;
    assert_eq!(got.status, 200);
    assert_exposed(&got.headers, APP, "JSON success");
    let denied = env
        .api()
        .without_token()
        .with_header("origin", APP)
        .get(&path)
        .await;
    assert_eq!(denied.status, 401);
    assert_exposed(&denied.headers, APP, "JSON error");
    let refused = env.api().with_header("origin", EVIL).get(&path).await;
    assert_eq!(
        refused.status, 200,
        "the server answers; the browser hides it"
    );
    assert_eq!(cors_headers(&refused.headers), Vec::<String>::new());
}

/// Without `CORS_ALLOWED_ORIGINS` any origin may call (`*`), still without credentials.
#[tokio::test]
async fn cors_allows_any_origin_by_default() {
    let env = TestEnv::builder()
        .without_worker()
        .remove_env("CORS_ALLOWED_ORIGINS")
        .start()
        .await;
    let origin = "https://anywhere.example";
    let response = preflight(
        &env,
        &format!("/{SERVICE}/SetContactEmail"),
        origin,
        "POST",
        "content-type,x-grpc-web,x-user-agent,authorization,grpc-timeout",
    )
    .await;
    assert_allowed_preflight(&response, "*", "POST", "default");
    let got = env
        .api()
        .with_header("origin", origin)
        .get("/v3alpha/users/1")
        .await;
    assert_eq!(got.status, 404);
    assert_exposed(&got.headers, "*", "default, JSON error");
}

/// A `CORS_ALLOWED_ORIGINS` that is not `*` or a list of origins stops `api serve` at start:
/// exit 2, one line naming the variable, nothing on stdout.
#[tokio::test]
async fn a_bad_cors_allowed_origins_stops_api_serve() {
    let env = TestEnv::builder()
        .without_bootstrap()
        .without_api()
        .without_worker()
        .start()
        .await;
    for (bad, by_flag) in [
        ("app.example", false),
        ("https://*.example", false),
        ("https://app.example/ui", false),
        ("*,https://app.example", false),
        ("ftp://app.example", true),
    ] {
        let mut cmd = env.command("api");
        cmd.arg("serve").env("API_ADDR", "127.0.0.1:0");
        if by_flag {
            cmd.arg("--cors-allowed-origins").arg(bad);
        } else {
            cmd.env("CORS_ALLOWED_ORIGINS", bad);
        }
        let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("api serve with CORS_ALLOWED_ORIGINS={bad:?} kept running"))
            .expect("run api serve");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{bad:?}: stdout {:?}", out.stdout);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{bad:?}: one line: {stderr}");
        assert!(
            lines[0].contains("CORS_ALLOWED_ORIGINS"),
            "{bad:?}: the line names the variable: {stderr}"
        );
    }
}

// ---- health ------------------------------------------------------------------------------------

async fn check(client: &mut HealthClient<Channel>, service: &str) -> Result<i32, tonic::Code> {
    client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
        .map_err(|s| s.code())
}

/// `grpc.health.v1.Health` answers without a token, over gRPC and gRPC-Web, for the server
/// (`""`) and the users service: SERVING while PostgreSQL answers, NOT_SERVING when the
/// database is cut off (as `/readyz`, and a `Watch` stream sees the change), SERVING again
/// once it is back, NOT_SERVING from the shutdown on (open `Watch` streams then end, so they
/// do not hold the shutdown). An unknown service is NOT_FOUND.
#[tokio::test]
async fn health_follows_readiness_without_a_token() {
    let mut env = TestEnv::builder()
        .without_worker()
        .database_via_proxy()
        .start()
        .await;
    let serving = ServingStatus::Serving as i32;
    let not_serving = ServingStatus::NotServing as i32;
    let mut client = HealthClient::new(channel(&env).await);
    for service in ["", SERVICE] {
        assert_eq!(
            check(&mut client, service).await,
            Ok(serving),
            "{service:?}"
        );
    }
    assert_eq!(
        check(&mut client, "no.such.Service").await,
        Err(tonic::Code::NotFound)
    );
    let web = web_call(
        &http1(),
        &format!("{}/{HEALTH}/Check", env.api_url()),
        "application/grpc-web+proto",
        &[],
        frame(false, &HealthCheckRequest::default().encode_to_vec()),
    )
    .await;
    assert_eq!(
        HealthCheckResponse::decode(web.message().as_slice())
            .unwrap()
            .status,
        serving,
        "over gRPC-Web"
    );
    let mut watch = client
        .watch(HealthCheckRequest {
            service: SERVICE.into(),
        })
        .await
        .expect("watch without a token")
        .into_inner();
    let first = watch.message().await.unwrap().expect("a first status");
    assert_eq!(first.status, serving);
    assert!(
        tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .is_err(),
        "a watcher hears nothing while nothing changes"
    );

    let proxy = env.database_proxy().clone();
    proxy.stop().await;
    let shared = client.clone();
    let client_ref = &shared;
    eventually(
        "health to report NOT_SERVING",
        Duration::from_secs(20),
        || async move {
            let mut c = client_ref.clone();
            (check(&mut c, "").await == Ok(not_serving)).then_some(())
        },
    )
    .await;
    assert_eq!(check(&mut client, SERVICE).await, Ok(not_serving));
    let changed = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("the watch stream tells the change")
        .unwrap()
        .expect("a status");
    assert_eq!(changed.status, not_serving);
    let ready = env.api().without_token().get("/readyz").await;
    assert_eq!(ready.status, 503, "/readyz agrees");

    proxy.start().await;
    eventually(
        "health to report SERVING again",
        Duration::from_secs(30),
        || async move {
            let mut c = client_ref.clone();
            (check(&mut c, "").await == Ok(serving)).then_some(())
        },
    )
    .await;
    assert_eq!(check(&mut client, SERVICE).await, Ok(serving));

    // The shutdown says NOT_SERVING to watchers and ends their streams, so an open Watch
    // does not hold the drain of requests in flight.
    let mut watch = client
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status, serving);
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Ok(Some(m)) = watch.message().await {
            seen.push(m.status);
        }
        seen
    });
    let exit = env.terminate(Role::Api).await;
    assert!(exit.success(), "api exit: {exit}");
    let seen = tokio::time::timeout(Duration::from_secs(10), watcher)
        .await
        .expect("the watch stream ends with the server")
        .unwrap();
    assert_eq!(
        seen,
        [not_serving],
        "what the watcher saw during the shutdown"
    );
}
