//! Reading the mails the service sends: MIME parsing (with mail-parser) of a [`ReceivedMail`]
//! or of an `.eml` file, plus helpers to pull the verification link and its parameters out.
//!
//! The accessors on [`ReceivedMail`] panic with a clear message when a part every mail of the
//! service must have is missing, which keeps tests short; use [`ReceivedMail::parsed`] to check
//! for absence explicitly.

use mail_parser::{Address, MessageParser, MimeHeaders, PartType};

use crate::smtp_sink::ReceivedMail;

/// The parts of a mail that tests look at, decoded and owned.
#[derive(Debug, Clone, Default)]
pub struct ParsedMail {
    pub subject: Option<String>,
    /// The first `text/plain` part (decoded), if any.
    pub text: Option<String>,
    /// The first `text/html` part (decoded), if any. Never synthesised from the text part.
    pub html: Option<String>,
    /// `Message-ID` without the angle brackets.
    pub message_id: Option<String>,
    /// Addresses of the `From` header.
    pub from: Vec<String>,
    /// Display name of the first `From` address.
    pub from_name: Option<String>,
    /// Addresses of the `To` header.
    pub to: Vec<String>,
    /// Every top-level header as (name, raw value trimmed), in order.
    pub headers: Vec<(String, String)>,
}

