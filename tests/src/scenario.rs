//! Shared scenario helpers for the API tests: a [`World`] (one environment plus the admin
//! client), and [`Fam`], an adapter that builds the request of one route family (SPEC 3.2,
//! family A, or 3.3, family B) for each email operation and normalizes the answer ([`Out`]),
//! so one scenario can run against both families and assert the same behaviour.
//!
//! Every answer that goes through [`Fam`] or [`World`] is checked for what SPEC says of every
//! answer: an `x-request-id` header; on success the family's `details` shape; on error the
//! SPEC 3.6 error body.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::client::{Api, Body, Method, Resp};
use crate::env::{TestEnv, TestEnvBuilder};
use crate::smtp_sink::ReceivedMail;

/// Error ids SPEC names.
pub mod ids {
    pub const USER_NOT_FOUND: &str = "COMMAND-nJ0TQFuRmP";
    pub const USER_NOT_FOUND_VERIFY: &str = "COMMAND-qbGyMPvjvj";
    pub const USER_NOT_FOUND_RESEND: &str = "COMMAND-EajeF6ypOV";
    pub const OTP_EMAIL_NOT_FOUND: &str = "COMMAND-b312D";
    pub const OTP_EMAIL_DUPLICATE: &str = "COMMAND-MKL2s";
    pub const NO_PENDING_CODE: &str = "COMMAND-QRkNTBwF8q";
    pub const RESEND_COOLDOWN: &str = "COMMAND-Rs8wq1";
    pub const PERMISSION_DENIED: &str = "AUTHZ-HKJD33";
    pub const CODE_WRONG: &str = "CODE-woT0xc";
    pub const CODE_EXPIRED: &str = "CODE-QvUQ4P";
    pub const CODE_TOO_MANY_ATTEMPTS: &str = "CODE-Lk7Gq2";
    pub const TEMPLATE_SYNTAX: &str = "DOMAIN-oGh5e";
    pub const TEMPLATE_INVALID: &str = "DOMAIN-ieYa7";
}

/// Default contact email code alphabet (SPEC 7).
pub const CONTACT_ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/// Default OTP Email code alphabet (SPEC 7).
pub const OTP_ALPHABET: &str = "0123456789";
/// How long to wait for a mail that is due.
pub const MAIL_WAIT: Duration = Duration::from_secs(20);
/// How long to watch the sink when a mail must NOT arrive.
pub const NO_MAIL_WAIT: Duration = Duration::from_millis(1000);

/// `DEFAULT_URL_TEMPLATE`'s base (SPEC 7).
pub const DEFAULT_CONTACT_LINK: &str = "http://localhost:8080/ui/login/mail/verification";
/// `DEFAULT_OTP_EMAIL_URL_TEMPLATE`'s base (SPEC 7).
pub const DEFAULT_OTP_LINK: &str = "http://localhost:8080/ui/login/otp/email/verify";

/// The two route families of SPEC 3.2 and 3.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `/v3alpha/users/{userId}/...`, wrapped bodies, `details` with `sequence`.
    A,
    /// `/resources/v3alpha/users/{id}/...`, bare bodies, `details` with `owner`.
    B,
}

/// The operations both families serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    SetEmail,
    VerifyEmail,
    ResendEmail,
    AddOtp,
    VerifyOtp,
    ResendOtp,
    RemoveOtp,
}

impl Op {
    pub const ALL: [Op; 7] = [
        Op::SetEmail,
        Op::VerifyEmail,
        Op::ResendEmail,
        Op::AddOtp,
        Op::VerifyOtp,
        Op::ResendOtp,
        Op::RemoveOtp,
    ];

    /// The id of "user not found" of this call (SPEC 3.4).
    pub fn user_not_found_id(self) -> &'static str {
        match self {
            Op::VerifyEmail => ids::USER_NOT_FOUND_VERIFY,
            Op::ResendEmail => ids::USER_NOT_FOUND_RESEND,
            _ => ids::USER_NOT_FOUND,
        }
    }
}

