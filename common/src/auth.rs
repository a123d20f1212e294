//! Personal access tokens: minted, listed and revoked by the CLI, stored as SHA-256 hashes,
//! checked on every call (SPEC 2). A token belongs to one instance, optionally to one
//! organization, carries permissions, optionally a subject user (self-service) and an expiry.

use base64::Engine;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::error::{Error, Rejection};
use crate::schema::{api_tokens, instances, organizations, users};
use crate::time::now_ms;

pub const USER_READ: &str = "user.read";
pub const USER_WRITE: &str = "user.write";
/// Read an instance's settings (its mail settings, SPEC 9).
pub const INSTANCE_READ: &str = "instance.read";
/// Change an instance's settings; implies `instance.read`.
pub const INSTANCE_WRITE: &str = "instance.write";
pub const PERMISSIONS: [&str; 4] = [USER_READ, USER_WRITE, INSTANCE_READ, INSTANCE_WRITE];

/// How often `last_used_at` is written at most per token: a busy token does not turn every
/// request into a write.
const LAST_USED_RESOLUTION: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// Who is calling, as established from the bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub instance_id: i64,
    pub org_id: Option<i64>,
    pub subject_user_id: Option<i64>,
    pub can_read: bool,
    pub can_write: bool,
    /// `instance.read` (or `instance.write`).
    pub can_read_instance: bool,
    /// `instance.write`.
    pub can_write_instance: bool,
}

/// What a call needs from the principal on a given user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    /// Change the user's email or authenticators in a way that proves the mailbox (a mailed
    /// code, verify, remove): the user may do it on themself without any permission.
    WriteProvingMailbox,
    /// Change the user's email or authenticators without proving the mailbox (`isVerified`,
    /// `returnCode`): `user.write` needed even on oneself (SPEC 2, as in ZITADEL).
    WriteSkippingProof,
    /// Change the user as an administrator (create, delete): `user.write` needed.
    Administer,
}

impl Principal {
    /// The permission check, made after the user was found (SPEC 2: 404 before 403).
    pub fn authorize(&self, access: Access, user_id: i64, user_org: i64) -> Result<(), Rejection> {
        let own = self.subject_user_id == Some(user_id);
        if own && matches!(access, Access::Read | Access::WriteProvingMailbox) {
            return Ok(());
        }
        let has_permission = match access {
            Access::Read => self.can_read || self.can_write,
            Access::WriteProvingMailbox | Access::WriteSkippingProof | Access::Administer => {
                self.can_write
            }
        };
        if has_permission && self.may_touch_org(user_org) {
            Ok(())
        } else {
            Err(Rejection::permission_denied())
        }
    }

    /// Whether an organization-limited token may act in `org_id`.
    pub fn may_touch_org(&self, org_id: i64) -> bool {
        self.org_id.is_none_or(|o| o == org_id)
    }

    /// The check of a call on the settings of `instance_id` (SPEC 9): another instance is
    /// not found (404 before 403); then `instance.read` to read, `instance.write` to change,
    /// on a token not limited to one organization.
    pub fn authorize_instance(&self, instance_id: i64, write: bool) -> Result<(), Rejection> {
        if instance_id != self.instance_id {
            return Err(Rejection::instance_not_found());
        }
        if self.has_instance_permission(write) && self.org_id.is_none() {
            Ok(())
        } else {
            Err(Rejection::permission_denied())
        }
    }

    /// The check of a call on an organization's settings (its branding) after the
    /// organization was found in the token's instance: `instance.read` to read,
    /// `instance.write` to change; an organization-limited token only on its own.
    pub fn authorize_org_settings(&self, org_id: i64, write: bool) -> Result<(), Rejection> {
        if self.has_instance_permission(write) && self.may_touch_org(org_id) {
            Ok(())
        } else {
            Err(Rejection::permission_denied())
        }
    }

    /// `instance.write`, or (to read) `instance.read` or `instance.write`.
    fn has_instance_permission(&self, write: bool) -> bool {
        self.can_write_instance || (!write && self.can_read_instance)
    }

    /// The check of create user, which has no user to look up yet: `user.write` in the
    /// organization the user is created in.
    pub fn authorize_create(&self, org_id: i64) -> Result<(), Rejection> {
        if self.can_write && self.may_touch_org(org_id) {
            Ok(())
        } else {
            Err(Rejection::permission_denied())
        }
    }
}

