//! Instances (tenants, found by id or domain) and their organizations: `api bootstrap`, and
//! resolving the `instance` / `organization` fields of a request (SPEC 2).

use diesel::prelude::*;

use crate::error::Error;
use crate::schema::{instance_domains, instances, organizations};

/// `instance` of a request: `{"id": ...}` or `{"domain": ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceRef {
    Id(String),
    Domain(String),
}

/// `organization` of a request: `{"orgId": ...}` or `{"orgDomain": ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrgRef {
    Id(String),
    Domain(String),
}

/// Where the request says the user should be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub instance: Option<InstanceRef>,
    pub organization: Option<OrgRef>,
}

/// The instance a call acts on: the requested one if given, else the token's. `None` when the
/// requested instance does not exist or is not the token's (SPEC 2: "not found").
pub fn resolve_instance(
    conn: &mut PgConnection,
    token_instance: i64,
    requested: Option<&InstanceRef>,
) -> Result<Option<i64>, Error> {
    let found = match requested {
        None => return Ok(Some(token_instance)),
        Some(InstanceRef::Id(raw)) => match raw.trim().parse::<i64>() {
            Ok(id) => instances::table
                .find(id)
                .select(instances::id)
                .first::<i64>(conn)
                .optional()?,
            Err(_) => None,
        },
        Some(InstanceRef::Domain(d)) => match domain_key(d) {
            Some(domain) => instance_domains::table
                .find(domain)
                .select(instance_domains::instance_id)
                .first::<i64>(conn)
                .optional()?,
            None => None,
        },
    };
    Ok(found.filter(|id| *id == token_instance))
}

/// A requested domain as stored (trimmed, lower case), or `None` when it cannot be a domain
/// at all (such as one holding a NUL, which PostgreSQL refuses in text): simply not found.
fn domain_key(raw: &str) -> Option<String> {
    let domain = raw.trim().to_lowercase();
    crate::domain::email_address::is_domain(&domain).then_some(domain)
}

/// The organization of `instance_id` a request names, if it exists.
pub fn resolve_org(
    conn: &mut PgConnection,
    instance_id: i64,
    requested: &OrgRef,
) -> Result<Option<i64>, Error> {
    let query = organizations::table
        .filter(organizations::instance_id.eq(instance_id))
        .select(organizations::id);
    Ok(match requested {
        OrgRef::Id(raw) => match raw.trim().parse::<i64>() {
            Ok(id) => query
                .filter(organizations::id.eq(id))
                .first(conn)
                .optional()?,
            Err(_) => None,
        },
        OrgRef::Domain(d) => match domain_key(d) {
            Some(domain) => query
                .filter(organizations::primary_domain.eq(domain))
                .first(conn)
                .optional()?,
            None => None,
        },
    })
}

/// The instance's first organization (where users go when a call names none).
pub fn first_org(conn: &mut PgConnection, instance_id: i64) -> Result<Option<i64>, Error> {
    Ok(organizations::table
        .filter(organizations::instance_id.eq(instance_id))
        .order((organizations::created_at.asc(), organizations::id.asc()))
        .select(organizations::id)
        .first(conn)
        .optional()?)
}

/// Organization domain slug (SPEC 7): lower-cased, runs of other characters than `a-z0-9`
/// replaced by one `-`, no leading or trailing `-`.
pub fn slug(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.to_lowercase().chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}

/// What `api bootstrap` made or found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrapped {
    pub instance_id: i64,
    pub org_id: i64,
    pub org_domain: String,
}

/// Finds or creates the instance of `domain` and, in it, the organization `org_name`.
pub fn bootstrap(
    conn: &mut PgConnection,
    domain: &str,
    org_name: &str,
) -> Result<Bootstrapped, Error> {
    let domain = domain.trim().to_lowercase();
    let org_name = org_name.trim();
    let org_slug = slug(org_name);
    conn.transaction(|conn| {
        // Serialize concurrent bootstraps of the same system.
        diesel::sql_query("SELECT pg_advisory_xact_lock(7201)").execute(conn)?;
        let instance_id = match instance_domains::table
            .find(&domain)
            .select(instance_domains::instance_id)
            .first::<i64>(conn)
            .optional()?
        {
            Some(id) => id,
            None => {
                let id: i64 = diesel::insert_into(instances::table)
                    .default_values()
                    .returning(instances::id)
                    .get_result(conn)?;
                diesel::insert_into(instance_domains::table)
                    .values((
                        instance_domains::domain.eq(&domain),
                        instance_domains::instance_id.eq(id),
                    ))
                    .execute(conn)?;
                id
            }
        };
        let existing: Option<(i64, String)> = organizations::table
            .filter(organizations::instance_id.eq(instance_id))
            .filter(organizations::name.eq(org_name))
            .select((organizations::id, organizations::primary_domain))
            .first(conn)
            .optional()?;
        let (org_id, org_domain) = match existing {
            Some(found) => found,
            None => {
                let org_domain = format!("{org_slug}.{domain}");
                let id: i64 = diesel::insert_into(organizations::table)
                    .values((
                        organizations::instance_id.eq(instance_id),
                        organizations::name.eq(org_name),
                        organizations::primary_domain.eq(&org_domain),
                    ))
                    .returning(organizations::id)
                    .get_result(conn)?;
                (id, org_domain)
            }
        };
        Ok(Bootstrapped {
            instance_id,
            org_id,
            org_domain,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::slug;

    #[test]
    fn slugs_follow_the_spec() {
        assert_eq!(slug("default"), "default");
        assert_eq!(slug("  ACME Corp. (EU) "), "acme-corp-eu");
        assert_eq!(slug("Müller & Söhne"), "m-ller-s-hne");
        assert_eq!(slug("a--b__c"), "a-b-c");
    }
}
