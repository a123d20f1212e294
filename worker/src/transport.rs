//! Where mails go: an SMTP relay through a pool of connections (`relay`), or `.eml` files
//! in MAIL_DIR when no SMTP server is configured. Each send reports the server's reply and
//! what a failure means: worth retrying, hopeless for this mail, or the worker's own
//! configuration (an untrusted certificate, authentication refused), which must never burn
//! a job.
//!
//! TLS (`smtps://`, `?tls=required`, `?tls=opportunistic`) verifies the relay's certificate
//! against the system's trust store plus the CAs of `SMTP_TLS_CA_FILE`; there is no switch
//! that turns verification off.
//!
//! The connections are opened by the worker itself, not by lettre, to set `TCP_NODELAY`
//! (see `relay`: a workaround to drop once lettre sets it).

pub mod destination;
mod relay;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use common::mail_job::AttemptOutcome;
use lettre::Message;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;

use self::destination::Destinations;
use self::relay::{Relay, RelayConfig, RelayError, Security};

/// How long one SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

pub enum MailTransport {
    Smtp(Box<Relay>),
    Files(PathBuf),
}

/// Why a mail was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendFailure {
    /// Connection problems, timeouts, 4xx: try again later.
    Transient(String),
    /// 5xx, invalid recipient, a mail that cannot be built: retrying will not help.
    Permanent(String),
    /// The worker's own configuration: the relay's certificate is not trusted, STARTTLS is
    /// required but not offered, authentication is unsupported or refused (530, 535). Not
    /// the mail's fault: the job waits, and `/readyz` says what is wrong.
    Configuration(String),
}

impl SendFailure {
    /// How the attempt is recorded.
    pub fn outcome(&self) -> AttemptOutcome {
        match self {
            SendFailure::Transient(_) => AttemptOutcome::Transient,
            SendFailure::Permanent(_) => AttemptOutcome::Permanent,
            SendFailure::Configuration(_) => AttemptOutcome::Configuration,
        }
    }

    /// The relay's (or provider's) reply, or what went wrong.
    pub fn reply(&self) -> &str {
        match self {
            SendFailure::Transient(r)
            | SendFailure::Permanent(r)
            | SendFailure::Configuration(r) => r,
        }
    }
}

/// How the worker talks to the relay, from `SMTP_URL`, `SMTP_TLS_CA_FILE` and
/// `SMTP_HELO_NAME`.
pub struct SmtpSettings<'a> {
    pub url: &'a str,
    pub ca_file: Option<&'a Path>,
    pub helo_name: &'a str,
    pub pool_size: u32,
    /// Which addresses the relay may be at (an instance's relay: public ones unless the
    /// operator allows private networks).
    pub destinations: Destinations,
}

impl MailTransport {
    /// The SMTP transport of `smtp`, or files in `mail_dir` without one. Errors never repeat
    /// the URL (it may hold a password).
    pub fn new(smtp: Option<SmtpSettings<'_>>, mail_dir: PathBuf) -> Result<Self, String> {
        match smtp {
            Some(settings) if !settings.url.trim().is_empty() => {
                Ok(MailTransport::Smtp(Box::new(smtp_transport(&settings)?)))
            }
            _ => {
                std::fs::create_dir_all(&mail_dir).map_err(|e| {
                    format!("MAIL_DIR {} cannot be created: {e}", mail_dir.display())
                })?;
                Ok(MailTransport::Files(mail_dir))
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            MailTransport::Smtp(_) => "smtp".into(),
            MailTransport::Files(dir) => format!("files in {}", dir.display()),
        }
    }

    /// Sends one mail; `Ok` carries the server's reply (or the file written).
    pub async fn send(&self, job_id: i64, message: &Message) -> Result<String, SendFailure> {
        match self {
            MailTransport::Smtp(relay) => {
                let raw = message.formatted();
                match relay.send(message.envelope(), &raw).await {
                    Ok(response) => Ok(format!(
                        "{} {}",
                        response.code(),
                        response.message().collect::<Vec<_>>().join(" ")
                    )),
                    Err(e) => Err(classify(&e)),
                }
            }
            MailTransport::Files(dir) => {
                let path = dir.join(format!("{job_id}.eml"));
                let tmp = dir.join(format!(".{job_id}.eml.tmp"));
                let bytes = message.formatted();
                let written = async {
                    write_private(&tmp, &bytes).await?;
                    tokio::fs::rename(&tmp, &path).await
                };
                written
                    .await
                    .map(|_| format!("written to {}", path.display()))
                    .map_err(|e| {
                        SendFailure::Transient(format!("cannot write {}: {e}", path.display()))
                    })
            }
        }
    }
}

/// Writes a file only its owner can read (mode 0600, whatever the umask): a mail holds a
/// code (SPEC 7).
async fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .await?;
    file.write_all(bytes).await?;
    file.sync_all().await
}

