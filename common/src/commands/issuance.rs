//! Issuing a verification code, the one place a code is made. A purpose's [`CodeRules`] say
//! what the code looks like, how long it lives and where its mail links to by default; the
//! verification choice says where the code goes: nowhere (`isVerified`), back in the
//! response (`returnCode`) or into a mail job (`sendCode`). Either way the address's previous
//! code stops working and its unsent mail is superseded.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use super::{Commands, UserRow, address};
use crate::config::CodePolicy;
use crate::domain::{CodeSpec, UrlTemplate, Verification};
use crate::error::Error;
use crate::mail_job::{self, NewJob, Purpose};
use crate::mail_settings;

/// The code rules of one purpose, picked from the configuration here and nowhere else.
#[derive(Debug, Clone, Copy)]
pub(super) struct CodeRules<'a> {
    /// Length and alphabet.
    pub spec: &'a CodeSpec,
    /// How long a code is valid.
    pub ttl: Duration,
    /// Where the mail links to when `sendCode` names no URL template.
    pub default_template: &'a UrlTemplate,
}

impl<'a> CodeRules<'a> {
    pub fn for_purpose(policy: &'a CodePolicy, purpose: Purpose) -> Self {
        match purpose {
            Purpose::ContactEmail => CodeRules {
                spec: &policy.email,
                ttl: policy.email_ttl,
                default_template: &policy.default_url_template,
            },
            Purpose::OtpEmail => CodeRules {
                spec: &policy.otp_email,
                ttl: policy.otp_email_ttl,
                default_template: &policy.default_otp_email_url_template,
            },
        }
    }
}

/// The address a code is for.
#[derive(Debug, Clone, Copy)]
pub(super) struct EmailRef<'a> {
    /// The `user_emails` row.
    pub id: i64,
    pub purpose: Purpose,
    pub address: &'a str,
}

/// A code just made for an address: the plain text (for the response or the mail job, never
/// stored as such) and when it expires.
pub(super) struct IssuedCode {
    pub code: String,
    pub expires_at: DateTime<Utc>,
}

impl Commands {
    /// Makes a new code of `purpose`: its text and when it expires. Nothing is stored yet.
    fn make_code(&self, purpose: Purpose, now: DateTime<Utc>) -> Result<IssuedCode, Error> {
        let rules = CodeRules::for_purpose(&self.policy, purpose);
        let expires_at = now
            + chrono::Duration::from_std(rules.ttl)
                .map_err(|_| Error::Internal("code lifetime out of range".into()))?;
        Ok(IssuedCode {
            code: rules.spec.generate(),
            expires_at,
        })
    }

    /// Makes a new code for the address `email_id` of `purpose` and stores its hash as the
    /// pending code (the previous one stops working, the wrong-code count starts again). The
    /// caller supersedes the address's unsent mail.
    pub(super) fn issue_code(
        &self,
        conn: &mut PgConnection,
        email_id: i64,
        purpose: Purpose,
        now: DateTime<Utc>,
    ) -> Result<IssuedCode, Error> {
        let issued = self.make_code(purpose, now)?;
        address::set_pending_code(
            conn,
            email_id,
            self.keys.hash(email_id, &issued.code),
            issued.expires_at,
            now,
        )?;
        Ok(issued)
    }

    /// Makes the code a verification choice asks for: none for `isVerified`, a returned one
    /// for `returnCode`, a mailed one (job + outbox row, within the resend limits) for
    /// `sendCode`. The previous code of the address stops working and its unsent mail is
    /// superseded. Returns the code for `returnCode` and the job for `sendCode`.
    pub(super) fn code_for(
        &self,
        conn: &mut PgConnection,
        user: &UserRow,
        email: EmailRef<'_>,
        verification: &Verification,
        trace: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(Option<String>, Option<i64>), Error> {
        let default_template = CodeRules::for_purpose(&self.policy, email.purpose).default_template;
        // A `sendCode` without a template links where the instance's mail settings say,
        // else where the configuration does (SPEC 9).
        let instance_template: Option<UrlTemplate>;
        let template: &UrlTemplate = match verification {
            Verification::IsVerified => {
                mail_job::supersede_unsent(conn, email.id, None, now)?;
                return Ok((None, None));
            }
            Verification::ReturnCode => {
                let issued = self.issue_code(conn, email.id, email.purpose, now)?;
                mail_job::supersede_unsent(conn, email.id, None, now)?;
                return Ok((Some(issued.code), None));
            }
            Verification::SendCode(Some(t)) => t,
            Verification::SendCode(None) => {
                let set = mail_settings::templates(conn, user.instance_id)?;
                instance_template = match email.purpose {
                    Purpose::ContactEmail => set.url_template,
                    Purpose::OtpEmail => set.otp_email_url_template,
                };
                instance_template.as_ref().unwrap_or(default_template)
            }
        };
        self.check_send_limits(conn, user.instance_id, email.address, email.purpose, now)?;
        // The job's statement also makes its code the pending one and supersedes the
        // address's older unsent mail.
        let issued = self.make_code(email.purpose, now)?;
        let job_id = mail_job::enqueue(
            conn,
            &self.keys,
            NewJob {
                instance_id: user.instance_id,
                org_id: user.org_id,
                user_id: user.id,
                email_id: email.id,
                purpose: email.purpose,
                recipient: email.address,
                url_template: template,
                code: &issued.code,
                code_expires_at: issued.expires_at,
                trace_context: trace,
                language: user.preferred_language.as_deref(),
            },
            now,
        )?;
        Ok((None, Some(job_id)))
    }
}
