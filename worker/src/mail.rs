//! Building a mail from a job: the link from the job's URL template, then subject, text and
//! HTML from Handlebars templates (built in, or overridden from MAIL_TEMPLATES_DIR). The
//! `Message-ID` is derived from the job id, so a redelivered job is the same mail.
//!
//! # Languages (SPEC 9)
//!
//! A mail is written in the first language of the reader's fallback chain
//! ([`i18n::fallback_chain`]: the user's language, the instance's default, English) that the
//! worker has templates for, and says so in `Content-Language`. Built in are the languages of
//! [`i18n::BUILT_IN`], in `worker/templates/<lang>/<purpose>.<part>.hbs`.
//!
//! MAIL_TEMPLATES_DIR overrides them file by file:
//! - `<dir>/<lang>/contact_email.subject.hbs`, ...: for that language. The directory is named
//!   by a language tag in any case (`pt-BR`, `pt-br`; `zh-Hans` is `zh`, `zh-Hant` is
//!   `zh-TW`); other names (but hidden ones, such as a Kubernetes ConfigMap's `..data`) stop
//!   the worker at start.
//! - `<dir>/contact_email.subject.hbs`, ... (directly in the directory, as before there were
//!   languages): for English, behind `<dir>/en/`. They do not apply to other languages: a
//!   reader of German gets the built-in German mail, not an overridden English one.
//!
//! A file of language `L` is taken from the first of: the overrides for `L`, then for each
//! shorter form of `L` (`pt-BR`: `<dir>/pt-BR/`, then `<dir>/pt/`); then the built-in
//! templates the same way (`pt-BR`, then `pt`). So an operator's Portuguese wording also
//! reaches Brazilian readers, and a mail never mixes languages of different families.
//! A directory for a language without built-in templates (`<dir>/sv/`) adds that language;
//! it must then hold all six files (or get them from a shorter form's directory), or the
//! worker stops at start naming the missing one. Every template of every language is
//! rendered once at start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use common::branding::Branding;
use common::domain::{LinkValues, UrlTemplate};
use common::mail_job::Purpose;
use handlebars::Handlebars;
use lettre::Message;
use lettre::message::header::{
    ContentTransferEncoding, ContentType, Header, HeaderName, HeaderValue,
};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use serde::Serialize;

use crate::i18n;

/// The parts of one kind of mail.
const PARTS: [&str; 3] = ["subject", "txt", "html"];

/// The kinds of mail.
const PURPOSES: [Purpose; 2] = [Purpose::ContactEmail, Purpose::OtpEmail];

/// `builtin(lang, purpose, part)`: the template compiled in from
/// `templates/<lang>/<purpose>.<part>.hbs`, for the languages listed (the same as
/// [`i18n::BUILT_IN`], which a test checks).
macro_rules! builtin_templates {
    ($($lang:literal),* $(,)?) => {
        #[cfg(test)]
        const BUILTIN_LANGUAGES: &[&str] = &[$($lang),*];

        fn builtin(lang: &str, purpose: Purpose, part: &str) -> Option<&'static str> {
            Some(match (lang, purpose, part) {
                $(
                    ($lang, Purpose::ContactEmail, "subject") => {
                        include_str!(concat!("../templates/", $lang, "/contact_email.subject.hbs"))
                    }
                    ($lang, Purpose::ContactEmail, "txt") => {
                        include_str!(concat!("../templates/", $lang, "/contact_email.txt.hbs"))
                    }
                    ($lang, Purpose::ContactEmail, "html") => {
                        include_str!(concat!("../templates/", $lang, "/contact_email.html.hbs"))
                    }
                    ($lang, Purpose::OtpEmail, "subject") => {
                        include_str!(concat!("../templates/", $lang, "/otp_email.subject.hbs"))
                    }
                    ($lang, Purpose::OtpEmail, "txt") => {
                        include_str!(concat!("../templates/", $lang, "/otp_email.txt.hbs"))
                    }
                    ($lang, Purpose::OtpEmail, "html") => {
                        include_str!(concat!("../templates/", $lang, "/otp_email.html.hbs"))
                    }
                )*
                _ => return None,
            })
        }
    };
}

builtin_templates!(
    "en", "de", "fr", "es", "it", "pt", "pt-BR", "nl", "pl", "ja", "zh", "zh-TW",
);

/// MAIL_TEMPLATES_DIR, read at start: where each language's overrides are.
struct Overrides<'a> {
    /// The files directly in the directory: English.
    flat: Option<&'a Path>,
    /// `<dir>/<lang>/`, by language key.
    by_language: BTreeMap<String, PathBuf>,
}