/// `instance` and `organization` request fields (SPEC 2).
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub instance_id: Option<String>,
    pub instance_domain: Option<String>,
    pub org_id: Option<String>,
    pub org_domain: Option<String>,
}

impl Scope {
    pub fn org_id(id: impl Into<String>) -> Scope {
        Scope {
            org_id: Some(id.into()),
            ..Scope::default()
        }
    }

    pub fn org_domain(domain: impl Into<String>) -> Scope {
        Scope {
            org_domain: Some(domain.into()),
            ..Scope::default()
        }
    }

    pub fn instance_id(id: impl Into<String>) -> Scope {
        Scope {
            instance_id: Some(id.into()),
            ..Scope::default()
        }
    }

    pub fn instance_domain(domain: impl Into<String>) -> Scope {
        Scope {
            instance_domain: Some(domain.into()),
            ..Scope::default()
        }
    }

    /// As query parameters (`instance.id=...&organization.orgId=...`), empty when unset.
    pub fn query(&self) -> String {
        let mut pairs = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("instance.id", &self.instance_id),
            ("instance.domain", &self.instance_domain),
            ("organization.orgId", &self.org_id),
            ("organization.orgDomain", &self.org_domain),
        ] {
            if let Some(v) = v {
                pairs.append_pair(k, v);
            }
        }
        pairs.finish()
    }

    /// Adds `instance` / `organization` objects to a JSON object body.
    pub fn add_to_body(&self, body: &mut Value) {
        let Some(obj) = body.as_object_mut() else {
            return;
        };
        let mut instance = Map::new();
        if let Some(id) = &self.instance_id {
            instance.insert("id".into(), json!(id));
        }
        if let Some(d) = &self.instance_domain {
            instance.insert("domain".into(), json!(d));
        }
        if !instance.is_empty() {
            obj.insert("instance".into(), Value::Object(instance));
        }
        let mut org = Map::new();
        if let Some(id) = &self.org_id {
            org.insert("orgId".into(), json!(id));
        }
        if let Some(d) = &self.org_domain {
            org.insert("orgDomain".into(), json!(d));
        }
        if !org.is_empty() {
            obj.insert("organization".into(), Value::Object(org));
        }
    }
}

/// One route family bound to a client (token) and, optionally, a scope.
#[derive(Clone)]
pub struct Fam {
    pub family: Family,
    pub api: Api,
    pub scope: Option<Scope>,
    /// Family A only: send the scope as query parameters instead of body fields.
    pub scope_in_query: bool,
}

impl Fam {
    pub fn new(api: Api, family: Family) -> Fam {
        Fam {
            family,
            api,
            scope: None,
            scope_in_query: false,
        }
    }

    /// The same family with another client (token).
    pub fn with_api(&self, api: Api) -> Fam {
        Fam {
            api,
            ..self.clone()
        }
    }

    /// The same family with `instance` / `organization` fields on every call.
    pub fn scoped(&self, scope: Scope) -> Fam {
        Fam {
            scope: Some(scope),
            ..self.clone()
        }
    }

    /// Family A with the scope as query parameters (family B always uses them).
    pub fn scope_via_query(&self) -> Fam {
        Fam {
            scope_in_query: true,
            ..self.clone()
        }
    }

