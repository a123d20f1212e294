//! The languages mails are written in (SPEC 9): BCP 47 tags (RFC 5646) read and put in
//! canonical case, the fallback chain from the reader's language to English, and dates as a
//! reader of each language writes them.
//!
//! A mail is rendered in the reader's (the user's) preferred language, else the instance's
//! default language, else English. Each of them is looked up from the most specific form to
//! the language alone (RFC 4647 "lookup"): `pt-BR` → `pt` → the instance default (the same
//! way) → `en`. Chinese is first folded into its two written forms: Simplified `zh`
//! (`zh-Hans`, `zh-CN`, `zh-SG`, ...) and Traditional `zh-TW` (`zh-Hant`, `zh-HK`, `zh-MO`,
//! ...), as those, not the regions, are what a reader needs.

use std::fmt;

use chrono::{DateTime, Datelike, Timelike, Utc};

/// The language of last resort, always available.
pub const FALLBACK: &str = "en";

/// The languages with built-in templates, as language keys (see [`language_key`]).
pub const BUILT_IN: [&str; 12] = [
    "en", "de", "fr", "es", "it", "pt", "pt-BR", "nl", "pl", "ja", "zh", "zh-TW",
];

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

/// The canonical form of a tag (`pt-br` → `pt-BR`, `zh-hant-tw` → `zh-Hant-TW`), or `None`
/// when it is not one.
pub fn normalize(tag: &str) -> Option<String> {
    LanguageTag::parse(tag).ok().map(|t| t.to_string())
}

/// The key templates are looked up by (`pt-br` → `pt-BR`, `zh-Hans-CN` → `zh`, `zh-HK` →
/// `zh-TW`, `de-CH-1996` → `de-CH`), or `None` when `tag` is not a language tag.
pub fn language_key(tag: &str) -> Option<String> {
    LanguageTag::parse(tag).ok().map(|t| t.key())
}

/// A key and the shorter keys it falls back to, most specific first: `sr-Latn-RS` →
/// `sr-Latn`, `sr`; `zh-TW` → `zh`.
pub fn truncations(key: &str) -> Vec<String> {
    let mut out = vec![key.to_owned()];
    let mut rest = key;
    while let Some((shorter, _)) = rest.rsplit_once('-') {
        out.push(shorter.to_owned());
        rest = shorter;
    }
    out
}

/// The languages to try for a mail, in order: the reader's, the instance default's, English
/// (each language key once). Tags that are not well formed are skipped: a mail is still
/// sent, in the next language of the chain.
pub fn fallback_chain(preferred: Option<&str>, instance_default: Option<&str>) -> Vec<String> {
    let mut chain: Vec<String> = Vec::new();
    let keys = [preferred, instance_default]
        .into_iter()
        .flatten()
        .filter_map(language_key)
        .flat_map(|k| truncations(&k))
        .chain([FALLBACK.to_owned()]);
    for key in keys {
        if !chain.contains(&key) {
            chain.push(key);
        }
    }
    chain
}

const MONTHS_EN: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const MONTHS_DE: [&str; 12] = [
    "Januar",
    "Februar",
    "März",
    "April",
    "Mai",
    "Juni",
    "Juli",
    "August",
    "September",
    "Oktober",
    "November",
    "Dezember",
];
const MONTHS_FR: [&str; 12] = [
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
];
const MONTHS_ES: [&str; 12] = [
    "enero",
    "febrero",
    "marzo",
    "abril",
    "mayo",
    "junio",
    "julio",
    "agosto",
    "septiembre",
    "octubre",
    "noviembre",
    "diciembre",
];
const MONTHS_IT: [&str; 12] = [
    "gennaio",
    "febbraio",
    "marzo",
    "aprile",
    "maggio",
    "giugno",
    "luglio",
    "agosto",
    "settembre",
    "ottobre",
    "novembre",
    "dicembre",
];
const MONTHS_PT: [&str; 12] = [
    "janeiro",
    "fevereiro",
    "março",
    "abril",
    "maio",
    "junho",
    "julho",
    "agosto",
    "setembro",
    "outubro",
    "novembro",
    "dezembro",
];
const MONTHS_NL: [&str; 12] = [
    "januari",
    "februari",
    "maart",
    "april",
    "mei",
    "juni",
    "juli",
    "augustus",
    "september",
    "oktober",
    "november",
    "december",
];
/// Polish dates name the month in the genitive ("1 grudnia", "of December").
const MONTHS_PL: [&str; 12] = [
    "stycznia",
    "lutego",
    "marca",
    "kwietnia",
    "maja",
    "czerwca",
    "lipca",
    "sierpnia",
    "września",
    "października",
    "listopada",
    "grudnia",
];

