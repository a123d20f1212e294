//! Configuration shared by the processes: each option is an environment variable and a flag of
//! the same name (SPEC 7). The binaries compose these groups with `#[command(flatten)]`, so a
//! variable is declared, documented and validated once.

use std::fmt;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Args, ValueEnum};
use secrecy::{ExposeSecret, SecretString};

use crate::domain::{CodeKeys, CodeSpec, UrlTemplate};

/// Parses `500ms`, `30s`, `5m`, `1h` (and combinations such as `1m30s`).
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw.trim()).map_err(|e| format!("invalid duration {raw:?}: {e}"))
}

/// Reads a value that must not show in logs or `Debug` output: a key, or a URL that may
/// hold a password. It takes `expose_secret()` to read it back.
pub fn secret(raw: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(raw))
}

/// Checks that a URL parses and has one of `schemes`; the error never repeats the value
/// (it may hold a password).
pub fn check_url(raw: &str, schemes: &[&str]) -> Result<String, String> {
    match url::Url::parse(raw.trim()) {
        Ok(u) if schemes.contains(&u.scheme()) && u.has_host() => Ok(raw.trim().to_owned()),
        Ok(u) if !schemes.contains(&u.scheme()) => Err(format!(
            "unsupported scheme {:?} (expected {})",
            u.scheme(),
            schemes.join(", ")
        )),
        _ => Err(format!("not a URL of the form {}://host...", schemes[0])),
    }
}

#[derive(Args, Debug, Clone)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL; the database is created if missing.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/contact_email",
        hide_env_values = true,
        value_parser = secret
    )]
    pub database_url: SecretString,

    /// Connections kept in the pool of this process.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_pool_size: u32,
}

impl DatabaseArgs {
    /// Checked after parsing so that an error never echoes the URL (it may hold a password).
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_url(
            self.database_url.expose_secret(),
            &["postgres", "postgresql"],
        )
        .map(|_| ())
        .map_err(|m| ConfigError::new("DATABASE_URL", m))
    }
}

#[derive(Args, Debug, Clone)]
pub struct AmqpArgs {
    /// RabbitMQ connection URL (the vhost is the path, `%2f` for `/`), or a comma list of
    /// the nodes of one cluster: a process connects to one and moves to the next when it
    /// fails.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true,
        value_parser = secret
    )]
    pub amqp_url: SecretString,
}

impl AmqpArgs {
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::amqp::check_nodes(self.amqp_url.expose_secret())
            .map_err(|m| ConfigError::new("AMQP_URL", m))
    }
}

/// The keys protecting codes: needed by the api (hash, encrypt) and the worker (decrypt).
#[derive(Args, Debug, Clone)]
pub struct KeyArgs {
    /// Standard base64 of 32 random bytes (make one with `openssl rand -base64 32`); the same
    /// value for api and worker. Required unless DEV_MODE is true.
    #[arg(long, env = "CODE_ENCRYPTION_KEY", hide_env_values = true, value_parser = secret)]
    pub code_encryption_key: Option<SecretString>,

    /// Comma list of earlier CODE_ENCRYPTION_KEYs: codes and jobs made under them still
    /// verify and send until they expire, so the key can be rotated.
    #[arg(
        long,
        env = "CODE_ENCRYPTION_KEYS_PREVIOUS",
        value_delimiter = ',',
        hide_env_values = true,
        value_parser = secret
    )]
    pub code_encryption_keys_previous: Vec<SecretString>,

    /// Development mode: allows running without CODE_ENCRYPTION_KEY on a public built-in
    /// key (with a warning). Never in production.
    #[arg(long, env = "DEV_MODE", default_value_t = false, action = ArgAction::Set)]
    pub dev_mode: bool,
}

/// Publicly known; only for DEV_MODE.
const DEV_KEY: [u8; 32] = *b"contact-email-dev-key-not-secret";

/// How to make a key, in every message about a missing or malformed one.
const MAKE_A_KEY: &str = "make one with `openssl rand -base64 32` (or `head -c 32 /dev/urandom | base64`) \
     and give the same value to api and worker";

