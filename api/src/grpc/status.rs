//! The one place where a domain error becomes a gRPC status (SPEC 3.6, 4): the code of the
//! rejection, the same message as the JSON error body, and a `google.rpc.Status` in the
//! status details whose `details` hold one `zitadel.v1.ErrorDetail` (id, message). Faults
//! are logged here, under the request's span, and shown without internals, as over HTTP.

use axum::body::Bytes;
use common::error::{Error, Rejection};
use prost::Message;
use tonic::{Code, Status};
// `google.rpc.Status`, the standard payload of the `grpc-status-details-bin` trailer.
use tonic_types::pb::Status as RpcStatus;

use super::proto::zitadel::v1::ErrorDetail;

/// Type URL of the detail, as ZITADEL sends it.
pub const ERROR_DETAIL_TYPE_URL: &str = "type.googleapis.com/zitadel.v1.ErrorDetail";

/// The status a failed call answers with.
pub fn from_error(error: Error) -> Status {
    if error.is_fault() {
        tracing::error!(error = %error, "request failed");
    }
    from_rejection(&error.public())
}

/// The status of a rejection: same code, message and detail as the JSON error body.
pub fn from_rejection(rejection: &Rejection) -> Status {
    let code = rejection.code.as_i32();
    let message = rejection.to_string();
    let detail = ErrorDetail {
        id: rejection.id.to_owned(),
        message: rejection.message.to_string(),
    };
    let details = RpcStatus {
        code,
        message: message.clone(),
        details: vec![prost_types::Any {
            type_url: ERROR_DETAIL_TYPE_URL.to_owned(),
            value: detail.encode_to_vec(),
        }],
    };
    let mut status = Status::with_details(
        Code::from_i32(code),
        message,
        Bytes::from(details.encode_to_vec()),
    );
    // The resend limit tells when to try again, as `Retry-After` does over HTTP.
    if let Some(secs) = rejection.retry_after {
        status.metadata_mut().insert("retry-after", secs.into());
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::error::{Call, Code as ErrorCode};

    #[test]
    fn a_rejection_keeps_code_message_and_detail() {
        let status = from_rejection(&Rejection::user_not_found(Call::SetContactEmail));
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(
            status.message(),
            "User could not be found (COMMAND-nJ0TQFuRmP)"
        );
        let rpc = RpcStatus::decode(status.details()).unwrap();
        assert_eq!(rpc.code, 5);
        assert_eq!(rpc.message, status.message());
        assert_eq!(rpc.details.len(), 1);
        assert_eq!(rpc.details[0].type_url, ERROR_DETAIL_TYPE_URL);
        let detail = ErrorDetail::decode(rpc.details[0].value.as_slice()).unwrap();
        assert_eq!(detail.id, "COMMAND-nJ0TQFuRmP");
        assert_eq!(detail.message, "User could not be found");
    }

    /// The details are the bytes a client of ZITADEL's protos decodes: `google.rpc.Status`
    /// {code 5, message, one `Any` holding the `ErrorDetail`}, as encoded before the message
    /// type came from `tonic-types`.
    #[test]
    fn the_details_keep_their_wire_format() {
        let status = from_rejection(&Rejection::user_not_found(Call::SetContactEmail));
        let hex: String = status
            .details()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "0805122c5573657220636f756c64206e6f7420626520666f756e642028434f4d4d414e442d6e4a30\
             54514675526d50291a5b0a2a747970652e676f6f676c65617069732e636f6d2f7a69746164656c2e\
             76312e4572726f7244657461696c122d0a12434f4d4d414e442d6e4a3054514675526d5012175573\
             657220636f756c64206e6f7420626520666f756e64"
        );
    }

    #[test]
    fn faults_hide_their_cause_and_the_resend_limit_says_when() {
        let status = from_error(Error::Internal("secret cause".into()));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"));
        let limited = Rejection {
            retry_after: Some(12),
            ..Rejection::new(ErrorCode::ResourceExhausted, "COMMAND-Rs8wq1", "Too many")
        };
        let status = from_rejection(&limited);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status
                .metadata()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("12")
        );
    }
}