impl<'a> Overrides<'a> {
    fn read(dir: Option<&'a Path>) -> Result<Self, String> {
        let mut by_language = BTreeMap::new();
        let entries = match dir {
            None => None,
            Some(d) => match std::fs::read_dir(d) {
                Ok(entries) => Some(entries),
                // As before there were languages: a directory that is not there overrides
                // nothing.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(format!("cannot read {}: {e}", d.display())),
            },
        };
        for entry in entries.into_iter().flatten() {
            let path = entry
                .map_err(|e| format!("cannot read MAIL_TEMPLATES_DIR: {e}"))?
                .path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with('.') || !path.is_dir() {
                continue;
            }
            let key = i18n::language_key(&name).ok_or_else(|| {
                format!(
                    "{}: a directory in MAIL_TEMPLATES_DIR holds the templates of a language \
                     and is named by its BCP 47 tag (de, pt-BR, ...)",
                    path.display()
                )
            })?;
            if let Some(other) = by_language.insert(key.clone(), path.clone()) {
                return Err(format!(
                    "{} and {} both hold templates for {key}",
                    other.display(),
                    path.display()
                ));
            }
        }
        Ok(Overrides {
            flat: dir,
            by_language,
        })
    }

    /// The directories that override language `key`, first wins.
    fn dirs(&self, key: &str) -> impl Iterator<Item = &Path> {
        let flat = self.flat.filter(|_| key == i18n::FALLBACK);
        self.by_language
            .get(key)
            .map(PathBuf::as_path)
            .into_iter()
            .chain(flat)
    }

    /// The template of `file` for language `lang`: overridden for it or a shorter form of it,
    /// else built in for it or a shorter form of it; `None` if there is none.
    fn source(&self, lang: &str, purpose: Purpose, part: &str) -> Result<Option<String>, String> {
        let file = format!("{}.{part}.hbs", purpose.as_str());
        let chain = i18n::truncations(lang);
        for key in &chain {
            for dir in self.dirs(key) {
                let path = dir.join(&file);
                if path.exists() {
                    return std::fs::read_to_string(&path)
                        .map(Some)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()));
                }
            }
        }
        Ok(chain
            .iter()
            .find_map(|key| builtin(key, purpose, part))
            .map(str::to_owned))
    }
}

/// The mail templates, checked at start.
pub struct MailRenderer {
    /// Subject and text parts: no escaping. Templates are named `<lang>/<file>`.
    plain: Handlebars<'static>,
    /// HTML part: HTML escaping.
    html: Handlebars<'static>,
    /// The languages a mail can be written in (built in, or added by MAIL_TEMPLATES_DIR), by
    /// language key.
    languages: Vec<String>,
    from: Mailbox,
    message_id_domain: String,
}

/// What the templates can use.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MailData<'a> {
    code: &'a str,
    link: &'a str,
    address: &'a str,
    user_id: String,
    org_id: String,
    /// When the code expires, as the mail's language writes dates ([`i18n::format_expiry`]).
    expires_at: String,
    /// The look of the HTML part: every field is set (built-in values where the instance
    /// and organization set none); `logoUrl` is `""` without a logo.
    brand: Brand<'a>,
}

/// [`Branding`] with the built-in look filling the gaps, as the templates use it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Brand<'a> {
    primary_color: &'a str,
    background_color: &'a str,
    font_color: &'a str,
    logo_url: &'a str,
}

impl<'a> Brand<'a> {
    fn of(branding: &'a Branding) -> Self {
        Brand {
            primary_color: branding.primary_color.as_deref().unwrap_or("#1a56db"),
            background_color: branding.background_color.as_deref().unwrap_or("#ffffff"),
            font_color: branding.font_color.as_deref().unwrap_or("#1f2937"),
            logo_url: branding.logo_url.as_deref().unwrap_or(""),
        }
    }
}

/// Whose language a mail is written in (SPEC 9): the reader's, else the instance's default,
/// else English. Tags are BCP 47 in any case; one that is not well formed counts as unset.
#[derive(Debug, Default, Clone, Copy)]
pub struct MailLanguage<'a> {
    /// The user's `preferredLanguage`.
    pub language: Option<&'a str>,
    /// The instance's `defaultLanguage`.
    pub default_language: Option<&'a str>,
}

/// The job fields a mail is made of.
pub struct MailInput<'a> {
    pub job_id: i64,
    pub purpose: Purpose,
    pub recipient: &'a str,
    pub user_id: i64,
    pub org_id: i64,
    pub url_template: &'a str,
    pub code: &'a str,
    pub code_expires_at: DateTime<Utc>,
}

