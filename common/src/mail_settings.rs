//! An instance's own mail settings (SPEC 9): sender, reply-to, default language, default
//! link templates and the delivery provider (its own SMTP relay, or an HTTP endpoint). Every
//! field is optional; an unset one takes the global configuration.
//!
//! The settings object is the same for the JSON API, `api instance mail-settings` and the
//! worker: [`MailSettings`]. Secrets (the SMTP password, the HTTP signing key) are stored
//! only encrypted with the code key, bound to the instance, and are shown back as `***`.
//! Sending `***` back (as `GET` then `PUT` does) keeps the stored secret.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use crate::branding::Branding;
use crate::domain::{CodeKeys, EmailAddress, LanguageTag, UrlTemplate};
use crate::error::{Error, Rejection, ids};
use crate::schema::instance_mail_settings as ims;
use crate::schema::mail_jobs;
use crate::schema::organization_branding as ob;
use crate::time::now_ms;

/// What a secret is shown as, and what keeps the stored one when sent back.
pub const HIDDEN: &str = "***";

/// The longest sender display name accepted, in characters.
const MAX_NAME: usize = 100;

/// An instance's mail settings as clients read and write them: camelCase JSON (snake_case
/// accepted, unknown fields ignored, as every request of the API). Absent, `null` or empty
/// fields are unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MailSettings {
    /// Sender: `Name <address>` or a bare address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, alias = "reply_to", skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// BCP 47 tag of the language of users who have none.
    #[serde(
        default,
        alias = "default_language",
        skip_serializing_if = "Option::is_none"
    )]
    pub default_language: Option<String>,
    /// The contact email link when `sendCode` names none.
    #[serde(
        default,
        alias = "url_template",
        skip_serializing_if = "Option::is_none"
    )]
    pub url_template: Option<String>,
    /// The OTP Email link when `sendCode` names none.
    #[serde(
        default,
        alias = "otp_email_url_template",
        skip_serializing_if = "Option::is_none"
    )]
    pub otp_email_url_template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,
    /// Colors and logo of the HTML mails; an organization's own branding overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branding: Option<Branding>,
}

/// Where an instance's mail goes: `{"smtp": {...}}` or `{"http": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Provider {
    Smtp(SmtpProvider),
    Http(HttpProvider),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SmtpProvider {
    /// `smtp://user:password@host:port?tls=required|opportunistic` or `smtps://...`.
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpProvider {
    /// `https://...` (or `http://`) that receives each mail as a signed JSON `POST`.
    pub url: String,
    /// The HMAC-SHA-256 key of the `X-Signature` header. Required when the provider is set
    /// first; `***` or absent keeps the stored one.
    #[serde(
        default,
        alias = "signing_key",
        skip_serializing_if = "Option::is_none"
    )]
    pub signing_key: Option<String>,
}

/// Which provider an instance uses, as metrics label it (never by instance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    Smtp,
    Http,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Smtp => "smtp",
            ProviderKind::Http => "http",
        }
    }
}

/// An instance's provider with its secret in the clear: only the worker (and `mail-settings
/// test`) hold one, to send with.
#[derive(Clone, PartialEq, Eq)]
pub enum ResolvedProvider {
    /// The SMTP URL with its password put back.
    Smtp {
        url: String,
    },
    Http {
        url: String,
        signing_key: String,
    },
}

impl std::fmt::Debug for ResolvedProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResolvedProvider::Smtp { .. } => f.write_str("Smtp { .. }"),
            ResolvedProvider::Http { url, .. } => write!(f, "Http {{ url: {url:?}, .. }}"),
        }
    }
}

impl ResolvedProvider {
    pub fn kind(&self) -> ProviderKind {
        match self {
            ResolvedProvider::Smtp { .. } => ProviderKind::Smtp,
            ResolvedProvider::Http { .. } => ProviderKind::Http,
        }
    }
}

