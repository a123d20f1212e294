//! The `ZITADELUsers` RPCs. Each one reads its message into the domain values (see
//! [`super::convert`]), calls the same [`AppState`] function as the JSON routes, and answers
//! with family-B `details`. The caller was authenticated before the message was read (see
//! [`super::authenticate`]), so SPEC 2's order holds: token, validation, lookup, permission.

use common::auth::Principal;
use common::domain::{CONTACT_CODE_MAX_LEN, OTP_CODE_MAX_LEN, SubmittedCode};
use common::error::Error;
use common::trace::TraceContext;
use tonic::{Request, Response, Status};

use super::convert;
use super::proto::zitadel::resources::user::v3alpha::zitadel_users_server::ZitadelUsers;
use super::proto::zitadel::resources::user::v3alpha::*;
use super::status;
use crate::state::AppState;

/// The service implementation: the shared application state, nothing of its own.
pub struct Users {
    state: AppState,
}

impl Users {
    pub fn new(state: AppState) -> Self {
        Users { state }
    }
}

/// The principal the authentication layer put on the request.
fn caller<T>(request: &Request<T>) -> Result<Principal, Error> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Error::Internal("gRPC call without the authentication layer".into()))
}

/// The trace context the request middleware put on the request: the mail a call enqueues
/// carries it to the worker.
fn trace<T>(request: &Request<T>) -> Result<TraceContext, Error> {
    request
        .extensions()
        .get::<TraceContext>()
        .cloned()
        .ok_or_else(|| Error::Internal("gRPC call without the request middleware".into()))
}

fn answer<T>(result: Result<T, Error>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(status::from_error)
}

#[tonic::async_trait]
impl ZitadelUsers for Users {
    async fn set_contact_email(
        &self,
        request: Request<SetContactEmailRequest>,
    ) -> Result<Response<SetContactEmailResponse>, Status> {
        answer(
            async {
                let principal = caller(&request)?;
                let trace = trace(&request)?;
                let r = request.into_inner();
                let user_id = convert::required_id(r.id, "id")?;
                let email = convert::set_email(r.email)?;
                let scope = convert::scope(r.instance, r.organization);
                let outcome = self
                    .state
                    .set_contact_email(trace, principal, scope, user_id, email)
                    .await?;
                Ok(SetContactEmailResponse {
                    details: Some(convert::details(&outcome.details)),
                    verification_code: outcome.verification_code,
                })
            }
            .await,
        )
    }

    async fn verify_contact_email(
        &self,
        request: Request<VerifyContactEmailRequest>,
    ) -> Result<Response<VerifyContactEmailResponse>, Status> {
        answer(
            async {
                let principal = caller(&request)?;
                let r = request.into_inner();
                let user_id = convert::required_id(r.id, "id")?;
                let code = SubmittedCode::parse(
                    &r.verification_code,
                    "verificationCode",
                    CONTACT_CODE_MAX_LEN,
                )?;
                let scope = convert::scope(r.instance, r.organization);
                let details = self
                    .state
                    .verify_email(principal, scope, user_id, None, code)
                    .await?;
                Ok(VerifyContactEmailResponse {
                    details: Some(convert::details(&details)),
                })
            }
            .await,
        )
    }

    async fn resend_contact_email_code(
        &self,
        request: Request<ResendContactEmailCodeRequest>,
    ) -> Result<Response<ResendContactEmailCodeResponse>, Status> {
        answer(
            async {
                let principal = caller(&request)?;
                let trace = trace(&request)?;
                let r = request.into_inner();
                let user_id = convert::required_id(r.id, "id")?;
                let delivery = convert::delivery(r.verification)?;
                let scope = convert::scope(r.instance, r.organization);
                let outcome = self
                    .state
                    .resend_email_code(trace, principal, scope, user_id, None, delivery)
                    .await?;
                Ok(ResendContactEmailCodeResponse {
                    details: Some(convert::details(&outcome.details)),
                    verification_code: outcome.verification_code,
                })
            }
            .await,
        )
    }

    async fn add_otp_email_authenticator(
        &self,
        request: Request<AddOtpEmailAuthenticatorRequest>,
    ) -> Result<Response<AddOtpEmailAuthenticatorResponse>, Status> {
        answer(
            async {
                let principal = caller(&request)?;
                let trace = trace(&request)?;
                let r = request.into_inner();
                let user_id = convert::required_id(r.id, "id")?;
                let email = convert::set_email(r.email)?;
                let scope = convert::scope(r.instance, r.organization);
                let outcome = self
                    .state
                    .add_otp_email(trace, principal, scope, user_id, email)
                    .await?;
                Ok(AddOtpEmailAuthenticatorResponse {
                    details: Some(convert::details(&outcome.details)),
                    otp_email_id: outcome
                        .otp_email_id
                        .map(|id| id.to_string())
                        .unwrap_or_default(),
                    verification_code: outcome.verification_code,
                })
            }
            .await,
        )
    }

    async fn verify_otp_email_registration(
        &self,
        request: Request<VerifyOtpEmailRegistrationRequest>,
    ) -> Result<Response<VerifyOtpEmailRegistrationResponse>, Status> {
        answer(
            async {
                let principal = caller(&request)?;
                let r = request.into_inner();
                let user_id = convert::required_id(r.id, "id")?;
                let otp_email_id = convert::required_id(r.otp_email_id, "otpEmailId")?;
                let code = SubmittedCode::parse(&r.code, "code", OTP_CODE_MAX_LEN)?;
                let scope = convert::scope(r.instance, r.organization);
                let details = self
                    .state
                    .verify_email(principal, scope, user_id, Some(otp_email_id), code)
                    .await?;
                Ok(VerifyOtpEmailRegistrationResponse {
                    details: Some(convert::details(&details)),
                })
            }
            .await,
        )
    }

    async fn remove_otp_email_authenticator(
        &self,
        request: Request<RemoveOtpEmailAuthenticatorRequest>,
    ) -> Result<Response<RemoveOtpEmailAuthenticatorResponse>, Status> {
        answer(
            async {
                let principal = caller(&request)?;
                let r = request.into_inner();
                let user_id = convert::required_id(r.id, "id")?;
                let otp_email_id = convert::required_id(r.otp_email_id, "otpEmailId")?;
                let scope = convert::scope(r.instance, r.organization);
                let details = self
                    .state
                    .remove_otp_email(principal, scope, user_id, otp_email_id)
                    .await?;
                Ok(RemoveOtpEmailAuthenticatorResponse {
                    details: Some(convert::details(&details)),
                })
            }
            .await,
        )
    }
}
