//! The email commands of SPEC 3.4: set / verify / resend the contact email, and add / verify /
//! resend / remove OTP Email authenticators. Both kinds are rows of `user_emails`
//! (`address.rs`), so the code rules (hash, expiry, wrong-code limit, cooldown, supersede) are
//! applied by the same functions; only the lookup and the event names differ. Codes are made
//! in `issuance.rs`, the resend limits checked in `limits.rs`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::json;

use super::address::{self, EmailRow};
use super::issuance::EmailRef;
use super::{Commands, Details, Outcome, UserRef, UserRow, append_event, on_user};
use crate::auth::Access;
use crate::domain::{CodeDelivery, SetEmail, SubmittedCode, Verification};
use crate::error::{Call, Code, Error, Rejection, ids};
use crate::mail_job::{self, Purpose};

/// Which address of the user a verify / resend call is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailTarget<'a> {
    ContactEmail,
    /// An OTP Email authenticator, by the `otpEmailId` of the path.
    OtpEmail(&'a str),
}

impl EmailTarget<'_> {
    fn purpose(self) -> Purpose {
        match self {
            EmailTarget::ContactEmail => Purpose::ContactEmail,
            EmailTarget::OtpEmail(_) => Purpose::OtpEmail,
        }
    }

    /// The call that picks the id of "user not found" (SPEC 3.4): the contact email calls
    /// have their own, the OTP Email calls share the generic one.
    fn call(self, contact_email_call: Call) -> Call {
        match self {
            EmailTarget::ContactEmail => contact_email_call,
            EmailTarget::OtpEmail(_) => Call::Other,
        }
    }
}

/// The result of checking a code, decided inside the transaction.
enum Checked {
    Verified(Details),
    Unchanged(Details),
    /// Counted (an event was appended and committed); answered as an error afterwards.
    WrongCode,
}

impl Commands {
    /// Set contact email (SPEC 3.4).
    pub fn set_contact_email(
        &self,
        conn: &mut PgConnection,
        who: &UserRef<'_>,
        request: &SetEmail,
    ) -> Result<Outcome, Error> {
        on_user(
            conn,
            who,
            Call::SetContactEmail,
            request.verification.access(),
            |conn, user, now| {
                let existing = address::contact_email(conn, user.id)?;
                if existing
                    .as_ref()
                    .is_some_and(|e| e.address == request.address.as_str())
                {
                    return Ok(Outcome::unchanged(user.last_details()));
                }
                let (code, job_id) =
                    self.replace_contact_email(conn, user, existing, request, who.trace, now)?;
                let details = append_event(
                    conn,
                    user,
                    "user.email.changed",
                    json!({ "address": request.address.as_str(), "verification": verification_name(&request.verification) }),
                    now,
                )?;
                Ok(Outcome {
                    details,
                    verification_code: code,
                    otp_email_id: None,
                    job_id,
                })
            },
        )
    }

