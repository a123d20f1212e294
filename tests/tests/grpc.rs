//! gRPC and gRPC-Web (SPEC 4), from outside: a client generated from the project's own
//! `.proto` files (over HTTP/2 without TLS, as gRPC clients connect) and raw gRPC-Web
//! requests over HTTP/1.1 call every `ZITADELUsers` RPC on the JSON API's port: success,
//! validation error (3), unknown user (5), no token (16) and no permission (7), each error
//! with its `zitadel.v1.ErrorDetail`. Server reflection lists the service, and the same case
//! gives the same answer over JSON and over gRPC.

use prost::Message;
use serde_json::{Value, json};
use tests::grpc::web;
use tests::grpc::{ERROR_DETAIL_TYPE_URL, SERVICE, channel, rpc_status, users_client, with_token};
use tests::{TestEnv, scenario};
use tonic::transport::Channel;

use tests::grpc::proto::zitadel::object::v3alpha::{Organization, OwnerType, organization};
use tests::grpc::proto::zitadel::resources::object::v3alpha::Details;
use tests::grpc::proto::zitadel::resources::user::v3alpha::zitadel_users_client::ZitadelUsersClient;
use tests::grpc::proto::zitadel::resources::user::v3alpha::*;
use tests::grpc::proto::zitadel::v1::ErrorDetail;

/// What `grpcurl list` shows, over either reflection protocol.
const REFLECTED_SERVICES: [&str; 4] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    SERVICE,
];

// ---- one call, over either transport --------------------------------------------------------

/// A request of one of the six RPCs.
#[derive(Debug, Clone)]
enum Rpc {
    SetContactEmail(SetContactEmailRequest),
    VerifyContactEmail(VerifyContactEmailRequest),
    ResendContactEmailCode(ResendContactEmailCodeRequest),
    AddOtpEmail(AddOtpEmailAuthenticatorRequest),
    VerifyOtpEmail(VerifyOtpEmailRegistrationRequest),
    RemoveOtpEmail(RemoveOtpEmailAuthenticatorRequest),
}

/// A successful answer of any RPC, with the fields the RPC has.
#[derive(Debug, Clone, PartialEq)]
struct Reply {
    details: Details,
    verification_code: Option<String>,
    otp_email_id: Option<String>,
}

/// A failed call: the status and the one `ErrorDetail` of its details.
#[derive(Debug, Clone, PartialEq)]
struct Failure {
    code: i32,
    message: String,
    id: String,
    detail_message: String,
}

type Answer = Result<Reply, Failure>;

impl Rpc {
    fn method(&self) -> &'static str {
        match self {
            Rpc::SetContactEmail(_) => "SetContactEmail",
            Rpc::VerifyContactEmail(_) => "VerifyContactEmail",
            Rpc::ResendContactEmailCode(_) => "ResendContactEmailCode",
            Rpc::AddOtpEmail(_) => "AddOTPEmailAuthenticator",
            Rpc::VerifyOtpEmail(_) => "VerifyOTPEmailRegistration",
            Rpc::RemoveOtpEmail(_) => "RemoveOTPEmailAuthenticator",
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            Rpc::SetContactEmail(r) => r.encode_to_vec(),
            Rpc::VerifyContactEmail(r) => r.encode_to_vec(),
            Rpc::ResendContactEmailCode(r) => r.encode_to_vec(),
            Rpc::AddOtpEmail(r) => r.encode_to_vec(),
            Rpc::VerifyOtpEmail(r) => r.encode_to_vec(),
            Rpc::RemoveOtpEmail(r) => r.encode_to_vec(),
        }
    }

    /// The response message of this RPC, decoded from `bytes`.
    fn decode_reply(&self, bytes: &[u8]) -> Reply {
        fn reply(details: Option<Details>) -> Reply {
            Reply {
                details: details.expect("details in the answer"),
                verification_code: None,
                otp_email_id: None,
            }
        }
        match self {
            Rpc::SetContactEmail(_) => {
                let r = SetContactEmailResponse::decode(bytes).unwrap();
                Reply {
                    verification_code: r.verification_code,
                    ..reply(r.details)
                }
            }
            Rpc::VerifyContactEmail(_) => {
                reply(VerifyContactEmailResponse::decode(bytes).unwrap().details)
            }
            Rpc::ResendContactEmailCode(_) => {
                let r = ResendContactEmailCodeResponse::decode(bytes).unwrap();
                Reply {
                    verification_code: r.verification_code,
                    ..reply(r.details)
                }
            }
            Rpc::AddOtpEmail(_) => {
                let r = AddOtpEmailAuthenticatorResponse::decode(bytes).unwrap();
                Reply {
                    verification_code: r.verification_code,
                    otp_email_id: Some(r.otp_email_id),
                    ..reply(r.details)
                }
            }
            Rpc::VerifyOtpEmail(_) => reply(
                VerifyOtpEmailRegistrationResponse::decode(bytes)
                    .unwrap()
                    .details,
            ),
            Rpc::RemoveOtpEmail(_) => reply(
                RemoveOtpEmailAuthenticatorResponse::decode(bytes)
                    .unwrap()
                    .details,
            ),
        }
    }
}