/// Builds the pool of relay connections the way `SMTP_URL` says, with certificates checked
/// against the system's roots and `SMTP_TLS_CA_FILE`.
fn smtp_transport(settings: &SmtpSettings<'_>) -> Result<Relay, String> {
    let url = url::Url::parse(settings.url.trim())
        .map_err(|_| "SMTP_URL is not a URL (smtp://host:port, smtps://...)".to_string())?;
    let host = url
        .host_str()
        .ok_or_else(|| "SMTP_URL has no host".to_string())?
        .trim_matches(['[', ']'])
        .to_owned();
    let tls_mode = url
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    let tls_parameters = || -> Result<TlsParameters, String> {
        let mut builder = TlsParameters::builder(host.clone());
        if let Some(path) = settings.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("SMTP_TLS_CA_FILE {} cannot be read: {e}", path.display()))?;
            let certificate = Certificate::from_pem(&pem).map_err(|_| {
                format!(
                    "SMTP_TLS_CA_FILE {} holds no PEM certificate",
                    path.display()
                )
            })?;
            builder = builder.add_root_certificate(certificate);
        }
        builder
            .build_rustls()
            .map_err(|e| format!("SMTP TLS settings: {}", describe(&e)))
    };
    let (port, security) = match (url.scheme(), tls_mode.as_deref()) {
        ("smtp", None | Some("none")) => (25, Security::Plain),
        ("smtp", Some("required")) => (587, Security::StartTlsRequired(tls_parameters()?)),
        ("smtp", Some("opportunistic")) => {
            (587, Security::StartTlsOpportunistic(tls_parameters()?))
        }
        ("smtps", None) => (465, Security::Implicit(tls_parameters()?)),
        (scheme, tls) => {
            return Err(format!(
                "SMTP_URL: unsupported scheme {scheme:?} or tls={tls:?} (smtp://, \
                 smtp://...?tls=required|opportunistic, smtps://)"
            ));
        }
    };
    let mut credentials = None;
    if let Some(password) = url.password() {
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| "SMTP_URL: user or password is not UTF-8".to_string())
        };
        credentials = Some(Credentials::new(decode(url.username())?, decode(password)?));
    }
    let config = RelayConfig {
        host,
        port: url.port().unwrap_or(port),
        security,
        helo: ClientId::Domain(settings.helo_name.to_owned()),
        credentials,
        timeout: SMTP_TIMEOUT,
        destinations: settings.destinations,
    };
    Relay::new(config, settings.pool_size as usize)
}

/// `SMTP_HELO_NAME` when unset: the host's fully qualified name when it has one, else the
/// domain of `MAIL_FROM` (a bare short name makes spam filters score the mail).
pub fn default_helo_name(mail_from_domain: &str) -> String {
    let host = hostname_fqdn();
    match host {
        Some(h) if h.contains('.') && !h.ends_with(".localdomain") => h,
        _ => mail_from_domain.to_owned(),
    }
}

fn hostname_fqdn() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    if name.contains('.') {
        return Some(name.to_owned());
    }
    let domain = std::fs::read_to_string("/proc/sys/kernel/domainname").ok()?;
    let domain = domain.trim();
    (!domain.is_empty() && domain != "(none)").then(|| format!("{name}.{domain}"))
}

