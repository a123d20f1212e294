//! `UrlTemplate`: a client's link template (SPEC 5), checked once when a request brings it and
//! rendered by the worker with the real values.
//!
//! Only plain variable references are allowed: `{{UserID}}`, `{{Code}}`, `{{OrgID}}` (also
//! `userId`, `code`, `orgId`) and ZITADEL's Go-template spelling `{{.UserID}}`. Values are
//! percent-encoded as URL components, never HTML-escaped.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError, RwLock};

use handlebars::template::{HelperTemplate, Parameter, Template, TemplateElement};
use handlebars::{Handlebars, Path, PathSeg};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;

use crate::error::{Rejection, ids};

/// Longest template accepted, in characters.
pub const MAX_LEN: usize = 200;

const VARIABLES: [&str; 6] = ["UserID", "Code", "OrgID", "userId", "code", "orgId"];

/// Characters left as they are in a URL component (RFC 3986 "unreserved").
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A template that parsed, uses only the allowed variables, and renders to an http(s) URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTemplate(String);

/// The values a link is rendered with.
#[derive(Debug, Clone, Copy)]
pub struct LinkValues<'a> {
    pub user_id: &'a str,
    pub code: &'a str,
    pub org_id: &'a str,
}

impl UrlTemplate {
    /// Checks a template from a request. `Ok(None)` when none was given (`""`).
    pub fn parse_optional(raw: &str, field: &str) -> Result<Option<Self>, Rejection> {
        if raw.is_empty() {
            return Ok(None);
        }
        Self::parse(raw, field).map(Some)
    }

    /// Checks a template: syntax (`DOMAIN-oGh5e`), allowed variables and an absolute http(s)
    /// result with sample values (`DOMAIN-ieYa7`), length (code 3). A template that passed
    /// once is known ([`Cache`]): clients send the same few templates with every request.
    pub fn parse(raw: &str, field: &str) -> Result<Self, Rejection> {
        if let Some(known) = cache().checked(raw) {
            return Ok(known);
        }
        let checked = Self::check(raw, field)?;
        cache().remember(raw, &checked);
        Ok(checked)
    }

    fn check(raw: &str, field: &str) -> Result<Self, Rejection> {
        if raw.chars().count() > MAX_LEN {
            return Err(Rejection::invalid(
                ids::TEMPLATE_TOO_LONG,
                format!("{field} must be at most {MAX_LEN} characters"),
            ));
        }
        let source = from_go_spelling(raw);
        let template = Template::compile(&source).map_err(|e| {
            Rejection::invalid(
                ids::TEMPLATE_SYNTAX,
                format!("{field} is not a valid template: {}", e.reason()),
            )
        })?;
        check_raw_text(&template.elements)
            .and_then(|()| check_elements(&template.elements))
            .map_err(|why| {
                Rejection::invalid(
                    ids::TEMPLATE_INVALID,
                    format!("{field} is not allowed: {why}"),
                )
            })?;
        let parsed = UrlTemplate(source);
        let sample = parsed
            .render(LinkValues {
                user_id: "123456789012345678",
                code: "ABC123",
                org_id: "987654321098765432",
            })
            .map_err(|why| {
                Rejection::invalid(
                    ids::TEMPLATE_INVALID,
                    format!("{field} is not allowed: {why}"),
                )
            })?;
        let invalid = |why: &str| {
            Err(Rejection::invalid(
                ids::TEMPLATE_INVALID,
                format!("{field} {why}"),
            ))
        };
        // `Url::parse` forgives what a mail client might not (`https:ex.com`, stray
        // whitespace): the rendered link must already be the URL in its plain form.
        let lower = sample.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return invalid("must render to an absolute http or https URL (scheme://host...)");
        }
        // User info, even an empty one (`http://@host`), has an `@` in the authority; an
        // empty authority (`https:///host`) is read as different URLs by different parsers.
        let authority = sample.split_once("://").map_or("", |(_, rest)| {
            rest.split(['/', '?', '#']).next().unwrap_or("")
        });
        if authority.is_empty() {
            return invalid("must name a host right after scheme:// (no empty authority)");
        }
        match url::Url::parse(&sample) {
            Ok(u)
                if authority.contains('@')
                    || !u.username().is_empty()
                    || u.password().is_some() =>
            {
                invalid("must not hold user info (user@ before the host)")
            }
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Ok(parsed),
            _ => invalid("must render to an absolute http or https URL"),
        }
    }

    /// A template known to be valid (read back from a mail job or from configuration that was
    /// checked at start).
    pub fn trusted(source: String) -> Self {
        UrlTemplate(source)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Renders the link; every value is percent-encoded as a URL component.
    pub fn render(&self, values: LinkValues<'_>) -> Result<String, String> {
        #[derive(Serialize)]
        struct Data {
            #[serde(rename = "UserID")]
            user_id_go: String,
            #[serde(rename = "Code")]
            code_go: String,
            #[serde(rename = "OrgID")]
            org_id_go: String,
            #[serde(rename = "userId")]
            user_id: String,
            code: String,
            #[serde(rename = "orgId")]
            org_id: String,
        }
        let enc = |s: &str| utf8_percent_encode(s, COMPONENT).to_string();
        let data = Data {
            user_id_go: enc(values.user_id),
            code_go: enc(values.code),
            org_id_go: enc(values.org_id),
            user_id: enc(values.user_id),
            code: enc(values.code),
            org_id: enc(values.org_id),
        };
        cache().render(&self.0, &data)
    }
}

