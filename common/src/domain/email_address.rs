//! `EmailAddress`: an address that passed the rules of SPEC 3.1. Holding one means it is valid.

use std::fmt;

use crate::error::{Rejection, ids};

/// Longest address accepted, in characters.
pub const MAX_LEN: usize = 200;

/// A plain `local@domain` address: dot-atom local part, domain of letter/digit/hyphen labels.
/// Stored as given (case kept), after trimming surrounding spaces and tabs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Parses an address; `field` names it in the error message (e.g. `email.address`).
    pub fn parse(raw: &str, field: &str) -> Result<Self, Rejection> {
        let trimmed = raw.trim_matches(|c| c == ' ' || c == '\t');
        if trimmed.is_empty() {
            return Err(Rejection::invalid(
                ids::EMAIL_EMPTY,
                format!("{field} is empty"),
            ));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(invalid(
                field,
                "must not contain control characters or line breaks",
            ));
        }
        if trimmed.chars().count() > MAX_LEN {
            return Err(invalid(field, "must be at most 200 characters"));
        }
        let Some((local, domain)) = trimmed.rsplit_once('@') else {
            return Err(invalid(field, "must be of the form local@domain"));
        };
        if !is_dot_atom(local) {
            return Err(invalid(field, "has an invalid local part"));
        }
        if !is_domain(domain) {
            return Err(invalid(field, "has an invalid domain"));
        }
        Ok(EmailAddress(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn invalid(field: &str, why: &str) -> Rejection {
    Rejection::invalid(
        ids::EMAIL_INVALID,
        format!("{field} is not a valid email address: {why}"),
    )
}

/// RFC 5322 `atext` (ASCII only: no quoted strings, no comments).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

fn is_dot_atom(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

/// A domain of dot-separated labels (letters, digits, inner hyphens), as SPEC 3.1 asks of
/// an address's domain; also used for instance domains.
pub fn is_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        EmailAddress::parse(s, "address")
            .expect(s)
            .as_str()
            .to_owned()
    }

    fn err(s: &str) -> &'static str {
        EmailAddress::parse(s, "address").expect_err(s).id
    }

    #[test]
    fn accepts_plain_addresses_and_trims_spaces_and_tabs() {
        assert_eq!(ok("mini@mouse.com"), "mini@mouse.com");
        assert_eq!(
            ok(" \tMini.Mouse+tag@Sub.Mouse-Land.com\t "),
            "Mini.Mouse+tag@Sub.Mouse-Land.com"
        );
        assert_eq!(ok("no-reply@localhost"), "no-reply@localhost");
        assert_eq!(
            ok("o'hara!#$%&*/=?^_`{|}~@x.io"),
            "o'hara!#$%&*/=?^_`{|}~@x.io"
        );
    }

    #[test]
    fn rejects_empty_control_characters_and_bad_shapes() {
        assert_eq!(err(""), ids::EMAIL_EMPTY);
        assert_eq!(err(" \t "), ids::EMAIL_EMPTY);
        for bad in [
            "a@b.com\r\nBcc: x@y.z",
            "a@b.com\n",
            "a\u{7}@b.com",
            "a\tb@c.com",
            "Mini <mini@mouse.com>",
            "\"quoted\"@mouse.com",
            "mouse.com",
            "a@@b.com",
            ".a@b.com",
            "a.@b.com",
            "a..b@c.com",
            "a@-b.com",
            "a@b-.com",
            "a@b..com",
            "a@[127.0.0.1]",
            "a@b_c.com",
            "a b@c.com",
            "münchen@example.com",
        ] {
            assert_eq!(err(bad), ids::EMAIL_INVALID, "{bad:?}");
        }
    }

    #[test]
    fn enforces_the_length_limit_in_characters() {
        let at_limit = format!("{}@b.co", "a".repeat(MAX_LEN - 5));
        assert_eq!(ok(&at_limit).chars().count(), MAX_LEN);
        let over = format!("{}@b.co", "a".repeat(MAX_LEN - 4));
        assert_eq!(err(&over), ids::EMAIL_INVALID);
    }
}