impl MailRenderer {
    /// Loads the templates; `dir` overrides any of the built-in ones by file name
    /// (`<lang>/contact_email.txt.hbs`, ...; see the module's documentation). Errors name the
    /// file.
    pub fn new(mail_from: &str, dir: Option<&Path>) -> Result<Self, String> {
        let from: Mailbox = mail_from
            .parse()
            .map_err(|e| format!("MAIL_FROM {mail_from:?} is not a mailbox: {e}"))?;
        let message_id_domain = from.email.domain().to_owned();
        let mut plain = Handlebars::new();
        plain.set_strict_mode(true);
        plain.register_escape_fn(handlebars::no_escape);
        let mut html = Handlebars::new();
        html.set_strict_mode(true);
        html.register_escape_fn(escape_html);
        let overrides = Overrides::read(dir)?;
        let mut languages: Vec<String> = i18n::BUILT_IN.iter().map(|l| l.to_string()).collect();
        for added in overrides.by_language.keys() {
            if !languages.contains(added) {
                languages.push(added.clone());
            }
        }
        for lang in &languages {
            for purpose in PURPOSES {
                for part in PARTS {
                    let file = format!("{}.{part}.hbs", purpose.as_str());
                    let source = overrides.source(lang, purpose, part)?.ok_or_else(|| {
                        format!(
                            "no {file} for {lang}: there are no built-in {lang} templates, so \
                             MAIL_TEMPLATES_DIR/{lang}/ must hold all six"
                        )
                    })?;
                    let registry = if part == "html" {
                        &mut html
                    } else {
                        &mut plain
                    };
                    registry
                        .register_template_string(&format!("{lang}/{file}"), source)
                        .map_err(|e| format!("template {lang}/{file}: {e}"))?;
                }
            }
        }
        let renderer = MailRenderer {
            plain,
            html,
            languages,
            from,
            message_id_domain,
        };
        renderer.check()?;
        Ok(renderer)
    }

    /// The domain of `MAIL_FROM` (also the `Message-ID` domain).
    pub fn sender_domain(&self) -> &str {
        &self.message_id_domain
    }

    /// Renders every template of every language once with sample values, so a template
    /// using an unknown variable stops the worker at start rather than failing mails.
    fn check(&self) -> Result<(), String> {
        for lang in &self.languages {
            for purpose in PURPOSES {
                self.build(
                    lang,
                    &MailInput {
                        job_id: 1,
                        purpose,
                        recipient: "sample@example.com",
                        user_id: 1,
                        org_id: 1,
                        url_template: "https://example.com/?c={{Code}}",
                        code: "SAMPLE",
                        code_expires_at: Utc::now(),
                    },
                )
                .map_err(|e| format!("{lang}: {e}"))?;
            }
        }
        Ok(())
    }

    /// The full mail for a job, in English (or MAIL_TEMPLATES_DIR's flat templates).
    #[cfg(test)]
    pub fn render(&self, input: &MailInput<'_>) -> Result<Message, String> {
        self.render_in(input, MailLanguage::default())
    }

    /// The full mail for a job, in the reader's language (SPEC 9).
    #[cfg(test)]
    pub fn render_in(
        &self,
        input: &MailInput<'_>,
        reader: MailLanguage<'_>,
    ) -> Result<Message, String> {
        self.build(self.language(reader), input)
    }

    /// The mail for a job as an instance's settings want it (SPEC 9): in the reader's
    /// language, from and replying to the instance's addresses when it sets them. Keeps the
    /// rendered parts for a provider that takes them apart (HTTP).
    pub fn render_for(
        &self,
        input: &MailInput<'_>,
        reader: MailLanguage<'_>,
        sender: &Sender,
    ) -> Result<RenderedMail, String> {
        let lang = self.language(reader);
        let parts = self.render_parts(lang, input, &sender.branding)?;
        let from = sender.from.as_ref().unwrap_or(&self.from);
        let message = self.assemble(lang, input, &parts, from, sender.reply_to.as_ref())?;
        Ok(RenderedMail {
            message,
            from: from.to_string(),
            reply_to: sender.reply_to.as_ref().map(ToString::to_string),
            subject: parts.subject.trim().to_owned(),
            text: parts.text,
            html: parts.html,
            language: lang.to_owned(),
        })
    }

    /// The language a mail to this reader is written in (its `Content-Language`): the first
    /// of the reader's fallback chain the worker has templates for.
    pub fn language(&self, reader: MailLanguage<'_>) -> &str {
        i18n::fallback_chain(reader.language, reader.default_language)
            .iter()
            .find_map(|key| self.languages.iter().find(|l| *l == key))
            .map_or(i18n::FALLBACK, String::as_str)
    }

    fn build(&self, lang: &str, input: &MailInput<'_>) -> Result<Message, String> {
        let parts = self.render_parts(lang, input, &Branding::default())?;
        self.assemble(lang, input, &parts, &self.from, None)
    }

