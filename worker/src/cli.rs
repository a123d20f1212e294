//! The `worker` command line (SPEC 7): `run`, `jobs list`, `jobs show`, `replay`, and
//! `mail code` for the quick start. Every option is also an environment variable of the
//! same name.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use common::config::{AmqpArgs, CodeArgs, DatabaseArgs, KeyArgs, LogArgs, parse_duration, secret};
use common::mail_job::{JobState, Purpose};
use secrecy::{ExposeSecret, SecretString};

#[derive(Parser, Debug)]
#[command(
    name = "worker",
    version,
    about = "Contact email service: mail delivery worker and operations commands"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Consume mail jobs and deliver them; serves /healthz, /readyz, /metrics on WORKER_ADDR.
    Run(Box<RunArgs>),
    /// Inspect mail jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Put failed (and, with --refresh-code, expired) jobs back on the queue.
    Replay(Box<ReplayArgs>),
    /// Mails written to MAIL_DIR (when no SMTP_URL is set).
    #[command(subcommand)]
    Mail(MailCommand),
}

#[derive(Subcommand, Debug)]
pub enum MailCommand {
    /// Wait for the newest mail to an address and print its code.
    Code(MailCodeArgs),
}

#[derive(Args, Debug)]
pub struct MailCodeArgs {
    /// The recipient (any case).
    #[arg(long)]
    pub to: String,

    /// Only mails of this purpose (`contact_email`, `otp_email`).
    #[arg(long, value_parser = parse_purpose)]
    pub purpose: Option<Purpose>,

    /// How long to wait for the mail.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub wait: Duration,

    /// Where the worker writes mails.
    #[arg(long, env = "MAIL_DIR", default_value = "./var/mail")]
    pub mail_dir: PathBuf,

    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

fn parse_purpose(raw: &str) -> Result<Purpose, String> {
    raw.parse()
}

#[derive(Args, Debug, Clone)]
pub struct DeliveryArgs {
    /// SMTP server (`smtp://host:port`, `smtp://user:pass@host:587?tls=required`,
    /// `smtps://...`); unset: mails are written as .eml files to MAIL_DIR.
    #[arg(long, env = "SMTP_URL", hide_env_values = true, value_parser = secret)]
    pub smtp_url: Option<SecretString>,

    /// PEM bundle of extra CAs trusted for the relay's certificate (besides the system's).
    #[arg(long, env = "SMTP_TLS_CA_FILE")]
    pub smtp_tls_ca_file: Option<PathBuf>,

    /// Name sent in EHLO; default: the host's fully qualified name, else MAIL_FROM's domain.
    #[arg(long, env = "SMTP_HELO_NAME")]
    pub smtp_helo_name: Option<String>,

    /// Where mails go when SMTP_URL is not set.
    #[arg(long, env = "MAIL_DIR", default_value = "./var/mail")]
    pub mail_dir: PathBuf,

    /// Sender of every mail.
    #[arg(
        long,
        env = "MAIL_FROM",
        default_value = "Contact Email <no-reply@localhost>"
    )]
    pub mail_from: String,

    /// Lets instances' own providers (their SMTP relay or HTTP endpoint, SPEC 9) reach
    /// private, loopback and link-local addresses. Off: a tenant cannot point the worker at
    /// the service's own network. Turn on for providers inside the cluster.
    #[arg(long, env = "MAIL_PROVIDERS_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub mail_providers_allow_private: bool,

    /// Directory with template overrides (`contact_email.subject.hbs`, `.txt.hbs`,
    /// `.html.hbs`, and the same for `otp_email`).
    #[arg(long, env = "MAIL_TEMPLATES_DIR")]
    pub mail_templates_dir: Option<PathBuf>,
}

impl DeliveryArgs {
    /// Where instances' own providers may connect.
    pub fn provider_destinations(&self) -> crate::transport::destination::Destinations {
        use crate::transport::destination::Destinations;
        if self.mail_providers_allow_private {
            Destinations::Any
        } else {
            Destinations::PublicOnly
        }
    }