/// Most templates kept: beyond it the caches start again (a client that sends ever new
/// templates costs a compile per request, as without a cache, and no memory).
const CACHE_LIMIT: usize = 256;

/// The templates seen by this process: those that passed [`UrlTemplate::parse`] (by the text
/// as sent), and the compiled form of each source rendered, so that neither a request nor a
/// mail compiles the same template twice.
struct Cache {
    /// Raw text as sent → the checked template.
    checked: Mutex<HashMap<String, UrlTemplate>>,
    /// Compiled templates by source, named by their source. Strict, no escaping (values are
    /// encoded beforehand), no helpers reachable because templates with helpers never get
    /// past [`check_elements`].
    registry: RwLock<Handlebars<'static>>,
}

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_escape_fn(handlebars::no_escape);
        Cache {
            checked: Mutex::new(HashMap::new()),
            registry: RwLock::new(hb),
        }
    })
}

impl Cache {
    fn checked(&self, raw: &str) -> Option<UrlTemplate> {
        let checked = self.checked.lock().unwrap_or_else(PoisonError::into_inner);
        checked.get(raw).cloned()
    }

    fn remember(&self, raw: &str, template: &UrlTemplate) {
        let mut checked = self.checked.lock().unwrap_or_else(PoisonError::into_inner);
        if checked.len() >= CACHE_LIMIT {
            checked.clear();
        }
        checked.insert(raw.to_owned(), template.clone());
    }

    fn render(&self, source: &str, data: &impl Serialize) -> Result<String, String> {
        {
            let hb = self.registry.read().unwrap_or_else(PoisonError::into_inner);
            if hb.has_template(source) {
                return hb.render(source, data).map_err(|e| e.to_string());
            }
        }
        let compiled = Template::compile(source).map_err(|e| e.to_string())?;
        let mut hb = self
            .registry
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if hb.get_templates().len() >= CACHE_LIMIT {
            hb.clear_templates();
        }
        hb.register_template(source, compiled);
        hb.render(source, data).map_err(|e| e.to_string())
    }
}

/// Rewrites ZITADEL's Go-template references `{{.Name}}` / `{{ .Name }}` to `{{Name}}`.
fn from_go_spelling(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(pos) = rest.find("{{") {
        out.push_str(&rest[..pos + 2]);
        rest = &rest[pos + 2..];
        let after_space = rest.trim_start_matches(' ');
        if let Some(name) = after_space.strip_prefix('.')
            && name.starts_with(|c: char| c.is_ascii_alphabetic())
        {
            out.push_str(&rest[..rest.len() - after_space.len()]);
            rest = name;
        }
    }
    out.push_str(rest);
    out
}

/// The text outside `{{ }}` tags is part of one URL: no whitespace, control character or
/// backslash (which URL parsers strip or rewrite, so free text could ride into the mail).
fn check_raw_text(elements: &[TemplateElement]) -> Result<(), String> {
    for element in elements {
        if let TemplateElement::RawString(text) = element
            && let Some(c) = text
                .chars()
                .find(|c| c.is_whitespace() || c.is_control() || *c == '\\')
        {
            return Err(format!(
                "the URL may not contain {} outside {{{{ }}}}",
                match c {
                    '\\' => "a backslash",
                    c if c.is_control() => "a control character",
                    _ => "whitespace",
                }
            ));
        }
    }
    Ok(())
}

fn check_elements(elements: &[TemplateElement]) -> Result<(), String> {
    for element in elements {
        match element {
            TemplateElement::RawString(_) | TemplateElement::Comment(_) => {}
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                check_reference(h)?
            }
            TemplateElement::HelperBlock(_) => return Err("blocks are not allowed".into()),
            TemplateElement::PartialExpression(_) | TemplateElement::PartialBlock(_) => {
                return Err("partials are not allowed".into());
            }
            TemplateElement::DecoratorExpression(_) | TemplateElement::DecoratorBlock(_) => {
                return Err("decorators are not allowed".into());
            }
            _ => return Err("unsupported template element".into()),
        }
    }
    Ok(())
}

