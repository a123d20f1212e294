//! `api`: the contact email service's API process and its admin commands.

use std::process::ExitCode;

use clap::Parser;
use common::auth::{self, NewToken, TokenInfo};
use common::error::Error;
use common::tenancy;
use diesel::prelude::*;

use api::cli::{
    BootstrapArgs, Cli, Command, TokenCommand, TokenCreateArgs, TokenListArgs, TokenRevokeArgs,
};
use api::serve;

/// Exit status of SPEC 7: 1 for an operational error, 2 for bad usage or configuration.
enum Failure {
    Operational(String),
    Usage(String),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return common::config::exit_on_clap_error(e),
    };
    let log = match &cli.command {
        Command::Serve(a) => &a.log,
        Command::Migrate(a) => &a.log,
        Command::Bootstrap(a) => &a.log,
        Command::Token(TokenCommand::Create(a)) => &a.log,
        Command::Token(TokenCommand::List(a)) => &a.log,
        Command::Token(TokenCommand::Revoke(a)) => &a.log,
    };
    let log_format = log.format();
    let checked = match &cli.command {
        Command::Serve(a) => a.database.validate().and_then(|_| a.amqp.validate()),
        Command::Migrate(a) => a.database.validate(),
        Command::Bootstrap(a) => a.database.validate(),
        Command::Token(TokenCommand::Create(a)) => a.database.validate(),
        Command::Token(TokenCommand::List(a)) => a.database.validate(),
        Command::Token(TokenCommand::Revoke(a)) => a.database.validate(),
    };
    if let Err(e) = checked {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let _telemetry = common::telemetry::init(log_format, "api");
        match cli.command {
            Command::Serve(args) => serve::run(*args).await.map_err(classify),
            Command::Migrate(args) => migrate(&args.database.database_url).await,
            Command::Bootstrap(args) => bootstrap(args).await,
            Command::Token(TokenCommand::Create(args)) => token_create(args).await,
            Command::Token(TokenCommand::List(args)) => token_list(args).await,
            Command::Token(TokenCommand::Revoke(args)) => token_revoke(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Operational(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(msg)) => {
            eprintln!("{msg}");
            ExitCode::from(2)
        }
    }
}

/// Configuration errors (named variable) are exit 2; the rest are operational.
fn classify(msg: String) -> Failure {
    if msg.starts_with("configuration error:") {
        Failure::Usage(msg)
    } else {
        Failure::Operational(msg)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Failure::Operational(e.to_string()))?
}

async fn migrate(url: &str) -> Result<(), Failure> {
    let url = url.to_owned();
    let applied = blocking(move || common::db::prepare(&url).map_err(Failure::Operational)).await?;
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

async fn bootstrap(args: BootstrapArgs) -> Result<(), Failure> {
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
    let url = args.database.database_url.clone();
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

async fn token_create(args: TokenCreateArgs) -> Result<(), Failure> {
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
    let url = args.database.database_url.clone();
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

async fn token_list(args: TokenListArgs) -> Result<(), Failure> {
    let instance_id = parse_id("--instance", &args.instance)?;
    let url = args.database.database_url.clone();
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

async fn token_revoke(args: TokenRevokeArgs) -> Result<(), Failure> {
    let id = parse_id("token id", &args.id)?;
    let url = args.database.database_url.clone();
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
