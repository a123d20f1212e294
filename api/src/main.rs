//! `api`: the contact email service's API process and its admin commands, on top of the
//! `api` library: parse the command line, check it, set up logging, run, exit with the
//! status SPEC 7 gives the outcome.

use std::process::ExitCode;

use api::Application;
use api::admin::{self, Failure};
use api::cli::{Cli, Command, InstanceCommand, MailSettingsCommand, ServeArgs, TokenCommand};
use clap::Parser;
use common::config::StartupError;
use common::shutdown::Shutdown;

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
        Command::Instance(InstanceCommand::MailSettings(c)) => match c {
            MailSettingsCommand::Show(a) => &a.log,
            MailSettingsCommand::Set(a) => &a.log,
            MailSettingsCommand::Test(a) => &a.log,
        },
    };
    let log_format = log.format();
    let checked = match &cli.command {
        Command::Serve(a) => a.database.validate().and_then(|_| a.amqp.validate()),
        Command::Migrate(a) => a.database.validate(),
        Command::Bootstrap(a) => a.database.validate(),
        Command::Token(TokenCommand::Create(a)) => a.database.validate(),
        Command::Token(TokenCommand::List(a)) => a.database.validate(),
        Command::Token(TokenCommand::Revoke(a)) => a.database.validate(),
        Command::Instance(InstanceCommand::MailSettings(c)) => match c {
            MailSettingsCommand::Show(a) => a.database.validate(),
            MailSettingsCommand::Set(a) => a.database.validate(),
            MailSettingsCommand::Test(a) => a.database.validate(),
        },
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
        let _telemetry = common::telemetry::init(log_format, "api");
        match cli.command {
            Command::Serve(args) => serve(*args).await.map_err(Failure::from),
            Command::Migrate(args) => admin::migrate(args).await,
            Command::Bootstrap(args) => admin::bootstrap(args).await,
            Command::Token(TokenCommand::Create(args)) => admin::token_create(args).await,
            Command::Token(TokenCommand::List(args)) => admin::token_list(args).await,
            Command::Token(TokenCommand::Revoke(args)) => admin::token_revoke(args).await,
            Command::Instance(InstanceCommand::MailSettings(command)) => match command {
                MailSettingsCommand::Show(args) => admin::mail_settings_show(args).await,
                MailSettingsCommand::Set(args) => admin::mail_settings_set(*args).await,
                MailSettingsCommand::Test(args) => admin::mail_settings_test(*args).await,
            },
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

/// `api serve`: until SIGTERM or SIGINT.
async fn serve(args: ServeArgs) -> Result<(), StartupError> {
    let app = Application::build(args).await?;
    app.run_until(Shutdown::on_signal()).await
}