/// An instance's settings as the worker uses them, secrets decrypted. `version` changes with
/// every save, so a cached provider built from older settings is replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceMail {
    pub instance_id: i64,
    pub version: DateTime<Utc>,
    pub from: Option<String>,
    pub reply_to: Option<String>,
    pub default_language: Option<String>,
    pub provider: Option<ResolvedProvider>,
    pub branding: Branding,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = ims, treat_none_as_null = true)]
struct Row {
    instance_id: i64,
    mail_from: Option<String>,
    reply_to: Option<String>,
    default_language: Option<String>,
    url_template: Option<String>,
    otp_email_url_template: Option<String>,
    provider_kind: Option<String>,
    provider_url: Option<String>,
    provider_secret: Option<Vec<u8>>,
    branding: Option<serde_json::Value>,
    updated_at: DateTime<Utc>,
}

/// The AEAD context of an instance's provider secret.
fn context(instance_id: i64) -> Vec<u8> {
    format!("instance-mail-settings/{instance_id}").into_bytes()
}

fn invalid(message: impl Into<String>) -> Rejection {
    Rejection::invalid(ids::MAIL_SETTINGS_INVALID, message.into())
}

/// An optional text field: `""` means unset, as in proto3.
fn given(field: &Option<String>) -> Option<&str> {
    field.as_deref().filter(|s| !s.is_empty())
}

/// `Name <address>` or `address`, checked as SPEC 3.1 checks addresses; returned in one
/// canonical form.
fn parse_from(raw: &str, field: &str) -> Result<String, Rejection> {
    let raw = raw.trim();
    let Some(open) = raw.rfind('<') else {
        return Ok(EmailAddress::parse(raw, field)?.to_string());
    };
    let Some(inner) = raw[open + 1..].strip_suffix('>') else {
        return Err(invalid(format!(
            "{field} must be \"Name <address>\" or an address"
        )));
    };
    let address = EmailAddress::parse(inner, field)?;
    let name = raw[..open].trim().trim_matches('"').trim();
    if name
        .chars()
        .any(|c| c.is_control() || c == '"' || c == '\\')
    {
        return Err(invalid(format!(
            "{field}: the name must not hold quotes, backslashes or control characters"
        )));
    }
    if name.chars().count() > MAX_NAME {
        return Err(invalid(format!(
            "{field}: the name must be at most {MAX_NAME} characters"
        )));
    }
    Ok(if name.is_empty() {
        address.to_string()
    } else {
        format!("{name} <{address}>")
    })
}

/// The parts of a provider URL the row keeps: the URL without its password, and the
/// password (if any), percent-encoded as it came.
fn split_smtp_url(raw: &str) -> Result<(String, Option<String>), Rejection> {
    let mut url = url::Url::parse(raw.trim())
        .map_err(|_| invalid("provider.smtp.url is not a URL (smtp://host:port, smtps://...)"))?;
    if !url.has_host() || url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("provider.smtp.url has no host"));
    }
    let tls = url
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    let known = url.query_pairs().all(|(k, _)| k == "tls");
    match (url.scheme(), tls.as_deref()) {
        ("smtp", None | Some("none" | "required" | "opportunistic")) | ("smtps", None) if known => {
        }
        _ => {
            return Err(invalid(
                "provider.smtp.url must be smtp://host[:port][?tls=required|opportunistic] \
                 or smtps://host[:port]",
            ));
        }
    }
    let password = url.password().map(str::to_owned);
    if password.is_some() && url.username().is_empty() {
        return Err(invalid("provider.smtp.url has a password but no user"));
    }
    let _ = url.set_password(None);
    Ok((url.to_string(), password))
}

fn check_http_url(raw: &str) -> Result<String, Rejection> {
    match url::Url::parse(raw.trim()) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some_and(|h| !h.is_empty())
                && u.password().is_none() =>
        {
            Ok(u.to_string())
        }
        _ => Err(invalid(
            "provider.http.url must be an http:// or https:// URL without credentials",
        )),
    }
}

