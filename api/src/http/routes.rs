//! The two route families of SPEC 3.2 (A: `/v3alpha/users/...`) and 3.3 (B:
//! `/resources/v3alpha/users/...`), and the supporting user calls of 3.5. Each handler only
//! reads its wire shape, calls the one service function of the call, and renders the answer
//! with its family's `details`.

use axum::Json;
use axum::Router;
use axum::extract::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use common::branding::Branding;
use common::commands::{CreateUser, Details};
use common::domain::{CONTACT_CODE_MAX_LEN, OTP_CODE_MAX_LEN, SubmittedCode};
use common::error::Rejection;
use common::mail_settings::MailSettings;
use common::trace::TraceContext;

use super::dto::*;
use super::error::{ApiError, ErrorBody};
use super::extract::{Authenticated, JsonBody, ScopeParams, ScopeQuery};
use crate::state::AppState;

type Answer<T> = Result<Json<T>, ApiError>;

/// The error answers of a call that reads a JSON body and may enqueue a mail (SPEC 3.6); the
/// body is always [`ErrorBody`].
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ErrorAnswers {
    /// Validation failed or the JSON is malformed (code 3); or a code is expired, void or
    /// there is none to resend, or the user has too many OTP Email authenticators (code 9).
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No or unknown bearer token (code 16).
    #[response(status = 401)]
    Unauthenticated(ErrorBody),
    /// The token may not do this (code 7, `AUTHZ-HKJD33`).
    #[response(status = 403)]
    PermissionDenied(ErrorBody),
    /// Unknown user, organization, instance or authenticator (code 5).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// Body larger than 64 KiB (code 3).
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// Content type other than JSON (code 3).
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// Resend limit (code 8, `COMMAND-Rs8wq1`), with `Retry-After`.
    #[response(status = 429, headers(("Retry-After" = u64, description = "Whole seconds to wait")))]
    TooManyRequests(ErrorBody),
    /// Internal error (code 13); the log has the cause under the `x-request-id`.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// Database unavailable (code 14).
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// The error answers of a call with a body that sends no mail (verify, mail settings): those
/// of [`ErrorAnswers`] but 429.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum VerifyErrorAnswers {
    /// Validation failed or the JSON is malformed (code 3); a wrong code (code 3,
    /// `CODE-woT0xc`); an expired code (code 9, `CODE-QvUQ4P`) or too many wrong codes (code
    /// 9, `CODE-Lk7Gq2`).
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No or unknown bearer token (code 16).
    #[response(status = 401)]
    Unauthenticated(ErrorBody),
    /// The token may not do this (code 7, `AUTHZ-HKJD33`).
    #[response(status = 403)]
    PermissionDenied(ErrorBody),
    /// Unknown user, organization, instance or authenticator (code 5).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// Body larger than 64 KiB (code 3).
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// Content type other than JSON (code 3).
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// Internal error (code 13); the log has the cause under the `x-request-id`.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// Database unavailable (code 14).
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// The error answers of a call without a body (get, delete, remove).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum NoBodyErrorAnswers {
    /// No or unknown bearer token (code 16).
    #[response(status = 401)]
    Unauthenticated(ErrorBody),
    /// The token may not do this (code 7, `AUTHZ-HKJD33`).
    #[response(status = 403)]
    PermissionDenied(ErrorBody),
    /// Unknown user, organization, instance or authenticator (code 5).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// Internal error (code 13); the log has the cause under the `x-request-id`.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// Database unavailable (code 14).
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

pub fn router() -> Router<AppState> {
    const A: &str = "/v3alpha/users/{userId}";
    const B: &str = "/resources/v3alpha/users/{id}";
    Router::new()
        // Supporting calls and family A
        .route("/v3alpha/users", post(create_user))
        .route(
            "/v3alpha/instances/{instanceId}/mail_settings",
            get(get_mail_settings).put(put_mail_settings),
        )
        .route(
            "/v3alpha/organizations/{orgId}/branding",
            get(get_org_branding).put(put_org_branding),
        )
        .route(A, get(get_user).delete(delete_user))
        .route(&format!("{A}/email"), put(a_set_email))
        .route(&format!("{A}/email/verify"), post(a_verify_email))
        .route(&format!("{A}/email/resend"), post(a_resend_email))
        .route(&format!("{A}/otp_email"), post(a_add_otp_email))
        .route(
            &format!("{A}/otp_email/{{otpEmailId}}"),
            delete(a_remove_otp_email),
        )
        .route(
            &format!("{A}/otp_email/{{otpEmailId}}/verify"),
            post(a_verify_otp_email),
        )
        .route(
            &format!("{A}/otp_email/{{otpEmailId}}/resend"),
            post(a_resend_otp_email),
        )
        // Family B
        .route(&format!("{B}/email"), put(b_set_email))
        .route(&format!("{B}/email/_verify"), post(b_verify_email))
        .route(&format!("{B}/email/_resend"), post(b_resend_email))
        .route(&format!("{B}/otp_email"), post(b_add_otp_email))
        .route(
            &format!("{B}/otp_email/{{otpEmailId}}"),
            delete(b_remove_otp_email),
        )
        .route(
            &format!("{B}/otp_email/{{otpEmailId}}/_verify"),
            post(b_verify_otp_email),
        )
        .route(
            &format!("{B}/otp_email/{{otpEmailId}}/_resend"),
            post(b_resend_otp_email),
        )
}

#[utoipa::path(put, path = "/v3alpha/users/{userId}/email", tag = "Family A",
    summary = "Set contact email",
    params(("userId" = String, Path), ScopeQuery), request_body = EmailRequest,
    responses((status = 200, body = CodeResponse<DetailsA>), ErrorAnswers),
    security(("bearer" = [])))]
