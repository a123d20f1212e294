//! Which provider a job's mail goes through (SPEC 9): the instance's own SMTP relay or HTTP
//! endpoint when its mail settings name one, else the global transport (`SMTP_URL`, or
//! files in `MAIL_DIR`).
//!
//! An instance's provider is built when its first mail comes, kept while it is used, and
//! replaced when the instance's settings change (jobs carry the instance, not a copy of its
//! settings). A provider idle for [`IDLE`] is dropped, and its connections with it.
//!
//! One instance's broken provider must not delay another instance's mail. Deliveries share
//! the worker's `WORKER_CONCURRENCY` slots, so each instance provider may use at most a
//! quarter of them at once. A mail for a provider whose slots are all taken waits a moment
//! when that provider is moving, and goes to a delay tier at once when it is stuck (nothing
//! finished lately): its slot is then free for other instances' mail.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::mail_settings::{InstanceMail, ProviderKind, ResolvedProvider};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::mail::RenderedMail;
use crate::transport::destination::Destinations;
use crate::transport::{MailTransport, SendFailure, SmtpSettings};

/// An instance provider unused this long is dropped (its pooled connections close).
pub const IDLE: Duration = Duration::from_secs(120);

/// How long one HTTP provider call may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a mail waits for a slot of a provider that is moving before it is parked.
const SLOT_WAIT: Duration = Duration::from_millis(500);

/// A provider whose slots are all taken and that finished nothing for this long is stuck.
const STUCK_AFTER: Duration = Duration::from_secs(2);

/// What the worker sends instance mail with besides its global transport.
pub struct Providers {
    helo_name: String,
    /// Where instance providers may connect (see `transport::destination`).
    destinations: Destinations,
    ca_file: Option<PathBuf>,
    /// Slots (and SMTP connections) one instance provider may use at once.
    instance_slots: usize,
    http: reqwest::Client,
    by_instance: Mutex<HashMap<i64, Arc<InstanceProvider>>>,
    started: Instant,
}

/// An instance's provider, built from one version of its settings.
pub struct InstanceProvider {
    version: DateTime<Utc>,
    sender: Sending,
    slots: Arc<Semaphore>,
    /// Milliseconds since [`Providers::started`]: last use, and last send that ended.
    last_used: AtomicU64,
    last_done: AtomicU64,
}

enum Sending {
    Smtp(MailTransport),
    Http { url: String, signing_key: String },
}

/// The provider picked for one mail.
#[derive(Clone)]
pub enum Selected {
    /// `SMTP_URL` or `MAIL_DIR`.
    Global,
    Instance {
        instance_id: i64,
        provider: Arc<InstanceProvider>,
    },
}

/// Whether a mail may be sent now.
pub enum Admission {
    /// Yes; the slot is held while the value lives.
    Go(Option<OwnedSemaphorePermit>),
    /// The instance's provider has no free slot; `stuck` when it finished nothing lately.
    Busy { stuck: bool },
}