impl KeyArgs {
    /// The code keys, or the configuration error naming the variable. The error never
    /// repeats a key.
    pub fn keys(&self) -> Result<CodeKeys, ConfigError> {
        let current = match (&self.code_encryption_key, self.dev_mode) {
            (Some(k), _) if !k.expose_secret().trim().is_empty() => {
                CodeKeys::master_from_base64(k.expose_secret()).map_err(|m| {
                    ConfigError::new(
                        "CODE_ENCRYPTION_KEY",
                        format!("{m} (32 random bytes); {MAKE_A_KEY}"),
                    )
                })?
            }
            (_, true) => {
                tracing::warn!(
                    "CODE_ENCRYPTION_KEY is not set: DEV_MODE uses the public development key; \
                     never run this in production"
                );
                DEV_KEY
            }
            (_, false) => {
                return Err(ConfigError::new(
                    "CODE_ENCRYPTION_KEY",
                    format!("is required (standard base64 of 32 random bytes): {MAKE_A_KEY}"),
                ));
            }
        };
        let previous = self
            .code_encryption_keys_previous
            .iter()
            .map(ExposeSecret::expose_secret)
            .filter(|k| !k.trim().is_empty())
            .map(CodeKeys::master_from_base64)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| {
                ConfigError::new(
                    "CODE_ENCRYPTION_KEYS_PREVIOUS",
                    format!("every key {m} (32 bytes)"),
                )
            })?;
        Ok(CodeKeys::with_previous(&current, &previous))
    }
}

/// Code lifetimes, shapes and the limits around them (used by the api's commands).
#[derive(Args, Debug, Clone)]
pub struct CodeArgs {
    /// Lifetime of a contact email code.
    #[arg(long, env = "EMAIL_CODE_TTL", default_value = "1h", value_parser = parse_duration)]
    pub email_code_ttl: Duration,

    /// Lifetime of an OTP Email code.
    #[arg(long, env = "OTP_EMAIL_CODE_TTL", default_value = "1h", value_parser = parse_duration)]
    pub otp_email_code_ttl: Duration,

    /// Characters in a contact email code.
    #[arg(long, env = "EMAIL_CODE_LENGTH", default_value_t = 6)]
    pub email_code_length: usize,

    /// Characters a contact email code is drawn from.
    #[arg(
        long,
        env = "EMAIL_CODE_ALPHABET",
        default_value = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    )]
    pub email_code_alphabet: String,

    /// Characters in an OTP Email code.
    #[arg(long, env = "OTP_EMAIL_CODE_LENGTH", default_value_t = 8)]
    pub otp_email_code_length: usize,

    /// Characters an OTP Email code is drawn from.
    #[arg(long, env = "OTP_EMAIL_CODE_ALPHABET", default_value = "0123456789")]
    pub otp_email_code_alphabet: String,

    /// Wrong codes before a code is void.
    #[arg(long, env = "VERIFY_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub verify_max_attempts: u32,

    /// At most one mail per this time to the same recipient (case-insensitive) for the same
    /// purpose within an instance, whoever asks (`0s`: off).
    #[arg(long, env = "RESEND_COOLDOWN", default_value = "30s", value_parser = parse_duration)]
    pub resend_cooldown: Duration,

    /// At most this many mails per recipient per instance in any rolling hour, all purposes
    /// together (`0`: off).
    #[arg(long, env = "MAIL_RECIPIENT_HOURLY_LIMIT", default_value_t = 10)]
    pub mail_recipient_hourly_limit: u32,

    /// OTP Email authenticators a user may have at most.
    #[arg(long, env = "OTP_EMAIL_MAX_PER_USER", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub otp_email_max_per_user: u32,

    /// Contact email link when the request gives none.
    #[arg(
        long,
        env = "DEFAULT_URL_TEMPLATE",
        default_value = "http://localhost:8080/ui/login/mail/verification?userID={{UserID}}&code={{Code}}&orgID={{OrgID}}"
    )]
    pub default_url_template: String,

    /// OTP Email link when the request gives none.
    #[arg(
        long,
        env = "DEFAULT_OTP_EMAIL_URL_TEMPLATE",
        default_value = "http://localhost:8080/ui/login/otp/email/verify?userID={{UserID}}&code={{Code}}&orgID={{OrgID}}"
    )]
    pub default_otp_email_url_template: String,
}

/// The checked form of [`CodeArgs`].
#[derive(Debug, Clone)]
pub struct CodePolicy {
    pub email: CodeSpec,
    pub otp_email: CodeSpec,
    pub email_ttl: Duration,
    pub otp_email_ttl: Duration,
    pub verify_max_attempts: u32,
    pub resend_cooldown: Duration,
    pub recipient_hourly_limit: u32,
    pub otp_email_max_per_user: u32,
    pub default_url_template: UrlTemplate,
    pub default_otp_email_url_template: UrlTemplate,
}