async fn a_set_email(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Extension(trace): Extension<TraceContext>,
    Path(user_id): Path<String>,
    ScopeParams(query): ScopeParams,
    JsonBody(body): JsonBody<EmailRequest>,
) -> Answer<CodeResponse<DetailsA>> {
    let request = body.parse()?;
    let scope = query.merge(body.instance, body.organization);
    let outcome = state
        .set_contact_email(trace, principal, scope, user_id, request)
        .await?;
    Ok(Json(outcome.into()))
}

#[utoipa::path(put, path = "/resources/v3alpha/users/{id}/email", tag = "Family B",
    summary = "Set contact email",
    params(("id" = String, Path), ScopeQuery), request_body = SetEmailDto,
    responses((status = 200, body = CodeResponse<DetailsB>), ErrorAnswers),
    security(("bearer" = [])))]
async fn b_set_email(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Extension(trace): Extension<TraceContext>,
    Path(user_id): Path<String>,
    ScopeParams(query): ScopeParams,
    JsonBody(body): JsonBody<SetEmailDto>,
) -> Answer<CodeResponse<DetailsB>> {
    let request = body.parse("")?;
    let outcome = state
        .set_contact_email(trace, principal, query.merge(None, None), user_id, request)
        .await?;
    Ok(Json(outcome.into()))
}

#[utoipa::path(post, path = "/v3alpha/users/{userId}/email/verify", tag = "Family A",
    summary = "Verify the contact email",
    params(("userId" = String, Path), ScopeQuery), request_body = VerifyRequest,
    responses((status = 200, body = DetailsResponse<DetailsA>), VerifyErrorAnswers),
    security(("bearer" = [])))]
async fn a_verify_email(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(user_id): Path<String>,
    ScopeParams(query): ScopeParams,
    JsonBody(body): JsonBody<VerifyRequest>,
) -> Answer<DetailsResponse<DetailsA>> {
    let code = parse_code(
        body.verification_code.as_deref(),
        "verificationCode",
        CONTACT_CODE_MAX_LEN,
    )?;
    let scope = query.merge(body.instance, body.organization);
    let details = state
        .verify_email(principal, scope, user_id, None, code)
        .await?;
    Ok(Json(details.into()))
}

#[utoipa::path(post, path = "/resources/v3alpha/users/{id}/email/_verify", tag = "Family B",
    summary = "Verify the contact email",
    params(("id" = String, Path), ScopeQuery),
    request_body(content = String, content_type = "application/json",
        description = "The verification code as a bare JSON string"),
    responses((status = 200, body = DetailsResponse<DetailsB>), VerifyErrorAnswers),
    security(("bearer" = [])))]
