//! The SPEC 3.6 error body, and the one place where a domain error becomes an HTTP answer.
//! Faults are logged here (under the request's span, so with its request id) and shown to
//! the client without internals.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use common::error::{Code, Error, Rejection};
use serde::Serialize;

/// The error body of every failed call (SPEC 3.6); `code` is the gRPC status code.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    code: i32,
    message: String,
    details: [ErrorDetail; 1],
}

/// `zitadel.v1.ErrorDetail`: the stable error id and message.
#[derive(Serialize, utoipa::ToSchema)]
struct ErrorDetail {
    #[serde(rename = "@type")]
    type_url: &'static str,
    id: &'static str,
    message: String,
}

impl ErrorBody {
    pub fn of(r: &Rejection) -> Self {
        ErrorBody {
            code: r.code.as_i32(),
            message: r.to_string(),
            details: [ErrorDetail {
                type_url: "type.googleapis.com/zitadel.v1.ErrorDetail",
                id: r.id,
                message: r.message.to_string(),
            }],
        }
    }
}

/// The HTTP status of SPEC 3.6 for a gRPC code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::InvalidArgument | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error on its way to the client.
#[derive(Debug)]
pub enum ApiError {
    /// A domain error: a rejection, answered with its code's status, or a fault.
    Domain(Error),
    /// A refusal of the HTTP layer itself, whose status SPEC 3.6 sets apart from its code's
    /// (405, 413, 415).
    Http(StatusCode, Rejection),
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::Domain(e)
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        ApiError::Domain(Error::Rejected(r))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Domain(e) => {
                if e.is_fault() {
                    tracing::error!(error = %e, "request failed");
                }
                let r = e.public();
                rejection_response(http_status(r.code), &r)
            }
            ApiError::Http(status, r) => rejection_response(status, &r),
        }
    }
}

fn rejection_response(status: StatusCode, r: &Rejection) -> Response {
    let mut response = (status, Json(ErrorBody::of(r))).into_response();
    if let Some(secs) = r.retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}