impl Providers {
    pub fn new(
        helo_name: String,
        ca_file: Option<PathBuf>,
        concurrency: u16,
        destinations: Destinations,
    ) -> Self {
        let mut http = reqwest::Client::builder();
        if destinations == Destinations::PublicOnly {
            http = http.dns_resolver(Arc::new(PublicOnlyResolver));
        }
        let http = http
            .timeout(HTTP_TIMEOUT)
            .connect_timeout(HTTP_TIMEOUT)
            // A redirect of a signed POST is not followed: the receiver must be named as is.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(IDLE)
            .user_agent(concat!("contact-email-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client of static settings builds");
        Providers {
            helo_name,
            destinations,
            ca_file,
            instance_slots: usize::from(concurrency / 4).max(1),
            http,
            by_instance: Mutex::default(),
            started: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The provider for mail of an instance with `settings`: its own when it names one
    /// (built now if this version of the settings has none yet), else the global one.
    pub fn select(&self, settings: Option<&InstanceMail>) -> Result<Selected, String> {
        let Some((settings, provider)) = settings.and_then(|s| s.provider.as_ref().map(|p| (s, p)))
        else {
            return Ok(Selected::Global);
        };
        let mut by_instance = self
            .by_instance
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Idle providers are dropped by `sweep`, not on every lookup.
        let now = self.now_ms();
        if let Some(found) = by_instance.get(&settings.instance_id)
            && found.version == settings.version
        {
            found.last_used.store(now, Ordering::Relaxed);
            return Ok(Selected::Instance {
                instance_id: settings.instance_id,
                provider: found.clone(),
            });
        }
        let sender = match provider {
            ResolvedProvider::Smtp { url } => Sending::Smtp(
                MailTransport::new(
                    Some(SmtpSettings {
                        url,
                        ca_file: self.ca_file.as_deref(),
                        helo_name: &self.helo_name,
                        pool_size: self.instance_slots as u32,
                        destinations: self.destinations,
                    }),
                    PathBuf::new(),
                )
                .map_err(|e| format!("the instance's SMTP provider: {e}"))?,
            ),
            ResolvedProvider::Http { url, signing_key } => Sending::Http {
                url: url.clone(),
                signing_key: signing_key.clone(),
            },
        };
        let built = Arc::new(InstanceProvider {
            version: settings.version,
            sender,
            slots: Arc::new(Semaphore::new(self.instance_slots)),
            last_used: AtomicU64::new(now),
            last_done: AtomicU64::new(now),
        });
        by_instance.insert(settings.instance_id, built.clone());
        Ok(Selected::Instance {
            instance_id: settings.instance_id,
            provider: built,
        })
    }

    /// Drops the instance providers idle for [`IDLE`]; run now and then so that an idle
    /// worker closes its connections too.
    pub fn sweep(&self) {
        let now = self.now_ms();
        self.by_instance
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, p| {
                now.saturating_sub(p.last_used.load(Ordering::Relaxed)) < IDLE.as_millis() as u64
            });
    }

    /// A slot for one mail of `selected`: at once when free, after a short wait when its
    /// provider is moving, else [`Admission::Busy`].
    pub async fn admit(&self, selected: &Selected) -> Admission {
        let Selected::Instance { provider, .. } = selected else {
            return Admission::Go(None);
        };
        if let Ok(permit) = provider.slots.clone().try_acquire_owned() {
            return Admission::Go(Some(permit));
        }
        let idle_for = self
            .now_ms()
            .saturating_sub(provider.last_done.load(Ordering::Relaxed));
        if idle_for >= STUCK_AFTER.as_millis() as u64 {
            return Admission::Busy { stuck: true };
        }
        match tokio::time::timeout(SLOT_WAIT, provider.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Admission::Go(Some(permit)),
            _ => Admission::Busy { stuck: false },
        }
    }

    /// Sends `mail` of job `job_id` through `selected` (`global` for [`Selected::Global`]).
    pub async fn send(
        &self,
        global: &MailTransport,
        selected: &Selected,
        job_id: i64,
        mail: &RenderedMail,
    ) -> Result<String, SendFailure> {
        let (instance_id, provider) = match selected {
            Selected::Global => return global.send(job_id, &mail.message).await,
            Selected::Instance {
                instance_id,
                provider,
            } => (*instance_id, provider),
        };
        let result = match &provider.sender {
            Sending::Smtp(transport) => transport.send(job_id, &mail.message).await,
            Sending::Http { url, signing_key } => {
                self.post(url, signing_key, job_id, instance_id, mail).await
            }
        };
        provider.last_done.store(self.now_ms(), Ordering::Relaxed);
        result
    }

    /// One mail to an HTTP provider (SPEC 9): its fields as JSON, signed with
    /// `X-Signature: sha256=<hex HMAC-SHA-256 of the body>`.
    async fn post(
        &self,
        url: &str,
        signing_key: &str,
        job_id: i64,
        instance_id: i64,
        mail: &RenderedMail,
    ) -> Result<String, SendFailure> {
        let to = mail
            .message
            .envelope()
            .to()
            .first()
            .map(ToString::to_string)
            .unwrap_or_default();
        let body = serde_json::to_vec(&HttpMail {
            job_id: job_id.to_string(),
            instance_id: instance_id.to_string(),
            to,
            from: &mail.from,
            reply_to: mail.reply_to.as_deref(),
            subject: &mail.subject,
            text: &mail.text,
            html: &mail.html,
            language: &mail.language,
        })
        .map_err(|e| SendFailure::Permanent(format!("cannot encode the mail: {e}")))?;
        self.check_destination(url)
            .await
            .map_err(SendFailure::Configuration)?;
        let signature = sign(signing_key, &body);
        let sent = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Signature", format!("sha256={signature}"))
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Err(SendFailure::Transient(format!(
                    "HTTP provider did not answer within {} s",
                    HTTP_TIMEOUT.as_secs()
                )));
            }
            // Refused, unreachable, reset: the provider may be back later. The error's text
            // names the URL, which holds no secret.
            Err(e) => return Err(SendFailure::Transient(format!("HTTP provider: {e}"))),
        };
        let status = response.status();
        let reply = format!(
            "HTTP {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
        .trim_end()
        .to_owned();
        if status.is_success() {
            Ok(reply)
        } else if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            Err(SendFailure::Transient(reply))
        } else {
            Err(SendFailure::Permanent(reply))
        }
    }
}