async fn b_verify_email(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(user_id): Path<String>,
    ScopeParams(query): ScopeParams,
    JsonBody(body): JsonBody<BareString>,
) -> Answer<DetailsResponse<DetailsB>> {
    let code = parse_code(body.0.as_deref(), "body", CONTACT_CODE_MAX_LEN)?;
    let details = state
        .verify_email(principal, query.merge(None, None), user_id, None, code)
        .await?;
    Ok(Json(details.into()))
}

#[utoipa::path(post, path = "/v3alpha/users/{userId}/email/resend", tag = "Family A",
    summary = "Resend the contact email code",
    params(("userId" = String, Path), ScopeQuery), request_body = ResendRequest,
    responses((status = 200, body = CodeResponse<DetailsA>), ErrorAnswers),
    security(("bearer" = [])))]
async fn a_resend_email(
    state: State<AppState>,
    principal: Authenticated,
    trace: Extension<TraceContext>,
    user_id: Path<String>,
    query: ScopeParams,
    body: JsonBody<ResendRequest>,
) -> Answer<CodeResponse<DetailsA>> {
    resend(state, principal, trace, user_id.0, None, query, body).await
}

#[utoipa::path(post, path = "/resources/v3alpha/users/{id}/email/_resend", tag = "Family B",
    summary = "Resend the contact email code",
    params(("id" = String, Path), ScopeQuery), request_body = ResendRequest,
    responses((status = 200, body = CodeResponse<DetailsB>), ErrorAnswers),
    security(("bearer" = [])))]
async fn b_resend_email(
    state: State<AppState>,
    principal: Authenticated,
    trace: Extension<TraceContext>,
    user_id: Path<String>,
    query: ScopeParams,
    body: JsonBody<ResendRequest>,
) -> Answer<CodeResponse<DetailsB>> {
    resend(state, principal, trace, user_id.0, None, query, body).await
}

#[utoipa::path(post, path = "/v3alpha/users/{userId}/otp_email", tag = "Family A",
    summary = "Add an OTP Email authenticator",
    params(("userId" = String, Path), ScopeQuery), request_body = EmailRequest,
    responses((status = 200, body = CodeResponse<DetailsA>),
        (status = 409, description = "Address already registered (code 6, COMMAND-MKL2s)", body = ErrorBody),
        ErrorAnswers),
    security(("bearer" = [])))]
async fn a_add_otp_email(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Extension(trace): Extension<TraceContext>,
    Path(user_id): Path<String>,
    ScopeParams(query): ScopeParams,
    JsonBody(body): JsonBody<EmailRequest>,
) -> Answer<CodeResponse<DetailsA>> {
    let request = body.parse()?;
    let scope = query.merge(body.instance, body.organization);
    let outcome = state
        .add_otp_email(trace, principal, scope, user_id, request)
        .await?;
    Ok(Json(outcome.into()))
}

#[utoipa::path(post, path = "/resources/v3alpha/users/{id}/otp_email", tag = "Family B",
    summary = "Add an OTP Email authenticator",
    params(("id" = String, Path), ScopeQuery), request_body = SetEmailDto,
    responses((status = 200, body = CodeResponse<DetailsB>),
        (status = 409, description = "Address already registered (code 6, COMMAND-MKL2s)", body = ErrorBody),
        ErrorAnswers),
    security(("bearer" = [])))]
async fn b_add_otp_email(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Extension(trace): Extension<TraceContext>,
    Path(user_id): Path<String>,
    ScopeParams(query): ScopeParams,
    JsonBody(body): JsonBody<SetEmailDto>,
) -> Answer<CodeResponse<DetailsB>> {
    let request = body.parse("")?;
    let outcome = state
        .add_otp_email(trace, principal, query.merge(None, None), user_id, request)
        .await?;
    Ok(Json(outcome.into()))
}

#[utoipa::path(post, path = "/v3alpha/users/{userId}/otp_email/{otpEmailId}/verify", tag = "Family A",
    summary = "Verify an OTP Email registration",
    params(("userId" = String, Path), ("otpEmailId" = String, Path), ScopeQuery),
    request_body = VerifyRequest,
    responses((status = 200, body = DetailsResponse<DetailsA>), VerifyErrorAnswers),
    security(("bearer" = [])))]
