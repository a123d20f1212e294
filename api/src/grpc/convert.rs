//! Between the generated gRPC messages and the domain: requests become the same validated
//! values the JSON routes build (`SetEmail`, `CodeDelivery`, `Scope`), with
//! the same parsers, so no rule is written twice; results become the family-B `details`.
//! Field names in messages are the JSON names of the proto fields (`email.address`,
//! `verificationCode`), as in the JSON family A, whose bodies have the same shape.

use chrono::{DateTime, Utc};
use common::commands::Details;
use common::domain::{CodeDelivery, SetEmail, SetEmailFields};
use common::error::{Rejection, ids};
use common::tenancy::Scope;

use super::proto::zitadel::object::v3alpha as object;
use super::proto::zitadel::resources::object::v3alpha as resource;
use super::proto::zitadel::resources::user::v3alpha as user;
use crate::http::extract::{InstanceDto, OrgDto};

/// The `instance` and `organization` fields of a request; empty values mean "not given", as
/// in JSON.
pub fn scope(
    instance: Option<object::Instance>,
    organization: Option<object::Organization>,
) -> Scope {
    use object::instance::Property as I;
    use object::organization::Property as O;
    let instance = instance.and_then(|i| i.property).map(|p| match p {
        I::Id(id) => InstanceDto {
            id: Some(id),
            domain: None,
        },
        I::Domain(domain) => InstanceDto {
            id: None,
            domain: Some(domain),
        },
    });
    let organization = organization.and_then(|o| o.property).map(|p| match p {
        O::OrgId(id) => OrgDto {
            org_id: Some(id),
            org_domain: None,
        },
        O::OrgDomain(domain) => OrgDto {
            org_id: None,
            org_domain: Some(domain),
        },
    });
    Scope {
        instance: instance.and_then(InstanceDto::into_ref),
        organization: organization.and_then(OrgDto::into_ref),
    }
}

/// A required id field (`id`, `otpEmailId`). Over JSON these are path segments and cannot be
/// empty; over gRPC an empty one is a validation error (code 3), not an unknown user.
pub fn required_id(value: String, field: &str) -> Result<String, Rejection> {
    if value.trim().is_empty() {
        return Err(Rejection::invalid(
            ids::REQUEST_MALFORMED,
            format!("{field} must not be empty"),
        ));
    }
    Ok(value)
}

/// The `email` field of set contact email and add OTP Email.
pub fn set_email(email: Option<user::SetEmail>) -> Result<SetEmail, Rejection> {
    use user::set_email::Verification as V;
    let email = email.unwrap_or_default();
    let mut fields = SetEmailFields {
        address: Some(&email.address),
        ..SetEmailFields::default()
    };
    match &email.verification {
        None => {}
        Some(V::SendCode(send)) => fields.send_code = Some(send.url_template.as_deref()),
        Some(V::ReturnCode(_)) => fields.return_code = true,
        Some(V::IsVerified(flag)) => fields.is_verified = Some(*flag),
    }
    SetEmail::parse(fields, "email.")
}

/// The `verification` choice of resend contact email code.
pub fn delivery(
    verification: Option<user::resend_contact_email_code_request::Verification>,
) -> Result<CodeDelivery, Rejection> {
    use user::resend_contact_email_code_request::Verification as V;
    match &verification {
        None => CodeDelivery::parse(None, false),
        Some(V::SendCode(send)) => CodeDelivery::parse(Some(send.url_template.as_deref()), false),
        Some(V::ReturnCode(_)) => CodeDelivery::parse(None, true),
    }
}

/// Family-B `details` (SPEC 3.3): the user, when the resource was created (if this call
/// created it), when it changed, and the owning organization.
pub fn details(d: &Details) -> resource::Details {
    resource::Details {
        id: d.user_id.to_string(),
        created: d.created.map(timestamp),
        changed: Some(timestamp(d.change_date)),
        owner: Some(object::Owner {
            r#type: object::OwnerType::Org as i32,
            id: d.resource_owner.to_string(),
        }),
    }
}

/// A timestamp at the JSON API's precision (milliseconds), so both surfaces report the same
/// instant for the same change.
fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: (t.timestamp_subsec_millis() * 1_000_000) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::domain::Verification;
    use common::tenancy::{InstanceRef, OrgRef};

    #[test]
    fn the_oneof_maps_to_the_verification_choice() {
        use user::set_email::Verification as V;
        let with = |verification| {
            set_email(Some(user::SetEmail {
                address: " mini@mouse.com ".into(),
                verification,
            }))
        };
        let none = with(None).unwrap();
        assert_eq!(none.address.as_str(), "mini@mouse.com");
        assert_eq!(none.verification, Verification::SendCode(None));
        assert_eq!(
            with(Some(V::ReturnCode(user::ReturnEmailVerificationCode {})))
                .unwrap()
                .verification,
            Verification::ReturnCode
        );
        assert_eq!(
            with(Some(V::IsVerified(true))).unwrap().verification,
            Verification::IsVerified
        );
        assert_eq!(
            with(Some(V::IsVerified(false))).unwrap_err().id,
            ids::EMAIL_IS_VERIFIED_FALSE
        );
        let bad_template = with(Some(V::SendCode(user::SendEmailVerificationCode {
            url_template: Some("{{Nope}}".into()),
        })))
        .unwrap_err();
        assert!(
            bad_template.message.contains("email.sendCode.urlTemplate"),
            "{}",
            bad_template.message
        );
        let missing = set_email(None).unwrap_err();
        assert!(
            missing.message.contains("email.address"),
            "{}",
            missing.message
        );
    }

    #[test]
    fn scope_ignores_empty_references() {
        let s = scope(
            Some(object::Instance {
                property: Some(object::instance::Property::Domain("a.b".into())),
            }),
            Some(object::Organization {
                property: Some(object::organization::Property::OrgId(String::new())),
            }),
        );
        assert_eq!(s.instance, Some(InstanceRef::Domain("a.b".into())));
        assert_eq!(s.organization, None);
        let s = scope(
            None,
            Some(object::Organization {
                property: Some(object::organization::Property::OrgDomain("o.a.b".into())),
            }),
        );
        assert_eq!(s.instance, None);
        assert_eq!(s.organization, Some(OrgRef::Domain("o.a.b".into())));
    }

    #[test]
    fn details_are_family_b_at_millisecond_precision() {
        let at = DateTime::parse_from_rfc3339("2024-06-17T09:46:05.265123Z")
            .unwrap()
            .with_timezone(&Utc);
        let d = details(&Details {
            user_id: 7,
            sequence: 2,
            change_date: at,
            resource_owner: 9,
            created: None,
        });
        assert_eq!(d.id, "7");
        assert!(d.created.is_none());
        let changed = d.changed.unwrap();
        assert_eq!(changed.seconds, at.timestamp());
        assert_eq!(changed.nanos, 265_000_000);
        let owner = d.owner.unwrap();
        assert_eq!(owner.r#type, object::OwnerType::Org as i32);
        assert_eq!(owner.id, "9");
    }

    #[test]
    fn ids_are_required() {
        assert!(required_id("1".into(), "id").is_ok());
        assert_eq!(
            required_id(" ".into(), "otpEmailId").unwrap_err().code,
            common::error::Code::InvalidArgument
        );
    }
}
