//! `worker`: delivers the contact email service's mail, and the operators' commands, on top
//! of the `worker` library: parse the command line, check it, set up logging, run, exit with
//! the status SPEC 7 gives the outcome.

use secrecy::ExposeSecret;
use std::process::ExitCode;

use clap::Parser;
use common::config::StartupError;
use common::shutdown::Shutdown;
use worker::Application;
use worker::cli::{Cli, Command, JobsCommand, MailCommand};
use worker::{mailbox, ops};

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
        return StartupError::from(e).report();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            return StartupError::Operational(format!("cannot start the runtime: {e}")).report();
        }
    };
    let result = runtime.block_on(async {
        let _telemetry = common::telemetry::init(log_format, "worker");
        match cli.command {
            Command::Run(args) => {
                let app = Application::build(*args).await?;
                app.run_until(Shutdown::on_signal()).await
            }
            Command::Jobs(JobsCommand::List(args)) => {
                let out = blocking(move || ops::list(&args)).await?;
                println!("{out}");
                Ok(())
            }
            Command::Jobs(JobsCommand::Show(args)) => {
                let id = args.id.clone();
                let shown = blocking(move || {
                    ops::show(
                        args.database.database_url.expose_secret(),
                        &args.id,
                        args.json,
                    )
                })
                .await?;
                match shown {
                    Some(out) => {
                        println!("{out}");
                        Ok(())
                    }
                    None => Err(StartupError::Operational(format!("no job with id {id}"))),
                }
            }
            Command::Replay(args) => ops::replay(*args).await,
            Command::Mail(MailCommand::Code(args)) => {
                let code = blocking(move || mailbox::code(&args)).await?;
                println!("{code}");
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}

/// Runs an operator command's database work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, StartupError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(StartupError::operational)?
        .map_err(StartupError::Operational)
}
