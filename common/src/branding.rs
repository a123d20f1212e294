//! Branding of the HTML mails, as ZITADEL's label policy: a primary color (links), a
//! background and a font color, and a logo. An organization's branding falls back field by
//! field to its instance's (part of the instance's mail settings), then to the built-in
//! look.

use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Rejection, ids};
use crate::schema::organization_branding as ob;
use crate::time::now_ms;

/// The longest logo URL accepted.
const LOGO_URL_MAX: usize = 500;

/// Colors and logo of the HTML mails; every field optional. Colors are CSS hex colors
/// (`#1a2b3c` or `#abc`), the logo an `https://` (or `http://`) URL of an image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Branding {
    #[serde(
        default,
        alias = "primary_color",
        skip_serializing_if = "Option::is_none"
    )]
    pub primary_color: Option<String>,
    #[serde(
        default,
        alias = "background_color",
        skip_serializing_if = "Option::is_none"
    )]
    pub background_color: Option<String>,
    #[serde(default, alias = "font_color", skip_serializing_if = "Option::is_none")]
    pub font_color: Option<String>,
    #[serde(default, alias = "logo_url", skip_serializing_if = "Option::is_none")]
    pub logo_url: Option<String>,
}

fn invalid(message: String) -> Rejection {
    Rejection::invalid(ids::BRANDING_INVALID, message)
}

fn color(raw: &Option<String>, field: &str) -> Result<Option<String>, Rejection> {
    let Some(raw) = raw.as_deref().filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let hex = raw.strip_prefix('#').unwrap_or("");
    if matches!(hex.len(), 3 | 6) && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(Some(raw.to_ascii_lowercase()))
    } else {
        Err(invalid(format!(
            "{field} must be a hex color such as #1a73e8 or #abc"
        )))
    }
}

fn logo(raw: &Option<String>, field: &str) -> Result<Option<String>, Rejection> {
    let Some(raw) = raw.as_deref().filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let ok = raw.chars().count() <= LOGO_URL_MAX
        && url::Url::parse(raw).is_ok_and(|u| {
            matches!(u.scheme(), "https" | "http")
                && u.host_str().is_some_and(|h| !h.is_empty())
                && u.username().is_empty()
                && u.password().is_none()
        });
    if ok {
        Ok(Some(raw.to_owned()))
    } else {
        Err(invalid(format!(
            "{field} must be an http(s) URL without user info, at most {LOGO_URL_MAX} characters"
        )))
    }
}

impl Branding {
    /// The branding after checking every field (`""` is unset); `prefix` names the object in
    /// messages (`branding.`).
    pub fn checked(&self, prefix: &str) -> Result<Branding, Rejection> {
        Ok(Branding {
            primary_color: color(&self.primary_color, &format!("{prefix}primaryColor"))?,
            background_color: color(&self.background_color, &format!("{prefix}backgroundColor"))?,
            font_color: color(&self.font_color, &format!("{prefix}fontColor"))?,
            logo_url: logo(&self.logo_url, &format!("{prefix}logoUrl"))?,
        })
    }

    /// This branding, with each unset field taken from `fallback`.
    pub fn falling_back_to(&self, fallback: &Branding) -> Branding {
        let pick = |own: &Option<String>, other: &Option<String>| own.clone().or(other.clone());
        Branding {
            primary_color: pick(&self.primary_color, &fallback.primary_color),
            background_color: pick(&self.background_color, &fallback.background_color),
            font_color: pick(&self.font_color, &fallback.font_color),
            logo_url: pick(&self.logo_url, &fallback.logo_url),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Branding::default()
    }

    /// Read back from a stored JSON value (written by this module, so well formed; anything
    /// else reads as no branding).
    pub fn from_stored(value: Option<serde_json::Value>) -> Branding {
        value
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default()
    }

    /// The stored form: `None` when nothing is set.
    pub fn to_stored(&self) -> Option<serde_json::Value> {
        (!self.is_empty()).then(|| serde_json::to_value(self).expect("branding is JSON"))
    }
}

/// The organization `org_id` of `instance_id`, or 404 (`COMMAND-Ggk9n`) when the instance
/// has none such.
pub fn check_org(conn: &mut PgConnection, instance_id: i64, org_id: i64) -> Result<(), Error> {
    use crate::schema::organizations;
    let found: bool = diesel::select(diesel::dsl::exists(
        organizations::table
            .filter(organizations::id.eq(org_id))
            .filter(organizations::instance_id.eq(instance_id)),
    ))
    .get_result(conn)?;
    if found {
        Ok(())
    } else {
        Err(Rejection::new(
            crate::error::Code::NotFound,
            ids::ORG_NOT_FOUND,
            "Organization could not be found",
        )
        .into())
    }
}

/// An organization's own branding (empty when it has none).
pub fn of_org(conn: &mut PgConnection, org_id: i64) -> Result<Branding, Error> {
    let stored: Option<Option<serde_json::Value>> = ob::table
        .find(org_id)
        .select(ob::branding)
        .first(conn)
        .optional()?;
    Ok(Branding::from_stored(stored.flatten()))
}

/// Replaces an organization's branding (a field left out is unset, falling back to the
/// instance's); bad input changes nothing. The caller checked the organization.
pub fn replace_org(
    conn: &mut PgConnection,
    org_id: i64,
    new: &Branding,
) -> Result<Branding, Error> {
    let checked = new.checked("")?;
    let stored = checked.to_stored();
    let now = now_ms();
    diesel::insert_into(ob::table)
        .values((
            ob::org_id.eq(org_id),
            ob::branding.eq(&stored),
            ob::updated_at.eq(now),
        ))
        .on_conflict(ob::org_id)
        .do_update()
        .set((ob::branding.eq(&stored), ob::updated_at.eq(now)))
        .execute(conn)?;
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colors_are_hex_and_logos_are_plain_web_urls() {
        let good = Branding {
            primary_color: Some("#1A73E8".into()),
            background_color: Some("#fff".into()),
            font_color: Some(String::new()),
            logo_url: Some("https://cdn.acme.example/logo.png".into()),
        };
        let checked = good.checked("").unwrap();
        assert_eq!(checked.primary_color.as_deref(), Some("#1a73e8"));
        assert_eq!(checked.font_color, None);
        for bad in [
            Branding {
                primary_color: Some("red".into()),
                ..Branding::default()
            },
            Branding {
                background_color: Some("#12345g".into()),
                ..Branding::default()
            },
            Branding {
                font_color: Some("#000;background:url(x)".into()),
                ..Branding::default()
            },
            Branding {
                logo_url: Some("javascript:alert(1)".into()),
                ..Branding::default()
            },
            Branding {
                logo_url: Some("https://u:p@cdn.example/x.png".into()),
                ..Branding::default()
            },
        ] {
            assert!(bad.checked("").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_organizations_branding_falls_back_field_by_field() {
        let org = Branding {
            primary_color: Some("#111111".into()),
            ..Branding::default()
        };
        let instance = Branding {
            primary_color: Some("#222222".into()),
            logo_url: Some("https://i.example/l.png".into()),
            ..Branding::default()
        };
        let both = org.falling_back_to(&instance);
        assert_eq!(both.primary_color.as_deref(), Some("#111111"));
        assert_eq!(both.logo_url.as_deref(), Some("https://i.example/l.png"));
        assert_eq!(both.font_color, None);
    }
}
