//! Where mails go: an SMTP server through lettre's pooled async transport, or `.eml` files
//! in MAIL_DIR when no SMTP server is configured. Each send reports the server's reply and
//! whether a failure is worth retrying.

use std::path::PathBuf;
use std::time::Duration;

use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// How long one SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

pub enum MailTransport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Files(PathBuf),
}

/// Why a mail was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendFailure {
    /// Connection problems, timeouts, 4xx: try again later.
    Transient(String),
    /// 5xx, invalid recipient, a mail that cannot be built: retrying will not help.
    Permanent(String),
}

impl MailTransport {
    pub fn new(smtp_url: Option<&str>, mail_dir: PathBuf, pool_size: u32) -> Result<Self, String> {
        match smtp_url {
            Some(url) if !url.trim().is_empty() => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.trim())
                    .map_err(|e| format!("SMTP_URL is not usable: {e}"))?
                    .timeout(Some(SMTP_TIMEOUT))
                    .pool_config(PoolConfig::new().max_size(pool_size.max(1)))
                    .build();
                Ok(MailTransport::Smtp(transport))
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
            MailTransport::Smtp(smtp) => match smtp.send(message.clone()).await {
                Ok(response) => Ok(format!(
                    "{} {}",
                    response.code(),
                    response.message().collect::<Vec<_>>().join(" ")
                )),
                Err(e) => Err(classify(&e)),
            },
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

fn classify(e: &lettre::transport::smtp::Error) -> SendFailure {
    let text = e.to_string();
    if e.is_permanent() {
        SendFailure::Permanent(text)
    } else if e.is_client() {
        // The mail itself is unacceptable (e.g. an address lettre refuses).
        SendFailure::Permanent(text)
    } else {
        // 4xx, timeouts, connection and TLS problems.
        SendFailure::Transient(text)
    }
}