impl Providers {
    /// Refuses an HTTP provider whose host is (or resolves only to) an address instance
    /// providers may not reach: a clear configuration fault instead of a connection error.
    /// The client's resolver filters the addresses again when it connects.
    async fn check_destination(&self, url: &str) -> Result<(), String> {
        if self.destinations == Destinations::Any {
            return Ok(());
        }
        let parsed =
            url::Url::parse(url).map_err(|_| "the HTTP provider URL does not parse".to_string())?;
        let host = parsed
            .host_str()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_owned();
        let port = parsed.port_or_known_default().unwrap_or(443);
        let resolved: Vec<SocketAddr> = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            // A name that does not resolve fails as the request would: transiently.
            Err(_) => match tokio::net::lookup_host((host.as_str(), port)).await {
                Ok(addresses) => addresses.collect(),
                Err(_) => return Ok(()),
            },
        };
        self.destinations.filter(&host, resolved).map(|_| ())
    }
}

/// Name resolution for the HTTP client that drops addresses instance providers may not
/// reach (see `transport::destination`).
struct PublicOnlyResolver;

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = Destinations::PublicOnly.filter(&host, resolved)?;
            let addresses: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addresses)
        })
    }
}

impl Selected {
    /// The provider kind, as metrics label it (never the instance).
    pub fn kind(&self, global: &MailTransport) -> &'static str {
        match self {
            Selected::Global => match global {
                MailTransport::Smtp(_) => "smtp",
                MailTransport::Files(_) => "files",
            },
            Selected::Instance { provider, .. } => match provider.sender {
                Sending::Smtp(_) => ProviderKind::Smtp.as_str(),
                Sending::Http { .. } => ProviderKind::Http.as_str(),
            },
        }
    }

    pub fn is_global(&self) -> bool {
        matches!(self, Selected::Global)
    }
}

/// The JSON an HTTP provider receives (SPEC 9); ids as strings, as the API writes them.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct HttpMail<'a> {
    job_id: String,
    instance_id: String,
    to: String,
    from: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<&'a str>,
    subject: &'a str,
    text: &'a str,
    html: &'a str,
    language: &'a str,
}

/// Lower-case hex HMAC-SHA-256 of `body` under `key`.
pub fn sign(key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_rfc_4231_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