    /// Method and path (without query) of an operation.
    pub fn route(&self, op: Op, user: &str, otp: &str) -> (Method, String) {
        let (a, b) = (
            format!("/v3alpha/users/{user}"),
            format!("/resources/v3alpha/users/{user}"),
        );
        let (method, a_path, b_path) = match op {
            Op::SetEmail => (Method::PUT, format!("{a}/email"), format!("{b}/email")),
            Op::VerifyEmail => (
                Method::POST,
                format!("{a}/email/verify"),
                format!("{b}/email/_verify"),
            ),
            Op::ResendEmail => (
                Method::POST,
                format!("{a}/email/resend"),
                format!("{b}/email/_resend"),
            ),
            Op::AddOtp => (
                Method::POST,
                format!("{a}/otp_email"),
                format!("{b}/otp_email"),
            ),
            Op::VerifyOtp => (
                Method::POST,
                format!("{a}/otp_email/{otp}/verify"),
                format!("{b}/otp_email/{otp}/_verify"),
            ),
            Op::ResendOtp => (
                Method::POST,
                format!("{a}/otp_email/{otp}/resend"),
                format!("{b}/otp_email/{otp}/_resend"),
            ),
            Op::RemoveOtp => (
                Method::DELETE,
                format!("{a}/otp_email/{otp}"),
                format!("{b}/otp_email/{otp}"),
            ),
        };
        match self.family {
            Family::A => (method, a_path),
            Family::B => (method, b_path),
        }
    }

    /// The family's body for an operation, from the family-neutral input: the SetEmail
    /// object (set, add), the code as a JSON string (verify), the resend object (resend),
    /// nothing (remove). The scope is added where this family carries it in the body.
    pub fn body(&self, op: Op, input: Value) -> Option<Value> {
        let in_body = self.family == Family::A && !self.scope_in_query;
        let mut body = match (self.family, op) {
            (_, Op::RemoveOtp) => return None,
            (Family::A, Op::SetEmail | Op::AddOtp) => json!({ "email": input }),
            (Family::A, Op::VerifyEmail | Op::VerifyOtp) => {
                json!({ "verificationCode": input })
            }
            (Family::B, Op::VerifyEmail | Op::VerifyOtp) => return Some(input),
            (_, _) => input,
        };
        if in_body && let Some(scope) = &self.scope {
            scope.add_to_body(&mut body);
        }
        Some(body)
    }

    /// The path with the scope's query parameters where this family carries them there.
    fn path_with_query(&self, op: Op, path: String) -> String {
        let in_query =
            self.family == Family::B || self.scope_in_query || matches!(op, Op::RemoveOtp);
        match &self.scope {
            Some(scope) if in_query && !scope.query().is_empty() => {
                format!("{path}?{}", scope.query())
            }
            _ => path,
        }
    }

    /// Sends an operation with a family-neutral input (see [`Fam::body`]).
    pub async fn call(&self, op: Op, user: &str, otp: &str, input: Value) -> Out {
        let (method, path) = self.route(op, user, otp);
        let path = self.path_with_query(op, path);
        let body = self.body(op, input).map(|b| Body {
            bytes: serde_json::to_vec(&b).expect("serialize body"),
            content_type: Some("application/json".into()),
        });
        let resp = self.api.send(method, &path, body).await;
        Out::new(self.family, op, user, resp)
    }

    /// Sends raw bytes with a content type to an operation's route (scope in the query).
    pub async fn call_raw(
        &self,
        op: Op,
        user: &str,
        otp: &str,
        bytes: impl Into<Vec<u8>>,
        content_type: Option<&str>,
    ) -> Out {
        let (method, path) = self.route(op, user, otp);
        let path = self.path_with_query(op, path);
        let body = Body {
            bytes: bytes.into(),
            content_type: content_type.map(str::to_string),
        };
        let resp = self.api.send(method, &path, Some(body)).await;
        Out::new(self.family, op, user, resp)
    }

    pub async fn set(&self, user: &str, email: Value) -> Out {
        self.call(Op::SetEmail, user, "", email).await
    }

    pub async fn verify(&self, user: &str, code: &str) -> Out {
        self.call(Op::VerifyEmail, user, "", json!(code)).await
    }

    pub async fn resend(&self, user: &str, body: Value) -> Out {
        self.call(Op::ResendEmail, user, "", body).await
    }