fn check_reference(h: &HelperTemplate) -> Result<(), String> {
    if h.block || !h.params.is_empty() || !h.hash.is_empty() || h.template.is_some() {
        return Err("helpers are not allowed".into());
    }
    let name = match &h.name {
        Parameter::Name(n) => n.as_str(),
        Parameter::Path(Path::Relative((segs, raw))) => match segs.as_slice() {
            [PathSeg::Named(n)] if n == raw => n.as_str(),
            _ => return Err(format!("unknown variable {raw}")),
        },
        Parameter::Path(Path::Local((_, _, raw))) => {
            return Err(format!("unknown variable {raw}"));
        }
        _ => return Err("only variables are allowed".into()),
    };
    if VARIABLES.contains(&name) {
        Ok(())
    } else {
        Err(format!(
            "unknown variable {name} (allowed: UserID, Code, OrgID)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUES: LinkValues<'static> = LinkValues {
        user_id: "42",
        code: "A B&C/é",
        org_id: "7",
    };

    fn id_of(raw: &str) -> &'static str {
        UrlTemplate::parse(raw, "urlTemplate").expect_err(raw).id
    }

    #[test]
    fn renders_both_spellings_with_percent_encoded_values() {
        for raw in [
            "https://ex.com/v?u={{UserID}}&c={{Code}}&o={{OrgID}}",
            "https://ex.com/v?u={{.UserID}}&c={{.Code}}&o={{ .OrgID }}",
            "https://ex.com/v?u={{userId}}&c={{code}}&o={{orgId}}",
            "https://ex.com/v?u={{{UserID}}}&c={{{Code}}}&o={{OrgID}}",
        ] {
            let t = UrlTemplate::parse(raw, "urlTemplate").expect(raw);
            assert_eq!(
                t.render(VALUES).unwrap(),
                "https://ex.com/v?u=42&c=A%20B%26C%2F%C3%A9&o=7",
                "{raw}"
            );
        }
    }

    #[test]
    fn syntax_errors_are_domain_ogh5e() {
        assert_eq!(id_of("https://ex.com/{{UserID"), ids::TEMPLATE_SYNTAX);
        assert_eq!(id_of("https://ex.com/{{#if Code}}"), ids::TEMPLATE_SYNTAX);
    }

    #[test]
    fn unknown_variables_helpers_blocks_partials_and_bad_urls_are_domain_iey_a7() {
        for raw in [
            "https://ex.com/{{Nope}}",
            "https://ex.com/{{this}}",
            "https://ex.com/{{../Code}}",
            "https://ex.com/{{@root.Code}}",
            "https://ex.com/{{lookup this \"Code\"}}",
            "https://ex.com/{{log Code}}",
            "https://ex.com/{{#if Code}}x{{/if}}",
            "https://ex.com/{{#each Code}}x{{/each}}",
            "https://ex.com/{{> other}}",
            "https://ex.com/{{Code.len}}",
            "{{Code}}",
            "ftp://ex.com/{{Code}}",
            "javascript:alert({{Code}})",
            "/relative/{{Code}}",
            "https://ex.com/{{Code}}\n\nURGENT: call +1-555",
            "https://ex.com/{{Code}}\tx",
            "https://ex.com/ {{Code}}",
            "https://ex.com/\\evil/{{Code}}",
            "https://ex.com/\u{7f}{{Code}}",
            "https:ex.com/{{Code}}",
            "https:/ex.com/{{Code}}",
            "https://a@evil.example/{{Code}}",
            "https://a:b@evil.example/{{Code}}",
            "https://ex.com@evil.example/{{Code}}",
            "http://@ex.com/{{Code}}",
            "https://:@ex.com/{{Code}}",
            "https:///ex.com/{{Code}}",
            "http://@mo4d{.oe}}",
        ] {
            assert_eq!(id_of(raw), ids::TEMPLATE_INVALID, "{raw}");
        }
    }

    #[test]
    fn spaces_inside_tags_are_fine_and_the_render_is_the_checked_url() {
        let t = UrlTemplate::parse("HTTPS://ex.com/v?c={{ .Code }}&u={{ UserID }}", "t").unwrap();
        assert_eq!(
            t.render(VALUES).unwrap(),
            "HTTPS://ex.com/v?c=A%20B%26C%2F%C3%A9&u=42"
        );
    }

    #[test]
    fn a_template_seen_before_is_known_and_a_refused_one_stays_refused() {
        let raw = "https://cache.example/v?c={{.Code}}&u={{UserID}}";
        let first = UrlTemplate::parse(raw, "urlTemplate").unwrap();
        let again = UrlTemplate::parse(raw, "other").unwrap();
        assert_eq!(first, again);
        assert_eq!(again.render(VALUES).unwrap(), first.render(VALUES).unwrap());
        for _ in 0..2 {
            assert_eq!(
                id_of("https://cache.example/{{Secret}}"),
                ids::TEMPLATE_INVALID
            );
        }
    }

    #[test]
    fn length_is_limited_and_empty_means_not_given() {
        let long = format!("https://ex.com/{}", "a".repeat(MAX_LEN));
        assert_eq!(id_of(&long), ids::TEMPLATE_TOO_LONG);
        assert_eq!(UrlTemplate::parse_optional("", "t").unwrap(), None);
    }

    #[test]
    fn go_spelling_rewrite_leaves_other_braces_alone() {
        assert_eq!(
            from_go_spelling("a{{.X}}b{{ .Y}}c{{../z}}"),
            "a{{X}}b{{ Y}}c{{../z}}"
        );
    }
}
