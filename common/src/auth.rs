//! Personal access tokens: minted by the CLI, stored as SHA-256 hashes, checked on every call
//! (SPEC 2). A token belongs to one instance, optionally to one organization, carries
//! permissions and optionally a subject user (self-service).

use base64::Engine;
use diesel::prelude::*;
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::error::{Error, Rejection};
use crate::schema::api_tokens;

pub const USER_READ: &str = "user.read";
pub const USER_WRITE: &str = "user.write";
pub const PERMISSIONS: [&str; 2] = [USER_READ, USER_WRITE];

/// Who is calling, as established from the bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub instance_id: i64,
    pub org_id: Option<i64>,
    pub subject_user_id: Option<i64>,
    pub can_read: bool,
    pub can_write: bool,
}

/// What a call needs from the principal on a given user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    /// Change the user's own email and authenticators (self-service allowed).
    WriteOwnEmail,
    /// Change the user as an administrator (create, delete): `user.write` needed.
    Administer,
}

impl Principal {
    /// The permission check, made after the user was found (SPEC 2: 404 before 403).
    pub fn authorize(&self, access: Access, user_id: i64, user_org: i64) -> Result<(), Rejection> {
        let own = self.subject_user_id == Some(user_id);
        if own && access != Access::Administer {
            return Ok(());
        }
        let has_permission = match access {
            Access::Read => self.can_read || self.can_write,
            Access::WriteOwnEmail | Access::Administer => self.can_write,
        };
        let org_allowed = self.org_id.is_none_or(|o| o == user_org);
        if has_permission && org_allowed {
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
        .ok_or_else(|| format!("unknown permission {raw:?} (known: user.read, user.write)"))
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
}

/// Mints a token: stores its hash and returns the plain token, which is shown once.
pub fn mint(conn: &mut PgConnection, new: NewToken<'_>) -> Result<String, Error> {
    let mut secret = [0u8; 32];
    rand::rng().fill(&mut secret);
    let token = format!(
        "ce_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let permissions: Vec<String> = new.permissions.iter().map(|p| (*p).to_owned()).collect();
    diesel::insert_into(api_tokens::table)
        .values((
            api_tokens::instance_id.eq(new.instance_id),
            api_tokens::org_id.eq(new.org_id),
            api_tokens::subject_user_id.eq(new.subject_user_id),
            api_tokens::permissions.eq(permissions),
            api_tokens::token_hash.eq(hash(&token)),
        ))
        .execute(conn)?;
    Ok(token)
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = api_tokens)]
struct TokenRow {
    instance_id: i64,
    org_id: Option<i64>,
    subject_user_id: Option<i64>,
    permissions: Vec<String>,
}

/// The principal of a bearer token, or `None` when the token is unknown.
pub fn authenticate(conn: &mut PgConnection, token: &str) -> Result<Option<Principal>, Error> {
    let row: Option<TokenRow> = api_tokens::table
        .filter(api_tokens::token_hash.eq(hash(token)))
        .select(TokenRow::as_select())
        .first(conn)
        .optional()?;
    Ok(row.map(|t| Principal {
        instance_id: t.instance_id,
        org_id: t.org_id,
        subject_user_id: t.subject_user_id,
        can_read: t.permissions.iter().any(|p| p == USER_READ),
        can_write: t.permissions.iter().any(|p| p == USER_WRITE),
    }))
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
        }
    }

    #[test]
    fn write_implies_read_and_org_limits_apply() {
        let admin = principal(None, None, false, true);
        assert!(admin.authorize(Access::Read, 5, 10).is_ok());
        assert!(admin.authorize(Access::Administer, 5, 10).is_ok());
        let org_admin = principal(Some(10), None, true, true);
        assert!(org_admin.authorize(Access::WriteOwnEmail, 5, 10).is_ok());
        assert!(org_admin.authorize(Access::WriteOwnEmail, 5, 11).is_err());
        let reader = principal(None, None, true, false);
        assert!(reader.authorize(Access::Read, 5, 10).is_ok());
        assert!(reader.authorize(Access::WriteOwnEmail, 5, 10).is_err());
    }

    #[test]
    fn self_service_covers_own_email_but_not_administration() {
        let me = principal(None, Some(5), false, false);
        assert!(me.authorize(Access::Read, 5, 10).is_ok());
        assert!(me.authorize(Access::WriteOwnEmail, 5, 10).is_ok());
        assert!(me.authorize(Access::Administer, 5, 10).is_err());
        assert!(me.authorize(Access::WriteOwnEmail, 6, 10).is_err());
    }
}
