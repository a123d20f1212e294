//! The errors a client can see, each with its stable id (SPEC 3.6), defined once here.
//!
//! Domain code returns [`Error`]; the edges (HTTP, gRPC, CLI) turn it into their own shape.
//! A [`Rejection`] is a refusal the client caused and may read; anything else is a fault whose
//! cause goes to the log, never to the client.

use std::borrow::Cow;
use std::fmt;

/// gRPC status codes used by the service (SPEC 3.6 maps them to HTTP statuses; the api
/// crate does, in `http::error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    InvalidArgument = 3,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

impl Code {
    pub fn as_i32(self) -> i32 {
        self as i32
    }
}

/// A refusal the client may read: code, stable id, human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: Code,
    pub id: &'static str,
    pub message: Cow<'static, str>,
    /// Seconds until the call may succeed (429 answers carry it as `Retry-After`).
    pub retry_after: Option<u64>,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.id)
    }
}

impl std::error::Error for Rejection {}

impl Rejection {
    pub fn new(code: Code, id: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Rejection {
            code,
            id,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400, code 3: a request that cannot be parsed or does not validate.
    pub fn invalid(id: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Code::InvalidArgument, id, message)
    }

    pub fn unauthenticated(message: &'static str) -> Self {
        Self::new(Code::Unauthenticated, ids::UNAUTHENTICATED, message)
    }

    pub fn permission_denied() -> Self {
        Self::new(
            Code::PermissionDenied,
            ids::PERMISSION_DENIED,
            "No matching permissions found",
        )
    }

    pub fn user_not_found(call: Call) -> Self {
        Self::new(
            Code::NotFound,
            call.user_not_found_id(),
            "User could not be found",
        )
    }

    pub fn instance_not_found() -> Self {
        Self::new(
            Code::NotFound,
            ids::INSTANCE_NOT_FOUND,
            "Instance could not be found",
        )
    }

    pub fn otp_email_not_found() -> Self {
        Self::new(
            Code::NotFound,
            ids::OTP_EMAIL_NOT_FOUND,
            "OTP Email authenticator could not be found",
        )
    }

    pub fn internal() -> Self {
        Self::new(Code::Internal, ids::INTERNAL, "Internal error")
    }

    pub fn unavailable() -> Self {
        Self::new(
            Code::Unavailable,
            ids::UNAVAILABLE,
            "Service temporarily unavailable, try again",
        )
    }
}

/// The call being served; it picks the id of "user not found" (SPEC 3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    SetContactEmail,
    VerifyContactEmail,
    ResendContactEmailCode,
    /// Every other call: OTP Email calls and the supporting user calls.
    Other,
}

impl Call {
    pub fn user_not_found_id(self) -> &'static str {
        match self {
            Call::SetContactEmail | Call::Other => ids::USER_NOT_FOUND,
            Call::VerifyContactEmail => ids::USER_NOT_FOUND_VERIFY,
            Call::ResendContactEmailCode => ids::USER_NOT_FOUND_RESEND,
        }
    }
}

/// Stable error ids. The ones SPEC names are ZITADEL's; the others follow its style.
pub mod ids {
    pub const USER_NOT_FOUND: &str = "COMMAND-nJ0TQFuRmP";
    pub const USER_NOT_FOUND_VERIFY: &str = "COMMAND-qbGyMPvjvj";
    pub const USER_NOT_FOUND_RESEND: &str = "COMMAND-EajeF6ypOV";
    pub const OTP_EMAIL_NOT_FOUND: &str = "COMMAND-b312D";
    pub const OTP_EMAIL_DUPLICATE: &str = "COMMAND-MKL2s";
    pub const OTP_EMAIL_LIMIT: &str = "COMMAND-Otp10x";
    pub const NO_PENDING_CODE: &str = "COMMAND-QRkNTBwF8q";
    pub const RESEND_COOLDOWN: &str = "COMMAND-Rs8wq1";
    pub const USERNAME_TAKEN: &str = "COMMAND-k2unb";
    pub const ORG_NOT_FOUND: &str = "COMMAND-Ggk9n";
    pub const PERMISSION_DENIED: &str = "AUTHZ-HKJD33";
    pub const UNAUTHENTICATED: &str = "AUTH-7fs1e";
    pub const CODE_WRONG: &str = "CODE-woT0xc";
    pub const CODE_EXPIRED: &str = "CODE-QvUQ4P";
    pub const CODE_TOO_MANY_ATTEMPTS: &str = "CODE-Lk7Gq2";
    pub const CODE_INVALID: &str = "CODE-Ax3Rm1";
    pub const TEMPLATE_SYNTAX: &str = "DOMAIN-oGh5e";
    pub const TEMPLATE_INVALID: &str = "DOMAIN-ieYa7";
    pub const TEMPLATE_TOO_LONG: &str = "DOMAIN-Tl20q";
    pub const EMAIL_EMPTY: &str = "EMAIL-spblu";
    pub const EMAIL_INVALID: &str = "EMAIL-599BI";
    pub const EMAIL_VERIFICATION_CHOICE: &str = "EMAIL-Vc1oN";
    pub const EMAIL_IS_VERIFIED_FALSE: &str = "EMAIL-iVf4l";
    pub const USERNAME_INVALID: &str = "USER-uN4mE";
    pub const LANGUAGE_INVALID: &str = "USER-L4ngTg";
    pub const MAIL_SETTINGS_INVALID: &str = "INSTANCE-Ms9tq";
    pub const INSTANCE_NOT_FOUND: &str = "INSTANCE-n0tFd";
    pub const BRANDING_INVALID: &str = "POLICY-Br4nd9";
    pub const REQUEST_MALFORMED: &str = "REQUEST-Mjs0n";
    pub const REQUEST_TOO_LARGE: &str = "REQUEST-Tl64k";
    pub const REQUEST_CONTENT_TYPE: &str = "REQUEST-Ct415";
    pub const INTERNAL: &str = "INTERNAL-x8Qe2";
    pub const UNAVAILABLE: &str = "UNAVAILABLE-Db3wn";
}

/// What a domain command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client's request was refused; safe to show.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The database failed; logged, shown as a 500 (or 503 when it is unreachable).
    #[error("database: {0}")]
    Database(#[from] diesel::result::Error),
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(String),
    /// Any other fault (crypto, serialization); logged, shown as a 500.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// What the client is shown: the rejection itself, or a generic fault without internals.
    pub fn public(&self) -> Rejection {
        match self {
            Error::Rejected(r) => r.clone(),
            Error::DatabaseUnavailable(_) => Rejection::unavailable(),
            Error::Database(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::ClosedConnection,
                _,
            )) => Rejection::unavailable(),
            Error::Database(_) | Error::Internal(_) => Rejection::internal(),
        }
    }

    /// True when the error is a fault worth logging at error level (not a client's mistake).
    pub fn is_fault(&self) -> bool {
        !matches!(self, Error::Rejected(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