fn addresses(address: Option<&Address<'_>>) -> Vec<String> {
    address
        .map(|a| {
            a.iter()
                .filter_map(|addr| addr.address().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl ParsedMail {
    /// Parses raw RFC 5322 bytes. Panics if mail-parser cannot make anything of them.
    pub fn parse(raw: &[u8]) -> ParsedMail {
        let message = MessageParser::default().parse(raw).unwrap_or_else(|| {
            panic!(
                "mail-parser could not parse the mail:\n{}",
                String::from_utf8_lossy(raw)
            )
        });
        let mut text = None;
        let mut html = None;
        for part in &message.parts {
            if part.attachment_name().is_some() {
                continue;
            }
            match &part.body {
                PartType::Html(body) if html.is_none() => html = Some(body.to_string()),
                PartType::Text(body) if text.is_none() => {
                    // `Text` covers every text/* type; only text/plain (or no type) counts.
                    let plain = part
                        .content_type()
                        .is_none_or(|ct| ct.subtype().is_none_or(|s| s == "plain"));
                    if plain {
                        text = Some(body.to_string());
                    }
                }
                _ => {}
            }
        }
        ParsedMail {
            subject: message.subject().map(str::to_string),
            text,
            html,
            message_id: message.message_id().map(str::to_string),
            from: addresses(message.from()),
            from_name: message
                .from()
                .and_then(|a| a.first())
                .and_then(|a| a.name())
                .map(str::to_string),
            to: addresses(message.to()),
            headers: message
                .headers_raw()
                .map(|(name, value)| (name.to_string(), value.trim().to_string()))
                .collect(),
        }
    }

    /// The first header of that name (case-insensitive), raw value trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Reads and parses an `.eml` file (file mode, `MAIL_DIR`).
    pub fn from_file(path: &std::path::Path) -> ParsedMail {
        let raw = std::fs::read(path)
            .unwrap_or_else(|e| panic!("cannot read mail file {}: {e}", path.display()));
        ParsedMail::parse(&raw)
    }
}

impl ReceivedMail {
    /// The parsed view of the mail (parsed once, then cached).
    pub fn parsed(&self) -> &ParsedMail {
        self.parsed.get_or_init(|| ParsedMail::parse(&self.raw))
    }

    /// The raw message as (lossy) UTF-8 text, for assertions on the wire format.
    pub fn raw_text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }

    /// The decoded subject. Panics if there is none.
    pub fn subject(&self) -> &str {
        self.parsed()
            .subject
            .as_deref()
            .unwrap_or_else(|| panic!("mail has no Subject:\n{}", self.raw_text()))
    }

    /// The decoded text/plain part. Panics if there is none.
    pub fn text_body(&self) -> &str {
        self.parsed()
            .text
            .as_deref()
            .unwrap_or_else(|| panic!("mail has no text/plain part:\n{}", self.raw_text()))
    }

    /// The decoded text/html part. Panics if there is none.
    pub fn html_body(&self) -> &str {
        self.parsed()
            .html
            .as_deref()
            .unwrap_or_else(|| panic!("mail has no text/html part:\n{}", self.raw_text()))
    }

    /// `Message-ID` without angle brackets. Panics if there is none.
    pub fn message_id(&self) -> &str {
        self.parsed()
            .message_id
            .as_deref()
            .unwrap_or_else(|| panic!("mail has no Message-ID:\n{}", self.raw_text()))
    }

    /// Addresses of the `To` header.
    pub fn to(&self) -> &[String] {
        &self.parsed().to
    }

    /// The first address of the `From` header. Panics if there is none.
    pub fn from(&self) -> &str {
        self.parsed()
            .from
            .first()
            .map(String::as_str)
            .unwrap_or_else(|| panic!("mail has no From address:\n{}", self.raw_text()))
    }

    /// Every top-level header as (name, raw value trimmed).
    pub fn headers(&self) -> &[(String, String)] {
        &self.parsed().headers
    }

    /// The first header of that name (case-insensitive), raw value trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.parsed().header(name)
    }

    /// The first `http://` or `https://` URL in the text part.
    pub fn extract_link(&self) -> Option<String> {
        self.parsed().text.as_deref().and_then(first_url)
    }

    /// The first `href` of the HTML part that is an http(s) URL, with `&amp;` turned back into
    /// `&` (what a browser would follow). Other entities are left alone on purpose, so a value
    /// that was wrongly HTML-escaped (such as `&#x3D;`) shows up in assertions.
    pub fn extract_html_link(&self) -> Option<String> {
        self.parsed().html.as_deref().and_then(first_href)
    }

    /// Query parameter `name` of [`ReceivedMail::extract_link`]'s URL, percent-decoded.
    pub fn link_param(&self, name: &str) -> Option<String> {
        query_param(&self.extract_link()?, name)
    }

    /// Every word of the text part that is exactly `len` characters of `alphabet`, in order.
    /// The service shows the code on its own; use this to check that it does.
    pub fn standalone_codes(&self, len: usize, alphabet: &str) -> Vec<String> {
        self.parsed()
            .text
            .as_deref()
            .map(|t| words_of(t, len, alphabet))
            .unwrap_or_default()
    }
}

/// Characters that end a URL found in free text.
fn ends_url(c: char) -> bool {
    c.is_whitespace() || matches!(c, '<' | '>' | '"' | '\'' | '`')
}

/// The first http(s) URL in `text`, without trailing sentence punctuation.
pub fn first_url(text: &str) -> Option<String> {
    let start = [text.find("http://"), text.find("https://")]
        .into_iter()
        .flatten()
        .min()?;
    let rest = &text[start..];
    let end = rest.find(ends_url).unwrap_or(rest.len());
    let url = rest[..end].trim_end_matches(['.', ',', ';', ':', '!', '?', ')', ']']);
    Some(url.to_string())
}

/// The first `href="http..."` (or single-quoted) value in `html`, `&amp;` decoded.
pub fn first_href(html: &str) -> Option<String> {
    let mut rest = html;
    while let Some(i) = rest.find("href=") {
        rest = &rest[i + "href=".len()..];
        let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            continue;
        };
        let value = &rest[1..];
        let end = value.find(quote)?;
        let value = &value[..end];
        if value.starts_with("http://") || value.starts_with("https://") {
            return Some(value.replace("&amp;", "&"));
        }
    }
    None
}

/// Query parameter `name` of `url`, percent-decoded; `None` if absent or `url` is invalid.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn words_of(text: &str, len: usize, alphabet: &str) -> Vec<String> {
    // Whitespace-separated words with surrounding punctuation trimmed, so a code inside a URL
    // (`code=ABC123`) does not count as shown on its own.
    text.split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()))
        .filter(|w| w.chars().count() == len && w.chars().all(|c| alphabet.contains(c)))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "From: Contact Email <no-reply@test.localhost>\r\n\
To: mini@mouse.com\r\n\
Subject: Verify your email\r\n\
Message-ID: <job-1@test.localhost>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/alternative; boundary=\"b\"\r\n\
\r\n\
--b\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Your code: ABC123\r\n\
Open http://localhost:8080/verify?userID=42&code=ABC123&orgID=7.\r\n\
--b\r\n\
Content-Type: text/html; charset=utf-8\r\n\
\r\n\
<p>Your code: <b>ABC123</b></p><a href=\"http://localhost:8080/verify?userID=42&amp;code=ABC123\">verify</a>\r\n\
--b--\r\n";

    fn sample() -> ReceivedMail {
        ReceivedMail {
            envelope_from: "no-reply@test.localhost".into(),
            recipients: vec!["mini@mouse.com".into()],
            raw: SAMPLE.as_bytes().to_vec(),
            received_at: chrono::Utc::now(),
            parsed: Default::default(),
        }
    }

    #[test]
    fn parses_parts_and_headers() {
        let mail = sample();
        assert_eq!(mail.subject(), "Verify your email");
        assert_eq!(mail.message_id(), "job-1@test.localhost");
        assert_eq!(mail.from(), "no-reply@test.localhost");
        assert_eq!(mail.parsed().from_name.as_deref(), Some("Contact Email"));
        assert_eq!(mail.to(), ["mini@mouse.com".to_string()]);
        assert!(mail.text_body().contains("ABC123"));
        assert!(mail.html_body().contains("<b>ABC123</b>"));
        assert_eq!(mail.header("subject"), Some("Verify your email"));
    }

    #[test]
    fn extracts_links_and_params() {
        let mail = sample();
        assert_eq!(
            mail.extract_link().as_deref(),
            Some("http://localhost:8080/verify?userID=42&code=ABC123&orgID=7")
        );
        assert_eq!(mail.link_param("code").as_deref(), Some("ABC123"));
        assert_eq!(mail.link_param("orgID").as_deref(), Some("7"));
        assert_eq!(mail.link_param("missing"), None);
        assert_eq!(
            mail.extract_html_link().as_deref(),
            Some("http://localhost:8080/verify?userID=42&code=ABC123")
        );
        assert_eq!(
            mail.standalone_codes(6, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"),
            ["ABC123"]
        );
    }

    #[test]
    fn text_only_mail_has_no_html() {
        let raw =
            b"From: a@b.c\r\nTo: d@e.f\r\nSubject: s\r\n\r\nhello https://x.example/a?b=c\r\n";
        let parsed = ParsedMail::parse(raw);
        assert_eq!(parsed.html, None);
        assert_eq!(
            parsed.text.as_deref().and_then(first_url).as_deref(),
            Some("https://x.example/a?b=c")
        );
    }
}