async fn a_verify_otp_email(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path((user_id, otp_email_id)): Path<(String, String)>,
    ScopeParams(query): ScopeParams,
    JsonBody(body): JsonBody<VerifyRequest>,
) -> Answer<DetailsResponse<DetailsA>> {
    let code = parse_code(
        body.verification_code.as_deref(),
        "verificationCode",
        OTP_CODE_MAX_LEN,
    )?;
    let scope = query.merge(body.instance, body.organization);
    let details = state
        .verify_email(principal, scope, user_id, Some(otp_email_id), code)
        .await?;
    Ok(Json(details.into()))
}

#[utoipa::path(post, path = "/resources/v3alpha/users/{id}/otp_email/{otpEmailId}/_verify", tag = "Family B",
    summary = "Verify an OTP Email registration",
    params(("id" = String, Path), ("otpEmailId" = String, Path), ScopeQuery),
    request_body(content = String, content_type = "application/json",
        description = "The verification code as a bare JSON string"),
    responses((status = 200, body = DetailsResponse<DetailsB>), VerifyErrorAnswers),
    security(("bearer" = [])))]
async fn b_verify_otp_email(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path((user_id, otp_email_id)): Path<(String, String)>,
    ScopeParams(query): ScopeParams,
    JsonBody(body): JsonBody<BareString>,
) -> Answer<DetailsResponse<DetailsB>> {
    let code = parse_code(body.0.as_deref(), "body", OTP_CODE_MAX_LEN)?;
    let details = state
        .verify_email(
            principal,
            query.merge(None, None),
            user_id,
            Some(otp_email_id),
            code,
        )
        .await?;
    Ok(Json(details.into()))
}

#[utoipa::path(post, path = "/v3alpha/users/{userId}/otp_email/{otpEmailId}/resend", tag = "Family A",
    summary = "Resend an OTP Email code",
    params(("userId" = String, Path), ("otpEmailId" = String, Path), ScopeQuery),
    request_body = ResendRequest,
    responses((status = 200, body = CodeResponse<DetailsA>), ErrorAnswers),
    security(("bearer" = [])))]
async fn a_resend_otp_email(
    state: State<AppState>,
    principal: Authenticated,
    trace: Extension<TraceContext>,
    Path((user_id, otp_email_id)): Path<(String, String)>,
    query: ScopeParams,
    body: JsonBody<ResendRequest>,
) -> Answer<CodeResponse<DetailsA>> {
    resend(
        state,
        principal,
        trace,
        user_id,
        Some(otp_email_id),
        query,
        body,
    )
    .await
}

#[utoipa::path(post, path = "/resources/v3alpha/users/{id}/otp_email/{otpEmailId}/_resend", tag = "Family B",
    summary = "Resend an OTP Email code",
    params(("id" = String, Path), ("otpEmailId" = String, Path), ScopeQuery),
    request_body = ResendRequest,
    responses((status = 200, body = CodeResponse<DetailsB>), ErrorAnswers),
    security(("bearer" = [])))]
async fn b_resend_otp_email(
    state: State<AppState>,
    principal: Authenticated,
    trace: Extension<TraceContext>,
    Path((user_id, otp_email_id)): Path<(String, String)>,
    query: ScopeParams,
    body: JsonBody<ResendRequest>,
) -> Answer<CodeResponse<DetailsB>> {
    resend(
        state,
        principal,
        trace,
        user_id,
        Some(otp_email_id),
        query,
        body,
    )
    .await
}

/// Resend, for both families and both kinds of address.
async fn resend<D: for<'a> From<&'a Details>>(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Extension(trace): Extension<TraceContext>,
    user_id: String,
    otp_email_id: Option<String>,
    ScopeParams(query): ScopeParams,
    JsonBody(body): JsonBody<ResendRequest>,
) -> Answer<CodeResponse<D>> {
    let delivery = body.parse()?;
    let scope = query.merge(body.instance, body.organization);
    let outcome = state
        .resend_email_code(trace, principal, scope, user_id, otp_email_id, delivery)
        .await?;
    Ok(Json(outcome.into()))
}

