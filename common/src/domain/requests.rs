//! The validated requests of the email calls (SPEC 3.1, 3.4), built from the fields an edge
//! read from its wire format. Field names in messages are the JSON names of SPEC 3.

use crate::auth::Access;
use crate::error::{Rejection, ids};

use super::{EmailAddress, UrlTemplate};

/// Longest code accepted by verify contact email.
pub const CONTACT_CODE_MAX_LEN: usize = 20;
/// Longest code accepted by verify OTP Email.
pub const OTP_CODE_MAX_LEN: usize = 200;

/// How a new address is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Mail a code, with the client's link template or the configured default.
    SendCode(Option<UrlTemplate>),
    /// Return the code in the response; no mail.
    ReturnCode,
    /// The client vouches for the address; no code.
    IsVerified,
}

/// How a resent code reaches the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeDelivery {
    SendCode(Option<UrlTemplate>),
    ReturnCode,
}

impl Verification {
    /// What the choice needs from the caller (SPEC 2): a mailed code proves the mailbox, so
    /// the user may ask for it on themself; `isVerified` and `returnCode` skip that proof.
    pub fn access(&self) -> Access {
        match self {
            Verification::SendCode(_) => Access::WriteProvingMailbox,
            Verification::ReturnCode | Verification::IsVerified => Access::WriteSkippingProof,
        }
    }
}

impl CodeDelivery {
    /// What the choice needs from the caller, as for [`Verification::access`].
    pub fn access(&self) -> Access {
        match self {
            CodeDelivery::SendCode(_) => Access::WriteProvingMailbox,
            CodeDelivery::ReturnCode => Access::WriteSkippingProof,
        }
    }
}

/// A valid `SetEmail` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetEmail {
    pub address: EmailAddress,
    pub verification: Verification,
}

/// The `SetEmail` fields as read from the wire, before any rule is applied. `send_code` is
/// `Some(template)` when `sendCode` was present (`Some(None)` or `Some(Some(""))` without a
/// template).
#[derive(Debug, Default, Clone)]
pub struct SetEmailFields<'a> {
    pub address: Option<&'a str>,
    pub send_code: Option<Option<&'a str>>,
    pub return_code: bool,
    pub is_verified: Option<bool>,
}

impl SetEmail {
    /// `prefix` is how the object is named in messages (`email.` in family A, `` in family B).
    pub fn parse(fields: SetEmailFields<'_>, prefix: &str) -> Result<Self, Rejection> {
        let address =
            EmailAddress::parse(fields.address.unwrap_or(""), &format!("{prefix}address"))?;
        if fields.is_verified == Some(false) {
            return Err(Rejection::invalid(
                ids::EMAIL_IS_VERIFIED_FALSE,
                format!("{prefix}isVerified may only be true"),
            ));
        }
        let chosen = usize::from(fields.send_code.is_some())
            + usize::from(fields.return_code)
            + usize::from(fields.is_verified.is_some());
        if chosen > 1 {
            return Err(Rejection::invalid(
                ids::EMAIL_VERIFICATION_CHOICE,
                format!(
                    "{prefix}sendCode, {prefix}returnCode and {prefix}isVerified exclude each other"
                ),
            ));
        }
        let verification = if fields.return_code {
            Verification::ReturnCode
        } else if fields.is_verified == Some(true) {
            Verification::IsVerified
        } else {
            Verification::SendCode(parse_template(fields.send_code.flatten(), prefix)?)
        };
        Ok(SetEmail {
            address,
            verification,
        })
    }
}

impl CodeDelivery {
    /// The verification choice of a resend: `sendCode`, `returnCode` or neither (mail it).
    pub fn parse(send_code: Option<Option<&str>>, return_code: bool) -> Result<Self, Rejection> {
        match (send_code, return_code) {
            (Some(_), true) => Err(Rejection::invalid(
                ids::EMAIL_VERIFICATION_CHOICE,
                "sendCode and returnCode exclude each other",
            )),
            (_, true) => Ok(CodeDelivery::ReturnCode),
            (send, false) => Ok(CodeDelivery::SendCode(parse_template(send.flatten(), "")?)),
        }
    }
}

fn parse_template(raw: Option<&str>, prefix: &str) -> Result<Option<UrlTemplate>, Rejection> {
    match raw {
        None => Ok(None),
        Some(t) => UrlTemplate::parse_optional(t, &format!("{prefix}sendCode.urlTemplate")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(address: &'static str) -> SetEmailFields<'static> {
        SetEmailFields {
            address: Some(address),
            ..Default::default()
        }
    }

    #[test]
    fn no_choice_means_send_with_the_default_link() {
        let set = SetEmail::parse(fields("a@b.c"), "email.").unwrap();
        assert_eq!(set.verification, Verification::SendCode(None));
        let with_empty = SetEmail::parse(
            SetEmailFields {
                send_code: Some(Some("")),
                ..fields("a@b.c")
            },
            "",
        )
        .unwrap();
        assert_eq!(with_empty.verification, Verification::SendCode(None));
    }

    #[test]
    fn more_than_one_choice_or_is_verified_false_is_refused() {
        let two = SetEmailFields {
            return_code: true,
            is_verified: Some(true),
            ..fields("a@b.c")
        };
        assert_eq!(
            SetEmail::parse(two, "").unwrap_err().id,
            ids::EMAIL_VERIFICATION_CHOICE
        );
        let send_and_return = SetEmailFields {
            return_code: true,
            send_code: Some(None),
            ..fields("a@b.c")
        };
        assert!(SetEmail::parse(send_and_return, "").is_err());
        let false_flag = SetEmailFields {
            is_verified: Some(false),
            ..fields("a@b.c")
        };
        assert_eq!(
            SetEmail::parse(false_flag, "").unwrap_err().id,
            ids::EMAIL_IS_VERIFIED_FALSE
        );
    }

    #[test]
    fn the_message_names_the_field() {
        let err = SetEmail::parse(fields(""), "email.").unwrap_err();
        assert!(err.message.contains("email.address"), "{}", err.message);
        let bad_template = SetEmailFields {
            send_code: Some(Some("{{Nope}}")),
            ..fields("a@b.c")
        };
        let err = SetEmail::parse(bad_template, "email.").unwrap_err();
        assert!(
            err.message.contains("email.sendCode.urlTemplate"),
            "{}",
            err.message
        );
    }

    #[test]
    fn resend_choices() {
        assert_eq!(
            CodeDelivery::parse(None, false).unwrap(),
            CodeDelivery::SendCode(None)
        );
        assert_eq!(
            CodeDelivery::parse(None, true).unwrap(),
            CodeDelivery::ReturnCode
        );
        assert!(CodeDelivery::parse(Some(None), true).is_err());
        assert_eq!(
            CodeDelivery::parse(Some(Some("x")), false).unwrap_err().id,
            ids::TEMPLATE_INVALID
        );
    }
}