    fn assemble(
        &self,
        lang: &str,
        input: &MailInput<'_>,
        parts: &Parts,
        from: &Mailbox,
        reply_to: Option<&Mailbox>,
    ) -> Result<Message, String> {
        let to: Mailbox = input
            .recipient
            .parse()
            .map_err(|e| format!("recipient is not an address: {e}"))?;
        let mut builder = Message::builder().from(from.clone()).to(to);
        if let Some(reply_to) = reply_to {
            builder = builder.reply_to(reply_to.clone());
        }
        builder
            .subject(parts.subject.trim())
            .header(AutoSubmitted)
            .header(ContentLanguage(lang.to_owned()))
            .message_id(Some(format!(
                "<{}.{}@{}>",
                input.job_id,
                input.purpose.as_str(),
                self.message_id_domain
            )))
            .multipart(
                MultiPart::alternative()
                    .singlepart(part(ContentType::TEXT_PLAIN, parts.text.clone()))
                    .singlepart(part(ContentType::TEXT_HTML, parts.html.clone())),
            )
            .map_err(|e| format!("cannot build the mail: {e}"))
    }

    fn render_parts(
        &self,
        lang: &str,
        input: &MailInput<'_>,
        branding: &Branding,
    ) -> Result<Parts, String> {
        let user_id = input.user_id.to_string();
        let org_id = input.org_id.to_string();
        let link = UrlTemplate::trusted(input.url_template.to_owned())
            .render(LinkValues {
                user_id: &user_id,
                code: input.code,
                org_id: &org_id,
            })
            .map_err(|e| format!("link template: {e}"))?;
        let data = MailData {
            // The code exactly as it verifies, in every language: no digit grouping ("123 456")
            // or other separators a reader might type in, no case change. The templates put it
            // on a line of its own, where readers and `worker mail code` find it.
            code: input.code,
            link: &link,
            address: input.recipient,
            user_id,
            org_id,
            expires_at: i18n::format_expiry(lang, input.code_expires_at),
            brand: Brand::of(branding),
        };
        let name = |part: &str| format!("{lang}/{}.{part}.hbs", input.purpose.as_str());
        let render = |registry: &Handlebars<'static>, part: &str| {
            registry
                .render(&name(part), &data)
                .map_err(|e| format!("{part} template: {e}"))
        };
        Ok(Parts {
            subject: render(&self.plain, "subject")?,
            text: render(&self.plain, "txt")?,
            html: render(&self.html, "html")?,
        })
    }
}

/// What an instance's settings change in its mails (SPEC 9): who a mail is from, who
/// replies go to (unset: `MAIL_FROM`, no `Reply-To`), and the HTML part's branding (the
/// organization's over the instance's; unset: the built-in look).
#[derive(Debug, Clone, Default)]
pub struct Sender {
    pub from: Option<Mailbox>,
    pub reply_to: Option<Mailbox>,
    pub branding: Branding,
}

impl Sender {
    /// The sender of an instance's settings (checked when they were saved; a value lettre
    /// still refuses is an error naming the field).
    pub fn of(from: Option<&str>, reply_to: Option<&str>) -> Result<Self, String> {
        let mailbox = |raw: &str, field: &str| {
            raw.parse::<Mailbox>()
                .map_err(|e| format!("the instance's {field} {raw:?} is not a mailbox: {e}"))
        };
        Ok(Sender {
            from: from.map(|f| mailbox(f, "from")).transpose()?,
            reply_to: reply_to.map(|r| mailbox(r, "replyTo")).transpose()?,
            branding: Branding::default(),
        })
    }
}

/// A mail ready to send: the message for SMTP and files, and its parts for HTTP.
pub struct RenderedMail {
    pub message: Message,
    pub from: String,
    pub reply_to: Option<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The `Content-Language` it was written in.
    pub language: String,
}

/// A mail's rendered parts.
struct Parts {
    subject: String,
    text: String,
    html: String,
}

/// A text part, as 7bit when it can be (readable in a `.eml` file, links unbroken), else as
/// lettre picks (quoted-printable or base64). Either way from the text itself, so every line
/// break goes out as CRLF (RFC 5322), also inside the encoded forms: handing lettre raw
/// bytes instead would keep bare LFs (`=0A` in quoted-printable).
fn part(content_type: ContentType, content: String) -> SinglePart {
    let body = Body::new_with_encoding(content.clone(), ContentTransferEncoding::SevenBit)
        .unwrap_or_else(|_| Body::new(content));
    SinglePart::builder().header(content_type).body(body)
}

/// `Auto-Submitted: auto-generated` (RFC 3834): a machine's mail, so vacation responders and
/// auto-replies stay silent.
#[derive(Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_owned())
    }
}