/// How a test reaches the service.
#[derive(Clone)]
enum Transport {
    /// The generated client over HTTP/2.
    Grpc(ZitadelUsersClient<Channel>),
    /// Hand-made gRPC-Web requests over HTTP/1.1.
    Web {
        client: reqwest::Client,
        base: String,
    },
}

impl Transport {
    async fn grpc(env: &TestEnv) -> Transport {
        Transport::Grpc(users_client(env).await)
    }

    fn web(env: &TestEnv) -> Transport {
        Transport::Web {
            client: web::http1(),
            base: env.api_url(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Transport::Grpc(_) => "gRPC",
            Transport::Web { .. } => "gRPC-Web",
        }
    }

    /// Calls `rpc`, with `authorization: Bearer <token>` when a token is given.
    async fn call(&self, rpc: &Rpc, token: Option<&str>) -> Answer {
        match self {
            Transport::Grpc(client) => grpc_call(client.clone(), rpc, token).await,
            Transport::Web { client, base } => web_call(client, base, rpc, token).await,
        }
    }
}

async fn grpc_call(
    mut client: ZitadelUsersClient<Channel>,
    rpc: &Rpc,
    token: Option<&str>,
) -> Answer {
    let reply = |details, verification_code, otp_email_id| Reply {
        details: details_of(details),
        verification_code,
        otp_email_id,
    };
    let result = match rpc.clone() {
        Rpc::SetContactEmail(r) => client
            .set_contact_email(with_token(r, token))
            .await
            .map(|a| a.into_inner())
            .map(|a| reply(a.details, a.verification_code, None)),
        Rpc::VerifyContactEmail(r) => client
            .verify_contact_email(with_token(r, token))
            .await
            .map(|a| reply(a.into_inner().details, None, None)),
        Rpc::ResendContactEmailCode(r) => client
            .resend_contact_email_code(with_token(r, token))
            .await
            .map(|a| a.into_inner())
            .map(|a| reply(a.details, a.verification_code, None)),
        Rpc::AddOtpEmail(r) => client
            .add_otp_email_authenticator(with_token(r, token))
            .await
            .map(|a| a.into_inner())
            .map(|a| reply(a.details, a.verification_code, Some(a.otp_email_id))),
        Rpc::VerifyOtpEmail(r) => client
            .verify_otp_email_registration(with_token(r, token))
            .await
            .map(|a| reply(a.into_inner().details, None, None)),
        Rpc::RemoveOtpEmail(r) => client
            .remove_otp_email_authenticator(with_token(r, token))
            .await
            .map(|a| reply(a.into_inner().details, None, None)),
    };
    result.map_err(|status| failure(status.code() as i32, status.message(), status.details()))
}

fn details_of(details: Option<Details>) -> Details {
    details.expect("details in the answer")
}

/// A failure from its status code, message and `grpc-status-details-bin` payload; checks the
/// payload repeats code and message and holds exactly one ErrorDetail.
fn failure(code: i32, message: &str, details: &[u8]) -> Failure {
    let rpc = rpc_status(details).expect("google.rpc.Status in the status details");
    assert_eq!(rpc.code, code, "code in the status details");
    assert_eq!(rpc.message, message, "message in the status details");
    assert_eq!(rpc.details.len(), 1, "one detail: {rpc:?}");
    assert_eq!(rpc.details[0].type_url, ERROR_DETAIL_TYPE_URL);
    let detail = ErrorDetail::decode(rpc.details[0].value.as_slice()).expect("an ErrorDetail");
    assert_eq!(
        message,
        format!("{} ({})", detail.message, detail.id),
        "the message is the detail's message and id, as in JSON"
    );
    Failure {
        code,
        message: message.to_owned(),
        id: detail.id,
        detail_message: detail.message,
    }
}

// ---- gRPC-Web by hand ------------------------------------------------------------------------

/// One gRPC-Web call over HTTP/1.1: a POST with `application/grpc-web+proto`, the message in
/// one data frame (flag 0, 4-byte big-endian length), and the status either in the response
/// headers (trailers-only answer) or in the trailer frame (flag 0x80) after the message.
async fn web_call(client: &reqwest::Client, base: &str, rpc: &Rpc, token: Option<&str>) -> Answer {
    let bearer = token.map(|token| format!("Bearer {token}"));
    let mut headers = vec![("accept", "application/grpc-web+proto")];
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer));
    }
    let answer = web::web_call(
        client,
        &format!("{base}/{SERVICE}/{}", rpc.method()),
        "application/grpc-web+proto",
        &headers,
        web::frame(false, &rpc.encode()),
    )
    .await;
    assert_eq!(answer.version, reqwest::Version::HTTP_11);
    assert_eq!(answer.http_status, 200, "gRPC-Web answers are HTTP 200");
    assert!(
        answer.headers.contains_key("x-request-id"),
        "the request-id middleware covers gRPC-Web too"
    );
    assert_eq!(answer.content_type(), "application/grpc-web+proto");
    let code: i32 = answer
        .status_field("grpc-status")
        .expect("grpc-status in the headers or the trailer frame")
        .parse()
        .unwrap();
    if code == 0 {
        let (_, data) = answer.messages.last().expect("a message frame");
        return Ok(rpc.decode_reply(data));
    }
    Err(failure(
        code,
        &answer.grpc_message(),
        &answer.status_details(),
    ))
}

