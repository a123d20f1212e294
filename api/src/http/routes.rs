//! The two route families of SPEC 3.2 (A: `/v3alpha/users/...`) and 3.3 (B:
//! `/resources/v3alpha/users/...`), and the supporting user calls of 3.5. Each handler only
//! reads its wire shape, calls the one service function of the call, and renders the answer
//! with its family's `details`.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use common::commands::CreateUser;
use common::domain::{CONTACT_CODE_MAX_LEN, OTP_CODE_MAX_LEN, SubmittedCode};
use common::error::Rejection;

use super::dto::*;
use super::error::ApiError;
use super::extract::{Authenticated, JsonBody, ScopeParams};
use crate::state::AppState;

type Answer<T> = Result<Json<T>, ApiError>;

pub fn router() -> Router<AppState> {
    Router::new()
        // Family A
        .route("/v3alpha/users", post(create_user))
        .route(
            "/v3alpha/users/{user_id}",
            get(get_user).delete(delete_user),
        )
        .route("/v3alpha/users/{user_id}/email", put(a_set_email))
        .route(
            "/v3alpha/users/{user_id}/email/verify",
            post(a_verify_email),
        )
        .route(
            "/v3alpha/users/{user_id}/email/resend",
            post(resend_email::<DetailsA>),
        )
        .route("/v3alpha/users/{user_id}/otp_email", post(a_add_otp_email))
        .route(
            "/v3alpha/users/{user_id}/otp_email/{otp_email_id}",
            delete(remove_otp_email::<DetailsA>),
        )
        .route(
            "/v3alpha/users/{user_id}/otp_email/{otp_email_id}/verify",
            post(a_verify_otp_email),
        )
        .route(
            "/v3alpha/users/{user_id}/otp_email/{otp_email_id}/resend",
            post(resend_otp_email::<DetailsA>),
        )
        // Family B
        .route("/resources/v3alpha/users/{user_id}/email", put(b_set_email))
        .route(
            "/resources/v3alpha/users/{user_id}/email/_verify",
            post(b_verify_email),
        )
        .route(
            "/resources/v3alpha/users/{user_id}/email/_resend",
            post(resend_email::<DetailsB>),
        )
        .route(
            "/resources/v3alpha/users/{user_id}/otp_email",
            post(b_add_otp_email),
        )
        .route(
            "/resources/v3alpha/users/{user_id}/otp_email/{otp_email_id}",
            delete(remove_otp_email::<DetailsB>),
        )
        .route(
            "/resources/v3alpha/users/{user_id}/otp_email/{otp_email_id}/_verify",
            post(b_verify_otp_email),
        )
        .route(
            "/resources/v3alpha/users/{user_id}/otp_email/{otp_email_id}/_resend",
            post(resend_otp_email::<DetailsB>),
        )
}

async fn a_set_email(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(user_id): Path<String>,
    ScopeParams(query): ScopeParams,
    JsonBody(body): JsonBody<EmailRequest>,
) -> Answer<CodeResponse<DetailsA>> {
    let request = body.parse()?;
    let scope = query.merge(body.instance, body.organization);
    let outcome = state
        .set_contact_email(principal, scope, user_id, request)
        .await?;
    Ok(Json(outcome.into()))
}

async fn b_set_email(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(user_id): Path<String>,
    ScopeParams(query): ScopeParams,
    JsonBody(body): JsonBody<SetEmailDto>,
) -> Answer<CodeResponse<DetailsB>> {
    let request = body.parse("")?;
    let outcome = state
        .set_contact_email(principal, query.merge(None, None), user_id, request)
        .await?;
    Ok(Json(outcome.into()))
}

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

async fn resend_email<D: for<'a> From<&'a common::commands::Details>>(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(user_id): Path<String>,
    ScopeParams(query): ScopeParams,
    JsonBody(body): JsonBody<ResendRequest>,
) -> Answer<CodeResponse<D>> {
    let delivery = body.parse()?;
    let scope = query.merge(body.instance, body.organization);
    let outcome = state
        .resend_email_code(principal, scope, user_id, None, delivery)
        .await?;
    Ok(Json(outcome.into()))
}

async fn a_add_otp_email(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(user_id): Path<String>,
    ScopeParams(query): ScopeParams,
    JsonBody(body): JsonBody<EmailRequest>,
) -> Answer<CodeResponse<DetailsA>> {
    let request = body.parse()?;
    let scope = query.merge(body.instance, body.organization);
    let outcome = state
        .add_otp_email(principal, scope, user_id, request)
        .await?;
    Ok(Json(outcome.into()))
}

async fn b_add_otp_email(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(user_id): Path<String>,
    ScopeParams(query): ScopeParams,
    JsonBody(body): JsonBody<SetEmailDto>,
) -> Answer<CodeResponse<DetailsB>> {
    let request = body.parse("")?;
    let outcome = state
        .add_otp_email(principal, query.merge(None, None), user_id, request)
        .await?;
    Ok(Json(outcome.into()))
}

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

async fn resend_otp_email<D: for<'a> From<&'a common::commands::Details>>(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path((user_id, otp_email_id)): Path<(String, String)>,
    ScopeParams(query): ScopeParams,
    JsonBody(body): JsonBody<ResendRequest>,
) -> Answer<CodeResponse<D>> {
    let delivery = body.parse()?;
    let scope = query.merge(body.instance, body.organization);
    let outcome = state
        .resend_email_code(principal, scope, user_id, Some(otp_email_id), delivery)
        .await?;
    Ok(Json(outcome.into()))
}

async fn remove_otp_email<D: for<'a> From<&'a common::commands::Details>>(
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

async fn create_user(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    ScopeParams(query): ScopeParams,
    JsonBody(body): JsonBody<CreateUserRequest>,
) -> Result<(StatusCode, Json<CreateUserResponse>), ApiError> {
    let request = CreateUser {
        organization: None,
        username: CreateUser::parse_username(body.username.as_deref())?,
        email: body.email.as_ref().map(|e| e.parse("email.")).transpose()?,
    };
    let scope = query.merge(body.instance, body.organization);
    let outcome = state.create_user(principal, scope, request).await?;
    Ok((StatusCode::CREATED, Json(outcome.into())))
}

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
