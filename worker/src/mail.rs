//! Building a mail from a job: the link from the job's URL template, then subject, text and
//! HTML from Handlebars templates (built in, or overridden from MAIL_TEMPLATES_DIR). The
//! `Message-ID` is derived from the job id, so a redelivered job is the same mail.

use std::path::Path;

use chrono::{DateTime, Utc};
use common::domain::{LinkValues, UrlTemplate};
use common::mail_job::Purpose;
use handlebars::Handlebars;
use lettre::Message;
use lettre::message::header::{
    ContentTransferEncoding, ContentType, Header, HeaderName, HeaderValue,
};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use serde::Serialize;

/// The parts of one kind of mail.
const PARTS: [&str; 3] = ["subject", "txt", "html"];

fn builtin(purpose: Purpose, part: &str) -> &'static str {
    match (purpose, part) {
        (Purpose::ContactEmail, "subject") => {
            include_str!("../templates/contact_email.subject.hbs")
        }
        (Purpose::ContactEmail, "txt") => include_str!("../templates/contact_email.txt.hbs"),
        (Purpose::ContactEmail, _) => include_str!("../templates/contact_email.html.hbs"),
        (Purpose::OtpEmail, "subject") => include_str!("../templates/otp_email.subject.hbs"),
        (Purpose::OtpEmail, "txt") => include_str!("../templates/otp_email.txt.hbs"),
        (Purpose::OtpEmail, _) => include_str!("../templates/otp_email.html.hbs"),
    }
}

/// The mail templates, checked at start.
pub struct MailRenderer {
    /// Subject and text parts: no escaping.
    plain: Handlebars<'static>,
    /// HTML part: HTML escaping.
    html: Handlebars<'static>,
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
    expires_at: String,
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
    /// (`contact_email.txt.hbs`, ...). Errors name the file.
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
        for purpose in [Purpose::ContactEmail, Purpose::OtpEmail] {
            for part in PARTS {
                let file = format!("{}.{part}.hbs", purpose.as_str());
                let source = match dir.map(|d| d.join(&file)) {
                    Some(path) if path.exists() => std::fs::read_to_string(&path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
                    _ => builtin(purpose, part).to_owned(),
                };
                let registry = if part == "html" {
                    &mut html
                } else {
                    &mut plain
                };
                registry
                    .register_template_string(&file, source)
                    .map_err(|e| format!("template {file}: {e}"))?;
            }
        }
        let renderer = MailRenderer {
            plain,
            html,
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

    /// Renders every template once with sample values, so a template using an unknown
    /// variable stops the worker at start rather than failing mails.
    fn check(&self) -> Result<(), String> {
        for purpose in [Purpose::ContactEmail, Purpose::OtpEmail] {
            self.render(&MailInput {
                job_id: 1,
                purpose,
                recipient: "sample@example.com",
                user_id: 1,
                org_id: 1,
                url_template: "https://example.com/?c={{Code}}",
                code: "SAMPLE",
                code_expires_at: Utc::now(),
            })?;
        }
        Ok(())
    }

    /// The full mail for a job.
    pub fn render(&self, input: &MailInput<'_>) -> Result<Message, String> {
        let parts = self.render_parts(input)?;
        let to: Mailbox = input
            .recipient
            .parse()
            .map_err(|e| format!("recipient is not an address: {e}"))?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(parts.subject.trim())
            .header(AutoSubmitted)
            .message_id(Some(format!(
                "<{}.{}@{}>",
                input.job_id,
                input.purpose.as_str(),
                self.message_id_domain
            )))
            .multipart(
                MultiPart::alternative()
                    .singlepart(part(ContentType::TEXT_PLAIN, parts.text))
                    .singlepart(part(ContentType::TEXT_HTML, parts.html)),
            )
            .map_err(|e| format!("cannot build the mail: {e}"))
    }

    fn render_parts(&self, input: &MailInput<'_>) -> Result<Parts, String> {
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
            code: input.code,
            link: &link,
            address: input.recipient,
            user_id,
            org_id,
            expires_at: common::time::rfc3339_ms(input.code_expires_at),
        };
        let name = |part: &str| format!("{}.{part}.hbs", input.purpose.as_str());
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
        let parts = renderer.render_parts(&input("AB12CD")).unwrap();
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
        let parts = renderer.render_parts(&input("ZZ99")).unwrap();
        assert_eq!(parts.subject, "Code ZZ99");
        std::fs::write(dir.join("otp_email.txt.hbs"), "{{nope}}").unwrap();
        let err = MailRenderer::new("no-reply@example.com", Some(&dir))
            .err()
            .unwrap();
        assert!(err.contains("otp_email.txt.hbs"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