/// When a code expires, as a reader of `lang` (a tag or language key) writes a date and
/// time: "1 December 2026, 18:30 UTC", "1. Dezember 2026, 18:30 UTC", "1er décembre 2026 à
/// 18:30 UTC", "2026年12月1日 18:30 UTC", ... Always in UTC, and named so (the reader's time
/// zone is not known); 24-hour clock. The minutes are cut, not rounded: the code is still
/// valid at the time shown. A language without a format of its own (one that only
/// MAIL_TEMPLATES_DIR adds) gets ISO 8601's "2026-12-01 18:30 UTC".
pub fn format_expiry(lang: &str, at: DateTime<Utc>) -> String {
    let (day, year) = (at.day(), at.year());
    let month = at.month0() as usize;
    let time = format!("{:02}:{:02} UTC", at.hour(), at.minute());
    let key = language_key(lang).unwrap_or_default();
    let primary = key.split('-').next().unwrap_or_default();
    match primary {
        "en" => format!("{day} {} {year}, {time}", MONTHS_EN[month]),
        "de" => format!("{day}. {} {year}, {time}", MONTHS_DE[month]),
        // French writes the first of the month as an ordinal: "le 1er décembre".
        "fr" if day == 1 => format!("1er {} {year} à {time}", MONTHS_FR[month]),
        "fr" => format!("{day} {} {year} à {time}", MONTHS_FR[month]),
        "es" => format!("{day} de {} de {year}, {time}", MONTHS_ES[month]),
        "it" => format!("{day} {} {year}, {time}", MONTHS_IT[month]),
        // Brazilian usage writes the first of the month as an ordinal ("1º de dezembro");
        // Portugal does not.
        "pt" if key == "pt-BR" && day == 1 => {
            format!("1º de {} de {year}, {time}", MONTHS_PT[month])
        }
        "pt" => format!("{day} de {} de {year}, {time}", MONTHS_PT[month]),
        "nl" => format!("{day} {} {year} om {time}", MONTHS_NL[month]),
        "pl" => format!("{day} {} {year}, {time}", MONTHS_PL[month]),
        "ja" | "zh" => format!("{year}年{}月{day}日 {time}", month + 1),
        _ => format!("{year}-{:02}-{day:02} {time}", month + 1),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn tags_are_read_in_any_case_and_written_canonically() {
        for (raw, canonical) in [
            ("pt-br", "pt-BR"),
            ("PT_br", "pt-BR"),
            ("de", "de"),
            ("EN-gb", "en-GB"),
            ("zh-hant-tw", "zh-Hant-TW"),
            ("zh-Hans-CN", "zh-Hans-CN"),
            ("es-419", "es-419"),
            ("sr-latn-rs", "sr-Latn-RS"),
            ("de-CH-1996", "de-CH-1996"),
            ("zh-cmn-Hans-CN", "zh-cmn-Hans-CN"),
            ("en-US-u-ca-gregory", "en-US-u-ca-gregory"),
            ("de-DE-x-Private", "de-DE-x-private"),
        ] {
            assert_eq!(normalize(raw).as_deref(), Some(canonical), "{raw}");
        }
        for bad in [
            "",
            "e",
            "english!",
            "de-",
            "-de",
            "de--DE",
            "x-private",
            "i-klingon",
            "de-DE-u",
            "de-a-bc-a-de",
            "de-1996-1996",
            "toolonglanguage",
            "de-ÄT",
            "de DE",
        ] {
            assert_eq!(normalize(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn keys_keep_language_script_region_and_fold_chinese() {
        for (tag, key) in [
            ("pt-br", "pt-BR"),
            ("de-CH-1996", "de-CH"),
            ("en-US-u-ca-gregory", "en-US"),
            ("zh", "zh"),
            ("zh-CN", "zh"),
            ("zh-SG", "zh"),
            ("zh-Hans", "zh"),
            ("zh-Hans-CN", "zh"),
            ("zh-Hans-HK", "zh"),
            ("zh-TW", "zh-TW"),
            ("zh-HK", "zh-TW"),
            ("zh-MO", "zh-TW"),
            ("zh-Hant", "zh-TW"),
            ("zh-hant-cn", "zh-TW"),
        ] {
            assert_eq!(language_key(tag).as_deref(), Some(key), "{tag}");
        }
        assert_eq!(truncations("sr-Latn-RS"), ["sr-Latn-RS", "sr-Latn", "sr"]);
        assert_eq!(truncations("zh-TW"), ["zh-TW", "zh"]);
        assert_eq!(truncations("en"), ["en"]);
    }

    #[test]
    fn the_chain_goes_reader_then_instance_default_then_english() {
        let chain = |p, d| fallback_chain(p, d);
        assert_eq!(chain(Some("pt-BR"), None), ["pt-BR", "pt", "en"]);
        assert_eq!(
            chain(Some("pt-br"), Some("de")),
            ["pt-BR", "pt", "de", "en"]
        );
        assert_eq!(
            chain(Some("de-AT"), Some("fr-CA")),
            ["de-AT", "de", "fr-CA", "fr", "en"]
        );
        assert_eq!(chain(None, Some("nl")), ["nl", "en"]);
        assert_eq!(chain(None, None), ["en"]);
        assert_eq!(chain(Some("en-GB"), Some("en")), ["en-GB", "en"]);
        assert_eq!(chain(Some("zh-Hant-HK"), None), ["zh-TW", "zh", "en"]);
        // Not a tag: as if unset.
        assert_eq!(chain(Some("klingon!"), Some("de")), ["de", "en"]);
        assert_eq!(chain(Some("de"), Some("")), ["de", "en"]);
    }

    #[test]
    fn expiry_dates_read_as_each_language_writes_them() {
        let first = Utc.with_ymd_and_hms(2026, 12, 1, 18, 30, 59).unwrap();
        let later = Utc.with_ymd_and_hms(2027, 3, 9, 7, 5, 0).unwrap();
        for (lang, first_of_december, ninth_of_march) in [
            (
                "en",
                "1 December 2026, 18:30 UTC",
                "9 March 2027, 07:05 UTC",
            ),
            (
                "en-US",
                "1 December 2026, 18:30 UTC",
                "9 March 2027, 07:05 UTC",
            ),
            (
                "de",
                "1. Dezember 2026, 18:30 UTC",
                "9. März 2027, 07:05 UTC",
            ),
            (
                "fr",
                "1er décembre 2026 à 18:30 UTC",
                "9 mars 2027 à 07:05 UTC",
            ),
            (
                "es",
                "1 de diciembre de 2026, 18:30 UTC",
                "9 de marzo de 2027, 07:05 UTC",
            ),
            (
                "it",
                "1 dicembre 2026, 18:30 UTC",
                "9 marzo 2027, 07:05 UTC",
            ),
            (
                "pt",
                "1 de dezembro de 2026, 18:30 UTC",
                "9 de março de 2027, 07:05 UTC",
            ),
            (
                "pt-BR",
                "1º de dezembro de 2026, 18:30 UTC",
                "9 de março de 2027, 07:05 UTC",
            ),
            (
                "nl",
                "1 december 2026 om 18:30 UTC",
                "9 maart 2027 om 07:05 UTC",
            ),
            ("pl", "1 grudnia 2026, 18:30 UTC", "9 marca 2027, 07:05 UTC"),
            ("ja", "2026年12月1日 18:30 UTC", "2027年3月9日 07:05 UTC"),
            ("zh", "2026年12月1日 18:30 UTC", "2027年3月9日 07:05 UTC"),
            ("zh-TW", "2026年12月1日 18:30 UTC", "2027年3月9日 07:05 UTC"),
            ("sv", "2026-12-01 18:30 UTC", "2027-03-09 07:05 UTC"),
            ("", "2026-12-01 18:30 UTC", "2027-03-09 07:05 UTC"),
        ] {
            assert_eq!(format_expiry(lang, first), first_of_december, "{lang}");
            assert_eq!(format_expiry(lang, later), ninth_of_march, "{lang}");
        }
    }

    #[test]
    fn every_built_in_language_has_its_own_date_format_and_month_names() {
        for lang in BUILT_IN {
            assert_eq!(language_key(lang).as_deref(), Some(lang), "{lang} is a key");
            let months: Vec<String> = (1..=12)
                .map(|m| format_expiry(lang, Utc.with_ymd_and_hms(2026, m, 15, 0, 0, 0).unwrap()))
                .collect();
            assert!(!months[0].starts_with("2026-"), "{lang}: {}", months[0]);
            for (i, m) in months.iter().enumerate() {
                assert!(!months[..i].contains(m), "{lang}: {m} twice");
            }
        }
    }
}
