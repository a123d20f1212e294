//! The supporting user calls (SPEC 3.5): create, get, delete.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::json;

use super::address;
use super::{
    Commands, Details, Outcome, UserRef, UserRow, append_event, in_transaction, load_user, on_user,
};
use crate::auth::{Access, Principal};
use crate::domain::{LanguageTag, SetEmail, Verification};
use crate::error::{Call, Code, Error, Rejection, ids};
use crate::mail_job;
use crate::schema::users;
use crate::tenancy::{OrgRef, Scope, first_org, resolve_instance, resolve_org};
use crate::time::now_ms;

/// Longest username accepted, in characters.
pub const USERNAME_MAX_LEN: usize = 200;

/// A valid create-user request.
#[derive(Debug, Clone, Default)]
pub struct CreateUser {
    pub organization: Option<OrgRef>,
    pub username: Option<String>,
    /// `preferredLanguage`: a BCP 47 tag in canonical case (SPEC 9).
    pub preferred_language: Option<String>,
    pub email: Option<SetEmail>,
}

impl CreateUser {
    /// `preferredLanguage`: a well-formed BCP 47 tag (any case; kept in canonical case), or
    /// absent. An empty string counts as absent, as in proto3.
    pub fn parse_language(raw: Option<&str>) -> Result<Option<String>, Rejection> {
        let Some(raw) = raw.filter(|r| !r.is_empty()) else {
            return Ok(None);
        };
        LanguageTag::parse(raw)
            .map(|tag| Some(tag.to_string()))
            .map_err(|_| {
                Rejection::invalid(
                    ids::LANGUAGE_INVALID,
                    "preferredLanguage must be a BCP 47 language tag such as de or pt-BR",
                )
            })
    }

    pub fn parse_username(raw: Option<&str>) -> Result<Option<String>, Rejection> {
        let Some(raw) = raw else { return Ok(None) };
        let name = raw.trim();
        let len = name.chars().count();
        if len == 0 || len > USERNAME_MAX_LEN || name.chars().any(char::is_control) {
            return Err(Rejection::invalid(
                ids::USERNAME_INVALID,
                "username must be 1 to 200 characters without control characters",
            ));
        }
        Ok(Some(name.to_owned()))
    }
}

/// What `GET /v3alpha/users/{id}` shows. Never a code or a hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserView {
    pub id: i64,
    pub organization_id: i64,
    pub username: Option<String>,
    pub preferred_language: Option<String>,
    /// Contact email: address and verified flag.
    pub contact_email: Option<(String, bool)>,
    pub otp_emails: Vec<OtpEmailView>,
    pub details: Details,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtpEmailView {
    pub id: i64,
    pub address: String,
    pub verified: bool,
}

impl Commands {
    /// Create user: in the named organization, else the token's, else the instance's first.
    pub fn create_user(
        &self,
        conn: &mut PgConnection,
        principal: &Principal,
        scope: &Scope,
        request: &CreateUser,
        trace: Option<&str>,
    ) -> Result<Outcome, Error> {
        in_transaction(conn, |conn| {
            let (instance_id, org_id) = organization_for(conn, principal, scope, request)?;
            principal.authorize_create(org_id)?;
            if let Some(name) = &request.username {
                check_username_free(conn, instance_id, name)?;
            }
            let now = now_ms();
            let user = insert_user(conn, instance_id, org_id, request, now)?;
            let (code, job_id) = match &request.email {
                Some(email) => self.replace_contact_email(conn, &user, None, email, trace, now)?,
                None => (None, None),
            };
            let mut details =
                append_event(conn, &user, "user.created", created_event(request), now)?;
            details.created = Some(now);
            Ok(Outcome {
                details,
                verification_code: code,
                otp_email_id: None,
                job_id,
            })
        })
    }