/// One line for an SMTP error: its message and causes, each said once (lettre nests its
/// own errors, which read "Connection error: Connection error: ...").
fn describe(e: &lettre::transport::smtp::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for part in e.to_string().split(": ") {
        if parts.last().is_none_or(|last| last != part) {
            parts.push(part.to_owned());
        }
    }
    parts.join(": ")
}

fn classify(e: &RelayError) -> SendFailure {
    match e {
        RelayError::Smtp(e) => classify_smtp(e),
        // Refused, unreachable, unresolved: the relay may be back later.
        RelayError::Connect(e) => SendFailure::Transient(format!("Connection error: {e}")),
        RelayError::Timeout(limit) => SendFailure::Transient(format!(
            "SMTP conversation timed out after {} s",
            limit.as_secs()
        )),
        RelayError::Pool(e) => SendFailure::Transient(e.clone()),
        // Not the mail's fault: the instance's settings name a place it may not go.
        RelayError::Blocked(why) => SendFailure::Configuration(why.clone()),
    }
}

fn classify_smtp(e: &lettre::transport::smtp::Error) -> SendFailure {
    let text = describe(e);
    let lower = text.to_ascii_lowercase();
    let configuration = e.is_tls()
        || lower.contains("invalid peer certificate")
        || lower.contains("certificate")
        || lower.contains("starttls")
        || lower.contains("authentication")
        || e.status().is_some_and(|code| {
            let code = code.to_string();
            matches!(code.as_str(), "530" | "534" | "535" | "538" | "454")
        });
    if configuration {
        SendFailure::Configuration(text)
    } else if e.is_permanent() {
        SendFailure::Permanent(text)
    } else if e.is_client() {
        // The mail itself is unacceptable (e.g. an address lettre refuses).
        SendFailure::Permanent(text)
    } else {
        // 4xx, timeouts, connection problems.
        SendFailure::Transient(text)
    }
}

/// The relay's health as the worker last saw it: a configuration fault makes `/readyz`
/// answer 503 with the reason until a mail goes through again.
#[derive(Default)]
pub struct SmtpHealth {
    failing: Mutex<Option<String>>,
}

impl SmtpHealth {
    pub fn record(&self, result: &Result<String, SendFailure>) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(_) => *failing = None,
            Err(SendFailure::Configuration(reason)) => *failing = Some(reason.clone()),
            Err(_) => {}
        }
    }

    /// The reason of the last configuration fault, while it lasts.
    pub fn failing(&self) -> Option<String> {
        self.failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_smtp_url_form_builds() {
        for url in [
            "smtp://127.0.0.1:2525",
            "smtp://relay.example:587?tls=required",
            "smtp://u:p%40ss@relay.example?tls=opportunistic",
            "smtps://relay.example",
        ] {
            let settings = SmtpSettings {
                url,
                ca_file: None,
                helo_name: "worker.example.com",
                pool_size: 4,
                destinations: Destinations::Any,
            };
            assert!(smtp_transport(&settings).is_ok(), "{url}");
        }
        for url in [
            "smtp://relay.example?tls=sometimes",
            "smtps://relay.example?tls=required",
            "http://x",
        ] {
            let settings = SmtpSettings {
                url,
                ca_file: None,
                helo_name: "worker.example.com",
                pool_size: 4,
                destinations: Destinations::Any,
            };
            let Err(err) = smtp_transport(&settings) else {
                panic!("{url} builds");
            };
            assert!(!err.contains("relay.example"), "the URL is echoed: {err}");
        }
    }

    #[tokio::test]
    async fn a_missing_ca_file_is_named() {
        let settings = SmtpSettings {
            url: "smtps://relay.example",
            ca_file: Some(Path::new("/nonexistent/ca.pem")),
            helo_name: "w.example",
            pool_size: 1,
            destinations: Destinations::Any,
        };
        let err = smtp_transport(&settings).err().unwrap();
        assert!(err.contains("SMTP_TLS_CA_FILE"), "{err}");
    }

    #[test]
    fn helo_falls_back_to_the_sender_domain_without_an_fqdn() {
        let name = default_helo_name("example.org");
        assert!(name.contains('.'), "{name}");
    }
}