// ---- request builders --------------------------------------------------------------------------

fn set_email(address: &str, verification: Option<set_email::Verification>) -> Option<SetEmail> {
    Some(SetEmail {
        address: address.into(),
        verification,
    })
}

fn return_code() -> Option<set_email::Verification> {
    Some(set_email::Verification::ReturnCode(
        ReturnEmailVerificationCode {},
    ))
}

fn set_contact(user: &str, email: Option<SetEmail>) -> Rpc {
    Rpc::SetContactEmail(SetContactEmailRequest {
        id: user.into(),
        email,
        ..Default::default()
    })
}

fn verify_contact(user: &str, code: &str) -> Rpc {
    Rpc::VerifyContactEmail(VerifyContactEmailRequest {
        id: user.into(),
        verification_code: code.into(),
        ..Default::default()
    })
}

fn resend_contact(
    user: &str,
    verification: Option<resend_contact_email_code_request::Verification>,
) -> Rpc {
    Rpc::ResendContactEmailCode(ResendContactEmailCodeRequest {
        id: user.into(),
        verification,
        ..Default::default()
    })
}

fn resend_returning() -> Option<resend_contact_email_code_request::Verification> {
    Some(resend_contact_email_code_request::Verification::ReturnCode(
        ReturnEmailVerificationCode {},
    ))
}

fn add_otp(user: &str, email: Option<SetEmail>) -> Rpc {
    Rpc::AddOtpEmail(AddOtpEmailAuthenticatorRequest {
        id: user.into(),
        email,
        ..Default::default()
    })
}

fn verify_otp(user: &str, otp: &str, code: &str) -> Rpc {
    Rpc::VerifyOtpEmail(VerifyOtpEmailRegistrationRequest {
        id: user.into(),
        otp_email_id: otp.into(),
        code: code.into(),
        ..Default::default()
    })
}