/// Checks a permission name given on the command line.
pub fn parse_permission(raw: &str) -> Result<&'static str, String> {
    PERMISSIONS
        .into_iter()
        .find(|p| *p == raw.trim())
        .ok_or_else(|| {
            format!(
                "unknown permission {raw:?} (known: {})",
                PERMISSIONS.join(", ")
            )
        })
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The new token's fields.
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    pub instance_id: i64,
    pub org_id: Option<i64>,
    pub subject_user_id: Option<i64>,
    pub permissions: &'a [&'a str],
    pub expires_at: Option<DateTime<Utc>>,
}

/// Why `api token create` refuses a token (bad usage: exit 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefused {
    #[error("a token needs at least one --permission or a --subject")]
    NoPermissionOrSubject,
    #[error("instance {0} does not exist")]
    UnknownInstance(i64),
    #[error("organization {org} does not exist in instance {instance}")]
    UnknownOrg { org: i64, instance: i64 },
    #[error("user {user} does not exist in instance {instance}")]
    UnknownSubject { user: i64, instance: i64 },
    #[error("user {user} is not a user of organization {org}")]
    SubjectOutsideOrg { user: i64, org: i64 },
}

/// Mints a token after checking what it names: the instance, the organization in it, the
/// subject in it (and in the organization when both are given). Stores the hash and returns
/// the plain token, which is shown once.
pub fn create(
    conn: &mut PgConnection,
    new: NewToken<'_>,
) -> Result<Result<String, TokenRefused>, Error> {
    if new.permissions.is_empty() && new.subject_user_id.is_none() {
        return Ok(Err(TokenRefused::NoPermissionOrSubject));
    }
    let instance = new.instance_id;
    let instance_exists: bool =
        diesel::select(diesel::dsl::exists(instances::table.find(instance))).get_result(conn)?;
    if !instance_exists {
        return Ok(Err(TokenRefused::UnknownInstance(instance)));
    }
    if let Some(org) = new.org_id {
        let found: bool = diesel::select(diesel::dsl::exists(
            organizations::table
                .filter(organizations::id.eq(org))
                .filter(organizations::instance_id.eq(instance)),
        ))
        .get_result(conn)?;
        if !found {
            return Ok(Err(TokenRefused::UnknownOrg { org, instance }));
        }
    }
    if let Some(user) = new.subject_user_id {
        let user_org: Option<i64> = users::table
            .filter(users::id.eq(user))
            .filter(users::instance_id.eq(instance))
            .filter(users::deleted_at.is_null())
            .select(users::org_id)
            .first(conn)
            .optional()?;
        match (user_org, new.org_id) {
            (None, _) => return Ok(Err(TokenRefused::UnknownSubject { user, instance })),
            (Some(found), Some(org)) if found != org => {
                return Ok(Err(TokenRefused::SubjectOutsideOrg { user, org }));
            }
            _ => {}
        }
    }
    mint(conn, new).map(Ok)
}

/// Mints a token without checks (the caller made the instance it names): stores its hash
/// and returns the plain token.
pub fn mint(conn: &mut PgConnection, new: NewToken<'_>) -> Result<String, Error> {
    let mut secret = [0u8; 32];
    rand::rng().fill(&mut secret);
    let token = format!(
        "ce_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let mut permissions: Vec<String> = new.permissions.iter().map(|p| (*p).to_owned()).collect();
    permissions.sort_unstable();
    permissions.dedup();
    diesel::insert_into(api_tokens::table)
        .values((
            api_tokens::instance_id.eq(new.instance_id),
            api_tokens::org_id.eq(new.org_id),
            api_tokens::subject_user_id.eq(new.subject_user_id),
            api_tokens::permissions.eq(permissions),
            api_tokens::token_hash.eq(hash(&token)),
            api_tokens::expires_at.eq(new.expires_at),
        ))
        .execute(conn)?;
    Ok(token)
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = api_tokens)]
struct TokenRow {
    id: i64,
    instance_id: i64,
    org_id: Option<i64>,
    subject_user_id: Option<i64>,
    permissions: Vec<String>,
    last_used_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
}

/// The principal of a bearer token, or `None` when the token is unknown, expired or revoked.
pub fn authenticate(conn: &mut PgConnection, token: &str) -> Result<Option<Principal>, Error> {
    Ok(authenticate_until(conn, token)?.map(|(principal, _)| principal))
}

/// A principal with its token's expiry (if it has one): how long a cache may keep it.
pub type PrincipalUntil = (Principal, Option<DateTime<Utc>>);