impl MailSettings {
    /// The row that stores these settings for `instance_id`, after checking every field;
    /// `stored` is the row they replace, whose secret a `***` keeps.
    fn to_row(
        &self,
        keys: &CodeKeys,
        instance_id: i64,
        stored: Option<&Row>,
    ) -> Result<Row, Rejection> {
        let from = given(&self.from)
            .map(|f| parse_from(f, "from"))
            .transpose()?;
        let reply_to = given(&self.reply_to)
            .map(|a| EmailAddress::parse(a, "replyTo").map(|a| a.to_string()))
            .transpose()?;
        let default_language = given(&self.default_language)
            .map(|raw| {
                LanguageTag::parse(raw).map(|t| t.to_string()).map_err(|e| {
                    Rejection::invalid(ids::LANGUAGE_INVALID, format!("defaultLanguage: {e}"))
                })
            })
            .transpose()?;
        // Kept as the client wrote them (ZITADEL's `{{.Code}}` spelling too), once checked.
        let url_template = given(&self.url_template)
            .map(|t| UrlTemplate::parse(t, "urlTemplate").map(|_| t.to_owned()))
            .transpose()?;
        let otp_email_url_template = given(&self.otp_email_url_template)
            .map(|t| UrlTemplate::parse(t, "otpEmailUrlTemplate").map(|_| t.to_owned()))
            .transpose()?;
        let stored_secret = |kind: &str| {
            stored
                .filter(|r| r.provider_kind.as_deref() == Some(kind))
                .and_then(|r| r.provider_secret.clone())
        };
        let seal = |secret: &str| keys.seal(&context(instance_id), secret.as_bytes());
        let (provider_kind, provider_url, provider_secret) = match &self.provider {
            None => (None, None, None),
            Some(Provider::Smtp(smtp)) => {
                let (url, password) = split_smtp_url(&smtp.url)?;
                let secret = match password.as_deref() {
                    None => None,
                    Some(HIDDEN) | Some("%2A%2A%2A") => {
                        Some(stored_secret("smtp").ok_or_else(|| {
                            invalid(
                                "provider.smtp.url: *** keeps a stored password, and there is none",
                            )
                        })?)
                    }
                    Some(password) => Some(seal(password)),
                };
                (Some("smtp"), Some(url), secret)
            }
            Some(Provider::Http(http)) => {
                let url = check_http_url(&http.url)?;
                let secret = match given(&http.signing_key) {
                    None | Some(HIDDEN) => stored_secret("http")
                        .ok_or_else(|| invalid("provider.http.signingKey is required"))?,
                    Some(key) => seal(key),
                };
                (Some("http"), Some(url), Some(secret))
            }
        };
        let branding = match &self.branding {
            Some(b) => b.checked("branding.")?.to_stored(),
            None => None,
        };
        Ok(Row {
            branding,
            instance_id,
            mail_from: from,
            reply_to,
            default_language,
            url_template,
            otp_email_url_template,
            provider_kind: provider_kind.map(str::to_owned),
            provider_url,
            provider_secret,
            updated_at: now_ms(),
        })
    }

    /// The settings of a row as clients see them: secrets as `***`.
    fn shown(row: &Row) -> MailSettings {
        let provider = match (row.provider_kind.as_deref(), &row.provider_url) {
            (Some("smtp"), Some(url)) => {
                let mut shown = url.clone();
                if row.provider_secret.is_some()
                    && let Ok(mut u) = url::Url::parse(url)
                    && u.set_password(Some(HIDDEN)).is_ok()
                {
                    shown = u.to_string();
                }
                Some(Provider::Smtp(SmtpProvider { url: shown }))
            }
            (Some("http"), Some(url)) => Some(Provider::Http(HttpProvider {
                url: url.clone(),
                signing_key: Some(HIDDEN.to_owned()),
            })),
            _ => None,
        };
        MailSettings {
            from: row.mail_from.clone(),
            reply_to: row.reply_to.clone(),
            default_language: row.default_language.clone(),
            url_template: row.url_template.clone(),
            otp_email_url_template: row.otp_email_url_template.clone(),
            provider,
            branding: Some(Branding::from_stored(row.branding.clone())).filter(|b| !b.is_empty()),
        }
    }

    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        *self == MailSettings::default()
    }
}

