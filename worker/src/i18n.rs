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

use chrono::{DateTime, Datelike, Timelike, Utc};

/// The language of last resort, always available.
pub const FALLBACK: &str = "en";

/// The languages with built-in templates, as language keys (see [`language_key`]).
pub const BUILT_IN: [&str; 12] = [
    "en", "de", "fr", "es", "it", "pt", "pt-BR", "nl", "pl", "ja", "zh", "zh-TW",
];

pub use common::domain::language::{InvalidTag, LanguageTag};

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
