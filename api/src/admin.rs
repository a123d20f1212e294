//! The admin commands of the `api` binary (SPEC 7): `migrate`, `bootstrap` and `token
//! create|list|revoke`. Each one opens the database, does its one thing and prints the
//! result for a script to read.

use secrecy::ExposeSecret;
use std::process::ExitCode;

use common::auth::{self, NewToken, TokenInfo};
use common::config::StartupError;
use common::error::Error;
use common::tenancy;
use diesel::prelude::*;

use crate::cli::{BootstrapArgs, MigrateArgs, TokenCreateArgs, TokenListArgs, TokenRevokeArgs};

/// Why an admin command failed, and so its exit status (SPEC 7).
#[derive(Debug)]
pub enum Failure {
    /// Exit 1: the database or another part of the system failed.
    Operational(String),
    /// Exit 2: bad usage or configuration.
    Usage(String),
}

impl Failure {
    /// Prints the failure on stderr (`error: ...` for an operational one) and gives the exit
    /// status.
    pub fn report(&self) -> ExitCode {
        match self {
            Failure::Operational(msg) => {
                eprintln!("error: {msg}");
                ExitCode::from(1)
            }
            Failure::Usage(msg) => {
                eprintln!("{msg}");
                ExitCode::from(2)
            }
        }
    }
}