fn load_row(conn: &mut PgConnection, instance_id: i64) -> Result<Option<Row>, Error> {
    Ok(ims::table
        .find(instance_id)
        .select(Row::as_select())
        .first(conn)
        .optional()?)
}

/// An instance's settings as clients see them (secrets as `***`); empty when it has none.
pub fn show(conn: &mut PgConnection, instance_id: i64) -> Result<MailSettings, Error> {
    Ok(load_row(conn, instance_id)?
        .map(|row| MailSettings::shown(&row))
        .unwrap_or_default())
}

/// Replaces an instance's settings with `new` (a field left out is unset; `***` keeps a
/// stored secret) and returns them as [`show`] does. Bad input changes nothing.
pub fn replace(
    conn: &mut PgConnection,
    keys: &CodeKeys,
    instance_id: i64,
    new: &MailSettings,
) -> Result<MailSettings, Error> {
    conn.transaction(|conn| {
        let stored: Option<Row> = ims::table
            .find(instance_id)
            .select(Row::as_select())
            .for_update()
            .first(conn)
            .optional()?;
        let row = new.to_row(keys, instance_id, stored.as_ref())?;
        diesel::insert_into(ims::table)
            .values(&row)
            .on_conflict(ims::instance_id)
            .do_update()
            .set(&row)
            .execute(conn)?;
        Ok(MailSettings::shown(&row))
    })
}

/// The link templates an instance sets for mails whose request names none.
#[derive(Debug, Clone, Default)]
pub struct InstanceTemplates {
    pub url_template: Option<UrlTemplate>,
    pub otp_email_url_template: Option<UrlTemplate>,
}

/// An instance's default link templates (checked when they were saved).
pub fn templates(conn: &mut PgConnection, instance_id: i64) -> Result<InstanceTemplates, Error> {
    let found: Option<(Option<String>, Option<String>)> = ims::table
        .find(instance_id)
        .select((ims::url_template, ims::otp_email_url_template))
        .first(conn)
        .optional()?;
    let (url, otp) = found.unwrap_or_default();
    // Stored as written and checked when saved; read the same way again.
    let read = |raw: Option<String>| raw.and_then(|t| UrlTemplate::parse(&t, "urlTemplate").ok());
    Ok(InstanceTemplates {
        url_template: read(url),
        otp_email_url_template: read(otp),
    })
}

/// What the worker needs of an instance's settings, secrets decrypted; `None` when the
/// instance has none. A secret that no key decrypts is an error naming the instance.
pub fn resolve(
    conn: &mut PgConnection,
    keys: &CodeKeys,
    instance_id: i64,
) -> Result<Option<InstanceMail>, Error> {
    load_row(conn, instance_id)?
        .map(|row| decrypt(keys, row))
        .transpose()
}

/// The settings that apply to one job's mail as they are now, read in one statement with the
/// job: its instance's settings and its organization's own branding.
#[derive(Debug, Clone)]
pub struct JobMail {
    /// The instance's settings (`Ok(None)`: it has none); `Err` names a stored secret that
    /// no key decrypts, a fault of the instance's configuration, not of the mail.
    pub settings: Result<Option<InstanceMail>, String>,
    pub org_branding: Branding,
}

/// [`JobMail`] of each of the jobs `job_ids` that exists, with its job id, in one statement
/// (the worker reads them for a batch of deliveries at once).
pub fn for_jobs(
    conn: &mut PgConnection,
    keys: &CodeKeys,
    job_ids: &[i64],
) -> Result<Vec<(i64, JobMail)>, Error> {
    let found: Vec<(i64, Option<Row>, Option<serde_json::Value>)> = mail_jobs::table
        .left_join(ims::table.on(ims::instance_id.eq(mail_jobs::instance_id)))
        .left_join(ob::table.on(ob::org_id.eq(mail_jobs::org_id)))
        .filter(mail_jobs::id.eq_any(job_ids))
        .select((
            mail_jobs::id,
            Option::<Row>::as_select(),
            ob::branding.nullable(),
        ))
        .load(conn)?;
    Ok(found
        .into_iter()
        .map(|(id, row, branding)| {
            let applying = JobMail {
                settings: row
                    .map(|row| decrypt(keys, row))
                    .transpose()
                    .map_err(|e| e.to_string()),
                org_branding: Branding::from_stored(branding),
            };
            (id, applying)
        })
        .collect())
}

