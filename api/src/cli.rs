//! The `api` command line (SPEC 7, 9): `serve`, `migrate`, `bootstrap`, `token create|list|
//! revoke`, `instance mail-settings show|set|test`. Every option is also an environment variable of the same name.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};
use common::config::{AmqpArgs, CodeArgs, DatabaseArgs, KeyArgs, LogArgs, parse_duration};

#[derive(Parser, Debug)]
#[command(
    name = "api",
    version,
    about = "Contact email service: the HTTP/JSON API and its admin commands"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the API on API_ADDR (applies pending migrations first).
    Serve(Box<ServeArgs>),
    /// Create the database if missing, apply migrations, exit.
    Migrate(MigrateArgs),
    /// Create the instance and organization if missing and mint an admin token.
    Bootstrap(BootstrapArgs),
    /// Manage personal access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage an instance's settings.
    #[command(subcommand)]
    Instance(InstanceCommand),
}

#[derive(Subcommand, Debug)]
pub enum InstanceCommand {
    /// An instance's mail settings: sender, reply-to, default language, link templates and
    /// provider (SPEC 9).
    #[command(subcommand, name = "mail-settings")]
    MailSettings(MailSettingsCommand),
}

#[derive(Subcommand, Debug)]
pub enum MailSettingsCommand {
    /// Print the settings (secrets as ***).
    Show(MailSettingsShowArgs),
    /// Change the fields given, keep the others; print the result.
    Set(Box<MailSettingsSetArgs>),
    /// Send one mail now through the instance's provider and print the answer (exit 1 if
    /// it was not sent).
    Test(Box<MailSettingsTestArgs>),
}

#[derive(Args, Debug)]
pub struct MailSettingsShowArgs {
    /// The instance.
    #[arg(long)]
    pub instance: String,

    /// Print the settings as the JSON API does.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// A field `--clear` unsets.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingsField {
    From,
    ReplyTo,
    DefaultLanguage,
    UrlTemplate,
    OtpUrlTemplate,
    Provider,
    Branding,
}

#[derive(Args, Debug)]
pub struct MailSettingsSetArgs {
    /// The instance.
    #[arg(long)]
    pub instance: String,

    /// Sender: `Name <address>` or an address.
    #[arg(long)]
    pub from: Option<String>,

    /// Reply-To address.
    #[arg(long)]
    pub reply_to: Option<String>,

    /// BCP 47 language of mails to users who have none.
    #[arg(long)]
    pub default_language: Option<String>,

    /// Contact email link when `sendCode` names none.
    #[arg(long)]
    pub url_template: Option<String>,

    /// OTP Email link when `sendCode` names none.
    #[arg(long)]
    pub otp_url_template: Option<String>,

    /// The instance's own SMTP relay (`smtp://user:pass@host:587?tls=required`, `smtps://`).
    #[arg(long, conflicts_with_all = ["http_url", "http_signing_key"])]
    pub smtp_url: Option<String>,

    /// An HTTP endpoint receiving each mail as a signed JSON POST.
    #[arg(long)]
    pub http_url: Option<String>,

    /// The HMAC-SHA-256 key of the HTTP provider's `X-Signature` (kept if left out).
    #[arg(long, requires = "http_url")]
    pub http_signing_key: Option<String>,

    /// Branding of the HTML mails: links and buttons (`#1a73e8`).
    #[arg(long)]
    pub primary_color: Option<String>,

    /// Branding: background color.
    #[arg(long)]
    pub background_color: Option<String>,

    /// Branding: text color.
    #[arg(long)]
    pub font_color: Option<String>,

    /// Branding: `https://` URL of a logo image.
    #[arg(long)]
    pub logo_url: Option<String>,

    /// Unset a field (repeatable): from, reply-to, default-language, url-template,
    /// otp-url-template, provider, branding.
    #[arg(long, value_enum)]
    pub clear: Vec<SettingsField>,

    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Args, Debug)]
pub struct MailSettingsTestArgs {
    /// The instance.
    #[arg(long)]
    pub instance: String,

    /// Recipient of the test mail.
    #[arg(long)]
    pub to: String,

    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub codes: CodeArgs,
    /// The global transport, for an instance without a provider of its own.
    #[command(flatten)]
    pub delivery: worker::cli::DeliveryArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Listen address of the HTTP (and gRPC) API.
    #[arg(long, env = "API_ADDR", default_value = "127.0.0.1:8080")]
    pub api_addr: SocketAddr,

    /// Apply pending migrations at start.
    #[arg(long, env = "RUN_MIGRATIONS", default_value_t = true, action = ArgAction::Set)]
    pub run_migrations: bool,

    /// Origins a browser app may call from (CORS, JSON API and gRPC-Web): `*`, or a comma
    /// list such as `https://app.example,https://admin.example`. Never with credentials.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", default_value = "*")]
    pub cors_allowed_origins: String,

    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub amqp: AmqpArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub codes: CodeArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Args, Debug)]
pub struct BootstrapArgs {
    /// Domain of the instance.
    #[arg(long, default_value = "localhost")]
    pub domain: String,

    /// Name of the organization.
    #[arg(long, default_value = "default")]
    pub org_name: String,

    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Mint a token; prints it alone on one line.
    Create(TokenCreateArgs),
    /// List the tokens of an instance (never the tokens themselves).
    List(TokenListArgs),
    /// Revoke a token: it stops working within 5 s on every replica.
    Revoke(TokenRevokeArgs),
}

#[derive(Args, Debug)]
pub struct TokenCreateArgs {
    /// Instance the token belongs to.
    #[arg(long)]
    pub instance: String,

    /// Limit the token to this organization.
    #[arg(long)]
    pub org: Option<String>,

    /// The user the token acts as (self-service on that user's email and authenticators).
    #[arg(long)]
    pub subject: Option<String>,

    /// Permission (`user.read`, `user.write`, `instance.read`, `instance.write`); repeatable
    /// or comma-separated.
    #[arg(long = "permission", value_delimiter = ',', value_parser = parse_permission)]
    pub permissions: Vec<&'static str>,

    /// The token stops working after this time (`90d`, `12h`, `30m`); default: never.
    #[arg(long, value_parser = parse_lifetime)]
    pub expires_in: Option<Duration>,

    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Args, Debug)]
pub struct TokenListArgs {
    /// Instance whose tokens are listed.
    #[arg(long)]
    pub instance: String,

    /// Print one JSON array instead of a table.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Args, Debug)]
pub struct TokenRevokeArgs {
    /// Id of the token (as `token list` shows it).
    pub id: String,

    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

fn parse_lifetime(raw: &str) -> Result<Duration, String> {
    let d = parse_duration(raw)?;
    if d.is_zero() {
        return Err("must be longer than 0s".into());
    }
    Ok(d)
}

fn parse_permission(raw: &str) -> Result<&'static str, String> {
    common::auth::parse_permission(raw)
}