/// [`authenticate`], with the token's expiry.
pub fn authenticate_until(
    conn: &mut PgConnection,
    token: &str,
) -> Result<Option<PrincipalUntil>, Error> {
    let now = now_ms();
    let row: Option<TokenRow> = api_tokens::table
        .filter(api_tokens::token_hash.eq(hash(token)))
        .filter(api_tokens::revoked_at.is_null())
        .filter(
            api_tokens::expires_at
                .is_null()
                .or(api_tokens::expires_at.gt(now)),
        )
        .select(TokenRow::as_select())
        .first(conn)
        .optional()?;
    let Some(t) = row else { return Ok(None) };
    if t.last_used_at
        .is_none_or(|at| now - at >= LAST_USED_RESOLUTION)
    {
        diesel::update(api_tokens::table.find(t.id))
            .set(api_tokens::last_used_at.eq(now))
            .execute(conn)?;
    }
    Ok(Some((
        Principal {
            instance_id: t.instance_id,
            org_id: t.org_id,
            subject_user_id: t.subject_user_id,
            can_read: t.permissions.iter().any(|p| p == USER_READ),
            can_write: t.permissions.iter().any(|p| p == USER_WRITE),
            can_read_instance: t.permissions.iter().any(|p| p == INSTANCE_READ),
            can_write_instance: t.permissions.iter().any(|p| p == INSTANCE_WRITE),
        },
        t.expires_at,
    )))
}

/// A token as `api token list` shows it: never the token or its hash.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = api_tokens)]
pub struct TokenInfo {
    pub id: i64,
    pub org_id: Option<i64>,
    pub subject_user_id: Option<i64>,
    pub permissions: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// The tokens of an instance, oldest first.
pub fn list(conn: &mut PgConnection, instance_id: i64) -> Result<Vec<TokenInfo>, Error> {
    Ok(api_tokens::table
        .filter(api_tokens::instance_id.eq(instance_id))
        .order((api_tokens::created_at.asc(), api_tokens::id.asc()))
        .select(TokenInfo::as_select())
        .load(conn)?)
}

/// Revokes a token: it stops working within the api's token cache lifetime (2 s; SPEC 2
/// allows 5 s) on every replica. `false`
/// when no token has this id. Revoking twice keeps the first time.
pub fn revoke(conn: &mut PgConnection, token_id: i64) -> Result<bool, Error> {
    let exists: bool =
        diesel::select(diesel::dsl::exists(api_tokens::table.find(token_id))).get_result(conn)?;
    if exists {
        diesel::update(
            api_tokens::table
                .find(token_id)
                .filter(api_tokens::revoked_at.is_null()),
        )
        .set(api_tokens::revoked_at.eq(now_ms()))
        .execute(conn)?;
    }
    Ok(exists)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(org: Option<i64>, subject: Option<i64>, read: bool, write: bool) -> Principal {
        Principal {
            instance_id: 1,
            org_id: org,
            subject_user_id: subject,
            can_read: read,
            can_write: write,
            can_read_instance: false,
            can_write_instance: false,
        }
    }

    #[test]
    fn write_implies_read_and_org_limits_apply() {
        let admin = principal(None, None, false, true);
        assert!(admin.authorize(Access::Read, 5, 10).is_ok());
        assert!(admin.authorize(Access::Administer, 5, 10).is_ok());
        assert!(admin.authorize(Access::WriteSkippingProof, 5, 10).is_ok());
        let org_admin = principal(Some(10), None, true, true);
        assert!(
            org_admin
                .authorize(Access::WriteProvingMailbox, 5, 10)
                .is_ok()
        );
        assert!(
            org_admin
                .authorize(Access::WriteProvingMailbox, 5, 11)
                .is_err()
        );
        assert!(org_admin.authorize_create(10).is_ok());
        assert!(org_admin.authorize_create(11).is_err());
        let reader = principal(None, None, true, false);
        assert!(reader.authorize(Access::Read, 5, 10).is_ok());
        assert!(
            reader
                .authorize(Access::WriteProvingMailbox, 5, 10)
                .is_err()
        );
        assert!(reader.authorize_create(10).is_err());
    }

    #[test]
    fn self_service_only_where_the_mailbox_is_proven() {
        let me = principal(None, Some(5), false, false);
        assert!(me.authorize(Access::Read, 5, 10).is_ok());
        assert!(me.authorize(Access::WriteProvingMailbox, 5, 10).is_ok());
        assert!(me.authorize(Access::WriteSkippingProof, 5, 10).is_err());
        assert!(me.authorize(Access::Administer, 5, 10).is_err());
        assert!(me.authorize(Access::WriteProvingMailbox, 6, 10).is_err());
        let me_admin = principal(None, Some(5), false, true);
        assert!(
            me_admin
                .authorize(Access::WriteSkippingProof, 5, 10)
                .is_ok()
        );
    }
}