    pub async fn add_otp(&self, user: &str, email: Value) -> Out {
        self.call(Op::AddOtp, user, "", email).await
    }

    pub async fn verify_otp(&self, user: &str, otp: &str, code: &str) -> Out {
        self.call(Op::VerifyOtp, user, otp, json!(code)).await
    }

    pub async fn resend_otp(&self, user: &str, otp: &str, body: Value) -> Out {
        self.call(Op::ResendOtp, user, otp, body).await
    }

    pub async fn remove_otp(&self, user: &str, otp: &str) -> Out {
        self.call(Op::RemoveOtp, user, otp, Value::Null).await
    }

    /// A representative valid input for an operation (used by table tests of auth and
    /// lookup order): set/add with `returnCode`, verify with a well-formed code, resend with
    /// `returnCode`.
    pub fn sample_input(op: Op) -> Value {
        match op {
            Op::SetEmail | Op::AddOtp => {
                json!({"address": "sample@example.com", "returnCode": {}})
            }
            Op::VerifyEmail | Op::VerifyOtp => json!("ABC123"),
            Op::ResendEmail | Op::ResendOtp => json!({"returnCode": {}}),
            Op::RemoveOtp => Value::Null,
        }
    }
}

/// A normalized answer of either family.
#[derive(Clone)]
pub struct Out {
    pub family: Family,
    pub op: Op,
    pub user: String,
    pub resp: Resp,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "family {:?} {:?}: {:?}", self.family, self.op, self.resp)
    }
}

impl Out {
    #[track_caller]
    fn new(family: Family, op: Op, user: &str, resp: Resp) -> Out {
        assert_request_id(&resp);
        Out {
            family,
            op,
            user: user.to_string(),
            resp,
        }
    }

    pub fn status(&self) -> u16 {
        self.resp.status
    }

    /// Panics unless the call succeeded (200) with the family's `details` shape.
    #[track_caller]
    pub fn ok(self) -> Out {
        assert_eq!(self.resp.status, 200, "expected 200: {self:?}");
        match self.family {
            Family::A => assert_details_a(&self.resp.json["details"]),
            Family::B => assert_details_b(&self.resp.json["details"], &self.user),
        }
        self
    }

    /// Panics unless this is a SPEC 3.6 error with this status, code and id.
    #[track_caller]
    pub fn err(self, status: u16, code: i64, id: &str) -> Out {
        assert_error(&self.resp, status, code, Some(id));
        self
    }

    /// Panics unless this is a SPEC 3.6 error with this status and code (any id).
    #[track_caller]
    pub fn err_code(self, status: u16, code: i64) -> Out {
        assert_error(&self.resp, status, code, None);
        self
    }

    pub fn error_id(&self) -> Option<&str> {
        self.resp.error_id()
    }

    /// `verificationCode`, if present.
    pub fn code(&self) -> Option<String> {
        self.resp.json["verificationCode"]
            .as_str()
            .map(str::to_string)
    }

    /// `verificationCode`; panics if absent.
    #[track_caller]
    pub fn expect_code(&self) -> String {
        self.code()
            .unwrap_or_else(|| panic!("no verificationCode in {self:?}"))
    }

    /// Panics if the answer has a `verificationCode`.
    #[track_caller]
    pub fn expect_no_code(&self) -> &Out {
        assert!(
            self.resp.json.get("verificationCode").is_none(),
            "unexpected verificationCode in {self:?}"
        );
        self
    }

    /// `otpEmailId`; panics if absent or not a string.
    #[track_caller]
    pub fn otp_id(&self) -> String {
        self.resp.json["otpEmailId"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| panic!("no otpEmailId in {self:?}"))
            .to_string()
    }

    /// `details.changeDate` (A) or `details.changed` (B).
    pub fn changed(&self) -> String {
        let d = &self.resp.json["details"];
        let v = match self.family {
            Family::A => &d["changeDate"],
            Family::B => &d["changed"],
        };
        v.as_str().unwrap_or_default().to_string()
    }

