//! The authorization matrix of SPEC 2, cell by cell: every route of both HTTP route families
//! (family A `/v3alpha/users/...`, family B `/resources/v3alpha/users/...`), the supporting
//! calls (get, create, delete user) and every RPC of `zitadel.resources.user.v3alpha.ZITADELUsers`
//! over gRPC, each with every verification choice that changes what it needs, crossed with
//! eleven kinds of token and three kinds of target (a user of the token's organization O1,
//! one of another organization O2 of the same instance, one of another instance).
//!
//! [`expected`] derives each cell's answer from the rules of SPEC 2 alone: 401 for a token
//! that does not authenticate; 404 with the call's user-not-found id for a user of another
//! instance (never 403); otherwise the permission rules per access kind (read, write that
//! proves the mailbox, write that skips the proof, administer), 403 `AUTHZ-HKJD33` when
//! denied. An allowed call gets a known domain answer that changes nothing (the current
//! address again, verify what is verified, resend with nothing pending, add a duplicate OTP
//! Email, remove an unknown one), so the cells are independent; only an allowed delete
//! really deletes, each on its own throwaway user. Every cell is compared and all the
//! mismatches are reported together in one table. Afterwards no target changed and no mail
//! job exists: a refused call changes nothing and mails nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tests::grpc::{channel, error_detail, with_token};
use tests::scenario::{Fam, Family, Op, create_user, get_user, ids};
use tests::{Api, Body, Resp, TestEnv};
use tonic::transport::Channel;

use tests::grpc::proto::zitadel::resources::user::v3alpha::zitadel_users_client::ZitadelUsersClient;
use tests::grpc::proto::zitadel::resources::user::v3alpha::*;

/// Organization not found on create user (docs/architecture.md, "Create user").
const ORG_NOT_FOUND: &str = "COMMAND-Ggk9n";
/// Not an email address (SPEC 3.1): 400.
const INVALID_ADDRESS: &str = "not an address";
/// A user id no user has.
const UNKNOWN_USER: &str = "123456789012345678";
/// An `otpEmailId` no user has.
const UNKNOWN_OTP: &str = "123456789012345678";
/// Rows (token × target) run side by side.
const PARALLEL_ROWS: usize = 6;

// ---- the model: tokens, targets, calls ----------------------------------------------------------

/// The kinds of token of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TokenKind {
    /// No `Authorization` header.
    Missing,
    /// A random string.
    Bad,
    /// `user.write`, `--expires-in 1s`, used after it expired.
    Expired,
    /// `user.write`, revoked with `api token revoke`.
    Revoked,
    /// `user.write` of the other instance I2.
    OtherInstance,
    /// `user.write` limited to O2.
    OtherOrg,
    /// `user.write` limited to O1.
    OrgLimited,
    /// `user.read`, instance-wide.
    ReadOnly,
    /// `user.write`, instance-wide.
    Write,
    /// No permission, subject = the own-org target user.
    SelfSubject,
    /// No permission, subject = another user of O1.
    OtherSubject,
}

impl TokenKind {
    fn label(self) -> &'static str {
        match self {
            TokenKind::Missing => "none",
            TokenKind::Bad => "bad",
            TokenKind::Expired => "expired",
            TokenKind::Revoked => "revoked",
            TokenKind::OtherInstance => "other instance",
            TokenKind::OtherOrg => "other org (O2)",
            TokenKind::OrgLimited => "org-limited (O1)",
            TokenKind::ReadOnly => "user.read",
            TokenKind::Write => "user.write",
            TokenKind::SelfSubject => "self subject",
            TokenKind::OtherSubject => "other user's subject",
        }
    }
}

/// A token as SPEC 2 sees it.
#[derive(Debug, Clone)]
struct Token {
    kind: TokenKind,
    /// What goes after `Bearer`; `None`: no header.
    secret: Option<String>,
    /// Whether the token authenticates at all (not none, bad, expired or revoked).
    valid: bool,
    instance: String,
    org: Option<String>,
    read: bool,
    write: bool,
    subject: Option<String>,
}

/// The kinds of target of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TargetKind {
    /// A user of O1 (instance I1).
    OwnOrg,
    /// A user of O2 (instance I1).
    OtherOrg,
    /// A user of instance I2.
    OtherInstance,
}

impl TargetKind {
    const ALL: [TargetKind; 3] = [
        TargetKind::OwnOrg,
        TargetKind::OtherOrg,
        TargetKind::OtherInstance,
    ];

    fn label(self) -> &'static str {
        match self {
            TargetKind::OwnOrg => "own org O1",
            TargetKind::OtherOrg => "other org O2",
            TargetKind::OtherInstance => "other instance I2",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            TargetKind::OwnOrg => "own",
            TargetKind::OtherOrg => "other-org",
            TargetKind::OtherInstance => "other-instance",
        }
    }
}

/// A target user with a verified contact email and a verified OTP Email.
#[derive(Debug, Clone)]
struct Target {
    kind: TargetKind,
    instance: String,
    org: String,
    user: String,
    email: String,
    otp_email: String,
    otp: String,
}