#[utoipa::path(delete, path = "/v3alpha/users/{userId}/otp_email/{otpEmailId}", tag = "Family A",
    summary = "Remove an OTP Email authenticator",
    params(("userId" = String, Path), ("otpEmailId" = String, Path), ScopeQuery),
    responses((status = 200, body = DetailsResponse<DetailsA>), NoBodyErrorAnswers),
    security(("bearer" = [])))]
async fn a_remove_otp_email(
    state: State<AppState>,
    principal: Authenticated,
    ids: Path<(String, String)>,
    query: ScopeParams,
) -> Answer<DetailsResponse<DetailsA>> {
    remove_otp_email(state, principal, ids, query).await
}

#[utoipa::path(delete, path = "/resources/v3alpha/users/{id}/otp_email/{otpEmailId}", tag = "Family B",
    summary = "Remove an OTP Email authenticator",
    params(("id" = String, Path), ("otpEmailId" = String, Path), ScopeQuery),
    responses((status = 200, body = DetailsResponse<DetailsB>), NoBodyErrorAnswers),
    security(("bearer" = [])))]
async fn b_remove_otp_email(
    state: State<AppState>,
    principal: Authenticated,
    ids: Path<(String, String)>,
    query: ScopeParams,
) -> Answer<DetailsResponse<DetailsB>> {
    remove_otp_email(state, principal, ids, query).await
}

async fn remove_otp_email<D: for<'a> From<&'a Details>>(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path((user_id, otp_email_id)): Path<(String, String)>,
    ScopeParams(query): ScopeParams,
) -> Answer<DetailsResponse<D>> {
    let details = state
        .remove_otp_email(principal, query.merge(None, None), user_id, otp_email_id)
        .await?;
    Ok(Json(details.into()))
}

#[utoipa::path(post, path = "/v3alpha/users", tag = "Users",
    summary = "Create a user",
    params(ScopeQuery), request_body = CreateUserRequest,
    responses((status = 201, body = CreateUserResponse),
        (status = 409, description = "Username taken (code 6)", body = ErrorBody),
        ErrorAnswers),
    security(("bearer" = [])))]
async fn create_user(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Extension(trace): Extension<TraceContext>,
    ScopeParams(query): ScopeParams,
    JsonBody(body): JsonBody<CreateUserRequest>,
) -> Result<(StatusCode, Json<CreateUserResponse>), ApiError> {
    let request = CreateUser {
        organization: None,
        username: CreateUser::parse_username(body.username.as_deref())?,
        preferred_language: CreateUser::parse_language(body.preferred_language.as_deref())?,
        email: body.email.as_ref().map(|e| e.parse("email.")).transpose()?,
    };
    let scope = query.merge(body.instance, body.organization);
    let outcome = state.create_user(trace, principal, scope, request).await?;
    Ok((StatusCode::CREATED, Json(outcome.into())))
}

#[utoipa::path(get, path = "/v3alpha/users/{userId}", tag = "Users",
    summary = "Get a user",
    params(("userId" = String, Path), ScopeQuery),
    responses((status = 200, body = GetUserResponse), NoBodyErrorAnswers),
    security(("bearer" = [])))]
async fn get_user(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(user_id): Path<String>,
    ScopeParams(query): ScopeParams,
) -> Answer<GetUserResponse> {
    let user = state
        .get_user(principal, query.merge(None, None), user_id)
        .await?;
    Ok(Json(user.into()))
}

#[utoipa::path(delete, path = "/v3alpha/users/{userId}", tag = "Users",
    summary = "Delete a user (unsent mail is cancelled)",
    params(("userId" = String, Path), ScopeQuery),
    responses((status = 200, body = DetailsResponse<DetailsA>), NoBodyErrorAnswers),
    security(("bearer" = [])))]
async fn delete_user(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(user_id): Path<String>,
    ScopeParams(query): ScopeParams,
) -> Answer<DetailsResponse<DetailsA>> {
    let details = state
        .delete_user(principal, query.merge(None, None), user_id)
        .await?;
    Ok(Json(details.into()))
}

#[utoipa::path(get, path = "/v3alpha/instances/{instanceId}/mail_settings", tag = "Instances",
    summary = "Get an instance's mail settings (secrets shown as ***)",
    params(("instanceId" = String, Path)),
    responses((status = 200, body = MailSettingsSchema), NoBodyErrorAnswers),
    security(("bearer" = [])))]