    /// `details.resourceOwner` (A) or `details.owner.id` (B).
    pub fn owner(&self) -> String {
        let d = &self.resp.json["details"];
        let v = match self.family {
            Family::A => &d["resourceOwner"],
            Family::B => &d["owner"]["id"],
        };
        v.as_str().unwrap_or_default().to_string()
    }

    /// `details.sequence` (family A only; `None` for B).
    pub fn sequence(&self) -> Option<String> {
        self.resp.json["details"]["sequence"]
            .as_str()
            .map(str::to_string)
    }
}

/// Panics unless the answer carries a non-empty `x-request-id`.
#[track_caller]
pub fn assert_request_id(resp: &Resp) {
    assert!(
        resp.request_id().is_some_and(|id| !id.trim().is_empty()),
        "no x-request-id header on {resp:?}"
    );
}

/// Panics unless `value` is an RFC 3339 UTC timestamp with milliseconds
/// (`2024-06-17T09:46:05.265Z`).
#[track_caller]
pub fn assert_timestamp(value: &Value) {
    let s = value
        .as_str()
        .unwrap_or_else(|| panic!("timestamp is not a string: {value}"));
    let shape_ok = s.len() == 24
        && s.ends_with('Z')
        && s.as_bytes()[10] == b'T'
        && s.as_bytes()[19] == b'.'
        && chrono::DateTime::parse_from_rfc3339(s).is_ok();
    assert!(
        shape_ok,
        "not an RFC 3339 UTC timestamp with milliseconds: {s:?}"
    );
}

/// Panics unless `value` is a JSON string holding a positive decimal number.
#[track_caller]
pub fn assert_decimal_string(value: &Value) {
    let s = value
        .as_str()
        .unwrap_or_else(|| panic!("expected a decimal string, got {value}"));
    assert!(
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()),
        "expected a decimal string, got {s:?}"
    );
}