/// What a call needs (SPEC 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// GET user: the subject, or `user.read`/`user.write` with the organization allowed.
    Read,
    /// Changes that prove the mailbox (`sendCode` or no choice, verify, resend, remove): the
    /// subject, or `user.write` with the organization allowed.
    WriteProven,
    /// Changes that skip the proof (`isVerified`, `returnCode`): `user.write` with the
    /// organization allowed, even on oneself.
    WriteUnproven,
    /// Create and delete user: `user.write` with the organization allowed.
    Administer,
}

/// What a call is about: an instance, an organization and (except create user) a user.
#[derive(Debug, Clone, Copy)]
struct On<'a> {
    instance: &'a str,
    org: &'a str,
    user: Option<&'a str>,
}

/// The verdict of SPEC 2 for a token on a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Decision {
    Unauthenticated,
    NotFound,
    Denied,
    Allowed,
}

/// SPEC 2 on a valid request: 401 first, then the lookup (another instance is not found),
/// then the permission.
fn decide(token: &Token, on: On<'_>, access: Access) -> Decision {
    if !token.valid {
        return Decision::Unauthenticated;
    }
    if token.instance != on.instance {
        return Decision::NotFound;
    }
    let own = token.subject.is_some() && token.subject.as_deref() == on.user;
    let org_ok = token.org.as_deref().is_none_or(|o| o == on.org);
    let allowed = match access {
        Access::Read => own || ((token.read || token.write) && org_ok),
        Access::WriteProven => own || (token.write && org_ok),
        Access::WriteUnproven | Access::Administer => token.write && org_ok,
    };
    if allowed {
        Decision::Allowed
    } else {
        Decision::Denied
    }
}

/// The expected answer of `call` with `token` on `on`. An invalid request is 400 (code 3)
/// right after the token check, before any lookup or permission (SPEC 2, order of checks).
fn expected(token: &Token, on: On<'_>, call: Call) -> Outcome {
    match decide(token, on, call.route.access()) {
        Decision::Unauthenticated => Outcome::error(16, None),
        _ if call.route.is_invalid() => Outcome::error(3, None),
        Decision::NotFound => Outcome::error(5, Some(call.route.not_found_id())),
        Decision::Denied => Outcome::error(7, Some(ids::PERMISSION_DENIED)),
        Decision::Allowed => call.route.allowed(),
    }
}

/// How a request asks for verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    /// None of the three: a mail with the default link.
    Default,
    SendCode,
    ReturnCode,
    IsVerified,
}

impl Choice {
    fn label(self) -> &'static str {
        match self {
            Choice::Default => "no choice",
            Choice::SendCode => "sendCode",
            Choice::ReturnCode => "returnCode",
            Choice::IsVerified => "isVerified",
        }
    }

    /// `isVerified` and `returnCode` skip the proof of the mailbox.
    fn access(self) -> Access {
        match self {
            Choice::Default | Choice::SendCode => Access::WriteProven,
            Choice::ReturnCode | Choice::IsVerified => Access::WriteUnproven,
        }
    }

    /// Adds the choice to a JSON object.
    fn add_to(self, mut body: Value) -> Value {
        match self {
            Choice::Default => {}
            Choice::SendCode => body["sendCode"] = json!({}),
            Choice::ReturnCode => body["returnCode"] = json!({}),
            Choice::IsVerified => body["isVerified"] = json!(true),
        }
        body
    }
}

/// One operation, with the request that makes its allowed answer known and harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    GetUser,
    /// In the target's organization (`organization: {orgId}`).
    CreateUser,
    /// As `CreateUser`, with an email that is not an address: 400.
    CreateUserInvalid,
    /// A throwaway user of the target's organization.
    DeleteUser,
    /// The target's current address: unchanged.
    SetEmail(Choice),
    /// Not an address (with `sendCode`, which a subject may use): 400.
    SetEmailInvalid,
    /// The contact email is verified: nothing to do.
    VerifyEmail,
    /// Nothing pending: 400 `COMMAND-QRkNTBwF8q`.
    ResendEmail(Choice),
    /// The address of the target's OTP Email: 409 `COMMAND-MKL2s`.
    AddOtp(Choice),
    /// The OTP Email is verified: nothing to do.
    VerifyOtp,
    /// Nothing pending: 400 `COMMAND-QRkNTBwF8q`.
    ResendOtp(Choice),
    /// An unknown `otpEmailId`: 404 `COMMAND-b312D`.
    RemoveOtp,
}

impl Route {
    fn access(self) -> Access {
        match self {
            Route::GetUser => Access::Read,
            Route::CreateUser | Route::CreateUserInvalid | Route::DeleteUser => Access::Administer,
            Route::SetEmail(c) | Route::ResendEmail(c) | Route::AddOtp(c) | Route::ResendOtp(c) => {
                c.access()
            }
            Route::SetEmailInvalid | Route::VerifyEmail | Route::VerifyOtp | Route::RemoveOtp => {
                Access::WriteProven
            }
        }
    }

    /// Whether the request fails validation (SPEC 2: 400 before lookup and permission).
    fn is_invalid(self) -> bool {
        matches!(self, Route::CreateUserInvalid | Route::SetEmailInvalid)
    }