/// `Content-Language` (RFC 3282): the language the mail is written in, a BCP 47 tag.
#[derive(Clone)]
struct ContentLanguage(String);

impl Header for ContentLanguage {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Content-Language")
    }

    fn parse(raw: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ContentLanguage(raw.trim().to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// HTML escaping of the characters that matter in text and attribute values; `=` and `/`
/// are left alone so links stay readable.
fn escape_html(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(code: &'static str) -> MailInput<'static> {
        MailInput {
            job_id: 42,
            purpose: Purpose::ContactEmail,
            recipient: "mini@mouse.com",
            user_id: 7,
            org_id: 9,
            url_template: "https://login.example.com/verify?user={{UserID}}&code={{Code}}&org={{OrgID}}",
            code,
            code_expires_at: Utc::now(),
        }
    }

    #[test]
    fn the_mail_shows_the_code_and_the_link_in_both_parts() {
        let renderer = MailRenderer::new("Contact Email <no-reply@example.com>", None).unwrap();
        let parts = renderer
            .render_parts("en", &input("AB12CD"), &Branding::default())
            .unwrap();
        let link = "https://login.example.com/verify?user=7&code=AB12CD&org=9";
        assert!(parts.text.contains(link), "{}", parts.text);
        assert!(parts.text.contains("    AB12CD\n"), "{}", parts.text);
        assert!(
            parts.html.contains(
                "href=\"https://login.example.com/verify?user=7&amp;code=AB12CD&amp;org=9\""
            ),
            "{}",
            parts.html
        );
        assert!(
            parts.html.contains("<strong>AB12CD</strong>"),
            "{}",
            parts.html
        );
        let raw =
            String::from_utf8(renderer.render(&input("AB12CD")).unwrap().formatted()).unwrap();
        assert!(
            raw.contains("Message-ID: <42.contact_email@example.com>"),
            "{raw}"
        );
        assert!(
            raw.contains(link),
            "the text part keeps the link on one line: {raw}"
        );
    }

    /// What a relay receives: every line ends in CRLF (none longer than 998 octets), also in
    /// quoted-printable or base64 parts, with `Auto-Submitted` and `Date`.
    #[test]
    fn every_line_ends_in_crlf_whatever_the_encoding() {
        let dir = std::env::temp_dir().join(format!("ce-crlf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Non-ASCII and a line over 76 characters force an encoded text part.
        std::fs::write(
            dir.join("contact_email.txt.hbs"),
            "Grüße, voilà: {{link}}\n\n    {{code}}\n\nEnde\n",
        )
        .unwrap();
        for templates in [None, Some(dir.as_path())] {
            let renderer =
                MailRenderer::new("Contact Email <no-reply@example.com>", templates).unwrap();
            for purpose in [Purpose::ContactEmail, Purpose::OtpEmail] {
                let mail = MailInput {
                    purpose,
                    ..input("AB12CD")
                };
                let raw = renderer.render(&mail).unwrap().formatted();
                for (i, w) in raw.windows(2).enumerate() {
                    assert!(
                        !(w[1] == b'\n' && w[0] != b'\r' || i == 0 && raw[0] == b'\n'),
                        "bare LF at byte {i}:\n{}",
                        String::from_utf8_lossy(&raw)
                    );
                }
                let text = String::from_utf8_lossy(&raw);
                assert!(text.split("\r\n").all(|l| l.len() <= 998));
                // Encoded line breaks would decode to bare LFs.
                assert!(!text.contains("=0A") && !text.contains("=0D"), "{text}");
                assert!(
                    text.contains("\r\nAuto-Submitted: auto-generated\r\n"),
                    "{text}"
                );
                assert!(text.contains("\r\nDate: "), "{text}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn overrides_replace_builtin_templates_and_are_checked() {
        let dir = std::env::temp_dir().join(format!("ce-templates-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("contact_email.subject.hbs"), "Code {{code}}").unwrap();
        let renderer = MailRenderer::new("no-reply@example.com", Some(&dir)).unwrap();
        let parts = renderer
            .render_parts("en", &input("ZZ99"), &Branding::default())
            .unwrap();
        assert_eq!(parts.subject, "Code ZZ99");
        std::fs::write(dir.join("otp_email.txt.hbs"), "{{nope}}").unwrap();
        let err = MailRenderer::new("no-reply@example.com", Some(&dir))
            .err()
            .unwrap();
        assert!(err.contains("otp_email.txt.hbs"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The languages compiled in here are the ones `i18n` lists as built in.
    #[test]
    fn the_compiled_in_languages_are_i18ns_built_in_ones() {
        assert_eq!(BUILTIN_LANGUAGES, i18n::BUILT_IN);
        for lang in i18n::BUILT_IN {
            for purpose in PURPOSES {
                for part in PARTS {
                    assert!(builtin(lang, purpose, part).is_some(), "{lang} {part}");
                }
            }
        }
        assert!(builtin("sv", Purpose::ContactEmail, "txt").is_none());
    }

    /// The bytes a relay receives have CRLF line ends only, no line over 998 octets.
    fn assert_crlf_only(raw: &[u8]) {
        for (i, w) in raw.windows(2).enumerate() {
            assert!(
                w[1] != b'\n' || w[0] == b'\r',
                "bare LF at byte {i}:\n{}",
                String::from_utf8_lossy(raw)
            );
        }
        assert_ne!(raw.first(), Some(&b'\n'));
        let text = String::from_utf8_lossy(raw);
        assert!(text.split("\r\n").all(|l| l.len() <= 998), "{text}");
        assert!(!text.contains("=0A") && !text.contains("=0D"), "{text}");
    }

    /// Every built-in language, both purposes: the decoded text part has the code alone on
    /// its line (indented by four spaces) and the link on its own line, the HTML part the code
    /// in `<strong>` and the link in an `href`; the expiry is written the language's way;
    /// `Content-Language` names the language; CRLF everywhere.
    #[test]
    fn every_language_shows_the_code_and_the_link_in_both_parts() {
        use chrono::TimeZone;

        let renderer = MailRenderer::new("Contact Email <no-reply@example.com>", None).unwrap();
        let expires = Utc.with_ymd_and_hms(2026, 12, 1, 18, 30, 0).unwrap();
        let link = "https://login.example.com/verify?user=7&code=AB12CD&org=9";
        let href = "href=\"https://login.example.com/verify?user=7&amp;code=AB12CD&amp;org=9\"";
        for lang in i18n::BUILT_IN {
            for purpose in PURPOSES {
                let what = format!("{lang} {}", purpose.as_str());
                let reader = MailLanguage {
                    language: Some(lang),
                    default_language: None,
                };
                assert_eq!(renderer.language(reader), lang);
                let mail = MailInput {
                    purpose,
                    code_expires_at: expires,
                    ..input("AB12CD")
                };
                let raw = renderer.render_in(&mail, reader).unwrap().formatted();
                assert_crlf_only(&raw);
                let parsed = mail_parser::MessageParser::default().parse(&raw).unwrap();
                assert_eq!(
                    parsed.header_raw("Content-Language").map(str::trim),
                    Some(lang),
                    "{what}"
                );
                let subject = builtin(lang, purpose, "subject").unwrap().trim();
                assert_eq!(parsed.subject(), Some(subject), "{what}");
                let text = parsed.body_text(0).unwrap();
                let lines: Vec<&str> = text.lines().collect();
                assert!(lines.contains(&"    AB12CD"), "{what}:\n{text}");
                assert_eq!(
                    lines.iter().filter(|l| l.starts_with("    ")).count(),
                    1,
                    "{what}: only the code is indented:\n{text}"
                );
                assert!(lines.contains(&link), "{what}:\n{text}");
                assert!(text.contains("mini@mouse.com"), "{what}:\n{text}");
                let expiry = i18n::format_expiry(lang, expires);
                assert!(text.contains(&expiry), "{what}: {expiry}\n{text}");
                let html = parsed.body_html(0).unwrap();
                assert!(html.contains("<strong>AB12CD</strong>"), "{what}:\n{html}");
                assert!(html.contains(href), "{what}:\n{html}");
                assert!(html.contains(&expiry), "{what}: {expiry}\n{html}");
                assert!(html.contains("<strong>mini@mouse.com</strong>"), "{what}");
                for part in [&*text, &*html, subject] {
                    assert!(!part.contains("{{") && !part.contains("}}"), "{what}");
                }
            }
        }
    }

    #[test]
    fn the_mail_is_in_the_first_language_of_the_chain_it_has() {
        let renderer = MailRenderer::new("no-reply@example.com", None).unwrap();
        let language = |language, default_language| {
            let reader = MailLanguage {
                language,
                default_language,
            };
            let raw = renderer
                .render_in(&input("AB12CD"), reader)
                .unwrap()
                .formatted();
            let raw = String::from_utf8(raw).unwrap();
            let header = raw
                .lines()
                .find_map(|l| l.strip_prefix("Content-Language: "))
                .unwrap()
                .to_owned();
            assert_eq!(header, renderer.language(reader));
            header
        };
        for (preferred, default, written_in) in [
            (None, None, "en"),
            (Some("pt-BR"), None, "pt-BR"),
            (Some("pt-br"), Some("de"), "pt-BR"),
            (Some("pt-PT"), Some("de"), "pt"),
            (Some("pt-AO"), None, "pt"),
            (Some("de-AT"), None, "de"),
            (Some("sv"), Some("de-AT"), "de"),
            (Some("sv"), Some("fi"), "en"),
            (Some("sv"), None, "en"),
            (None, Some("ja-JP"), "ja"),
            (None, Some("it"), "it"),
            (Some("es-MX"), None, "es"),
            (Some("nl-BE"), None, "nl"),
            (Some("pl"), Some("en"), "pl"),
            (Some("fr-CA"), Some("de"), "fr"),
            (Some("en-US"), Some("de"), "en"),
            (Some("zh-Hant-HK"), None, "zh-TW"),
            (Some("zh-TW"), None, "zh-TW"),
            (Some("zh-Hans-CN"), None, "zh"),
            (Some("zh-SG"), None, "zh"),
            (Some("no tag!"), Some("fr"), "fr"),
        ] {
            assert_eq!(
                language(preferred, default),
                written_in,
                "{preferred:?} {default:?}"
            );
        }
        // Callers that know no language: English, as before.
        let raw = renderer.render(&input("AB12CD")).unwrap().formatted();
        assert!(
            String::from_utf8(raw)
                .unwrap()
                .contains("\r\nContent-Language: en\r\n")
        );
    }

    fn template_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ce-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(path: std::path::PathBuf, content: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// `<dir>/pt-BR/` wins for a Brazilian reader, then `<dir>/pt/`, then the built-in
    /// templates (`pt-BR`, then `pt`); the flat files are English only.
    #[test]
    fn per_language_overrides_win_and_fall_back_the_same_way() {
        let dir = template_dir("lang-overrides");
        let subject = |renderer: &MailRenderer, lang: &str| {
            let lang = renderer.language(MailLanguage {
                language: Some(lang),
                default_language: None,
            });
            renderer
                .render_parts(lang, &input("ZZ99"), &Branding::default())
                .unwrap()
                .subject
        };
        let builtin_subject = |lang| builtin(lang, Purpose::ContactEmail, "subject").unwrap();
        write(dir.join("contact_email.subject.hbs"), "EN {{code}}");
        write(dir.join("pt/contact_email.subject.hbs"), "PT {{code}}");
        // Directory names in any case.
        write(dir.join("pt-br/contact_email.subject.hbs"), "BR {{code}}");
        write(
            dir.join("de-AT/contact_email.subject.hbs"),
            "AT {{expiresAt}}",
        );

        let renderer = MailRenderer::new("no-reply@example.com", Some(&dir)).unwrap();
        assert_eq!(subject(&renderer, "pt-BR"), "BR ZZ99");
        assert_eq!(subject(&renderer, "pt-PT"), "PT ZZ99");
        assert_eq!(subject(&renderer, "en"), "EN ZZ99");
        assert_eq!(subject(&renderer, "en-GB"), "EN ZZ99");
        // The flat (English) overrides are not other languages' fallback.
        assert_eq!(subject(&renderer, "de"), builtin_subject("de"));
        assert_eq!(subject(&renderer, "fr"), builtin_subject("fr"));
        // A regional directory adds that language; its other files come from `de`, and its
        // dates are German.
        let mail = input("ZZ99");
        let at = renderer
            .render_parts("de-AT", &mail, &Branding::default())
            .unwrap();
        let german = i18n::format_expiry("de", mail.code_expires_at);
        assert_eq!(at.subject, format!("AT {german}"));
        assert_eq!(subject(&renderer, "de-at"), format!("AT {german}"));
        assert_eq!(
            at.text,
            renderer
                .render_parts("de", &input("ZZ99"), &Branding::default())
                .unwrap()
                .text
        );
        // Only the subject is overridden: the rest is the built-in Brazilian text.
        let br = renderer
            .render_parts("pt-BR", &input("ZZ99"), &Branding::default())
            .unwrap();
        assert!(br.text.contains("Seu código de verificação"), "{}", br.text);

        // No pt-BR override: the pt override.
        std::fs::remove_file(dir.join("pt-br/contact_email.subject.hbs")).unwrap();
        let renderer = MailRenderer::new("no-reply@example.com", Some(&dir)).unwrap();
        assert_eq!(subject(&renderer, "pt-BR"), "PT ZZ99");
        // No Portuguese override at all: built in, Brazilian, else European Portuguese.
        std::fs::remove_file(dir.join("pt/contact_email.subject.hbs")).unwrap();
        let renderer = MailRenderer::new("no-reply@example.com", Some(&dir)).unwrap();
        assert_eq!(subject(&renderer, "pt-BR"), builtin_subject("pt-BR"));
        assert_eq!(subject(&renderer, "pt-PT"), builtin_subject("pt"));
        assert_eq!(subject(&renderer, "pt"), builtin_subject("pt"));
        // `<dir>/en/` comes before the flat files.
        write(dir.join("en/contact_email.subject.hbs"), "EN2 {{code}}");
        let renderer = MailRenderer::new("no-reply@example.com", Some(&dir)).unwrap();
        assert_eq!(subject(&renderer, "en"), "EN2 ZZ99");
        // Per-language overrides are checked at start too.
        write(dir.join("ja/otp_email.html.hbs"), "{{nope}}");
        let err = MailRenderer::new("no-reply@example.com", Some(&dir))
            .err()
            .unwrap();
        assert!(err.contains("ja/otp_email.html.hbs"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A directory for a language without built-in templates adds it, if complete.
    #[test]
    fn a_directory_adds_a_language_when_it_holds_every_template() {
        let dir = template_dir("added-language");
        for purpose in PURPOSES {
            for part in PARTS {
                let file = format!("{}.{part}.hbs", purpose.as_str());
                write(
                    dir.join("sv").join(&file),
                    "Hej {{code}} {{link}} {{expiresAt}}\n",
                );
            }
        }
        let renderer = MailRenderer::new("no-reply@example.com", Some(&dir)).unwrap();
        let swedish = MailLanguage {
            language: Some("sv-FI"),
            default_language: None,
        };
        assert_eq!(renderer.language(swedish), "sv");
        let raw = renderer
            .render_in(&input("ZZ99"), swedish)
            .unwrap()
            .formatted();
        let raw = String::from_utf8(raw).unwrap();
        assert!(raw.contains("\r\nContent-Language: sv\r\n"), "{raw}");
        assert!(raw.contains("Subject: Hej ZZ99 "), "{raw}");

        std::fs::remove_file(dir.join("sv/otp_email.txt.hbs")).unwrap();
        let err = MailRenderer::new("no-reply@example.com", Some(&dir))
            .err()
            .unwrap();
        assert!(
            err.contains("otp_email.txt.hbs") && err.contains("sv"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn directories_in_the_template_dir_are_named_by_language_tags() {
        let dir = template_dir("dir-names");
        // Hidden directories (a ConfigMap's `..data`) are not languages and are left alone.
        std::fs::create_dir_all(dir.join("..data")).unwrap();
        std::fs::create_dir_all(dir.join(".git")).unwrap();
        assert!(MailRenderer::new("no-reply@example.com", Some(&dir)).is_ok());
        std::fs::create_dir_all(dir.join("old templates")).unwrap();
        let err = MailRenderer::new("no-reply@example.com", Some(&dir))
            .err()
            .unwrap();
        assert!(err.contains("old templates"), "{err}");
        std::fs::remove_dir_all(dir.join("old templates")).unwrap();
        // Two names for one language.
        std::fs::create_dir_all(dir.join("zh-Hans")).unwrap();
        std::fs::create_dir_all(dir.join("zh-CN")).unwrap();
        let err = MailRenderer::new("no-reply@example.com", Some(&dir))
            .err()
            .unwrap();
        assert!(err.contains("both hold templates for zh"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_html_part_wears_the_branding_and_the_built_in_look_without_one() {
        let renderer = MailRenderer::new("no-reply@example.com", None).unwrap();
        let sender = Sender {
            branding: Branding {
                primary_color: Some("#112233".into()),
                background_color: Some("#fafafa".into()),
                font_color: None,
                logo_url: Some("https://cdn.acme.example/logo.png?a=1&b=2".into()),
            },
            ..Sender::default()
        };
        for lang in ["en", "de", "ja"] {
            let reader = MailLanguage {
                language: Some(lang),
                default_language: None,
            };
            let mail = renderer
                .render_for(&input("ZZ99"), reader, &sender)
                .unwrap();
            assert!(
                mail.html.contains("color: #112233;"),
                "{lang}: {}",
                mail.html
            );
            assert!(mail.html.contains("background-color: #fafafa;"), "{lang}");
            assert!(
                mail.html.contains("color: #1f2937;"),
                "{lang}: built-in font color"
            );
            assert!(
                mail.html
                    .contains(r#"<img src="https://cdn.acme.example/logo.png?a=1&amp;b=2""#),
                "{lang}: {}",
                mail.html
            );
            assert!(
                !mail.text.contains("112233"),
                "the text part has no styling"
            );
            let plain = renderer
                .render_for(&input("ZZ99"), reader, &Sender::default())
                .unwrap();
            assert!(
                !plain.html.contains("<img"),
                "{lang}: a logo without branding"
            );
            assert!(plain.html.contains("ZZ99"));
        }
    }
}