/// Family A / supporting `details`: exactly `sequence`, `changeDate`, `resourceOwner`.
#[track_caller]
pub fn assert_details_a(d: &Value) {
    let obj = d
        .as_object()
        .unwrap_or_else(|| panic!("details is not an object: {d}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["changeDate", "resourceOwner", "sequence"],
        "family A details: {d}"
    );
    assert_decimal_string(&d["sequence"]);
    assert_timestamp(&d["changeDate"]);
    assert!(
        d["resourceOwner"].as_str().is_some_and(|s| !s.is_empty()),
        "family A details without resourceOwner: {d}"
    );
}

/// Family B `details`: `id` (the user), `changed`, `owner` `{type: OWNER_TYPE_ORG, id}`,
/// optionally `created`; nothing else.
#[track_caller]
pub fn assert_details_b(d: &Value, user: &str) {
    let obj = d
        .as_object()
        .unwrap_or_else(|| panic!("details is not an object: {d}"));
    for key in obj.keys() {
        assert!(
            ["id", "created", "changed", "owner"].contains(&key.as_str()),
            "unexpected field {key} in family B details: {d}"
        );
    }
    assert_eq!(d["id"], json!(user), "family B details.id: {d}");
    assert_timestamp(&d["changed"]);
    if let Some(created) = obj.get("created") {
        assert_timestamp(created);
    }
    assert_eq!(d["owner"]["type"], "OWNER_TYPE_ORG", "family B owner: {d}");
    assert!(
        d["owner"]["id"].as_str().is_some_and(|s| !s.is_empty()),
        "family B owner without id: {d}"
    );
}

/// Panics unless `resp` is a SPEC 3.6 error: the HTTP status, `code`, a `message` ending in
/// `(<id>)`, and `details[0]` = `{"@type": "type.googleapis.com/zitadel.v1.ErrorDetail", id,
/// message}`. `id` `None` accepts any id.
#[track_caller]
pub fn assert_error(resp: &Resp, status: u16, code: i64, id: Option<&str>) {
    assert_eq!(resp.status, status, "unexpected HTTP status: {resp:?}");
    assert_eq!(resp.code(), Some(code), "unexpected error code: {resp:?}");
    let detail = &resp.json["details"][0];
    assert_eq!(
        detail["@type"], "type.googleapis.com/zitadel.v1.ErrorDetail",
        "error detail @type: {resp:?}"
    );
    let actual_id = detail["id"]
        .as_str()
        .unwrap_or_else(|| panic!("error without details[0].id: {resp:?}"));
    if let Some(id) = id {
        assert_eq!(actual_id, id, "unexpected error id: {resp:?}");
    }
    let detail_message = detail["message"].as_str().unwrap_or_default();
    assert!(
        !detail_message.is_empty(),
        "error detail without message: {resp:?}"
    );
    let message = resp.json["message"].as_str().unwrap_or_default();
    assert!(
        message.ends_with(&format!("({actual_id})")),
        "error message does not end with the id: {resp:?}"
    );
}

/// One test environment plus the admin client.
pub struct World {
    pub env: TestEnv,
    pub api: Api,
}

impl World {
    /// The default environment (bootstrap, api, one worker, SMTP sink).
    pub async fn start() -> World {
        World::from_env(TestEnv::start().await)
    }

    /// The default environment with extra variables.
    pub async fn start_with(vars: &[(&str, &str)]) -> World {
        World::from_builder(TestEnv::builder(), vars).await
    }

    /// A builder's environment with extra variables.
    pub async fn from_builder(mut builder: TestEnvBuilder, vars: &[(&str, &str)]) -> World {
        for (k, v) in vars {
            builder = builder.env(*k, *v);
        }
        World::from_env(builder.start().await)
    }

    pub fn from_env(env: TestEnv) -> World {
        let api = env.api();
        World { env, api }
    }

    /// The bootstrap organization.
    pub fn org_id(&self) -> String {
        self.env.bootstrap().org_id.clone()
    }

    pub fn instance_id(&self) -> String {
        self.env.bootstrap().instance_id.clone()
    }

    /// The admin client bound to a family.
    pub fn fam(&self, family: Family) -> Fam {
        Fam::new(self.api.clone(), family)
    }

    /// Creates a user (`POST /v3alpha/users` with `body`) with the admin token and returns
    /// its id. Panics unless the answer is 201.
    pub async fn create_user_with(&self, body: Value) -> String {
        create_user(&self.api, body).await
    }

    /// Creates a user without an email in the instance's first organization.
    pub async fn user(&self) -> String {
        self.create_user_with(json!({})).await
    }

    /// A user whose contact email `address` has a pending code, returned (`returnCode`).
    pub async fn user_with_pending(&self, address: &str) -> (String, String) {
        let user = self.user().await;
        let code = self
            .fam(Family::A)
            .set(&user, json!({"address": address, "returnCode": {}}))
            .await
            .ok()
            .expect_code();
        (user, code)
    }

    /// `GET /v3alpha/users/{user}` with the admin token: the `user` object. Panics unless 200.
    pub async fn get_user(&self, user: &str) -> Value {
        get_user(&self.api, user).await
    }

    /// The user's `details.sequence` from GET.
    pub async fn seq(&self, user: &str) -> String {
        self.get_user(user).await["details"]["sequence"]
            .as_str()
            .expect("details.sequence in GET")
            .to_string()
    }

    /// The contact email `{address, isVerified}` from GET (`Null` if none).
    pub async fn contact(&self, user: &str) -> Value {
        self.get_user(user).await["contact"]["email"].clone()
    }

    /// Runs `api token create ARGS...` and returns a client with that token.
    pub async fn token_client(&self, args: &[&str]) -> Api {
        let token = self.env.create_token(args).await;
        self.api.with_token(token)
    }

    /// Waits for the `n`-th mail to `address` and returns it.
    pub async fn mail_to(&self, address: &str, n: usize) -> ReceivedMail {
        let mails = self.env.sink.wait_for_to(address, n, MAIL_WAIT).await;
        mails[n - 1].clone()
    }

    /// Asserts that the sink holds exactly `n` mails and nothing more arrives for a while.
    pub async fn assert_mails_stay(&self, n: usize) {
        self.env.sink.assert_count_stays(n, NO_MAIL_WAIT).await;
    }
}

/// `POST /v3alpha/users`; panics unless 201 with an id and family-A details.
pub async fn create_user(api: &Api, body: Value) -> String {
    let resp = api.post("/v3alpha/users", body).await;
    assert_request_id(&resp);
    assert_eq!(resp.status, 201, "create user: {resp:?}");
    assert_details_a(&resp.json["details"]);
    resp.str_at("/id").to_string()
}

/// `GET /v3alpha/users/{user}`: the `user` object. Panics unless 200.
pub async fn get_user(api: &Api, user: &str) -> Value {
    let resp = api.get(&format!("/v3alpha/users/{user}")).await;
    assert_request_id(&resp);
    assert_eq!(resp.status, 200, "get user {user}: {resp:?}");
    assert_details_a(&resp.json["user"]["details"]);
    resp.json["user"].clone()
}

/// The code of a mail: the `code` query parameter of its link, checked to be shown on its own
/// in the text part too, with `len` characters of `alphabet`.
#[track_caller]
pub fn mailed_code(mail: &ReceivedMail, param: &str, len: usize, alphabet: &str) -> String {
    let code = mail
        .link_param(param)
        .unwrap_or_else(|| panic!("no {param} in the mail's link:\n{}", mail.raw_text()));
    assert_eq!(code.chars().count(), len, "code length in the link: {code}");
    assert!(
        code.chars().all(|c| alphabet.contains(c)),
        "code {code:?} has characters outside {alphabet:?}"
    );
    assert!(
        mail.standalone_codes(len, alphabet).contains(&code),
        "the text part does not show the code {code} on its own:\n{}",
        mail.text_body()
    );
    assert!(
        mail.html_body().contains(&code),
        "the HTML part does not show the code {code}"
    );
    code
}

/// A contact email code from a mail sent with the default URL template.
#[track_caller]
pub fn contact_code(mail: &ReceivedMail) -> String {
    mailed_code(mail, "code", 6, CONTACT_ALPHABET)
}

/// An OTP Email code from a mail sent with the default OTP URL template.
#[track_caller]
pub fn otp_code(mail: &ReceivedMail) -> String {
    mailed_code(mail, "code", 8, OTP_ALPHABET)
}

/// Panics unless `code` is `len` characters of `alphabet`.
#[track_caller]
pub fn assert_code_shape(code: &str, len: usize, alphabet: &str) {
    assert_eq!(code.chars().count(), len, "code {code:?} length");
    assert!(
        code.chars().all(|c| alphabet.contains(c)),
        "code {code:?} has characters outside {alphabet:?}"
    );
}

/// A code of the right shape that is not `code`.
pub fn wrong_code(code: &str) -> String {
    let mut chars: Vec<char> = code.chars().collect();
    let first = chars[0];
    chars[0] = if first == '0' { '1' } else { '0' };
    chars.into_iter().collect()
}

/// Generates `family_a` and `family_b` tests in a module named like the scenario function,
/// which takes a [`Family`]:
///
/// ```ignore
/// async fn unchanged_address_is_a_noop(f: Family) { ... }
/// both_families!(unchanged_address_is_a_noop);
/// ```
#[macro_export]
macro_rules! both_families {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn family_a() {
                    super::$name($crate::scenario::Family::A).await
                }
                #[tokio::test]
                async fn family_b() {
                    super::$name($crate::scenario::Family::B).await
                }
            }
        )*
    };
}
