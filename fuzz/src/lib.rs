//! Invariants shared by the fuzz targets: what an accepted email address (SPEC 3.1) and an
//! accepted URL template (SPEC 5) must look like. Each check panics, so libFuzzer records
//! the input as a crash.

use common::domain::{EmailAddress, LinkValues, UrlTemplate};
use common::error::{Code, Rejection, ids};

/// Longest address and template, in characters (SPEC 3.1, 5).
pub const MAX_LEN: usize = 200;

/// Splits a fuzzer input into at most `n` fields at `0xFF` bytes (never part of UTF-8, so a
/// separator cannot be confused with text). Missing fields are empty.
pub fn fields(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.splitn(n, |&b| b == 0xFF).collect();
    out.resize(n, &[]);
    out
}

/// SPEC 3.1, written independently of `common::domain::email_address`: after trimming spaces
/// and tabs, a non-empty string of at most 200 characters without control characters, of
/// the form `local@domain` with a dot-atom local part and a domain of labels of letters,
/// digits and inner hyphens (at most 63 per label, RFC 1035).
pub fn spec_accepts_email(raw: &str) -> bool {
    let t = raw.trim_matches([' ', '\t']);
    if t.is_empty() || t.chars().count() > MAX_LEN || t.chars().any(char::is_control) {
        return false;
    }
    let bytes = t.as_bytes();
    let Some(at) = bytes.iter().position(|&b| b == b'@') else {
        return false;
    };
    let (local, domain) = (&bytes[..at], &bytes[at + 1..]);
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b);
    let local_ok = local
        .split(|&b| b == b'.')
        .all(|atom| !atom.is_empty() && atom.iter().all(|&b| atext(b)));
    let domain_ok = domain.split(|&b| b == b'.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-')
            && label[0] != b'-'
            && label[label.len() - 1] != b'-'
    });
    local_ok && domain_ok
}

/// What an accepted address must be (SPEC 3.1).
pub fn check_accepted_email(raw: &str, field: &str, addr: &EmailAddress) {
    let s = addr.as_str();
    assert_eq!(
        s,
        raw.trim_matches([' ', '\t']),
        "stored as given after trimming spaces and tabs"
    );
    assert!(!s.is_empty(), "empty address accepted");
    assert!(s.chars().count() <= MAX_LEN, "over 200 characters: {s:?}");
    assert!(
        !s.chars().any(|c| c.is_control() || c.is_whitespace()),
        "control character or white space accepted: {s:?}"
    );
    assert!(s.is_ascii(), "non-ASCII accepted: {s:?}");
    assert_eq!(s.matches('@').count(), 1, "not exactly one '@': {s:?}");
    assert!(
        !s.contains(['<', '>', '"', '(', ')', ',', ';', ':', '[', ']', '\\']),
        "display name, quoted string, comment or IP literal accepted: {s:?}"
    );
    let (local, domain) = s.split_once('@').unwrap();
    assert!(
        !local.is_empty() && !local.starts_with('.') && !local.ends_with('.'),
        "bad local part: {s:?}"
    );
    assert!(!local.contains(".."), "empty atom in local part: {s:?}");
    assert!(
        domain
            .split('.')
            .all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-')),
        "bad domain label: {s:?}"
    );
    assert!(
        domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'),
        "bad domain character: {s:?}"
    );
    let again = EmailAddress::parse(s, field).expect("an accepted address parses again");
    assert_eq!(&again, addr, "parsing is not idempotent");
}

/// What a refused address's error must be: code 3 (HTTP 400), an email id, the field named.
pub fn check_rejected_email(field: &str, r: &Rejection) {
    assert_eq!(r.code, Code::InvalidArgument);
    assert!(
        r.id == ids::EMAIL_EMPTY || r.id == ids::EMAIL_INVALID,
        "unexpected id {}",
        r.id
    );
    assert!(r.message.contains(field), "message does not name the field");
}

/// Parses an address, checks the outcome against SPEC 3.1 both ways.
pub fn check_email(raw: &str, field: &str) -> Option<EmailAddress> {
    let parsed = EmailAddress::parse(raw, field);
    assert_eq!(
        parsed.is_ok(),
        spec_accepts_email(raw),
        "parse and SPEC 3.1 disagree on {raw:?}: {parsed:?}"
    );
    match parsed {
        Ok(addr) => {
            check_accepted_email(raw, field, &addr);
            Some(addr)
        }
        Err(r) => {
            check_rejected_email(field, &r);
            None
        }
    }
}