    /// Checked after parsing so that an error never echoes the URL (it may hold a password).
    pub fn validate(&self) -> Result<(), common::config::ConfigError> {
        match self.smtp_url.as_ref().map(|u| u.expose_secret().trim()) {
            Some(url) if !url.is_empty() => common::config::check_url(url, &["smtp", "smtps"])
                .map(|_| ())
                .map_err(|m| common::config::ConfigError::new("SMTP_URL", m)),
            _ => Ok(()),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct RetryArgs {
    /// Deliveries tried before a job is failed.
    #[arg(long, env = "MAIL_MAX_ATTEMPTS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub mail_max_attempts: u32,

    /// First delay between attempts (exponential backoff with jitter).
    #[arg(long, env = "MAIL_RETRY_INITIAL", default_value = "5s", value_parser = parse_duration)]
    pub mail_retry_initial: Duration,

    /// Longest delay between attempts.
    #[arg(long, env = "MAIL_RETRY_MAX", default_value = "30m", value_parser = parse_duration)]
    pub mail_retry_max: Duration,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Address of the health and metrics endpoints.
    #[arg(long, env = "WORKER_ADDR", default_value = "127.0.0.1:8081")]
    pub worker_addr: SocketAddr,

    /// Mails in flight in this process.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub worker_concurrency: u16,

    /// On SIGTERM: how long the mails in flight may take to finish before they are handed
    /// back (keep it below the orchestrator's kill deadline, 30 s in Kubernetes).
    #[arg(long, env = "WORKER_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub worker_shutdown_grace: Duration,

    #[command(flatten)]
    pub delivery: DeliveryArgs,
    #[command(flatten)]
    pub retry: RetryArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub amqp: AmqpArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List(ListArgs),
    /// Show one job with its attempt history.
    Show(ShowArgs),
}

/// A point in time: RFC 3339 (`2024-06-17T09:46:05Z`) or a duration ago (`2h`).
#[derive(Debug, Clone, Copy)]
pub struct Since(pub chrono::DateTime<chrono::Utc>);

pub fn parse_time(raw: &str) -> Result<Since, String> {
    if let Ok(t) = common::time::parse_rfc3339(raw) {
        return Ok(Since(t));
    }
    let ago = parse_duration(raw).map_err(|_| {
        format!("invalid time {raw:?}: RFC 3339 (2024-06-17T09:46:05Z) or a duration ago (2h)")
    })?;
    let ago = chrono::Duration::from_std(ago).map_err(|e| e.to_string())?;
    Ok(Since(chrono::Utc::now() - ago))
}

fn parse_state(raw: &str) -> Result<JobState, String> {
    raw.parse()
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only jobs in this state.
    #[arg(long, value_parser = parse_state)]
    pub status: Option<JobState>,

    /// Only jobs of this user.
    #[arg(long, value_parser = clap::value_parser!(i64))]
    pub user: Option<i64>,

    /// Only jobs created at or after this time.
    #[arg(long, value_parser = parse_time)]
    pub since: Option<Since>,

    /// Only jobs created before this time.
    #[arg(long, value_parser = parse_time)]
    pub until: Option<Since>,

    /// At most this many jobs.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub limit: i64,

    /// Print one JSON array.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The job id.
    pub id: String,

    /// Print JSON.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Args, Debug)]
#[command(
    group(clap::ArgGroup::new("which").required(true).args(["ids", "failed"])),
    // Written out: clap's own usage line would list every option set in the environment
    // (DATABASE_URL, ...) as if it were required.
    override_usage = "worker replay (--id <ID>... | --failed [--since <T>] [--until <T>]) [--refresh-code] [--dry-run] [OPTIONS]"
)]
pub struct ReplayArgs {
    /// Jobs to replay (repeatable).
    #[arg(long = "id", num_args = 1..)]
    pub ids: Vec<String>,

    /// Every failed job (narrowed by --since / --until on the creation time).
    #[arg(long)]
    pub failed: bool,

    #[arg(long, value_parser = parse_time, requires = "failed")]
    pub since: Option<Since>,

    #[arg(long, value_parser = parse_time, requires = "failed")]
    pub until: Option<Since>,

    /// Give jobs whose code expired a new code (as a resend would) and replay them too.
    #[arg(long)]
    pub refresh_code: bool,

    /// Print what would happen; change nothing.
    #[arg(long)]
    pub dry_run: bool,

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
