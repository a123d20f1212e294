//! The domain commands: every rule of SPEC 2 and 3.4 lives here, once. The HTTP route
//! families and gRPC only translate their wire format into these calls and the results back.
//!
//! Each command runs in one transaction: it locks the user row (so a user's changes are
//! serialized and its event sequence has no gaps), checks in the order of SPEC 2 (lookup,
//! then permission), changes state, appends one event and, when a mail is due, enqueues the
//! mail job with its outbox row. Publishing happens after commit, outside the command.
//!
//! - `user.rs`: create, get, delete user (SPEC 3.5).
//! - `email.rs`: the email calls of SPEC 3.4 (contact email and OTP Email).
//! - `issuance.rs`: the one place a code is made; `CodeRules::for_purpose` picks a purpose's
//!   length, alphabet, lifetime and default link.
//! - `limits.rs`: the resend limits.
//! - `replay.rs`: what `worker replay` may send again, and the job-code refresh.
//! - `address.rs`: the `user_emails` rows those calls read and write.

mod address;
mod email;
mod issuance;
mod limits;
mod replay;
mod user;

pub use address::{SET_ADDRESS_SQL, SET_PENDING_CODE_SQL};
pub use email::EmailTarget;
pub use replay::SkipReason;
pub use user::{CreateUser, OtpEmailView, USERNAME_MAX_LEN, UserView};

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use crate::auth::{Access, Principal};
use crate::config::CodePolicy;
use crate::domain::CodeKeys;
use crate::error::{Call, Error, Rejection};
use crate::schema::users;
use crate::tenancy::{Scope, resolve_instance, resolve_org};
use crate::time::now_ms;

/// The user a call is about, and who asks: the token's principal, the request's
/// `instance` / `organization`, and the user id of the path; with the request's trace
/// context, which a mail job the call enqueues carries to the worker.
#[derive(Debug, Clone, Copy)]
pub struct UserRef<'a> {
    pub principal: &'a Principal,
    pub scope: &'a Scope,
    pub user_id: &'a str,
    /// W3C `traceparent` of the request, if it is traced.
    pub trace: Option<&'a str>,
}

/// What the commands need from configuration.
#[derive(Debug, Clone)]
pub struct Commands {
    pub keys: CodeKeys,
    pub policy: CodePolicy,
}

/// Identifies the change a call made (or, when it changed nothing, the user's last change).
/// The families render it differently (SPEC 3.2 / 3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Details {
    pub user_id: i64,
    pub sequence: i64,
    pub change_date: DateTime<Utc>,
    pub resource_owner: i64,
    /// Set when the call created the resource.
    pub created: Option<DateTime<Utc>>,
}

/// The result of a call that may make a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub details: Details,
    /// The plain code, only for `returnCode`.
    pub verification_code: Option<String>,
    /// The authenticator a call added.
    pub otp_email_id: Option<i64>,
    /// The mail job enqueued by the call: to publish after commit.
    pub job_id: Option<i64>,
}

impl Outcome {
    fn unchanged(details: Details) -> Self {
        Outcome {
            details,
            verification_code: None,
            otp_email_id: None,
            job_id: None,
        }
    }
}

/// The user row as the commands need it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users)]
pub(crate) struct UserRow {
    pub id: i64,
    pub instance_id: i64,
    pub org_id: i64,
    pub username: Option<String>,
    /// BCP 47, canonical case: the language of the user's mails.
    pub preferred_language: Option<String>,
    pub last_sequence: i64,
    pub last_changed_at: DateTime<Utc>,
}

impl UserRow {
    pub(crate) fn last_details(&self) -> Details {
        Details {
            user_id: self.id,
            sequence: self.last_sequence,
            change_date: self.last_changed_at,
            resource_owner: self.org_id,
            created: None,
        }
    }
}

/// Finds the user a call is about, in the order of SPEC 2: instance, user, organization
/// (all "not found" with the call's id), then the permission (403). `lock` takes the row for
/// the rest of the transaction.
pub(crate) fn load_user(
    conn: &mut PgConnection,
    who: &UserRef<'_>,
    call: Call,
    access: Access,
    lock: bool,
) -> Result<UserRow, Error> {
    let UserRef {
        principal,
        scope,
        user_id,
        ..
    } = *who;
    let not_found = || Error::from(Rejection::user_not_found(call));
    let instance_id = resolve_instance(conn, principal.instance_id, scope.instance.as_ref())?
        .ok_or_else(not_found)?;
    let id: i64 = user_id.trim().parse().map_err(|_| not_found())?;
    let query = users::table
        .filter(users::id.eq(id))
        .filter(users::instance_id.eq(instance_id))
        .filter(users::deleted_at.is_null())
        .select(UserRow::as_select());
    let user = if lock {
        query.for_update().first(conn).optional()?
    } else {
        query.first(conn).optional()?
    }
    .ok_or_else(not_found)?;
    if let Some(org) = &scope.organization {
        let org_id = resolve_org(conn, instance_id, org)?.ok_or_else(not_found)?;
        if org_id != user.org_id {
            return Err(not_found());
        }
    }
    principal.authorize(access, user.id, user.org_id)?;
    Ok(user)
}

/// Runs `body` in one transaction on the user a call is about, found, checked and locked by
/// [`load_user`], with the time of the change.
pub(crate) fn on_user<T>(
    conn: &mut PgConnection,
    who: &UserRef<'_>,
    call: Call,
    access: Access,
    body: impl FnOnce(&mut PgConnection, &UserRow, DateTime<Utc>) -> Result<T, Error>,
) -> Result<T, Error> {
    in_transaction(conn, |conn| {
        let user = load_user(conn, who, call, access, true)?;
        body(conn, &user, now_ms())
    })
}

/// Appends the next event of the user's history and returns its details.
/// [`append_event`]'s statement: the event (`$1` user, `$2` sequence, `$3` instance, `$4`
/// type, `$5` payload, `$6` time) and the user's last sequence, in one.
pub const APPEND_EVENT_SQL: &str = "\
    WITH event AS ( \
        INSERT INTO user_events (user_id, sequence, instance_id, event_type, payload, \
               created_at) \
        VALUES ($1, $2, $3, $4, $5, $6) \
    ) \
    UPDATE users SET last_sequence = $2, last_changed_at = $6 WHERE id = $1";

pub(crate) fn append_event(
    conn: &mut PgConnection,
    user: &UserRow,
    event_type: &str,
    payload: serde_json::Value,
    now: DateTime<Utc>,
) -> Result<Details, Error> {
    use diesel::sql_types::{BigInt, Jsonb, Text, Timestamptz};
    let sequence = user.last_sequence + 1;
    crate::db::Prepared::new(APPEND_EVENT_SQL)
        .bind::<BigInt, _>(user.id)
        .bind::<BigInt, _>(sequence)
        .bind::<BigInt, _>(user.instance_id)
        .bind::<Text, _>(event_type)
        .bind::<Jsonb, _>(payload)
        .bind::<Timestamptz, _>(now)
        .execute(conn)?;
    Ok(Details {
        user_id: user.id,
        sequence,
        change_date: now,
        resource_owner: user.org_id,
        created: None,
    })
}

/// Runs a command body in a transaction.
pub(crate) fn in_transaction<T>(
    conn: &mut PgConnection,
    body: impl FnOnce(&mut PgConnection) -> Result<T, Error>,
) -> Result<T, Error> {
    conn.transaction(body)
}