/// A stored row with its secret decrypted.
fn decrypt(keys: &CodeKeys, row: Row) -> Result<InstanceMail, Error> {
    let instance_id = row.instance_id;
    let secret = |row: &Row| -> Result<Option<String>, Error> {
        row.provider_secret
            .as_deref()
            .map(|sealed| {
                keys.open(&context(instance_id), sealed)
                    .and_then(|plain| String::from_utf8(plain).ok())
                    .ok_or_else(|| {
                        Error::Internal(format!(
                            "the mail provider secret of instance {instance_id} cannot be \
                             decrypted with CODE_ENCRYPTION_KEY or a previous key"
                        ))
                    })
            })
            .transpose()
    };
    let provider = match (row.provider_kind.as_deref(), &row.provider_url) {
        (Some("smtp"), Some(url)) => {
            let mut full = url.clone();
            if let Some(password) = secret(&row)? {
                let mut u = url::Url::parse(url)
                    .map_err(|_| Error::Internal("stored SMTP URL does not parse".into()))?;
                // The password was stored percent-encoded as it came; `set_password`
                // encodes what it is given, so it goes back in already encoded form.
                let _ = u.set_password(Some(&password));
                full = u.to_string();
            }
            Some(ResolvedProvider::Smtp { url: full })
        }
        (Some("http"), Some(url)) => Some(ResolvedProvider::Http {
            url: url.clone(),
            signing_key: secret(&row)?.unwrap_or_default(),
        }),
        _ => None,
    };
    Ok(InstanceMail {
        instance_id,
        version: row.updated_at,
        from: row.mail_from,
        reply_to: row.reply_to,
        default_language: row.default_language,
        provider,
        branding: Branding::from_stored(row.branding),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_take_both_forms_and_refuse_header_tricks() {
        assert_eq!(
            parse_from("a@example.com", "from").unwrap(),
            "a@example.com"
        );
        assert_eq!(
            parse_from("  Acme Support <help@acme.example> ", "from").unwrap(),
            "Acme Support <help@acme.example>"
        );
        assert_eq!(
            parse_from("\"Acme\" <help@acme.example>", "from").unwrap(),
            "Acme <help@acme.example>"
        );
        for bad in [
            "Acme <help@acme.example",
            "Acme\r\nBcc: x@y.example <help@acme.example>",
            "Acme <not an address>",
        ] {
            assert!(parse_from(bad, "from").is_err(), "{bad}");
        }
    }

    #[test]
    fn smtp_urls_lose_their_password_to_the_secret() {
        let (url, password) =
            split_smtp_url("smtp://mailer:p%40ss@relay.example:587?tls=required").unwrap();
        assert_eq!(url, "smtp://mailer@relay.example:587?tls=required");
        assert_eq!(password.as_deref(), Some("p%40ss"));
        // Put back as `resolve` does, the password reads as it was given.
        let mut back = url::Url::parse(&url).unwrap();
        back.set_password(password.as_deref()).unwrap();
        assert_eq!(back.password(), Some("p%40ss"));
        let (url, password) = split_smtp_url("smtps://relay.example").unwrap();
        assert_eq!(url, "smtps://relay.example");
        assert!(password.is_none());
        for bad in [
            "http://relay.example",
            "smtp://relay.example?tls=sometimes",
            "smtps://relay.example?tls=required",
            "smtp://:secret@relay.example",
            "smtp://relay.example?foo=bar",
            "not a url",
        ] {
            let err = split_smtp_url(bad).unwrap_err();
            assert!(!err.message.contains("secret"), "{bad}: {err}");
        }
    }
}
