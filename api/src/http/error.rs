//! The SPEC 3.6 error body, and the one place where a domain error becomes an HTTP answer.
//! Faults are logged here (under the request's span, so with its request id) and shown to
//! the client without internals.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use common::error::{Error, Rejection};
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

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        ApiError(Error::Rejected(r))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.0.is_fault() {
            tracing::error!(error = %self.0, "request failed");
        }
        rejection_response(&self.0.public())
    }
}

pub fn rejection_response(r: &Rejection) -> Response {
    let status = StatusCode::from_u16(r.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(ErrorBody::of(r))).into_response();
    if let Some(secs) = r.retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}
