//! The JSON request bodies of the API: `api::http::extract::parse::<T>` for each request
//! DTO, then the DTO's own parsing into domain types, as the handlers do it. Never panics;
//! every refusal is 400 with code 3 and renders as an error body; what is accepted satisfies
//! SPEC 3.1 (address) and SPEC 5 (template).
//!
//! Input: the first byte picks the DTO, the rest is the body.
#![no_main]

use api::http::dto::{CreateUserRequest, EmailRequest, ResendRequest, SetEmailDto, VerifyRequest};
use api::http::error::{ApiError, ErrorBody};
use api::http::extract::parse;
use api::http::routes::BareString;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use common::commands::CreateUser;
use common::domain::{
    CONTACT_CODE_MAX_LEN, CodeDelivery, OTP_CODE_MAX_LEN, SetEmail, SubmittedCode, Verification,
};
use common::error::{Code, Rejection};
use contact_email_fuzz::{MAX_LEN, check_accepted_email};
use libfuzzer_sys::fuzz_target;

/// A refusal of a request: code 3, an error body that serializes, and an HTTP answer of 400.
fn check_refusal(r: &Rejection) {
    assert_eq!(r.code, Code::InvalidArgument, "{r:?}");
    serde_json::to_vec(&ErrorBody::of(r)).expect("error body serializes");
    check_api_error(ApiError::from(r.clone()));
}

/// An error of body parsing is answered 400 (never a fault, never 5xx).
fn check_api_error(e: ApiError) {
    let shown = format!("{e:?}");
    let status = e.into_response().status();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{shown}");
}

fn check_set_email(s: &SetEmail, raw_address: Option<&str>) {
    check_accepted_email(raw_address.unwrap_or(""), "address", &s.address);
    if let Verification::SendCode(Some(t)) = &s.verification {
        assert!(t.as_str().chars().count() <= MAX_LEN);
    }
}

fn set_email(dto: &SetEmailDto, prefix: &str) {
    match dto.parse(prefix) {
        Ok(s) => check_set_email(&s, dto.address.as_deref()),
        Err(r) => check_refusal(&r),
    }
}

fn code(raw: Option<&str>) {
    for max in [CONTACT_CODE_MAX_LEN, OTP_CODE_MAX_LEN] {
        match SubmittedCode::parse(raw.unwrap_or(""), "verificationCode", max) {
            Ok(c) => assert!((1..=max).contains(&c.as_str().chars().count())),
            Err(r) => check_refusal(&r),
        }
    }
}

fn resend(r: &ResendRequest) {
    match r.parse() {
        Ok(CodeDelivery::SendCode(Some(t))) => assert!(t.as_str().chars().count() <= MAX_LEN),
        Ok(_) => {}
        Err(r) => check_refusal(&r),
    }
}

fn run<T: serde::de::DeserializeOwned>(body: &[u8], then: impl FnOnce(T)) {
    match parse::<T>(body) {
        Ok(v) => then(v),
        Err(e) => check_api_error(e),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 7 {
        0 => run::<EmailRequest>(body, |r| {
            match r.parse() {
                Ok(s) => check_set_email(&s, r.email.as_ref().and_then(|e| e.address.as_deref())),
                Err(e) => check_refusal(&e),
            }
            let _ = r.instance.and_then(|i| i.into_ref());
            let _ = r.organization.and_then(|o| o.into_ref());
        }),
        1 => run::<SetEmailDto>(body, |d| set_email(&d, "")),
        2 => run::<VerifyRequest>(body, |v| {
            code(v.verification_code.as_deref());
            let _ = v.instance.and_then(|i| i.into_ref());
            let _ = v.organization.and_then(|o| o.into_ref());
        }),
        3 => run::<ResendRequest>(body, |r| resend(&r)),
        4 => run::<CreateUserRequest>(body, |c| {
            match CreateUser::parse_username(c.username.as_deref()) {
                Ok(Some(name)) => {
                    let n = name.chars().count();
                    assert!((1..=MAX_LEN).contains(&n) && !name.chars().any(char::is_control));
                }
                Ok(None) => assert!(c.username.is_none()),
                Err(r) => check_refusal(&r),
            }
            if let Some(e) = &c.email {
                set_email(e, "email.");
            }
        }),
        // Family B verify: a bare JSON string.
        5 => run::<String>(body, |s| code(Some(&s))),
        _ => run::<BareString>(body, |_| {}),
    }
});