/// Values as the service makes them: snowflake ids (1 to 19 digits) and codes of the default
/// alphabets (`A-Z0-9`, 6 long; `0-9`, 8 long). Derived from fuzzer bytes.
pub fn realistic_values(user: &[u8], code: &[u8], org: &[u8]) -> (String, String, String) {
    let digits = |b: &[u8], max: usize| -> String {
        let s: String = b
            .iter()
            .take(max)
            .map(|&x| char::from(b'0' + x % 10))
            .collect();
        if s.is_empty() { "1".into() } else { s }
    };
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    // First byte picks the kind of code: contact email or OTP Email.
    let code = match code.split_first() {
        Some((kind, rest)) if kind % 2 == 1 => {
            let mut c = digits(rest, 8);
            while c.len() < 8 {
                c.push('0');
            }
            c
        }
        other => {
            let rest = other.map_or(&[][..], |(_, r)| r);
            let mut c: String = rest
                .iter()
                .take(6)
                .map(|&x| char::from(ALNUM[usize::from(x) % ALNUM.len()]))
                .collect();
            while c.len() < 6 {
                c.push('A');
            }
            c
        }
    };
    (digits(user, 19), code, digits(org, 19))
}

/// The authority of a URL string (between `//` and the first `/`, `?` or `#`), if any.
fn authority(s: &str) -> Option<&str> {
    let after = &s[s.find("//")? + 2..];
    Some(after.split(['/', '?', '#']).next().unwrap_or(""))
}

/// What a link rendered from an accepted template must be (SPEC 5): exactly one absolute
/// http(s) URL, no white space, control characters or backslashes, no user info.
/// `must_parse`: the values are realistic, so the link must be a valid URL too.
pub fn check_rendered_link(template: &str, link: &str, must_parse: bool) {
    assert!(
        !link
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\\'),
        "{template:?} rendered white space, a control character or a backslash: {link:?}"
    );
    let lower = link.to_ascii_lowercase();
    assert!(
        lower.starts_with("http://") || lower.starts_with("https://"),
        "{template:?} rendered a link that does not start with http(s)://: {link:?}"
    );
    let authority = authority(link).unwrap_or("");
    assert!(
        !authority.contains('@'),
        "{template:?} rendered a link with user info: {link:?}"
    );
    // `https:///host` is a URL without a host to RFC 3986 and one with `host` to WHATWG
    // parsers: the link would not be one URL for every reader.
    assert!(
        !authority.is_empty(),
        "{template:?} rendered a link with an empty authority: {link:?}"
    );
    match url::Url::parse(link) {
        Ok(u) => {
            assert!(
                matches!(u.scheme(), "http" | "https") && u.has_host(),
                "{template:?} rendered a link that is not absolute http(s): {link:?}"
            );
            assert!(
                u.username().is_empty() && u.password().is_none(),
                "{template:?} rendered a link with user info: {link:?}"
            );
        }
        Err(e) => assert!(
            !must_parse,
            "{template:?} rendered with service values is not a URL ({e}): {link:?}"
        ),
    }
}

/// Parses a template and, when accepted, renders it with `arbitrary` values (never panics,
/// link properties that values cannot break) and with realistic ones (a valid URL).
pub fn check_template(
    raw: &str,
    field: &str,
    arbitrary: LinkValues<'_>,
    realistic: LinkValues<'_>,
) {
    let parsed = UrlTemplate::parse(raw, field);
    let too_long = raw.chars().count() > MAX_LEN;
    match parsed {
        Err(r) => {
            assert_eq!(r.code, Code::InvalidArgument);
            assert!(
                [
                    ids::TEMPLATE_SYNTAX,
                    ids::TEMPLATE_INVALID,
                    ids::TEMPLATE_TOO_LONG
                ]
                .contains(&r.id),
                "unexpected id {}",
                r.id
            );
            assert_eq!(r.id == ids::TEMPLATE_TOO_LONG, too_long, "length check");
            assert!(r.message.contains(field), "message does not name the field");
        }
        Ok(t) => {
            assert!(!too_long, "template over 200 characters accepted");
            for (values, must_parse) in [(arbitrary, false), (realistic, true)] {
                let link = t
                    .render(values)
                    .unwrap_or_else(|e| panic!("accepted template {raw:?} fails to render: {e}"));
                check_rendered_link(raw, &link, must_parse);
            }
            // What is stored (and read back with `UrlTemplate::trusted`) passes the check too.
            let again = UrlTemplate::parse(t.as_str(), field)
                .unwrap_or_else(|e| panic!("stored form of {raw:?} is refused: {e}"));
            assert_eq!(again, t, "parsing the stored form changes it");
        }
    }
}
