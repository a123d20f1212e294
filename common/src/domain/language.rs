//! BCP 47 language tags (RFC 5646), read in any case and kept in canonical case: the
//! `preferredLanguage` of a user (SPEC 9) is checked with this at the API, and the worker
//! picks the mail's templates by it.

use std::fmt;

/// A well-formed BCP 47 language tag (RFC 5646 `langtag`), kept in canonical case: language
/// and extended language in lower case, script in title case, region in upper case,
/// variants, extensions and private use in lower case. Whole private-use tags (`x-...`) and
/// the grandfathered tags are not languages a mail can be written in and are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanguageTag {
    language: String,
    extlang: Vec<String>,
    script: Option<String>,
    region: Option<String>,
    /// Variants, extensions and private use, as they came (lower case).
    rest: Vec<String>,
}

/// Why a string is not a language tag we accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidTag(String);

impl fmt::Display for InvalidTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a BCP 47 language tag", self.0)
    }
}

impl std::error::Error for InvalidTag {}

fn alpha(s: &str, len: std::ops::RangeInclusive<usize>) -> bool {
    len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphabetic())
}

fn alphanum(s: &str, len: std::ops::RangeInclusive<usize>) -> bool {
    len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn is_variant(s: &str) -> bool {
    alphanum(s, 5..=8) || (s.len() == 4 && s.as_bytes()[0].is_ascii_digit() && alphanum(s, 4..=4))
}

impl LanguageTag {
    /// Reads a tag, whatever its case. `_` is taken for `-` (`pt_BR`, as POSIX and Java
    /// locales write it).
    pub fn parse(raw: &str) -> Result<Self, InvalidTag> {
        let invalid = || InvalidTag(raw.to_owned());
        if raw.is_empty() || raw.len() > 128 || !raw.is_ascii() {
            return Err(invalid());
        }
        let lower = raw.to_ascii_lowercase().replace('_', "-");
        let subtags: Vec<&str> = lower.split('-').collect();
        let mut i = 0;
        let language = subtags[i];
        if !alpha(language, 2..=3) && !alpha(language, 4..=8) {
            return Err(invalid());
        }
        i += 1;
        let mut extlang = Vec::new();
        if language.len() <= 3 {
            while extlang.len() < 3 && i < subtags.len() && alpha(subtags[i], 3..=3) {
                extlang.push(subtags[i].to_owned());
                i += 1;
            }
        }
        let mut script = None;
        if i < subtags.len() && alpha(subtags[i], 4..=4) {
            let s = subtags[i];
            script = Some(s[..1].to_ascii_uppercase() + &s[1..]);
            i += 1;
        }
        let mut region = None;
        if i < subtags.len()
            && (alpha(subtags[i], 2..=2)
                || (subtags[i].len() == 3 && subtags[i].bytes().all(|b| b.is_ascii_digit())))
        {
            region = Some(subtags[i].to_ascii_uppercase());
            i += 1;
        }
        let mut rest = Vec::new();
        let mut variants = Vec::new();
        while i < subtags.len() && is_variant(subtags[i]) {
            if variants.contains(&subtags[i]) {
                return Err(invalid());
            }
            variants.push(subtags[i]);
            rest.push(subtags[i].to_owned());
            i += 1;
        }
        let mut singletons = Vec::new();
        while i < subtags.len() {
            let singleton = subtags[i];
            if singleton.len() != 1
                || !alphanum(singleton, 1..=1)
                || singletons.contains(&singleton)
            {
                return Err(invalid());
            }
            singletons.push(singleton);
            rest.push(singleton.to_owned());
            i += 1;
            let private = singleton == "x";
            let start = i;
            while i < subtags.len()
                && if private {
                    alphanum(subtags[i], 1..=8)
                } else {
                    alphanum(subtags[i], 2..=8)
                }
            {
                rest.push(subtags[i].to_owned());
                i += 1;
            }
            if i == start {
                return Err(invalid());
            }
            if private && i < subtags.len() {
                return Err(invalid());
            }
        }
        Ok(LanguageTag {
            language: language.to_owned(),
            extlang,
            script,
            region,
            rest,
        })
    }

    /// The tag templates are looked up by: language, script and region only (variants and
    /// extensions do not change the wording), Chinese folded into `zh` (Simplified) and
    /// `zh-TW` (Traditional).
    pub fn key(&self) -> String {
        if self.language == "zh" {
            let traditional = match self.script.as_deref() {
                Some("Hant") => true,
                Some(_) => false,
                None => matches!(self.region.as_deref(), Some("TW" | "HK" | "MO")),
            };
            return if traditional { "zh-TW" } else { "zh" }.to_owned();
        }
        let mut key = self.language.clone();
        for part in self.script.iter().chain(&self.region) {
            key.push('-');
            key.push_str(part);
        }
        key
    }
}

impl fmt::Display for LanguageTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.language)?;
        let parts = self.extlang.iter().chain(&self.script).chain(&self.region);
        for part in parts.chain(&self.rest) {
            write!(f, "-{part}")?;
        }
        Ok(())
    }
}