fn remove_otp(user: &str, otp: &str) -> Rpc {
    Rpc::RemoveOtpEmail(RemoveOtpEmailAuthenticatorRequest {
        id: user.into(),
        otp_email_id: otp.into(),
        ..Default::default()
    })
}

// ---- helpers over JSON -------------------------------------------------------------------------

/// A new user without an email, made over JSON with the admin token.
async fn create_user(env: &TestEnv) -> String {
    scenario::create_user(&env.api(), json!({})).await
}

/// The user as `GET /v3alpha/users/{user}` shows it.
async fn get_user(env: &TestEnv, user: &str) -> Value {
    scenario::get_user(&env.api(), user).await
}

fn ok(answer: Answer, what: &str) -> Reply {
    answer.unwrap_or_else(|f| panic!("{what}: expected success, got {f:?}"))
}

#[track_caller]
fn assert_failure(answer: &Answer, code: i32, id: &str, what: &str) {
    match answer {
        Ok(reply) => panic!("{what}: expected code {code} {id}, got success {reply:?}"),
        Err(f) => {
            assert_eq!((f.code, f.id.as_str()), (code, id), "{what}: {f:?}");
        }
    }
}

/// Family-B details of `user`, owned by `org`, changed just now.
#[track_caller]
fn assert_details(details: &Details, user: &str, org: &str) {
    assert_eq!(details.id, user);
    let owner = details.owner.as_ref().expect("owner");
    assert_eq!(owner.r#type, OwnerType::Org as i32);
    assert_eq!(owner.id, org);
    let changed = details.changed.as_ref().expect("changed");
    let age = chrono::Utc::now().timestamp() - changed.seconds;
    assert!((0..120).contains(&age), "changed {changed:?} is not recent");
    assert_eq!(
        changed.nanos % 1_000_000,
        0,
        "millisecond precision as in JSON"
    );
}

// ---- the tests ---------------------------------------------------------------------------------

/// Every RPC succeeds over gRPC and over gRPC-Web (HTTP/1.1), each on its own user: set with
/// a returned code, verify it, set again and resend, add an OTP Email authenticator, verify it,
/// add a second one and remove it. The state is then visible over JSON.
#[tokio::test]
async fn every_rpc_succeeds_over_grpc_and_grpc_web() {
    let env = TestEnv::builder().without_worker().start().await;
    let org = env.bootstrap().org_id.clone();
    let token = env.token().to_owned();
    for transport in [Transport::grpc(&env).await, Transport::web(&env)] {
        let name = transport.name();
        let user = create_user(&env).await;
        let call = |rpc: Rpc| {
            let transport = transport.clone();
            let token = token.clone();
            async move { transport.call(&rpc, Some(&token)).await }
        };

        let set = ok(
            call(set_contact(
                &user,
                set_email("mini@mouse.com", return_code()),
            ))
            .await,
            name,
        );
        assert_details(&set.details, &user, &org);
        let code = set.verification_code.expect("returned code");
        assert_eq!(code.len(), 6);
        let verified = ok(call(verify_contact(&user, &code)).await, name);
        assert_details(&verified.details, &user, &org);
        assert_eq!(
            get_user(&env, &user).await["contact"]["email"],
            json!({"address": "mini@mouse.com", "isVerified": true}),
            "{name}"
        );

        // A new address with the default choice (mail it): no code in the answer.
        let mailed = ok(
            call(set_contact(&user, set_email("minnie@mouse.com", None))).await,
            name,
        );
        assert_eq!(mailed.verification_code, None, "{name}");
        let resent = ok(call(resend_contact(&user, resend_returning())).await, name);
        assert_details(&resent.details, &user, &org);
        let code = resent.verification_code.expect("resent code");
        ok(call(verify_contact(&user, &code)).await, name);

        let added = ok(
            call(add_otp(&user, set_email("otp@mouse.com", return_code()))).await,
            name,
        );
        assert_details(&added.details, &user, &org);
        let otp = added.otp_email_id.clone().expect("otpEmailId");
        assert!(!otp.is_empty(), "{name}");
        let otp_code = added.verification_code.expect("returned OTP code");
        assert_eq!(otp_code.len(), 8);
        ok(call(verify_otp(&user, &otp, &otp_code)).await, name);

        let second = ok(
            call(add_otp(
                &user,
                set_email(
                    "otp2@mouse.com",
                    Some(set_email::Verification::IsVerified(true)),
                ),
            ))
            .await,
            name,
        );
        let second_id = second.otp_email_id.expect("otpEmailId");
        assert_eq!(second.verification_code, None);
        let removed = ok(call(remove_otp(&user, &second_id)).await, name);
        assert_details(&removed.details, &user, &org);

        let got = get_user(&env, &user).await;
        assert_eq!(got["contact"]["email"]["isVerified"], true, "{name}");
        assert_eq!(
            got["otpEmail"],
            json!([{"otpEmailId": otp, "address": "otp@mouse.com", "isVerified": true}]),
            "{name}"
        );
    }
}

/// The four errors of every RPC, over gRPC and gRPC-Web alike: validation (3), unknown user
/// (5, with the call's id), no or unknown token (16, even when the message is also invalid:
/// the token is checked first), and a token without `user.write` (7).
#[tokio::test]
async fn every_rpc_fails_alike_over_grpc_and_grpc_web() {
    let env = TestEnv::builder().without_worker().start().await;
    let admin = env.token().to_owned();
    let reader = env
        .create_token(&[
            "--instance",
            &env.bootstrap().instance_id,
            "--permission",
            "user.read",
        ])
        .await;
    let user = create_user(&env).await;
    // A pending contact email code and a pending OTP Email authenticator, so that only the
    // permission stands between the reader and success.
    let grpc = Transport::grpc(&env).await;
    ok(
        grpc.call(
            &set_contact(&user, set_email("mini@mouse.com", return_code())),
            Some(&admin),
        )
        .await,
        "set",
    );
    let otp = ok(
        grpc.call(
            &add_otp(&user, set_email("otp@mouse.com", return_code())),
            Some(&admin),
        )
        .await,
        "add",
    )
    .otp_email_id
    .unwrap();
    let unknown = "1";
    let bad_template = Some(resend_contact_email_code_request::Verification::SendCode(
        SendEmailVerificationCode {
            url_template: Some("not a url".into()),
        },
    ));

    // (what, invalid request, unknown-user request and its id, valid request)
    let cases: Vec<(&str, Rpc, Rpc, &str, Rpc)> = vec![
        (
            "SetContactEmail",
            set_contact(&user, set_email("not an address", None)),
            set_contact(unknown, set_email("a@b.c", None)),
            "COMMAND-nJ0TQFuRmP",
            set_contact(&user, set_email("new@mouse.com", return_code())),
        ),
        (
            "VerifyContactEmail",
            verify_contact(&user, ""),
            verify_contact(unknown, "ABCDEF"),
            "COMMAND-qbGyMPvjvj",
            verify_contact(&user, "ABCDEF"),
        ),
        (
            "ResendContactEmailCode",
            resend_contact(&user, bad_template),
            resend_contact(unknown, None),
            "COMMAND-EajeF6ypOV",
            resend_contact(&user, resend_returning()),
        ),
        (
            "AddOTPEmailAuthenticator",
            add_otp(&user, set_email("", None)),
            add_otp(unknown, set_email("a@b.c", None)),
            "COMMAND-nJ0TQFuRmP",
            add_otp(&user, set_email("otp2@mouse.com", return_code())),
        ),
        (
            "VerifyOTPEmailRegistration",
            verify_otp(&user, &otp, &"9".repeat(201)),
            verify_otp(unknown, &otp, "12345678"),
            "COMMAND-nJ0TQFuRmP",
            verify_otp(&user, &otp, "12345678"),
        ),
        (
            "RemoveOTPEmailAuthenticator",
            remove_otp(&user, ""),
            remove_otp(unknown, &otp),
            "COMMAND-nJ0TQFuRmP",
            remove_otp(&user, &otp),
        ),
    ];

    for transport in [grpc.clone(), Transport::web(&env)] {
        for (what, invalid, unknown_user, not_found_id, valid) in &cases {
            let what = format!("{} {what}", transport.name());
            assert_eq!(invalid.method(), valid.method());

            let answer = transport.call(invalid, Some(&admin)).await;
            assert!(
                matches!(&answer, Err(f) if f.code == 3),
                "{what}, invalid: {answer:?}"
            );

            let answer = transport.call(unknown_user, Some(&admin)).await;
            assert_failure(&answer, 5, not_found_id, &format!("{what}, unknown user"));
            assert_eq!(
                answer.unwrap_err().message,
                format!("User could not be found ({not_found_id})")
            );

            for (token, label) in [(None, "no token"), (Some("not-a-token"), "unknown token")] {
                for rpc in [invalid, valid] {
                    let answer = transport.call(rpc, token).await;
                    assert_failure(&answer, 16, "AUTH-7fs1e", &format!("{what}, {label}"));
                }
            }

            let answer = transport.call(valid, Some(&reader)).await;
            assert_failure(
                &answer,
                7,
                "AUTHZ-HKJD33",
                &format!("{what}, read-only token"),
            );
            let err = answer.unwrap_err();
            assert_eq!(err.detail_message, "No matching permissions found");
        }
    }

    // Nothing above changed the user: the reader was refused, the rest never got that far.
    let got = get_user(&env, &user).await;
    assert_eq!(got["contact"]["email"]["address"], "mini@mouse.com");
    assert_eq!(got["otpEmail"].as_array().unwrap().len(), 1);
}

/// The same case gives the same answer over JSON and over gRPC: errors have the same code,
/// message and ErrorDetail (the JSON body of SPEC 3.6); an unchanged address gives the same
/// family-B details; and an organization given as `organization` works the same way.
#[tokio::test]
async fn the_same_case_answers_the_same_over_json_and_grpc() {
    let env = TestEnv::builder().without_worker().start().await;
    let api = env.api();
    let grpc = Transport::grpc(&env).await;
    let admin = env.token().to_owned();
    let reader = env
        .create_token(&[
            "--instance",
            &env.bootstrap().instance_id,
            "--permission",
            "user.read",
        ])
        .await;
    let user = create_user(&env).await;
    api.put(
        &format!("/v3alpha/users/{user}/email"),
        json!({"email": {"address": "mini@mouse.com", "returnCode": {}}}),
    )
    .await
    .expect_status(200);
    let otp = api
        .post(
            &format!("/v3alpha/users/{user}/otp_email"),
            json!({"email": {"address": "otp@mouse.com", "returnCode": {}}}),
        )
        .await
        .expect_status(200)
        .json["otpEmailId"]
        .as_str()
        .unwrap()
        .to_owned();

    struct Case {
        what: &'static str,
        token: Option<String>,
        method: &'static str,
        path: String,
        body: Value,
        rpc: Rpc,
    }
    let a = format!("/v3alpha/users/{user}");
    let cases = vec![
        Case {
            what: "invalid address",
            token: Some(admin.clone()),
            method: "PUT",
            path: format!("{a}/email"),
            body: json!({"email": {"address": "Mini <mini@mouse.com>"}}),
            rpc: set_contact(&user, set_email("Mini <mini@mouse.com>", None)),
        },
        Case {
            what: "isVerified false",
            token: Some(admin.clone()),
            method: "PUT",
            path: format!("{a}/email"),
            body: json!({"email": {"address": "a@b.c", "isVerified": false}}),
            rpc: set_contact(
                &user,
                set_email("a@b.c", Some(set_email::Verification::IsVerified(false))),
            ),
        },
        Case {
            what: "bad template",
            token: Some(admin.clone()),
            method: "POST",
            path: format!("{a}/email/resend"),
            body: json!({"sendCode": {"urlTemplate": "https://x.y/{{Nope}}"}}),
            rpc: resend_contact(
                &user,
                Some(resend_contact_email_code_request::Verification::SendCode(
                    SendEmailVerificationCode {
                        url_template: Some("https://x.y/{{Nope}}".into()),
                    },
                )),
            ),
        },
        Case {
            what: "code too long",
            token: Some(admin.clone()),
            method: "POST",
            path: format!("{a}/email/verify"),
            body: json!({"verificationCode": "X".repeat(21)}),
            rpc: verify_contact(&user, &"X".repeat(21)),
        },
        Case {
            what: "unknown user",
            token: Some(admin.clone()),
            method: "POST",
            path: "/v3alpha/users/1/email/resend".into(),
            body: json!({}),
            rpc: resend_contact("1", None),
        },
        Case {
            what: "unknown OTP Email authenticator",
            token: Some(admin.clone()),
            method: "DELETE",
            path: format!("{a}/otp_email/1"),
            body: Value::Null,
            rpc: remove_otp(&user, "1"),
        },
        Case {
            what: "user in another organization",
            token: Some(admin.clone()),
            method: "PUT",
            path: format!("{a}/email"),
            body: json!({"email": {"address": "a@b.c"}, "organization": {"orgDomain": "elsewhere.localhost"}}),
            rpc: Rpc::SetContactEmail(SetContactEmailRequest {
                organization: Some(Organization {
                    property: Some(organization::Property::OrgDomain(
                        "elsewhere.localhost".into(),
                    )),
                }),
                ..match set_contact(&user, set_email("a@b.c", None)) {
                    Rpc::SetContactEmail(r) => r,
                    _ => unreachable!(),
                }
            }),
        },
        Case {
            what: "wrong code",
            token: Some(admin.clone()),
            method: "POST",
            path: format!("{a}/otp_email/{otp}/verify"),
            body: json!({"verificationCode": "00000000"}),
            rpc: verify_otp(&user, &otp, "00000000"),
        },
        Case {
            what: "duplicate OTP Email address",
            token: Some(admin.clone()),
            method: "POST",
            path: format!("{a}/otp_email"),
            body: json!({"email": {"address": "OTP@mouse.com", "returnCode": {}}}),
            rpc: add_otp(&user, set_email("OTP@mouse.com", return_code())),
        },
        Case {
            what: "no token",
            token: None,
            method: "PUT",
            path: format!("{a}/email"),
            body: json!({"email": {"address": "a@b.c"}}),
            rpc: set_contact(&user, set_email("a@b.c", None)),
        },
        Case {
            what: "no permission",
            token: Some(reader.clone()),
            method: "POST",
            path: format!("{a}/email/resend"),
            body: json!({"returnCode": {}}),
            rpc: resend_contact(&user, resend_returning()),
        },
    ];

    for case in cases {
        let client = match &case.token {
            Some(t) => api.with_token(t.clone()),
            None => api.without_token(),
        };
        let json_answer = match case.method {
            "PUT" => client.put(&case.path, &case.body).await,
            "POST" => client.post(&case.path, &case.body).await,
            _ => client.delete(&case.path).await,
        };
        assert!(
            json_answer.status >= 400,
            "{}: {:?}",
            case.what,
            json_answer.text
        );
        let failure = grpc
            .call(&case.rpc, case.token.as_deref())
            .await
            .expect_err(case.what);
        let json_detail = &json_answer.json["details"][0];
        assert_eq!(
            (
                json_answer.code().unwrap() as i32,
                json_answer.json["message"].as_str().unwrap(),
                json_detail["id"].as_str().unwrap(),
                json_detail["message"].as_str().unwrap(),
            ),
            (
                failure.code,
                failure.message.as_str(),
                failure.id.as_str(),
                failure.detail_message.as_str(),
            ),
            "{}: JSON {} vs gRPC",
            case.what,
            json_answer.text
        );
    }

    // Success: setting the address the user already has changes nothing; both answer with
    // the details of the user's last change, in family-B shape.
    let json_answer = api
        .put(
            &format!("/resources/v3alpha/users/{user}/email"),
            json!({"address": "mini@mouse.com", "returnCode": {}}),
        )
        .await
        .expect_status(200);
    let grpc_answer = ok(
        grpc.call(
            &set_contact(&user, set_email("mini@mouse.com", return_code())),
            Some(&admin),
        )
        .await,
        "unchanged address",
    );
    assert!(json_answer.json.get("verificationCode").is_none());
    assert_eq!(grpc_answer.verification_code, None);
    let details = &json_answer.json["details"];
    let changed = grpc_answer.details.changed.unwrap();
    let changed = chrono::DateTime::from_timestamp(changed.seconds, changed.nanos as u32)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert_eq!(
        json!({
            "id": grpc_answer.details.id,
            "changed": changed,
            "owner": {"type": "OWNER_TYPE_ORG", "id": grpc_answer.details.owner.unwrap().id},
        }),
        *details
    );

    // The organization's primary domain scopes the call the same way over gRPC.
    let domain = env.bootstrap().org_domain.clone();
    let scoped = Rpc::SetContactEmail(SetContactEmailRequest {
        organization: Some(Organization {
            property: Some(organization::Property::OrgDomain(domain)),
        }),
        ..match set_contact(&user, set_email("scoped@mouse.com", return_code())) {
            Rpc::SetContactEmail(r) => r,
            _ => unreachable!(),
        }
    });
    let reply = ok(grpc.call(&scoped, Some(&admin)).await, "scoped");
    assert!(reply.verification_code.is_some());
}

/// Server reflection lists the service and describes its messages, as `grpcurl list` and
/// `grpcurl describe` ask for them (v1 and the older v1alpha protocol both answer). Sharing
/// the port leaves the JSON API's 404 for unknown routes as it was, and an unknown method of
/// the service is UNIMPLEMENTED (12).
#[tokio::test]
async fn reflection_lists_and_describes_the_service() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};
    use tonic_reflection::pb::v1alpha;

    let env = TestEnv::builder().without_worker().start().await;
    let conn = channel(&env).await;

    async fn ask(
        client: &mut ServerReflectionClient<Channel>,
        request: MessageRequest,
    ) -> ServerReflectionResponse {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        };
        let mut stream = client
            .server_reflection_info(futures_util::stream::iter([request]))
            .await
            .expect("reflection answers without a token")
            .into_inner();
        stream.message().await.unwrap().expect("one answer")
    }

    let mut client = ServerReflectionClient::new(conn.clone());
    let listed = ask(&mut client, MessageRequest::ListServices(String::new())).await;
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
        panic!("not a service list: {listed:?}");
    };
    let mut names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, REFLECTED_SERVICES);

    let described = ask(
        &mut client,
        MessageRequest::FileContainingSymbol(format!("{SERVICE}.SetContactEmail")),
    )
    .await;
    let Some(MessageResponse::FileDescriptorResponse(files)) = described.message_response else {
        panic!("no file descriptors: {described:?}");
    };
    let files: Vec<prost_types::FileDescriptorProto> = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap())
        .collect();
    let service_file = files
        .iter()
        .find(|f| f.package() == "zitadel.resources.user.v3alpha" && !f.service.is_empty())
        .expect("the service's file");
    let methods: Vec<&str> = service_file.service[0]
        .method
        .iter()
        .map(|m| m.name())
        .collect();
    assert_eq!(
        methods,
        [
            "SetContactEmail",
            "VerifyContactEmail",
            "ResendContactEmailCode",
            "AddOTPEmailAuthenticator",
            "VerifyOTPEmailRegistration",
            "RemoveOTPEmailAuthenticator",
        ]
    );

    // The older protocol, which some grpcurl versions use.
    let mut old = v1alpha::server_reflection_client::ServerReflectionClient::new(conn.clone());
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let answer = old
        .server_reflection_info(futures_util::stream::iter([request]))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("not a service list: {answer:?}");
    };
    let mut names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, REFLECTED_SERVICES);

    let missing = env.api().get("/no/such/route").await.expect_status(404);
    assert_eq!(missing.code(), Some(5));
    let mut unknown_method = tonic::client::Grpc::new(conn);
    unknown_method.ready().await.unwrap();
    let status = unknown_method
        .unary::<_, RemoveOtpEmailAuthenticatorResponse, _>(
            with_token(
                RemoveOtpEmailAuthenticatorRequest::default(),
                Some(env.token()),
            ),
            format!("/{SERVICE}/NoSuchMethod").parse().unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
}
