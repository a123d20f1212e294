//! The email commands of SPEC 3.4: set / verify / resend the contact email, and add / verify /
//! resend / remove OTP Email authenticators. Both kinds are rows of `user_emails`, so the
//! code rules (hash, expiry, wrong-code limit, cooldown, supersede) are applied by the same
//! functions; only the lookup and the event names differ.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::json;

use super::{Commands, Details, Outcome, UserRef, UserRow, append_event, on_user};
use crate::auth::Access;
use crate::domain::{CodeDelivery, SetEmail, SubmittedCode, UrlTemplate, Verification};
use crate::error::{Call, Code, Error, Rejection, ids};
use crate::mail_job::{self, NewJob, Purpose};
use crate::schema::user_emails;
use crate::time::now_ms;

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
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = user_emails)]
pub(crate) struct EmailRow {
    pub id: i64,
    pub address: String,
    pub verified: bool,
    pub code_hash: Option<Vec<u8>>,
    pub code_expires_at: Option<DateTime<Utc>>,
    pub code_failures: i32,
}

impl EmailRow {
    fn has_pending_code(&self) -> bool {
        !self.verified && self.code_hash.is_some()
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
                let existing = contact_row(conn, user.id)?;
                if existing
                    .as_ref()
                    .is_some_and(|e| e.address == request.address.as_str())
                {
                    return Ok(Outcome::unchanged(user.last_details()));
                }
                let (code, job_id) =
                    self.replace_contact_email(conn, user, existing, request, now)?;
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
        now: DateTime<Utc>,
    ) -> Result<(Option<String>, Option<i64>), Error> {
        let address = request.address.as_str();
        let email_id = match &existing {
            Some(row) => {
                diesel::update(user_emails::table.find(row.id))
                    .set((
                        user_emails::address.eq(address),
                        user_emails::verified.eq(request.verification == Verification::IsVerified),
                        user_emails::code_hash.eq(None::<Vec<u8>>),
                        user_emails::code_expires_at.eq(None::<DateTime<Utc>>),
                        user_emails::code_failures.eq(0),
                        user_emails::updated_at.eq(now),
                    ))
                    .execute(conn)?;
                mail_job::supersede_unsent(conn, row.id, None, now)?;
                row.id
            }
            None => insert_email(
                conn,
                user.id,
                Purpose::ContactEmail,
                address,
                request.verification == Verification::IsVerified,
                now,
            )?,
        };
        self.code_for(
            conn,
            user,
            email_id,
            Purpose::ContactEmail,
            address,
            &request.verification,
            now,
        )
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
                let registered: i64 = user_emails::table
                    .filter(user_emails::user_id.eq(user.id))
                    .filter(user_emails::purpose.eq(Purpose::OtpEmail))
                    .count()
                    .get_result(conn)?;
                if registered >= i64::from(self.policy.otp_email_max_per_user) {
                    return Err(Rejection::new(
                        Code::FailedPrecondition,
                        ids::OTP_EMAIL_LIMIT,
                        format!(
                            "A user has at most {} OTP Email authenticators",
                            self.policy.otp_email_max_per_user
                        ),
                    )
                    .into());
                }
                let duplicate: bool = diesel::select(diesel::dsl::exists(
                    user_emails::table
                        .filter(user_emails::user_id.eq(user.id))
                        .filter(user_emails::purpose.eq(Purpose::OtpEmail))
                        .filter(
                            diesel::dsl::sql::<diesel::sql_types::Bool>("lower(address) = lower(")
                                .bind::<diesel::sql_types::Text, _>(request.address.as_str())
                                .sql(")"),
                        ),
                ))
                .get_result(conn)?;
                if duplicate {
                    return Err(Rejection::new(
                        Code::AlreadyExists,
                        ids::OTP_EMAIL_DUPLICATE,
                        "An OTP Email authenticator with this address already exists",
                    )
                    .into());
                }
                let address = request.address.as_str();
                let email_id = insert_email(
                    conn,
                    user.id,
                    Purpose::OtpEmail,
                    address,
                    request.verification == Verification::IsVerified,
                    now,
                )?;
                let (code, job_id) = self.code_for(
                    conn,
                    user,
                    email_id,
                    Purpose::OtpEmail,
                    address,
                    &request.verification,
                    now,
                )?;
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

    /// Verify contact email / verify OTP Email registration (SPEC 3.4).
    pub fn verify_email(
        &self,
        conn: &mut PgConnection,
        who: &UserRef<'_>,
        target: EmailTarget<'_>,
        code: &SubmittedCode,
    ) -> Result<Details, Error> {
        let call = match target {
            EmailTarget::ContactEmail => Call::VerifyContactEmail,
            EmailTarget::OtpEmail(_) => Call::Other,
        };
        let checked = on_user(
            conn,
            who,
            call,
            Access::WriteProvingMailbox,
            |conn, user, now| {
                let Some(row) = target_row(conn, user, target)? else {
                    return Ok(Checked::Unchanged(user.last_details()));
                };
                let Some(hash) = row.code_hash.as_deref().filter(|_| row.has_pending_code()) else {
                    return Ok(Checked::Unchanged(user.last_details()));
                };
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
                let prefix = event_prefix(target);
                if self.keys.verify(row.id, code.as_str(), hash) {
                    diesel::update(user_emails::table.find(row.id))
                        .set((
                            user_emails::verified.eq(true),
                            user_emails::code_hash.eq(None::<Vec<u8>>),
                            user_emails::code_expires_at.eq(None::<DateTime<Utc>>),
                            user_emails::code_failures.eq(0),
                            user_emails::updated_at.eq(now),
                        ))
                        .execute(conn)?;
                    mail_job::supersede_unsent(conn, row.id, None, now)?;
                    let details = append_event(
                        conn,
                        user,
                        &format!("{prefix}.verified"),
                        target_payload(target, &row),
                        now,
                    )?;
                    Ok(Checked::Verified(details))
                } else {
                    diesel::update(user_emails::table.find(row.id))
                        .set((
                            user_emails::code_failures.eq(row.code_failures + 1),
                            user_emails::updated_at.eq(now),
                        ))
                        .execute(conn)?;
                    append_event(
                        conn,
                        user,
                        &format!("{prefix}.verification.failed"),
                        target_payload(target, &row),
                        now,
                    )?;
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

    /// Resend contact email code / resend OTP Email code (SPEC 3.4).
    pub fn resend_email_code(
        &self,
        conn: &mut PgConnection,
        who: &UserRef<'_>,
        target: EmailTarget<'_>,
        delivery: &CodeDelivery,
    ) -> Result<Outcome, Error> {
        let call = match target {
            EmailTarget::ContactEmail => Call::ResendContactEmailCode,
            EmailTarget::OtpEmail(_) => Call::Other,
        };
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
            let (code, job_id) = self.code_for(
                conn,
                user,
                row.id,
                target.purpose(),
                &row.address,
                &verification,
                now,
            )?;
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
                diesel::delete(user_emails::table.find(row.id)).execute(conn)?;
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

    /// Makes the code a verification choice asks for: none for `isVerified`, a returned one
    /// for `returnCode`, a mailed one (job + outbox row) for `sendCode`. The previous code of
    /// the address stops working and its unsent mail is superseded.
    #[allow(clippy::too_many_arguments)]
    fn code_for(
        &self,
        conn: &mut PgConnection,
        user: &UserRow,
        email_id: i64,
        purpose: Purpose,
        address: &str,
        verification: &Verification,
        now: DateTime<Utc>,
    ) -> Result<(Option<String>, Option<i64>), Error> {
        let (spec, ttl, default_template) = match purpose {
            Purpose::ContactEmail => (
                &self.policy.email,
                self.policy.email_ttl,
                &self.policy.default_url_template,
            ),
            Purpose::OtpEmail => (
                &self.policy.otp_email,
                self.policy.otp_email_ttl,
                &self.policy.default_otp_email_url_template,
            ),
        };
        let send_with: Option<&UrlTemplate> = match verification {
            Verification::IsVerified => return Ok((None, None)),
            Verification::ReturnCode => None,
            Verification::SendCode(t) => Some(t.as_ref().unwrap_or(default_template)),
        };
        if send_with.is_some() {
            self.check_send_limits(conn, user.instance_id, address, purpose, now)?;
        }
        let code = spec.generate();
        let expires = now
            + chrono::Duration::from_std(ttl)
                .map_err(|_| Error::Internal("code lifetime out of range".into()))?;
        diesel::update(user_emails::table.find(email_id))
            .set((
                user_emails::code_hash.eq(Some(self.keys.hash(email_id, &code))),
                user_emails::code_expires_at.eq(Some(expires)),
                user_emails::code_failures.eq(0),
                user_emails::updated_at.eq(now),
            ))
            .execute(conn)?;
        let job_id = match send_with {
            None => {
                mail_job::supersede_unsent(conn, email_id, None, now)?;
                return Ok((Some(code), None));
            }
            Some(template) => mail_job::enqueue(
                conn,
                &self.keys,
                NewJob {
                    instance_id: user.instance_id,
                    org_id: user.org_id,
                    user_id: user.id,
                    email_id,
                    purpose,
                    recipient: address,
                    url_template: template,
                    code: &code,
                    code_expires_at: expires,
                },
                now,
            )?,
        };
        mail_job::supersede_unsent(conn, email_id, Some(job_id), now)?;
        Ok((None, Some(job_id)))
    }

    /// SPEC 3.4 resend limits, for every call that would mail a code: at most one mail per
    /// `RESEND_COOLDOWN` to a recipient (case-insensitive) for a purpose, and at most
    /// `MAIL_RECIPIENT_HOURLY_LIMIT` mails to a recipient in any rolling hour, within an
    /// instance, whoever asks. Over either: 429 with the wait until both allow a mail.
    ///
    /// Calls for different users can mail the same recipient, so the user row lock does not
    /// serialize them: a transaction-scoped advisory lock on (instance, recipient) does, and
    /// the check and the enqueue that follows it are one step for concurrent requests.
    fn check_send_limits(
        &self,
        conn: &mut PgConnection,
        instance_id: i64,
        recipient: &str,
        purpose: Purpose,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let cooldown = self.policy.resend_cooldown;
        let hourly = self.policy.recipient_hourly_limit;
        if cooldown.is_zero() && hourly == 0 {
            return Ok(());
        }
        mail_job::lock_recipient(conn, instance_id, recipient)?;
        let mut wait = std::time::Duration::ZERO;
        if !cooldown.is_zero() {
            let since = now - to_delta(cooldown)?;
            if let Some(last) =
                mail_job::last_enqueued_to(conn, instance_id, recipient, purpose, since)?
            {
                wait = wait.max(cooldown.saturating_sub((now - last).to_std().unwrap_or_default()));
            }
        }
        if hourly > 0 {
            let hour = chrono::TimeDelta::hours(1);
            if let Some(oldest_counted) =
                mail_job::nth_latest_to(conn, instance_id, recipient, hourly, now - hour)?
            {
                let frees_at = oldest_counted + hour;
                wait = wait.max((frees_at - now).to_std().unwrap_or_default());
            }
        }
        if wait.is_zero() {
            return Ok(());
        }
        let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        let mut rejection = Rejection::new(
            Code::ResourceExhausted,
            ids::RESEND_COOLDOWN,
            format!("Too many mails to this address, try again in {seconds} s"),
        );
        rejection.retry_after = Some(seconds);
        Err(rejection.into())
    }
}

fn to_delta(d: std::time::Duration) -> Result<chrono::TimeDelta, Error> {
    chrono::TimeDelta::from_std(d).map_err(|_| Error::Internal("duration out of range".into()))
}

pub(super) fn contact_row(
    conn: &mut PgConnection,
    user_id: i64,
) -> Result<Option<EmailRow>, Error> {
    Ok(user_emails::table
        .filter(user_emails::user_id.eq(user_id))
        .filter(user_emails::purpose.eq(Purpose::ContactEmail))
        .select(EmailRow::as_select())
        .first(conn)
        .optional()?)
}

/// The row a verify / resend / remove is about. A contact email may be missing (`None`); an
/// unknown or foreign `otpEmailId` is 404 `COMMAND-b312D`.
fn target_row(
    conn: &mut PgConnection,
    user: &UserRow,
    target: EmailTarget<'_>,
) -> Result<Option<EmailRow>, Error> {
    match target {
        EmailTarget::ContactEmail => contact_row(conn, user.id),
        EmailTarget::OtpEmail(raw) => {
            let id: i64 = raw
                .trim()
                .parse()
                .map_err(|_| Rejection::otp_email_not_found())?;
            let row = user_emails::table
                .filter(user_emails::id.eq(id))
                .filter(user_emails::user_id.eq(user.id))
                .filter(user_emails::purpose.eq(Purpose::OtpEmail))
                .select(EmailRow::as_select())
                .first(conn)
                .optional()?;
            row.map(Some)
                .ok_or_else(|| Rejection::otp_email_not_found().into())
        }
    }
}

fn insert_email(
    conn: &mut PgConnection,
    user_id: i64,
    purpose: Purpose,
    address: &str,
    verified: bool,
    now: DateTime<Utc>,
) -> Result<i64, Error> {
    Ok(diesel::insert_into(user_emails::table)
        .values((
            user_emails::user_id.eq(user_id),
            user_emails::purpose.eq(purpose),
            user_emails::address.eq(address),
            user_emails::verified.eq(verified),
            user_emails::created_at.eq(now),
            user_emails::updated_at.eq(now),
        ))
        .returning(user_emails::id)
        .get_result(conn)?)
}

fn event_prefix(target: EmailTarget<'_>) -> &'static str {
    match target {
        EmailTarget::ContactEmail => "user.email",
        EmailTarget::OtpEmail(_) => "user.otp_email",
    }
}

fn target_payload(target: EmailTarget<'_>, row: &EmailRow) -> serde_json::Value {
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

/// Why a job's code could not be refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshRefused {
    UserDeleted,
    /// The address changed, was verified or removed: the job's code is void for good.
    Superseded,
}

impl Commands {
    /// Gives a failed or expired job a new code, as a resend would (`worker replay
    /// --refresh-code`): the address's pending code is replaced, the job carries the new one,
    /// and an event records it. The caller then requeues the job.
    pub fn refresh_job_code(
        &self,
        conn: &mut PgConnection,
        job_id: i64,
    ) -> Result<Result<(), RefreshRefused>, Error> {
        let (user, row, purpose) = match refresh_target(conn, job_id, true)? {
            Ok(found) => found,
            Err(refused) => return Ok(Err(refused)),
        };
        let (spec, ttl) = match purpose {
            Purpose::ContactEmail => (&self.policy.email, self.policy.email_ttl),
            Purpose::OtpEmail => (&self.policy.otp_email, self.policy.otp_email_ttl),
        };
        let now = now_ms();
        let code = spec.generate();
        let expires = now
            + chrono::Duration::from_std(ttl)
                .map_err(|_| Error::Internal("code lifetime out of range".into()))?;
        diesel::update(user_emails::table.find(row.id))
            .set((
                user_emails::code_hash.eq(Some(self.keys.hash(row.id, &code))),
                user_emails::code_expires_at.eq(Some(expires)),
                user_emails::code_failures.eq(0),
                user_emails::updated_at.eq(now),
            ))
            .execute(conn)?;
        mail_job::replace_code(conn, &self.keys, job_id, &code, expires, now)?;
        mail_job::supersede_unsent(conn, row.id, Some(job_id), now)?;
        let target = match purpose {
            Purpose::ContactEmail => EmailTarget::ContactEmail,
            Purpose::OtpEmail => EmailTarget::OtpEmail(""),
        };
        let mut payload = target_payload(target, &row);
        payload["by"] = json!("replay");
        append_event(
            conn,
            &user,
            &format!("{}.code.resent", event_prefix(target)),
            payload,
            now,
        )?;
        Ok(Ok(()))
    }

    /// Whether [`Commands::refresh_job_code`] would give the job a new code (for a dry run).
    pub fn can_refresh_job_code(
        &self,
        conn: &mut PgConnection,
        job_id: i64,
    ) -> Result<Result<(), RefreshRefused>, Error> {
        Ok(refresh_target(conn, job_id, false)?.map(|_| ()))
    }

    /// Whether a job's code is still the pending code of its address (a replay without a
    /// new code is only worth it then).
    pub fn job_code_is_current(
        &self,
        conn: &mut PgConnection,
        job_id: i64,
        email_id: i64,
        ciphertext: &[u8],
    ) -> Result<bool, Error> {
        let Ok(code) = self.keys.decrypt(job_id, ciphertext) else {
            return Ok(false);
        };
        let row = user_emails::table
            .find(email_id)
            .select(EmailRow::as_select())
            .first(conn)
            .optional()?;
        Ok(row.is_some_and(|r| {
            r.has_pending_code()
                && r.code_hash
                    .as_deref()
                    .is_some_and(|h| self.keys.verify(r.id, &code, h))
        }))
    }
}

/// The user (locked when `lock`) and address a job's code can be refreshed for: the user
/// still exists and the address still waits for verification of the same recipient.
fn refresh_target(
    conn: &mut PgConnection,
    job_id: i64,
    lock: bool,
) -> Result<Result<(UserRow, EmailRow, Purpose), RefreshRefused>, Error> {
    use crate::schema::users;
    let mail_job::Addressee {
        user_id,
        email_id,
        purpose,
        recipient,
    } = mail_job::addressee(conn, job_id)?;
    let query = users::table
        .filter(users::id.eq(user_id))
        .filter(users::deleted_at.is_null())
        .select(UserRow::as_select());
    let user = if lock {
        query.for_update().first(conn).optional()?
    } else {
        query.first(conn).optional()?
    };
    let Some(user) = user else {
        return Ok(Err(RefreshRefused::UserDeleted));
    };
    let row = user_emails::table
        .find(email_id)
        .select(EmailRow::as_select())
        .first(conn)
        .optional()?;
    match row.filter(|r| r.address == recipient && r.has_pending_code()) {
        Some(row) => Ok(Ok((user, row, purpose))),
        None => Ok(Err(RefreshRefused::Superseded)),
    }
}