async fn get_mail_settings(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(instance_id): Path<String>,
) -> Answer<MailSettings> {
    Ok(Json(state.mail_settings(principal, instance_id).await?))
}

#[utoipa::path(put, path = "/v3alpha/instances/{instanceId}/mail_settings", tag = "Instances",
    summary = "Replace an instance's mail settings (a field left out is unset; *** keeps a secret)",
    params(("instanceId" = String, Path)),
    request_body = MailSettingsSchema,
    responses((status = 200, body = MailSettingsSchema), VerifyErrorAnswers),
    security(("bearer" = [])))]
async fn put_mail_settings(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(instance_id): Path<String>,
    JsonBody(settings): JsonBody<MailSettings>,
) -> Answer<MailSettings> {
    Ok(Json(
        state
            .replace_mail_settings(principal, instance_id, settings)
            .await?,
    ))
}

#[utoipa::path(get, path = "/v3alpha/organizations/{orgId}/branding", tag = "Instances",
    summary = "Get an organization's own mail branding",
    params(("orgId" = String, Path)),
    responses((status = 200, body = BrandingSchema), NoBodyErrorAnswers),
    security(("bearer" = [])))]
async fn get_org_branding(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(org_id): Path<String>,
) -> Answer<Branding> {
    Ok(Json(state.org_branding(principal, org_id).await?))
}

#[utoipa::path(put, path = "/v3alpha/organizations/{orgId}/branding", tag = "Instances",
    summary = "Replace an organization's mail branding (unset fields fall back to the instance's)",
    params(("orgId" = String, Path)),
    request_body = BrandingSchema,
    responses((status = 200, body = BrandingSchema), VerifyErrorAnswers),
    security(("bearer" = [])))]
async fn put_org_branding(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(org_id): Path<String>,
    JsonBody(branding): JsonBody<Branding>,
) -> Answer<Branding> {
    Ok(Json(
        state
            .replace_org_branding(principal, org_id, branding)
            .await?,
    ))
}

/// Stands for [`Branding`] in the OpenAPI document, whose schema is written by hand.
#[derive(utoipa::ToSchema)]
#[schema(as = Branding)]
#[allow(dead_code)]
pub struct BrandingSchema {}

/// Stands for [`MailSettings`] in the OpenAPI document, whose schema is written by hand
/// (`openapi::request_schemas`).
#[derive(utoipa::ToSchema)]
#[schema(as = MailSettings)]
#[allow(dead_code)]
pub struct MailSettingsSchema {}

/// Family B verify bodies: a bare JSON string.
pub struct BareString(Option<String>);

impl<'de> serde::Deserialize<'de> for BareString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        match value {
            serde_json::Value::String(s) => Ok(BareString(Some(s))),
            // An empty body reads as `{}`: no code given.
            serde_json::Value::Object(o) if o.is_empty() => Ok(BareString(None)),
            _ => Err(serde::de::Error::custom(
                "the body must be the verification code as a JSON string",
            )),
        }
    }
}

fn parse_code(raw: Option<&str>, field: &str, max_len: usize) -> Result<SubmittedCode, Rejection> {
    SubmittedCode::parse(raw.unwrap_or(""), field, max_len)
}

/// The OpenAPI 3 description of the JSON API, generated from the handlers and types above.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Contact email service", description = "ZITADEL-compatible v3alpha user API for the contact email and OTP Email authenticators. See SPEC.md."),
    paths(
        create_user, get_user, delete_user, get_mail_settings, put_mail_settings,
        get_org_branding, put_org_branding,
        a_set_email, a_verify_email, a_resend_email,
        a_add_otp_email, a_verify_otp_email, a_resend_otp_email, a_remove_otp_email,
        b_set_email, b_verify_email, b_resend_email,
        b_add_otp_email, b_verify_otp_email, b_resend_otp_email, b_remove_otp_email,
        super::health::healthz, super::health::readyz, super::health::metrics,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "Personal access token from `api bootstrap` or `api token create`",
                    ))
                    .build(),
            ),
        );
    }
}
