//! Request and response shapes of the JSON API (SPEC 3). Input accepts lowerCamelCase and
//! snake_case and ignores unknown fields; output is lowerCamelCase, 64-bit numbers as
//! strings, unset fields omitted.

use common::commands::{Details, Outcome, UserView};
use common::domain::{CodeDelivery, SetEmail, SetEmailFields};
use common::error::Rejection;
use common::time::rfc3339_ms;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{InstanceDto, OrgDto};

/// A JSON object whose content does not matter (`returnCode: {}`).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct Empty {}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct SendCodeDto {
    #[serde(rename = "urlTemplate", alias = "url_template")]
    pub url_template: Option<String>,
}

/// The `SetEmail` object (SPEC 3.1).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct SetEmailDto {
    pub address: Option<String>,
    #[serde(rename = "sendCode", alias = "send_code")]
    pub send_code: Option<SendCodeDto>,
    #[serde(rename = "returnCode", alias = "return_code")]
    pub return_code: Option<Empty>,
    #[serde(rename = "isVerified", alias = "is_verified")]
    pub is_verified: Option<bool>,
}

impl SetEmailDto {
    /// Applies the SetEmail rules; `prefix` names the object in messages.
    pub fn parse(&self, prefix: &str) -> Result<SetEmail, Rejection> {
        SetEmail::parse(
            SetEmailFields {
                address: self.address.as_deref(),
                send_code: self.send_code.as_ref().map(|s| s.url_template.as_deref()),
                return_code: self.return_code.is_some(),
                is_verified: self.is_verified,
            },
            prefix,
        )
    }
}

/// Family A set contact email / add OTP Email: `{"email": SetEmail}`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct EmailRequest {
    pub email: Option<SetEmailDto>,
    pub instance: Option<InstanceDto>,
    pub organization: Option<OrgDto>,
}

impl EmailRequest {
    pub fn parse(&self) -> Result<SetEmail, Rejection> {
        self.email.as_ref().map_or_else(
            || SetEmailDto::default().parse("email."),
            |e| e.parse("email."),
        )
    }
}

/// Family A verify: `{"verificationCode": "..."}` (`code` accepted too).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct VerifyRequest {
    #[serde(
        rename = "verificationCode",
        alias = "verification_code",
        alias = "code"
    )]
    pub verification_code: Option<String>,
    pub instance: Option<InstanceDto>,
    pub organization: Option<OrgDto>,
}

/// Resend (both families): `{}`, `{"sendCode": {...}}` or `{"returnCode": {}}`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ResendRequest {
    #[serde(rename = "sendCode", alias = "send_code")]
    pub send_code: Option<SendCodeDto>,
    #[serde(rename = "returnCode", alias = "return_code")]
    pub return_code: Option<Empty>,
    pub instance: Option<InstanceDto>,
    pub organization: Option<OrgDto>,
}

impl ResendRequest {
    pub fn parse(&self) -> Result<CodeDelivery, Rejection> {
        CodeDelivery::parse(
            self.send_code.as_ref().map(|s| s.url_template.as_deref()),
            self.return_code.is_some(),
        )
    }
}

/// Create user.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CreateUserRequest {
    pub organization: Option<OrgDto>,
    pub instance: Option<InstanceDto>,
    pub username: Option<String>,
    /// BCP 47 tag (`de`, `pt-BR`): the language of the user's mails (SPEC 9).
    #[serde(rename = "preferredLanguage")]
    pub preferred_language: Option<String>,
    pub email: Option<SetEmailDto>,
}

/// `details` of family A and of the supporting calls (SPEC 3.2).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DetailsA {
    sequence: String,
    change_date: String,
    resource_owner: String,
}

/// `details` of family B (SPEC 3.3).
#[derive(Debug, Serialize, ToSchema)]
pub struct DetailsB {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<String>,
    changed: String,
    owner: Owner,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Owner {
    #[serde(rename = "type")]
    kind: &'static str,
    id: String,
}

impl From<&Details> for DetailsA {
    fn from(d: &Details) -> Self {
        DetailsA {
            sequence: d.sequence.to_string(),
            change_date: rfc3339_ms(d.change_date),
            resource_owner: d.resource_owner.to_string(),
        }
    }
}

impl From<&Details> for DetailsB {
    fn from(d: &Details) -> Self {
        DetailsB {
            id: d.user_id.to_string(),
            created: d.created.map(rfc3339_ms),
            changed: rfc3339_ms(d.change_date),
            owner: Owner {
                kind: "OWNER_TYPE_ORG",
                id: d.resource_owner.to_string(),
            },
        }
    }
}

/// `{"details"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DetailsResponse<D> {
    details: D,
}

impl<D: for<'a> From<&'a Details>> From<Details> for DetailsResponse<D> {
    fn from(d: Details) -> Self {
        DetailsResponse {
            details: D::from(&d),
        }
    }
}

/// `{"details", "otpEmailId"?, "verificationCode"?}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CodeResponse<D> {
    details: D,
    #[serde(skip_serializing_if = "Option::is_none")]
    otp_email_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verification_code: Option<String>,
}

impl<D: for<'a> From<&'a Details>> From<Outcome> for CodeResponse<D> {
    fn from(o: Outcome) -> Self {
        CodeResponse {
            details: D::from(&o.details),
            otp_email_id: o.otp_email_id.map(|id| id.to_string()),
            verification_code: o.verification_code,
        }
    }
}

/// Create user: `{"id", "details", "verificationCode"?}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateUserResponse {
    id: String,
    details: DetailsA,
    #[serde(skip_serializing_if = "Option::is_none")]
    verification_code: Option<String>,
}

impl From<Outcome> for CreateUserResponse {
    fn from(o: Outcome) -> Self {
        CreateUserResponse {
            id: o.details.user_id.to_string(),
            details: DetailsA::from(&o.details),
            verification_code: o.verification_code,
        }
    }
}

/// Get user: `{"user": {...}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct GetUserResponse {
    user: UserDto,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct UserDto {
    id: String,
    organization_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    preferred_language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    contact: Option<ContactDto>,
    otp_email: Vec<OtpEmailDto>,
    details: DetailsA,
}

#[derive(Debug, Serialize, ToSchema)]
struct ContactDto {
    email: EmailDto,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct EmailDto {
    address: String,
    is_verified: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct OtpEmailDto {
    otp_email_id: String,
    address: String,
    is_verified: bool,
}

impl From<UserView> for GetUserResponse {
    fn from(u: UserView) -> Self {
        GetUserResponse {
            user: UserDto {
                id: u.id.to_string(),
                organization_id: u.organization_id.to_string(),
                username: u.username,
                preferred_language: u.preferred_language,
                contact: u.contact_email.map(|(address, is_verified)| ContactDto {
                    email: EmailDto {
                        address,
                        is_verified,
                    },
                }),
                otp_email: u
                    .otp_emails
                    .into_iter()
                    .map(|o| OtpEmailDto {
                        otp_email_id: o.id.to_string(),
                        address: o.address,
                        is_verified: o.verified,
                    })
                    .collect(),
                details: DetailsA::from(&u.details),
            },
        }
    }
}