    /// SPEC 3.4 (and the documented create-user id).
    fn not_found_id(self) -> &'static str {
        match self {
            Route::CreateUser | Route::CreateUserInvalid => ORG_NOT_FOUND,
            Route::VerifyEmail => ids::USER_NOT_FOUND_VERIFY,
            Route::ResendEmail(_) => ids::USER_NOT_FOUND_RESEND,
            _ => ids::USER_NOT_FOUND,
        }
    }

    /// The answer when the call is allowed.
    fn allowed(self) -> Outcome {
        match self {
            Route::GetUser
            | Route::DeleteUser
            | Route::SetEmail(_)
            | Route::VerifyEmail
            | Route::VerifyOtp => Outcome::success(200),
            Route::CreateUser => Outcome::success(201),
            Route::CreateUserInvalid | Route::SetEmailInvalid => Outcome::error(3, None),
            Route::ResendEmail(_) | Route::ResendOtp(_) => {
                Outcome::error(9, Some(ids::NO_PENDING_CODE))
            }
            Route::AddOtp(_) => Outcome::error(6, Some(ids::OTP_EMAIL_DUPLICATE)),
            Route::RemoveOtp => Outcome::error(5, Some(ids::OTP_EMAIL_NOT_FOUND)),
        }
    }

    fn label(self) -> String {
        match self {
            Route::GetUser => "get user".into(),
            Route::CreateUser => "create user".into(),
            Route::CreateUserInvalid => "create user (invalid address)".into(),
            Route::DeleteUser => "delete user".into(),
            Route::SetEmail(c) => format!("set email ({})", c.label()),
            Route::SetEmailInvalid => "set email (invalid address)".into(),
            Route::VerifyEmail => "verify email".into(),
            Route::ResendEmail(c) => format!("resend email ({})", c.label()),
            Route::AddOtp(c) => format!("add OTP Email ({})", c.label()),
            Route::VerifyOtp => "verify OTP Email".into(),
            Route::ResendOtp(c) => format!("resend OTP Email ({})", c.label()),
            Route::RemoveOtp => "remove OTP Email".into(),
        }
    }

    fn choice(self) -> Option<Choice> {
        match self {
            Route::SetEmail(c) | Route::ResendEmail(c) | Route::AddOtp(c) | Route::ResendOtp(c) => {
                Some(c)
            }
            _ => None,
        }
    }

    /// The family operation of an email route.
    fn op(self) -> Option<Op> {
        Some(match self {
            Route::SetEmail(_) | Route::SetEmailInvalid => Op::SetEmail,
            Route::VerifyEmail => Op::VerifyEmail,
            Route::ResendEmail(_) => Op::ResendEmail,
            Route::AddOtp(_) => Op::AddOtp,
            Route::VerifyOtp => Op::VerifyOtp,
            Route::ResendOtp(_) => Op::ResendOtp,
            Route::RemoveOtp => Op::RemoveOtp,
            Route::GetUser | Route::CreateUser | Route::CreateUserInvalid | Route::DeleteUser => {
                return None;
            }
        })
    }
}

/// How a call reaches the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// The supporting calls of SPEC 3.5 (JSON, family A paths).
    Support,
    /// A route family.
    Http(Family),
    /// gRPC over HTTP/2.
    Grpc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Call {
    via: Via,
    route: Route,
}

impl Call {
    fn label(self) -> String {
        let via = match self.via {
            Via::Support => "JSON",
            Via::Http(Family::A) => "family A",
            Via::Http(Family::B) => "family B",
            Via::Grpc => "gRPC",
        };
        let route = match (self.via, self.route) {
            (Via::Grpc, Route::SetEmailInvalid) => "SetContactEmail (invalid address)".into(),
            (Via::Grpc, r) => match r.choice() {
                Some(c) => format!("{} ({})", grpc_method(r), c.label()),
                None => grpc_method(r).to_string(),
            },
            (_, r) => r.label(),
        };
        format!("{via}: {route}")
    }
}

fn grpc_method(route: Route) -> &'static str {
    match route {
        Route::SetEmail(_) | Route::SetEmailInvalid => "SetContactEmail",
        Route::VerifyEmail => "VerifyContactEmail",
        Route::ResendEmail(_) => "ResendContactEmailCode",
        Route::AddOtp(_) => "AddOTPEmailAuthenticator",
        Route::VerifyOtp => "VerifyOTPEmailRegistration",
        Route::RemoveOtp => "RemoveOTPEmailAuthenticator",
        _ => "-",
    }
}