impl From<StartupError> for Failure {
    fn from(e: StartupError) -> Self {
        match e {
            StartupError::Configuration(_) => Failure::Usage(e.to_string()),
            StartupError::Operational(msg) => Failure::Operational(msg),
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Failure::Operational(e.to_string()))?
}

/// `api migrate`.
pub async fn migrate(args: MigrateArgs) -> Result<(), Failure> {
    let applied = crate::application::migrate(&args.database).await?;
    tracing::info!(applied, "migrations applied");
    Ok(())
}

fn connect(url: &str) -> Result<PgConnection, Failure> {
    PgConnection::establish(url)
        .map_err(|e| Failure::Operational(format!("cannot connect to PostgreSQL: {e}")))
}

fn db_failure(e: Error) -> Failure {
    Failure::Operational(e.to_string())
}

/// `api bootstrap`: the instance, its first organization and an admin token.
pub async fn bootstrap(args: BootstrapArgs) -> Result<(), Failure> {
    let domain = args.domain.trim().to_lowercase();
    if !common::domain::email_address::is_domain(&domain) {
        return Err(Failure::Usage(format!(
            "invalid --domain {:?}: expected a domain name",
            args.domain
        )));
    }
    if tenancy::slug(&args.org_name).is_empty() {
        return Err(Failure::Usage(format!(
            "invalid --org-name {:?}: needs at least one letter or digit",
            args.org_name
        )));
    }
    let url = args.database.database_url.expose_secret().to_owned();
    let out = blocking(move || {
        common::db::prepare(&url).map_err(Failure::Operational)?;
        let mut conn = connect(&url)?;
        let made = tenancy::bootstrap(&mut conn, &domain, &args.org_name).map_err(db_failure)?;
        let token = auth::mint(
            &mut conn,
            NewToken {
                instance_id: made.instance_id,
                org_id: None,
                subject_user_id: None,
                permissions: &[auth::USER_READ, auth::USER_WRITE],
                expires_at: None,
            },
        )
        .map_err(db_failure)?;
        Ok(serde_json::json!({
            "instanceId": made.instance_id.to_string(),
            "orgId": made.org_id.to_string(),
            "orgDomain": made.org_domain,
            "token": token,
        }))
    })
    .await?;
    println!("{out}");
    Ok(())
}

fn parse_id(flag: &str, raw: &str) -> Result<i64, Failure> {
    raw.trim()
        .parse::<i64>()
        .map_err(|_| Failure::Usage(format!("error: {flag} {raw:?} is not an id")))
}

/// `api token create`.
pub async fn token_create(args: TokenCreateArgs) -> Result<(), Failure> {
    let instance_id = parse_id("--instance", &args.instance)?;
    let org_id = args
        .org
        .as_deref()
        .map(|o| parse_id("--org", o))
        .transpose()?;
    let subject = args
        .subject
        .as_deref()
        .map(|s| parse_id("--subject", s))
        .transpose()?;
    let expires_at = args
        .expires_in
        .map(|d| {
            chrono::TimeDelta::from_std(d)
                .ok()
                .and_then(|d| common::time::now_ms().checked_add_signed(d))
                .ok_or_else(|| Failure::Usage("error: --expires-in is too long".into()))
        })
        .transpose()?;
    let url = args.database.database_url.expose_secret().to_owned();
    let permissions = args.permissions.clone();
    let token = blocking(move || {
        let mut conn = connect(&url)?;
        auth::create(
            &mut conn,
            NewToken {
                instance_id,
                org_id,
                subject_user_id: subject,
                permissions: &permissions,
                expires_at,
            },
        )
        .map_err(db_failure)?
        .map_err(|refused| Failure::Usage(format!("error: {refused}")))
    })
    .await?;
    println!("{token}");
    Ok(())
}

/// `api token list`.
pub async fn token_list(args: TokenListArgs) -> Result<(), Failure> {
    let instance_id = parse_id("--instance", &args.instance)?;
    let url = args.database.database_url.expose_secret().to_owned();
    let tokens = blocking(move || {
        let mut conn = connect(&url)?;
        auth::list(&mut conn, instance_id).map_err(db_failure)
    })
    .await?;
    if args.json {
        let rows: Vec<_> = tokens.iter().map(token_json).collect();
        println!("{}", serde_json::Value::Array(rows));
    } else {
        print!("{}", token_table(&tokens));
    }
    Ok(())
}

/// A token as `token list --json` prints it: ids as strings, times RFC 3339, unset `null`.
fn token_json(t: &TokenInfo) -> serde_json::Value {
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(common::time::rfc3339_ms);
    serde_json::json!({
        "id": t.id.to_string(),
        "orgId": t.org_id.map(|o| o.to_string()),
        "subject": t.subject_user_id.map(|u| u.to_string()),
        "permissions": t.permissions,
        "createdAt": common::time::rfc3339_ms(t.created_at),
        "expiresAt": time(t.expires_at),
        "revokedAt": time(t.revoked_at),
        "lastUsedAt": time(t.last_used_at),
    })
}

fn token_table(tokens: &[TokenInfo]) -> String {
    let dash = || "-".to_string();
    let time =
        |t: Option<chrono::DateTime<chrono::Utc>>| t.map_or_else(dash, common::time::rfc3339_ms);
    let mut rows = vec![
        [
            "ID",
            "ORG",
            "SUBJECT",
            "PERMISSIONS",
            "CREATED",
            "EXPIRES",
            "REVOKED",
            "LAST USED",
        ]
        .map(String::from),
    ];
    for t in tokens {
        rows.push([
            t.id.to_string(),
            t.org_id.map_or_else(dash, |o| o.to_string()),
            t.subject_user_id.map_or_else(dash, |u| u.to_string()),
            if t.permissions.is_empty() {
                dash()
            } else {
                t.permissions.join(",")
            },
            common::time::rfc3339_ms(t.created_at),
            time(t.expires_at),
            time(t.revoked_at),
            time(t.last_used_at),
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `api token revoke`.
pub async fn token_revoke(args: TokenRevokeArgs) -> Result<(), Failure> {
    let id = parse_id("token id", &args.id)?;
    let url = args.database.database_url.expose_secret().to_owned();
    let found = blocking(move || {
        let mut conn = connect(&url)?;
        auth::revoke(&mut conn, id).map_err(db_failure)
    })
    .await?;
    if !found {
        return Err(Failure::Operational(format!("token {id} not found")));
    }
    println!("revoked {id}");
    Ok(())
}
