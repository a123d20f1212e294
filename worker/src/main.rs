//! `worker`: delivers the contact email service's mail, and the operators' commands.

mod cli;
mod consumer;
mod deliver;
mod health;
mod i18n;
mod mail;
mod mailbox;
mod ops;
mod retry;
mod run;
mod store;
mod transport;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, JobsCommand, MailCommand};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return common::config::exit_on_clap_error(e),
    };
    let log = match &cli.command {
        Command::Run(a) => &a.log,
        Command::Jobs(JobsCommand::List(a)) => &a.log,
        Command::Jobs(JobsCommand::Show(a)) => &a.log,
        Command::Replay(a) => &a.log,
        Command::Mail(MailCommand::Code(a)) => &a.log,
    };
    let log_format = log.format();
    let checked = match &cli.command {
        Command::Run(a) => a
            .database
            .validate()
            .and_then(|_| a.amqp.validate())
            .and_then(|_| a.delivery.validate()),
        Command::Jobs(JobsCommand::List(a)) => a.database.validate(),
        Command::Jobs(JobsCommand::Show(a)) => a.database.validate(),
        Command::Replay(a) => a.database.validate().and_then(|_| a.amqp.validate()),
        Command::Mail(MailCommand::Code(a)) => a.database.validate(),
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
    let result: Result<(), String> = runtime.block_on(async {
        let _telemetry = common::telemetry::init(log_format, "worker");
        match cli.command {
            Command::Run(args) => run::run(*args).await,
            Command::Jobs(JobsCommand::List(args)) => {
                let out = tokio::task::spawn_blocking(move || ops::list(&args))
                    .await
                    .map_err(|e| e.to_string())??;
                println!("{out}");
                Ok(())
            }
            Command::Jobs(JobsCommand::Show(args)) => {
                let id = args.id.clone();
                let shown = tokio::task::spawn_blocking(move || {
                    ops::show(&args.database.database_url, &args.id, args.json)
                })
                .await
                .map_err(|e| e.to_string())??;
                match shown {
                    Some(out) => {
                        println!("{out}");
                        Ok(())
                    }
                    None => Err(format!("no job with id {id}")),
                }
            }
            Command::Replay(args) => ops::replay(*args).await,
            Command::Mail(MailCommand::Code(args)) => {
                let code = tokio::task::spawn_blocking(move || mailbox::code(&args))
                    .await
                    .map_err(|e| e.to_string())??;
                println!("{code}");
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) if msg.starts_with("configuration error:") => {
            eprintln!("{msg}");
            ExitCode::from(2)
        }
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}

/// SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
}
