//! `api`: the contact email service's API process and its admin commands.

mod cli;
mod grpc;
mod http;
mod serve;
mod service;
mod state;

use std::process::ExitCode;

use clap::Parser;
use common::auth::{self, NewToken};
use common::error::Error;
use common::schema::{organizations, users};
use common::tenancy;
use diesel::prelude::*;

use cli::{BootstrapArgs, Cli, Command, TokenCommand, TokenCreateArgs};

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
    };
    let log_format = log.format();
    let checked = match &cli.command {
        Command::Serve(a) => a.database.validate().and_then(|_| a.amqp.validate()),
        Command::Migrate(a) => a.database.validate(),
        Command::Bootstrap(a) => a.database.validate(),
        Command::Token(TokenCommand::Create(a)) => a.database.validate(),
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
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Operational(msg)) => {
            tracing::error!("{msg}");
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

async fn token_create(args: TokenCreateArgs) -> Result<(), Failure> {
    if args.permissions.is_empty() && args.subject.is_none() {
        return Err(Failure::Usage(
            "error: token create needs at least one --permission or a --subject".into(),
        ));
    }
    let parse_id = |flag: &str, raw: &str| {
        raw.trim()
            .parse::<i64>()
            .map_err(|_| Failure::Usage(format!("error: {flag} {raw:?} is not an id")))
    };
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
    let url = args.database.database_url.clone();
    let mut permissions = args.permissions.clone();
    permissions.sort_unstable();
    permissions.dedup();
    let token = blocking(move || {
        let mut conn = connect(&url)?;
        let instance_exists: bool = diesel::select(diesel::dsl::exists(
            common::schema::instances::table.find(instance_id),
        ))
        .get_result(&mut conn)
        .map_err(|e| db_failure(e.into()))?;
        if !instance_exists {
            return Err(Failure::Operational(format!(
                "instance {instance_id} does not exist"
            )));
        }
        if let Some(org) = org_id {
            let found: bool = diesel::select(diesel::dsl::exists(
                organizations::table
                    .filter(organizations::id.eq(org))
                    .filter(organizations::instance_id.eq(instance_id)),
            ))
            .get_result(&mut conn)
            .map_err(|e| db_failure(e.into()))?;
            if !found {
                return Err(Failure::Operational(format!(
                    "organization {org} does not exist in instance {instance_id}"
                )));
            }
        }
        if let Some(user) = subject {
            let found: bool = diesel::select(diesel::dsl::exists(
                users::table
                    .filter(users::id.eq(user))
                    .filter(users::instance_id.eq(instance_id))
                    .filter(users::deleted_at.is_null()),
            ))
            .get_result(&mut conn)
            .map_err(|e| db_failure(e.into()))?;
            if !found {
                return Err(Failure::Operational(format!(
                    "user {user} does not exist in instance {instance_id}"
                )));
            }
        }
        auth::mint(
            &mut conn,
            NewToken {
                instance_id,
                org_id,
                subject_user_id: subject,
                permissions: &permissions,
            },
        )
        .map_err(db_failure)
    })
    .await?;
    println!("{token}");
    Ok(())
}