/// Every call of the matrix: the supporting calls once, every family route with each
/// verification choice, and every RPC (there is no RPC to resend an OTP Email code).
fn calls() -> Vec<Call> {
    let set_choices = [
        Choice::Default,
        Choice::SendCode,
        Choice::ReturnCode,
        Choice::IsVerified,
    ];
    let resend_choices = [Choice::Default, Choice::SendCode, Choice::ReturnCode];
    let mut email_routes = Vec::new();
    email_routes.extend(set_choices.map(Route::SetEmail));
    email_routes.push(Route::SetEmailInvalid);
    email_routes.push(Route::VerifyEmail);
    email_routes.extend(resend_choices.map(Route::ResendEmail));
    email_routes.extend(set_choices.map(Route::AddOtp));
    email_routes.push(Route::VerifyOtp);
    email_routes.extend(resend_choices.map(Route::ResendOtp));
    email_routes.push(Route::RemoveOtp);

    let supporting = [
        Route::GetUser,
        Route::CreateUser,
        Route::CreateUserInvalid,
        Route::DeleteUser,
    ];
    let mut calls: Vec<Call> = supporting
        .into_iter()
        .map(|route| Call {
            via: Via::Support,
            route,
        })
        .collect();
    for family in [Family::A, Family::B] {
        calls.extend(email_routes.iter().map(|&route| Call {
            via: Via::Http(family),
            route,
        }));
    }
    calls.extend(
        email_routes
            .iter()
            .filter(|r| !matches!(r, Route::ResendOtp(_)))
            .map(|&route| Call {
                via: Via::Grpc,
                route,
            }),
    );
    calls
}

// ---- answers ------------------------------------------------------------------------------------

/// An answer reduced to what the matrix compares: the HTTP status (for gRPC: the status SPEC
/// 3.6 maps its code to), the gRPC code (0 on success) and the error id. An expected id of
/// `None` accepts any id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    http: u16,
    code: i32,
    id: Option<String>,
}

impl Outcome {
    fn success(http: u16) -> Outcome {
        Outcome {
            http,
            code: 0,
            id: None,
        }
    }

    fn error(code: i32, id: Option<&str>) -> Outcome {
        Outcome {
            http: http_status_of(code),
            code,
            id: id.map(str::to_string),
        }
    }

    fn matches(&self, actual: &Outcome) -> bool {
        self.http == actual.http
            && self.code == actual.code
            && (self.id.is_none() || self.id == actual.id)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.code == 0 {
            return write!(f, "{}", self.http);
        }
        write!(f, "{} code {}", self.http, self.code)?;
        match &self.id {
            Some(id) => write!(f, " {id}"),
            None => Ok(()),
        }
    }
}

/// SPEC 3.6: HTTP status by gRPC code.
fn http_status_of(code: i32) -> u16 {
    match code {
        0 => 200,
        3 | 9 => 400,
        16 => 401,
        7 => 403,
        5 => 404,
        6 => 409,
        8 => 429,
        12 => 501,
        14 => 503,
        13 => 500,
        _ => 0,
    }
}

/// An answer and, for the report, a short excerpt of what came back.
struct Actual {
    outcome: Outcome,
    excerpt: String,
}

fn from_http(resp: &Resp) -> Actual {
    let outcome = if (200..300).contains(&resp.status) {
        Outcome::success(resp.status)
    } else {
        Outcome {
            http: resp.status,
            code: resp.code().map_or(-1, |c| c as i32),
            id: resp.error_id().map(str::to_string),
        }
    };
    Actual {
        outcome,
        excerpt: excerpt(resp.json["message"].as_str().unwrap_or(&resp.text)),
    }
}

fn from_grpc<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Actual {
    match result {
        Ok(_) => Actual {
            outcome: Outcome::success(200),
            excerpt: String::new(),
        },
        Err(status) => {
            let code = status.code() as i32;
            Actual {
                outcome: Outcome {
                    http: http_status_of(code),
                    code,
                    id: error_detail(status.details()).map(|detail| detail.id),
                },
                excerpt: excerpt(status.message()),
            }
        }
    }
}