impl CodeArgs {
    pub fn policy(&self) -> Result<CodePolicy, ConfigError> {
        let spec = |var: &'static str, len, alphabet: &str| {
            CodeSpec::new(len, alphabet).map_err(|e| ConfigError::new(var, e))
        };
        let template = |var: &'static str, raw: &str| {
            UrlTemplate::parse(raw, var).map_err(|e| ConfigError::new(var, e.message.into_owned()))
        };
        let positive = |var: &'static str, d: Duration| {
            if d.is_zero() {
                Err(ConfigError::new(var, "must be longer than 0s"))
            } else {
                Ok(d)
            }
        };
        Ok(CodePolicy {
            email: spec(
                "EMAIL_CODE_LENGTH/EMAIL_CODE_ALPHABET",
                self.email_code_length,
                &self.email_code_alphabet,
            )?,
            otp_email: spec(
                "OTP_EMAIL_CODE_LENGTH/OTP_EMAIL_CODE_ALPHABET",
                self.otp_email_code_length,
                &self.otp_email_code_alphabet,
            )?,
            email_ttl: positive("EMAIL_CODE_TTL", self.email_code_ttl)?,
            otp_email_ttl: positive("OTP_EMAIL_CODE_TTL", self.otp_email_code_ttl)?,
            verify_max_attempts: self.verify_max_attempts,
            resend_cooldown: self.resend_cooldown,
            recipient_hourly_limit: self.mail_recipient_hourly_limit,
            otp_email_max_per_user: self.otp_email_max_per_user,
            default_url_template: template("DEFAULT_URL_TEMPLATE", &self.default_url_template)?,
            default_otp_email_url_template: template(
                "DEFAULT_OTP_EMAIL_URL_TEMPLATE",
                &self.default_otp_email_url_template,
            )?,
        })
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// `pretty` or `json`; default: pretty on a terminal, else json.
    #[arg(long, env = "LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

impl LogArgs {
    pub fn format(&self) -> LogFormat {
        self.log_format.unwrap_or_else(|| {
            if std::io::stderr().is_terminal() {
                LogFormat::Pretty
            } else {
                LogFormat::Json
            }
        })
    }
}

/// Reports a command-line / environment error the way SPEC 7 asks: exit 2; a bad value is
/// one line naming the variable. Help and version go to stdout with exit 0.
pub fn exit_on_clap_error(e: clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            std::process::ExitCode::SUCCESS
        }
        ErrorKind::ValueValidation | ErrorKind::InvalidValue => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("error: invalid value");
            eprintln!("{first}");
            std::process::ExitCode::from(2)
        }
        _ => {
            let _ = e.print();
            std::process::ExitCode::from(2)
        }
    }
}

/// A configuration value that passed clap but not the service's own rules.
#[derive(Debug)]
pub struct ConfigError {
    /// The variable at fault; `None` when the message names it.
    variable: Option<&'static str>,
    message: String,
}

impl ConfigError {
    pub fn new(variable: &'static str, message: impl Into<String>) -> Self {
        ConfigError {
            variable: Some(variable),
            message: message.into(),
        }
    }

    /// An error whose message names the variables itself (`MAIL_DIR ... cannot be created`).
    pub fn stated(message: impl Into<String>) -> Self {
        ConfigError {
            variable: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.variable {
            Some(variable) => write!(f, "configuration error: {variable}: {}", self.message),
            None => write!(f, "configuration error: {}", self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Why a process could not start or stopped on a fault, and so its exit status (SPEC 7).
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A value the service refuses: exit 2, the message names the variable.
    #[error(transparent)]
    Configuration(#[from] ConfigError),
    /// Anything else (a database or port that cannot be reached, a server fault): exit 1.
    #[error("{0}")]
    Operational(String),
}

impl StartupError {
    pub fn operational(cause: impl fmt::Display) -> Self {
        StartupError::Operational(cause.to_string())
    }

    /// Reports the error on stderr the way SPEC 7 asks and gives the exit status: a
    /// configuration error is its own line (exit 2), anything else is `error: ...` (exit 1).
    pub fn report(&self) -> ExitCode {
        match self {
            StartupError::Configuration(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
            StartupError::Operational(msg) => {
                eprintln!("error: {msg}");
                ExitCode::from(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_the_spec_notation() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("30").is_err());
    }
}