    /// Replaces (or creates) the contact email of `user` and makes its code. Used by set
    /// contact email and by create user. Returns the code for `returnCode` and the job.
    pub(super) fn replace_contact_email(
        &self,
        conn: &mut PgConnection,
        user: &UserRow,
        existing: Option<EmailRow>,
        request: &SetEmail,
        trace: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(Option<String>, Option<i64>), Error> {
        let address = request.address.as_str();
        let verified = request.verification == Verification::IsVerified;
        let email_id = match &existing {
            // The old address's unsent mail is superseded by `code_for`, whatever the
            // verification choice.
            Some(row) => {
                address::set_address(conn, row.id, address, verified, now)?;
                row.id
            }
            None => address::insert(conn, user.id, Purpose::ContactEmail, address, verified, now)?,
        };
        let email = EmailRef {
            id: email_id,
            purpose: Purpose::ContactEmail,
            address,
        };
        self.code_for(conn, user, email, &request.verification, trace, now)
    }

    /// Add OTP Email authenticator (SPEC 3.4).
    pub fn add_otp_email(
        &self,
        conn: &mut PgConnection,
        who: &UserRef<'_>,
        request: &SetEmail,
    ) -> Result<Outcome, Error> {
        on_user(
            conn,
            who,
            Call::Other,
            request.verification.access(),
            |conn, user, now| {
                let address = request.address.as_str();
                self.check_otp_email_may_be_added(conn, user, address)?;
                let verified = request.verification == Verification::IsVerified;
                let email_id =
                    address::insert(conn, user.id, Purpose::OtpEmail, address, verified, now)?;
                let email = EmailRef {
                    id: email_id,
                    purpose: Purpose::OtpEmail,
                    address,
                };
                let (code, job_id) =
                    self.code_for(conn, user, email, &request.verification, who.trace, now)?;
                let details = append_event(
                    conn,
                    user,
                    "user.otp_email.added",
                    json!({ "otpEmailId": email_id.to_string(), "address": address, "verification": verification_name(&request.verification) }),
                    now,
                )?;
                Ok(Outcome {
                    details,
                    verification_code: code,
                    otp_email_id: Some(email_id),
                    job_id,
                })
            },
        )
    }

    /// A user has at most `OTP_EMAIL_MAX_PER_USER` OTP Email authenticators, one per address
    /// (any case).
    fn check_otp_email_may_be_added(
        &self,
        conn: &mut PgConnection,
        user: &UserRow,
        address: &str,
    ) -> Result<(), Error> {
        let max = self.policy.otp_email_max_per_user;
        if address::count_otp_emails(conn, user.id)? >= i64::from(max) {
            return Err(Rejection::new(
                Code::FailedPrecondition,
                ids::OTP_EMAIL_LIMIT,
                format!("A user has at most {max} OTP Email authenticators"),
            )
            .into());
        }
        if address::has_otp_email(conn, user.id, address)? {
            return Err(Rejection::new(
                Code::AlreadyExists,
                ids::OTP_EMAIL_DUPLICATE,
                "An OTP Email authenticator with this address already exists",
            )
            .into());
        }
        Ok(())
    }

    /// Verify contact email / verify OTP Email registration (SPEC 3.4).
    pub fn verify_email(
        &self,
        conn: &mut PgConnection,
        who: &UserRef<'_>,
        target: EmailTarget<'_>,
        code: &SubmittedCode,
    ) -> Result<Details, Error> {
        let checked = on_user(
            conn,
            who,
            target.call(Call::VerifyContactEmail),
            Access::WriteProvingMailbox,
            |conn, user, now| {
                let Some(row) = target_row(conn, user, target)? else {
                    return Ok(Checked::Unchanged(user.last_details()));
                };
                let Some(hash) = row.pending_code_hash() else {
                    return Ok(Checked::Unchanged(user.last_details()));
                };
                self.check_code_usable(&row, now)?;
                let prefix = event_prefix(target);
                let payload = target_payload(target, &row);
                if self.keys.verify(row.id, code.as_str(), hash) {
                    address::mark_verified(conn, &row, now)?;
                    mail_job::supersede_unsent(conn, row.id, None, now)?;
                    let event = format!("{prefix}.verified");
                    let details = append_event(conn, user, &event, payload, now)?;
                    Ok(Checked::Verified(details))
                } else {
                    address::count_wrong_code(conn, &row, now)?;
                    let event = format!("{prefix}.verification.failed");
                    append_event(conn, user, &event, payload, now)?;
                    Ok(Checked::WrongCode)
                }
            },
        )?;
        match checked {
            Checked::Verified(d) | Checked::Unchanged(d) => Ok(d),
            Checked::WrongCode => {
                Err(Rejection::invalid(ids::CODE_WRONG, "Code is invalid").into())
            }
        }
    }

    /// A pending code may be tried until `VERIFY_MAX_ATTEMPTS` wrong tries and until it
    /// expires.
    fn check_code_usable(&self, row: &EmailRow, now: DateTime<Utc>) -> Result<(), Error> {
        if row.code_failures >= self.policy.verify_max_attempts as i32 {
            return Err(Rejection::new(
                Code::FailedPrecondition,
                ids::CODE_TOO_MANY_ATTEMPTS,
                "Too many attempts, request a new code",
            )
            .into());
        }
        if row.code_expires_at.is_none_or(|t| t <= now) {
            return Err(Rejection::new(
                Code::FailedPrecondition,
                ids::CODE_EXPIRED,
                "Code is expired",
            )
            .into());
        }
        Ok(())
    }

    /// Resend contact email code / resend OTP Email code (SPEC 3.4).
    pub fn resend_email_code(
        &self,
        conn: &mut PgConnection,
        who: &UserRef<'_>,
        target: EmailTarget<'_>,
        delivery: &CodeDelivery,
    ) -> Result<Outcome, Error> {
        let call = target.call(Call::ResendContactEmailCode);
        on_user(conn, who, call, delivery.access(), |conn, user, now| {
            let row = target_row(conn, user, target)?
                .filter(EmailRow::has_pending_code)
                .ok_or_else(|| {
                    Rejection::new(
                        Code::FailedPrecondition,
                        ids::NO_PENDING_CODE,
                        "No code to resend: the address has no pending verification",
                    )
                })?;
            let verification = match delivery {
                CodeDelivery::SendCode(t) => Verification::SendCode(t.clone()),
                CodeDelivery::ReturnCode => Verification::ReturnCode,
            };
            let email = EmailRef {
                id: row.id,
                purpose: target.purpose(),
                address: &row.address,
            };
            let (code, job_id) = self.code_for(conn, user, email, &verification, who.trace, now)?;
            let details = append_event(
                conn,
                user,
                &format!("{}.code.resent", event_prefix(target)),
                target_payload(target, &row),
                now,
            )?;
            Ok(Outcome {
                details,
                verification_code: code,
                otp_email_id: None,
                job_id,
            })
        })
    }

    /// Remove OTP Email authenticator (SPEC 3.4): the authenticator is deleted and its unsent
    /// mail superseded.
    pub fn remove_otp_email(
        &self,
        conn: &mut PgConnection,
        who: &UserRef<'_>,
        otp_email_id: &str,
    ) -> Result<Details, Error> {
        on_user(
            conn,
            who,
            Call::Other,
            Access::WriteProvingMailbox,
            |conn, user, now| {
                let target = EmailTarget::OtpEmail(otp_email_id);
                let row = target_row(conn, user, target)?
                    .ok_or_else(|| Error::from(Rejection::otp_email_not_found()))?;
                address::delete(conn, row.id)?;
                mail_job::supersede_unsent(conn, row.id, None, now)?;
                append_event(
                    conn,
                    user,
                    "user.otp_email.removed",
                    target_payload(target, &row),
                    now,
                )
            },
        )
    }
}

/// The row a verify / resend / remove is about. A contact email may be missing (`None`); an
/// unknown or foreign `otpEmailId` is 404 `COMMAND-b312D`.
fn target_row(
    conn: &mut PgConnection,
    user: &UserRow,
    target: EmailTarget<'_>,
) -> Result<Option<EmailRow>, Error> {
    match target {
        EmailTarget::ContactEmail => Ok(address::contact_email(conn, user.id)?),
        EmailTarget::OtpEmail(raw) => {
            let id: i64 = raw
                .trim()
                .parse()
                .map_err(|_| Rejection::otp_email_not_found())?;
            address::otp_email(conn, user.id, id)?
                .map(Some)
                .ok_or_else(|| Rejection::otp_email_not_found().into())
        }
    }
}

pub(super) fn event_prefix(target: EmailTarget<'_>) -> &'static str {
    match target {
        EmailTarget::ContactEmail => "user.email",
        EmailTarget::OtpEmail(_) => "user.otp_email",
    }
}

pub(super) fn target_payload(target: EmailTarget<'_>, row: &EmailRow) -> serde_json::Value {
    match target {
        EmailTarget::ContactEmail => json!({}),
        EmailTarget::OtpEmail(_) => json!({ "otpEmailId": row.id.to_string() }),
    }
}

fn verification_name(v: &Verification) -> &'static str {
    match v {
        Verification::SendCode(_) => "send_code",
        Verification::ReturnCode => "return_code",
        Verification::IsVerified => "is_verified",
    }
}