fn excerpt(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(100) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

// ---- making the calls ---------------------------------------------------------------------------

/// Sends one JSON call. `victim` is the user delete user deletes.
async fn send_http(api: &Api, call: Call, target: &Target, victim: &str) -> Actual {
    let resp = match (call.via, call.route) {
        (Via::Support, Route::GetUser) => api.get(&format!("/v3alpha/users/{}", target.user)).await,
        (Via::Support, Route::CreateUser) => {
            api.post(
                "/v3alpha/users",
                json!({"organization": {"orgId": target.org}}),
            )
            .await
        }
        (Via::Support, Route::CreateUserInvalid) => {
            api.post(
                "/v3alpha/users",
                json!({"organization": {"orgId": target.org}, "email": {"address": INVALID_ADDRESS}}),
            )
            .await
        }
        (Via::Support, Route::DeleteUser) => api.delete(&format!("/v3alpha/users/{victim}")).await,
        (Via::Http(family), route) => {
            let op = route.op().expect("an email route");
            let fam = Fam::new(api.clone(), family);
            let otp = if route == Route::RemoveOtp {
                UNKNOWN_OTP
            } else {
                &target.otp
            };
            let (method, path) = fam.route(op, &target.user, otp);
            let input = match route {
                Route::SetEmail(c) => c.add_to(json!({"address": target.email})),
                Route::SetEmailInvalid => json!({"address": INVALID_ADDRESS, "sendCode": {}}),
                Route::AddOtp(c) => c.add_to(json!({"address": target.otp_email})),
                Route::VerifyEmail => json!("ABC123"),
                Route::VerifyOtp => json!("12345678"),
                Route::ResendEmail(c) | Route::ResendOtp(c) => c.add_to(json!({})),
                _ => Value::Null,
            };
            let body = fam.body(op, input).map(|b| Body {
                bytes: serde_json::to_vec(&b).expect("serialize the body"),
                content_type: Some("application/json".to_string()),
            });
            api.send(method, &path, body).await
        }
        other => unreachable!("not a JSON call: {other:?}"),
    };
    from_http(&resp)
}

fn set_email_message(address: &str, choice: Choice) -> Option<SetEmail> {
    use set_email::Verification;
    let verification = match choice {
        Choice::Default => None,
        Choice::SendCode => Some(Verification::SendCode(SendEmailVerificationCode {
            url_template: None,
        })),
        Choice::ReturnCode => Some(Verification::ReturnCode(ReturnEmailVerificationCode {})),
        Choice::IsVerified => Some(Verification::IsVerified(true)),
    };
    Some(SetEmail {
        address: address.to_string(),
        verification,
    })
}

/// Sends one RPC.
async fn send_grpc(
    mut client: ZitadelUsersClient<Channel>,
    token: Option<&str>,
    route: Route,
    target: &Target,
) -> Actual {
    let id = target.user.clone();
    match route {
        Route::SetEmail(choice) => from_grpc(
            client
                .set_contact_email(with_token(
                    SetContactEmailRequest {
                        id,
                        email: set_email_message(&target.email, choice),
                        ..Default::default()
                    },
                    token,
                ))
                .await,
        ),
        Route::SetEmailInvalid => from_grpc(
            client
                .set_contact_email(with_token(
                    SetContactEmailRequest {
                        id,
                        email: set_email_message(INVALID_ADDRESS, Choice::SendCode),
                        ..Default::default()
                    },
                    token,
                ))
                .await,
        ),
        Route::VerifyEmail => from_grpc(
            client
                .verify_contact_email(with_token(
                    VerifyContactEmailRequest {
                        id,
                        verification_code: "ABC123".into(),
                        ..Default::default()
                    },
                    token,
                ))
                .await,
        ),
        Route::ResendEmail(choice) => {
            use resend_contact_email_code_request::Verification;
            let verification = match choice {
                Choice::SendCode => Some(Verification::SendCode(SendEmailVerificationCode {
                    url_template: None,
                })),
                Choice::ReturnCode => {
                    Some(Verification::ReturnCode(ReturnEmailVerificationCode {}))
                }
                Choice::Default | Choice::IsVerified => None,
            };
            from_grpc(
                client
                    .resend_contact_email_code(with_token(
                        ResendContactEmailCodeRequest {
                            id,
                            verification,
                            ..Default::default()
                        },
                        token,
                    ))
                    .await,
            )
        }
        Route::AddOtp(choice) => from_grpc(
            client
                .add_otp_email_authenticator(with_token(
                    AddOtpEmailAuthenticatorRequest {
                        id,
                        email: set_email_message(&target.otp_email, choice),
                        ..Default::default()
                    },
                    token,
                ))
                .await,
        ),
        Route::VerifyOtp => from_grpc(
            client
                .verify_otp_email_registration(with_token(
                    VerifyOtpEmailRegistrationRequest {
                        id,
                        otp_email_id: target.otp.clone(),
                        code: "12345678".into(),
                        ..Default::default()
                    },
                    token,
                ))
                .await,
        ),
        Route::RemoveOtp => from_grpc(
            client
                .remove_otp_email_authenticator(with_token(
                    RemoveOtpEmailAuthenticatorRequest {
                        id,
                        otp_email_id: UNKNOWN_OTP.into(),
                        ..Default::default()
                    },
                    token,
                ))
                .await,
        ),
        other => unreachable!("no RPC for {other:?}"),
    }
}

// ---- the fixture --------------------------------------------------------------------------------

struct Fixture {
    env: TestEnv,
    /// The admin client of each instance, by instance id.
    admins: BTreeMap<String, Api>,
    tokens: Vec<Token>,
    targets: Vec<Target>,
    /// The user delete user deletes in each row.
    victims: BTreeMap<(TokenKind, TargetKind), String>,
    /// Setup steps that did not work as SPEC says; their tokens are left out of the matrix.
    problems: Vec<String>,
}

/// A target user of `org`: verified contact email and verified OTP Email, nothing pending.
async fn make_target(admin: &Api, kind: TargetKind, instance: &str, org: &str) -> Target {
    let email = format!("{}@matrix.example.com", kind.tag());
    let otp_email = format!("{}-otp@matrix.example.com", kind.tag());
    let user = create_user(
        admin,
        json!({"organization": {"orgId": org}, "email": {"address": email, "isVerified": true}}),
    )
    .await;
    let resp = admin
        .post(
            &format!("/v3alpha/users/{user}/otp_email"),
            json!({"email": {"address": otp_email, "isVerified": true}}),
        )
        .await;
    assert_eq!(resp.status, 200, "fixture: add OTP Email: {resp:?}");
    let otp = resp.str_at("/otpEmailId").to_string();
    let u = get_user(admin, &user).await;
    assert_eq!(u["organizationId"], json!(org), "fixture: {u}");
    assert_eq!(u["contact"]["email"]["isVerified"], true, "fixture: {u}");
    assert_eq!(u["otpEmail"][0]["isVerified"], true, "fixture: {u}");
    Target {
        kind,
        instance: instance.to_string(),
        org: org.to_string(),
        user,
        email,
        otp_email,
        otp,
    }
}

/// `api token create ARGS...`: the token, or what went wrong.
async fn try_create_token(env: &TestEnv, args: &[&str]) -> Result<String, String> {
    let mut full = vec!["token", "create"];
    full.extend_from_slice(args);
    let out = env.run_api(&full).await;
    if out.code == Some(0) && !out.stdout.trim().is_empty() {
        Ok(out.stdout.trim().to_string())
    } else {
        Err(format!(
            "`api {}` exited with {:?}: {}",
            full.join(" "),
            out.code,
            out.stderr.trim()
        ))
    }
}

/// The ids `api token list --instance ID --json` shows.
async fn token_ids(env: &TestEnv, instance: &str) -> Result<Vec<String>, String> {
    let out = env
        .run_api(&["token", "list", "--instance", instance, "--json"])
        .await;
    if out.code != Some(0) {
        return Err(format!(
            "`api token list --instance {instance} --json` exited with {:?}: {}",
            out.code,
            out.stderr.trim()
        ));
    }
    let list: Value = serde_json::from_str(out.stdout.trim()).map_err(|e| {
        format!(
            "`api token list --json` printed no JSON ({e}): {}",
            out.stdout
        )
    })?;
    let items = list
        .as_array()
        .ok_or_else(|| format!("`api token list --json` printed no array: {list}"))?;
    items
        .iter()
        .map(|t| match &t["id"] {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(format!("a listed token without an id: {other} in {t}")),
        })
        .collect()
}

/// A `user.write` token of `instance`, used once (so a cache may hold it), then revoked;
/// waits (SPEC: 5 s at most) until it is refused, so the matrix sees it revoked. A token
/// still accepted after 5 s stays in the matrix (its cells show what it can still do) and is
/// reported in `problems`.
async fn revoked_token(
    env: &TestEnv,
    instance: &str,
    probe: &str,
    problems: &mut Vec<String>,
) -> Result<String, String> {
    let before = token_ids(env, instance).await?;
    let token =
        try_create_token(env, &["--instance", instance, "--permission", "user.write"]).await?;
    let client = Api::new(env.api_url(), Some(token.clone()));
    let used = client.get(&format!("/v3alpha/users/{probe}")).await;
    if used.status != 200 {
        problems.push(format!(
            "revoked token: refused before it was revoked: {used:?}"
        ));
    }
    let after = token_ids(env, instance).await?;
    let new: Vec<&String> = after.iter().filter(|id| !before.contains(id)).collect();
    let [id] = new.as_slice() else {
        return Err(format!(
            "`api token list` shows {} new tokens after one `token create`: {new:?}",
            new.len()
        ));
    };
    let out = env.run_api(&["token", "revoke", id]).await;
    if out.code != Some(0) {
        return Err(format!(
            "`api token revoke {id}` exited with {:?}: {}",
            out.code,
            out.stderr.trim()
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = client.get(&format!("/v3alpha/users/{probe}")).await;
        if resp.status == 401 {
            return Ok(token);
        }
        if Instant::now() >= deadline {
            problems.push(format!(
                "revoked token: still accepted 5 s after `api token revoke {id}`: {resp:?}"
            ));
            return Ok(token);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn setup() -> Fixture {
    let mut env = TestEnv::builder().without_worker().start().await;
    let i1 = env.bootstrap().clone();
    let o2 = env.run_bootstrap(&["--org-name", "Second Org"]).await;
    assert_eq!(o2.instance_id, i1.instance_id, "same domain, same instance");
    assert_ne!(o2.org_id, i1.org_id);
    let i2 = env.run_bootstrap(&["--domain", "other.example"]).await;
    assert_ne!(i2.instance_id, i1.instance_id);
    let admin1 = env.api();
    let admin2 = env.api().with_token(&i2.token);
    let mut problems = Vec::new();

    // The expired token first, so its second passes while the rest is set up.
    let asked = Instant::now();
    let expired = try_create_token(
        &env,
        &[
            "--instance",
            &i1.instance_id,
            "--permission",
            "user.write",
            "--expires-in",
            "1s",
        ],
    )
    .await;
    let expired_at = Instant::now() + Duration::from_millis(1500);
    if let Ok(secret) = &expired {
        // Used once while still valid (so a cache may hold it): any answer but 401 (here 404,
        // no such user) shows it authenticated. Reported only if it was clearly not expired.
        let used = Api::new(env.api_url(), Some(secret.clone()))
            .get(&format!("/v3alpha/users/{UNKNOWN_USER}"))
            .await;
        if used.status == 401 && asked.elapsed() < Duration::from_millis(900) {
            problems.push(format!(
                "expired token: refused before it expired: {used:?}"
            ));
        }
    }

    let targets = vec![
        make_target(&admin1, TargetKind::OwnOrg, &i1.instance_id, &i1.org_id).await,
        make_target(&admin1, TargetKind::OtherOrg, &i1.instance_id, &o2.org_id).await,
        make_target(
            &admin2,
            TargetKind::OtherInstance,
            &i2.instance_id,
            &i2.org_id,
        )
        .await,
    ];
    let own = targets[0].user.clone();
    let someone_else = create_user(&admin1, json!({"organization": {"orgId": i1.org_id}})).await;

    let token = |kind, secret: Option<String>, instance: &str| Token {
        kind,
        valid: true,
        secret,
        instance: instance.to_string(),
        org: None,
        read: false,
        write: false,
        subject: None,
    };
    let i1_id = i1.instance_id.as_str();

    let mut tokens = vec![
        Token {
            valid: false,
            ..token(TokenKind::Missing, None, i1_id)
        },
        Token {
            valid: false,
            ..token(
                TokenKind::Bad,
                Some(format!("{:032x}", rand::random::<u128>())),
                i1_id,
            )
        },
    ];
    match expired {
        Ok(secret) => tokens.push(Token {
            valid: false,
            write: true,
            ..token(TokenKind::Expired, Some(secret), i1_id)
        }),
        Err(e) => problems.push(format!("expired token: {e}")),
    }
    match revoked_token(&env, i1_id, &own, &mut problems).await {
        Ok(secret) => tokens.push(Token {
            valid: false,
            write: true,
            ..token(TokenKind::Revoked, Some(secret), i1_id)
        }),
        Err(e) => problems.push(format!("revoked token: {e}")),
    }
    let secret = env
        .create_token(&["--instance", &i2.instance_id, "--permission", "user.write"])
        .await;
    tokens.push(Token {
        write: true,
        ..token(TokenKind::OtherInstance, Some(secret), &i2.instance_id)
    });
    for (kind, org) in [
        (TokenKind::OtherOrg, &o2.org_id),
        (TokenKind::OrgLimited, &i1.org_id),
    ] {
        let secret = env
            .create_token(&[
                "--instance",
                i1_id,
                "--org",
                org,
                "--permission",
                "user.write",
            ])
            .await;
        tokens.push(Token {
            write: true,
            org: Some(org.clone()),
            ..token(kind, Some(secret), i1_id)
        });
    }
    let secret = env
        .create_token(&["--instance", i1_id, "--permission", "user.read"])
        .await;
    tokens.push(Token {
        read: true,
        ..token(TokenKind::ReadOnly, Some(secret), i1_id)
    });
    let secret = env
        .create_token(&["--instance", i1_id, "--permission", "user.write"])
        .await;
    tokens.push(Token {
        write: true,
        ..token(TokenKind::Write, Some(secret), i1_id)
    });
    for (kind, subject) in [
        (TokenKind::SelfSubject, &own),
        (TokenKind::OtherSubject, &someone_else),
    ] {
        let secret = env
            .create_token(&["--instance", i1_id, "--subject", subject])
            .await;
        tokens.push(Token {
            subject: Some(subject.clone()),
            ..token(kind, Some(secret), i1_id)
        });
    }

    // One throwaway user per row for delete user; the self-subject token's row on its own
    // organization deletes its subject itself (last of all, see `every_call_every_token_every_target`).
    let mut victims = BTreeMap::new();
    for t in &tokens {
        for target in &targets {
            let victim = if (t.kind, target.kind) == (TokenKind::SelfSubject, TargetKind::OwnOrg) {
                own.clone()
            } else {
                let admin = if target.instance == i1.instance_id {
                    &admin1
                } else {
                    &admin2
                };
                create_user(admin, json!({"organization": {"orgId": target.org}})).await
            };
            victims.insert((t.kind, target.kind), victim);
        }
    }

    let wait = expired_at.saturating_duration_since(Instant::now());
    tokio::time::sleep(wait).await;

    let admins = BTreeMap::from([
        (i1.instance_id.clone(), admin1),
        (i2.instance_id.clone(), admin2),
    ]);
    Fixture {
        env,
        admins,
        tokens,
        targets,
        victims,
        problems,
    }
}

// ---- the matrix ---------------------------------------------------------------------------------

/// One compared cell.
struct Cell {
    token: TokenKind,
    target: TargetKind,
    call: Call,
    expected: Outcome,
    actual: Actual,
}

/// Runs the calls of one row (a token on a target) one after the other.
async fn run_row(
    fx: &Fixture,
    channel: &Channel,
    token: &Token,
    target: &Target,
    calls: &[Call],
) -> Vec<Cell> {
    let api = Api::new(fx.env.api_url(), token.secret.clone());
    let victim = &fx.victims[&(token.kind, target.kind)];
    let mut cells = Vec::with_capacity(calls.len());
    for &call in calls {
        let on = match call.route {
            Route::CreateUser | Route::CreateUserInvalid => On {
                instance: &target.instance,
                org: &target.org,
                user: None,
            },
            Route::DeleteUser => On {
                instance: &target.instance,
                org: &target.org,
                user: Some(victim),
            },
            _ => On {
                instance: &target.instance,
                org: &target.org,
                user: Some(&target.user),
            },
        };
        let actual = match call.via {
            Via::Grpc => {
                let client = ZitadelUsersClient::new(channel.clone());
                send_grpc(client, token.secret.as_deref(), call.route, target).await
            }
            _ => send_http(&api, call, target, victim).await,
        };
        cells.push(Cell {
            token: token.kind,
            target: target.kind,
            call,
            expected: expected(token, on, call),
            actual,
        });
    }
    cells
}

/// `details.sequence` of every target, read with its instance's admin token.
async fn sequences(fx: &Fixture) -> Vec<(TargetKind, Value)> {
    let mut seqs = Vec::new();
    for target in &fx.targets {
        let resp = fx.admins[&target.instance]
            .get(&format!("/v3alpha/users/{}", target.user))
            .await;
        seqs.push((
            target.kind,
            resp.json["user"]["details"]["sequence"].clone(),
        ));
    }
    seqs
}

/// The mismatches as an aligned table.
fn table(cells: &[&Cell]) -> String {
    let header = [
        "token",
        "target",
        "call",
        "expected (SPEC 2)",
        "actual",
        "answer",
    ];
    let rows: Vec<[String; 6]> = cells
        .iter()
        .map(|c| {
            [
                c.token.label().to_string(),
                c.target.label().to_string(),
                c.call.label(),
                c.expected.to_string(),
                c.actual.outcome.to_string(),
                c.actual.excerpt.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cols: &[String]| -> String {
        let padded: Vec<String> = cols
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join(" | ").trim_end().to_string()
    };
    let mut out = line(&header.map(str::to_string));
    out.push('\n');
    out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 3 * (widths.len() - 1)));
    for row in &rows {
        out.push('\n');
        out.push_str(&line(row));
    }
    out
}

/// Every call × every token × every target answers as SPEC 2 says; see the module docs.
#[tokio::test]
async fn every_call_every_token_every_target() {
    let started = Instant::now();
    let fx = setup().await;
    let setup_time = started.elapsed();
    let channel = channel(&fx.env).await;
    let all_calls = calls();
    let seqs_before = sequences(&fx).await;

    let self_delete = (TokenKind::SelfSubject, TargetKind::OwnOrg);
    let rows: Vec<(&Token, &Target)> = fx
        .tokens
        .iter()
        .flat_map(|t| fx.targets.iter().map(move |g| (t, g)))
        .collect();
    let matrix_started = Instant::now();
    let mut cells: Vec<Cell> = futures_util::stream::iter(rows.iter().map(|&(token, target)| {
        let calls: Vec<Call> = all_calls
            .iter()
            .copied()
            .filter(|c| !(c.route == Route::DeleteUser && (token.kind, target.kind) == self_delete))
            .collect();
        let (fx, channel) = (&fx, &channel);
        async move { run_row(fx, channel, token, target, &calls).await }
    }))
    .buffer_unordered(PARALLEL_ROWS)
    .flat_map(futures_util::stream::iter)
    .collect()
    .await;

    // Nothing any cell did changed a target (a refused call changes nothing; an allowed one
    // here is a no-op by construction), and nothing was queued for mailing.
    let mut problems = fx.problems.clone();
    let seqs_after = sequences(&fx).await;
    if seqs_after != seqs_before {
        problems.push(format!(
            "targets changed: sequences before {seqs_before:?}, after {seqs_after:?}"
        ));
    }
    let jobs = fx.env.jobs(&[]).await;
    if !jobs.is_empty() {
        problems.push(format!("{} mail jobs were enqueued: {jobs:?}", jobs.len()));
    }

    // Last: the self-subject token deletes its own subject (administer: 403 even on oneself).
    // If that were wrongly allowed, nothing else depends on the user any more.
    if let Some(token) = fx.tokens.iter().find(|t| t.kind == TokenKind::SelfSubject) {
        let own = &fx.targets[0];
        let delete = Call {
            via: Via::Support,
            route: Route::DeleteUser,
        };
        cells.extend(run_row(&fx, &channel, token, own, &[delete]).await);
    }
    let matrix_time = matrix_started.elapsed();

    cells.sort_by_key(|c| (c.token, c.target, c.call.label()));
    let mut decisions: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &cells {
        let what = match c.expected.code {
            0 => "allowed (2xx)",
            3 => "400 (invalid)",
            16 => "401",
            7 => "403",
            5 if c.expected.id.as_deref() == Some(ids::OTP_EMAIL_NOT_FOUND) => "allowed (4xx)",
            5 => "404",
            _ => "allowed (4xx)",
        };
        *decisions.entry(what).or_default() += 1;
    }
    let mismatches: Vec<&Cell> = cells
        .iter()
        .filter(|c| !c.expected.matches(&c.actual.outcome))
        .collect();
    eprintln!(
        "authorization matrix: {} cells ({} tokens × {} targets × {} calls) {decisions:?}; \
         setup {setup_time:.1?}, matrix {matrix_time:.1?}, total {:.1?}",
        cells.len(),
        fx.tokens.len(),
        TargetKind::ALL.len(),
        all_calls.len(),
        started.elapsed()
    );
    if !mismatches.is_empty() || !problems.is_empty() {
        let mut report = String::new();
        for p in &problems {
            report.push_str(&format!("problem: {p}\n"));
        }
        if !mismatches.is_empty() {
            report.push_str(&format!(
                "{} of {} cells differ from SPEC 2:\n{}\n",
                mismatches.len(),
                cells.len(),
                table(&mismatches)
            ));
        }
        panic!("authorization matrix:\n{report}");
    }
}