    /// Get user.
    pub fn get_user(&self, conn: &mut PgConnection, who: &UserRef<'_>) -> Result<UserView, Error> {
        let user = load_user(conn, who, Call::Other, Access::Read, false)?;
        let contact = address::contact_email(conn, user.id)?;
        let otp = address::otp_emails(conn, user.id)?;
        Ok(UserView {
            id: user.id,
            organization_id: user.org_id,
            username: user.username.clone(),
            preferred_language: user.preferred_language.clone(),
            contact_email: contact.map(|c| (c.address, c.verified)),
            otp_emails: otp
                .into_iter()
                .map(|(id, address, verified)| OtpEmailView {
                    id,
                    address,
                    verified,
                })
                .collect(),
            details: user.last_details(),
        })
    }

    /// Delete user: gone for every later call; unsent mail cancelled.
    pub fn delete_user(
        &self,
        conn: &mut PgConnection,
        who: &UserRef<'_>,
    ) -> Result<Details, Error> {
        on_user(
            conn,
            who,
            Call::Other,
            Access::Administer,
            |conn, user, now| {
                let details = append_event(conn, user, "user.removed", json!({}), now)?;
                diesel::update(users::table.find(user.id))
                    .set(users::deleted_at.eq(Some(now)))
                    .execute(conn)?;
                address::delete_all_of_user(conn, user.id)?;
                mail_job::cancel_unsent_for_user(conn, user.id, now)?;
                Ok(details)
            },
        )
    }
}

/// The instance and organization a user is created in (SPEC 3.5): the request's
/// organization, else the scope's, else the token's, else the instance's oldest. Any of them
/// unknown: 404 `COMMAND-Ggk9n`.
fn organization_for(
    conn: &mut PgConnection,
    principal: &Principal,
    scope: &Scope,
    request: &CreateUser,
) -> Result<(i64, i64), Error> {
    let org_not_found = || {
        Error::from(Rejection::new(
            Code::NotFound,
            ids::ORG_NOT_FOUND,
            "Organization could not be found",
        ))
    };
    let instance_id = resolve_instance(conn, principal.instance_id, scope.instance.as_ref())?
        .ok_or_else(org_not_found)?;
    let named = request
        .organization
        .as_ref()
        .or(scope.organization.as_ref());
    let org_id = match (named, principal.org_id) {
        (Some(org), _) => resolve_org(conn, instance_id, org)?.ok_or_else(org_not_found)?,
        (None, Some(own)) => own,
        (None, None) => first_org(conn, instance_id)?.ok_or_else(org_not_found)?,
    };
    Ok((instance_id, org_id))
}

/// A username is unique per instance among users not deleted, in any case: 409
/// `COMMAND-k2unb`.
fn check_username_free(conn: &mut PgConnection, instance_id: i64, name: &str) -> Result<(), Error> {
    let taken: bool = diesel::select(diesel::dsl::exists(
        users::table
            .filter(users::instance_id.eq(instance_id))
            .filter(users::deleted_at.is_null())
            .filter(
                diesel::dsl::sql::<diesel::sql_types::Bool>("lower(username) = lower(")
                    .bind::<diesel::sql_types::Text, _>(name)
                    .sql(")"),
            ),
    ))
    .get_result(conn)?;
    if taken {
        return Err(Rejection::new(
            Code::AlreadyExists,
            ids::USERNAME_TAKEN,
            "Username is already taken",
        )
        .into());
    }
    Ok(())
}

/// A new user, with no event yet.
fn insert_user(
    conn: &mut PgConnection,
    instance_id: i64,
    org_id: i64,
    request: &CreateUser,
    now: DateTime<Utc>,
) -> QueryResult<UserRow> {
    diesel::insert_into(users::table)
        .values((
            users::instance_id.eq(instance_id),
            users::org_id.eq(org_id),
            users::username.eq(request.username.as_deref()),
            users::preferred_language.eq(request.preferred_language.as_deref()),
            users::created_at.eq(now),
            users::last_sequence.eq(0),
            users::last_changed_at.eq(now),
        ))
        .returning(UserRow::as_returning())
        .get_result(conn)
}

/// The payload of `user.created`.
fn created_event(request: &CreateUser) -> serde_json::Value {
    json!({
        "username": request.username,
        "preferredLanguage": request.preferred_language,
        "email": request.email.as_ref().map(|e| e.address.as_str()),
        "emailVerified": request.email.as_ref().map(|e| e.verification == Verification::IsVerified),
    })
}
