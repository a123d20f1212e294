//! `/openapi.json`: the document utoipa derives from the handlers ([`ApiDoc`]), completed
//! with what the derive cannot say: the request bodies' validation rules exactly as the
//! server enforces them (SPEC 3.1, 3.4, 5; the limits are the constants of `common`), which
//! bodies may be left out, `servers`, the global bearer `security` (and none for the
//! operational endpoints), and `links` from the calls that create a user or an
//! authenticator to the calls on it.
//!
//! Every input field that is optional also accepts JSON `null`, which the server reads as
//! "not given"; the schemas say so, so that a client (or a fuzzer) can rely on them.

use common::commands::USERNAME_MAX_LEN;
use common::domain::{CONTACT_CODE_MAX_LEN, OTP_CODE_MAX_LEN, email_address, url_template};
use serde_json::{Map, Value, json};
use utoipa::OpenApi;

use super::routes::ApiDoc;

/// The document served at `/openapi.json`.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document is JSON");
    doc["servers"] = json!([{"url": "/"}]);
    doc["security"] = json!([{"bearer": []}]);
    let schemas = doc["components"]["schemas"]
        .as_object_mut()
        .expect("components.schemas");
    for (name, schema) in request_schemas() {
        schemas.insert(name.to_owned(), schema);
    }
    let paths = doc["paths"].as_object_mut().expect("paths");
    paths.insert(
        "/openapi.json".into(),
        json!({"get": {"tags": ["Operations"], "summary": "This document (OpenAPI 3)",
            "operationId": "openapi",
            "responses": {"200": {"description": "The OpenAPI document",
                "content": {"application/json": {"schema": {"type": "object"}}}}}}}),
    );
    for (path, item) in paths.iter_mut() {
        for operation in item.as_object_mut().expect("path item").values_mut() {
            complete_operation(path, operation);
        }
    }
    doc
}

/// An address of SPEC 3.1: a dot-atom local part, `@`, labels of letters, digits and inner
/// hyphens (at most 63 characters each); surrounding spaces and tabs are trimmed.
const ADDRESS_PATTERN: &str = concat!(
    r"^[ \t]*[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*",
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*[ \t]*$"
);

/// A URL template of SPEC 5 in its common form: empty (not given), or an absolute `http` /
/// `https` URL with a host name (dot-separated labels, the last one starting with a letter),
/// an optional port up to 65535 and no user info, whose path and query may hold the variables
/// `{{UserID}}`, `{{Code}}`, `{{OrgID}}` (also `userId`, `code`, `orgId`, and ZITADEL's
/// `{{.Code}}`). The server accepts some more (any template that renders to such a URL) and
/// refuses everything else with 400.
const URL_TEMPLATE_PATTERN: &str = concat!(
    r"^(?:[hH][tT][tT][pP][sS]?://(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?::(?:[0-9]{1,4}|[0-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?",
    r"(?:/(?:[A-Za-z0-9._~!$&'()*+,;=:/?-]|\{\{ *\.?(?:UserID|Code|OrgID|userId|code|orgId) *\}\})*)?)?$"
);

/// A username: 1 to 200 characters after trimming white space, no control character.
const USERNAME_PATTERN: &str =
    r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$";

/// `preferredLanguage`: empty (not given) or a BCP 47 language tag of RFC 5646 in any case,
/// `_` taken for `-`: language (with up to three extended subtags), script, region, variants,
/// extensions, private use. The server also refuses a variant or an extension singleton
/// given twice, which a pattern cannot say.
const LANGUAGE_PATTERN: &str = concat!(
    r"^(?:(?:[A-Za-z]{2,3}(?:[-_][A-Za-z]{3}){0,3}|[A-Za-z]{4,8})",
    r"(?:[-_][A-Za-z]{4})?(?:[-_](?:[A-Za-z]{2}|[0-9]{3}))?",
    r"(?:[-_](?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*",
    r"(?:[-_][0-9A-WY-Za-wy-z](?:[-_][A-Za-z0-9]{2,8})+)*",
    r"(?:[-_][xX](?:[-_][A-Za-z0-9]{1,8})+)?)?$"
);

/// A CSS hex color of the branding: `#abc` or `#aabbcc`, or `""` (unset).
fn color(what: &str) -> Value {
    json!({"type": "string", "pattern": "^(?:#(?:[0-9A-Fa-f]{3}|[0-9A-Fa-f]{6}))?$",
        "description": format!("{what}: a hex color such as `#1a73e8` or `#abc`")})
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// `schema` or JSON `null` (read as "not given").
fn or_null(schema: Value) -> Value {
    json!({"oneOf": [{"type": "null"}, schema]})
}

/// Absent or `null`.
fn null() -> Value {
    json!({"type": "null"})
}

fn verification_code(max_len: usize) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": max_len,
        "description": format!("The code of the mail, 1 to {max_len} characters")})
}

/// The verification choices of SPEC 3.1 (`sendCode`, `returnCode`, `isVerified`, at most one;
/// a `null` one counts as not given) as branches of a `oneOf`, one per choice plus "none".
fn choices(names: &[(&str, Value)]) -> Value {
    let mut branches = vec![];
    let none: Map<String, Value> = names.iter().map(|(n, _)| (n.to_string(), null())).collect();
    branches.push(
        json!({"title": "no choice: mail the code with the default link",
        "properties": none}),
    );
    for (chosen, _) in names {
        let properties: Map<String, Value> = names
            .iter()
            .map(|(n, s)| {
                let s = if n == chosen { s.clone() } else { null() };
                (n.to_string(), s)
            })
            .collect();
        branches.push(json!({"title": chosen, "required": [chosen], "properties": properties}));
    }
    Value::Array(branches)
}

fn scope_properties() -> Map<String, Value> {
    let mut p = Map::new();
    p.insert("instance".into(), or_null(reference("InstanceDto")));
    p.insert("organization".into(), or_null(reference("OrgDto")));
    p
}

/// The request body schemas, replacing the derived ones of the same name.
fn request_schemas() -> Vec<(&'static str, Value)> {
    let set_email_choices = [
        ("sendCode", reference("SendCodeDto")),
        ("returnCode", reference("Empty")),
        ("isVerified", json!({"const": true})),
    ];
    let resend_choices = [
        ("sendCode", reference("SendCodeDto")),
        ("returnCode", reference("Empty")),
    ];
    let mut resend_properties = scope_properties();
    resend_properties.insert("sendCode".into(), or_null(reference("SendCodeDto")));
    resend_properties.insert("returnCode".into(), or_null(reference("Empty")));
    let mut email_request_properties = scope_properties();
    email_request_properties.insert("email".into(), reference("SetEmailDto"));
    let mut create_properties = scope_properties();
    create_properties.insert(
        "username".into(),
        or_null(
            json!({"type": "string", "minLength": 1, "maxLength": USERNAME_MAX_LEN,
            "pattern": USERNAME_PATTERN,
            "description": format!("1 to {USERNAME_MAX_LEN} characters after trimming white space, \
                no control character")}),
        ),
    );
    create_properties.insert(
        "preferredLanguage".into(),
        or_null(
            json!({"type": "string", "maxLength": 128, "pattern": LANGUAGE_PATTERN,
            "description": "The language of the user's mails (SPEC 9): a BCP 47 tag such as \
                `de` or `pt-BR`, in any case; `\"\"` means not given. Shown by get user."}),
        ),
    );
    create_properties.insert("email".into(), or_null(reference("SetEmailDto")));
    let verify = |max_len: usize| {
        let mut p = scope_properties();
        p.insert("verificationCode".into(), verification_code(max_len));
        json!({"type": "object", "required": ["verificationCode"], "properties": p,
            "description": "`{\"verificationCode\": \"...\"}` (`code` and `verification_code` \
                are accepted too)"})
    };
    vec![
        (
            "SetEmailDto",
            json!({
                "type": "object",
                "description": "The `SetEmail` object (SPEC 3.1): an address and at most one \
                    of `sendCode`, `returnCode`, `isVerified`.",
                "required": ["address"],
                "properties": {
                    "address": {"type": "string", "minLength": 1,
                        "maxLength": email_address::MAX_LEN, "pattern": ADDRESS_PATTERN,
                        "format": "email",
                        "description": format!("A plain `local@domain` address, at most {} \
                            characters; surrounding spaces and tabs are trimmed",
                            email_address::MAX_LEN)},
                    "sendCode": or_null(reference("SendCodeDto")),
                    "returnCode": or_null(reference("Empty")),
                    "isVerified": {"enum": [true, null],
                        "description": "Only `true`: the address is marked verified"},
                },
                "oneOf": choices(&set_email_choices),
            }),
        ),
        (
            "SendCodeDto",
            json!({
                "type": "object",
                "description": "Mail the code; `urlTemplate` is the link of the mail (SPEC 5).",
                "properties": {
                    "urlTemplate": or_null(json!({"type": "string",
                        "maxLength": url_template::MAX_LEN, "pattern": URL_TEMPLATE_PATTERN,
                        "description": format!("At most {} characters; `\"\"` means not \
                            given. Must render to an absolute http(s) URL without user info",
                            url_template::MAX_LEN)})),
                },
            }),
        ),
        (
            "EmailRequest",
            json!({"type": "object", "required": ["email"],
                "properties": email_request_properties,
                "description": "Family A set contact email / add OTP Email: \
                    `{\"email\": SetEmail}`."}),
        ),
        ("VerifyRequest", verify(CONTACT_CODE_MAX_LEN)),
        ("VerifyOtpEmailRequest", verify(OTP_CODE_MAX_LEN)),
        (
            "ResendRequest",
            json!({"type": "object", "properties": resend_properties,
                "oneOf": choices(&resend_choices),
                "description": "Resend: `{}`, `{\"sendCode\": {...}}` or \
                    `{\"returnCode\": {}}`; an empty body is `{}`."}),
        ),
        (
            "CreateUserRequest",
            json!({"type": "object", "properties": create_properties,
                "description": "Create user; an empty body is `{}`."}),
        ),
        (
            "MailSettings",
            json!({
                "type": "object",
                "description": "An instance's mail settings (SPEC 9). Every field is optional; \
                    an unset one takes the global configuration. `PUT` replaces the whole \
                    object: a field left out is unset. Secrets are shown as `***`; sending \
                    `***` back keeps the stored one.",
                "properties": {
                    "from": or_null(json!({"type": "string", "maxLength": 320,
                        "description": "Sender: `Name <address>` or an address"})),
                    "replyTo": or_null(json!({"type": "string",
                        "maxLength": email_address::MAX_LEN, "description": "An address"})),
                    "defaultLanguage": or_null(json!({"type": "string", "maxLength": 128,
                        "pattern": LANGUAGE_PATTERN,
                        "description": "BCP 47 tag: the language of users who have none"})),
                    "urlTemplate": or_null(json!({"type": "string",
                        "maxLength": url_template::MAX_LEN, "pattern": URL_TEMPLATE_PATTERN,
                        "description": "Contact email link when `sendCode` names none"})),
                    "otpEmailUrlTemplate": or_null(json!({"type": "string",
                        "maxLength": url_template::MAX_LEN, "pattern": URL_TEMPLATE_PATTERN,
                        "description": "OTP Email link when `sendCode` names none"})),
                    "provider": or_null(json!({
                        "description": "Where the instance's mail goes: its own SMTP relay, or \
                            an HTTP endpoint receiving each mail as JSON signed with \
                            `X-Signature: sha256=<hex HMAC-SHA-256 of the body>`",
                        "oneOf": [
                            {"type": "object", "required": ["smtp"], "properties": {
                                "smtp": {"type": "object", "required": ["url"], "properties": {
                                    "url": {"type": "string", "description":
                                        "`smtp://user:password@host:port?tls=required|opportunistic` \
                                        or `smtps://...`; the password is shown as `***`"}}}}},
                            {"type": "object", "required": ["http"], "properties": {
                                "http": {"type": "object", "required": ["url"], "properties": {
                                    "url": {"type": "string", "description": "`https://...`"},
                                    "signingKey": or_null(json!({"type": "string",
                                        "description": "HMAC key; required when the provider \
                                            is first set; shown as `***`"}))}}}},
                        ],
                    })),
                    "branding": or_null(reference("Branding")),
                },
            }),
        ),
        (
            "Branding",
            json!({
                "type": "object",
                "description": "Colors and logo of the HTML mails, as ZITADEL's label policy. \
                    An organization's own branding overrides its instance's field by field; \
                    `PUT` replaces the whole object (a field left out or `\"\"` is unset).",
                "properties": {
                    "primaryColor": or_null(color("Links and buttons")),
                    "backgroundColor": or_null(color("Background of the mail")),
                    "fontColor": or_null(color("Text")),
                    "logoUrl": or_null(json!({"type": "string", "maxLength": 500,
                        "description": "`https://` (or `http://`) URL of the logo image, \
                            without user info"})),
                },
            }),
        ),
        (
            "InstanceDto",
            json!({"type": "object", "properties": {
                "id": or_null(json!({"type": "string"})),
                "domain": or_null(json!({"type": "string"}))}}),
        ),
        (
            "OrgDto",
            json!({"type": "object", "properties": {
                "orgId": or_null(json!({"type": "string"})),
                "orgDomain": or_null(json!({"type": "string"}))}}),
        ),
    ]
}

/// Operation-level completions: optional bodies, the verify bodies' limits, security, links.
fn complete_operation(path: &str, operation: &mut Value) {
    let operation_id = operation["operationId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    match operation_id.as_str() {
        // An empty body reads as `{}` (SPEC 3.2, 3.5).
        "create_user" | "a_resend_email" | "b_resend_email" | "a_resend_otp_email"
        | "b_resend_otp_email" => operation["requestBody"]["required"] = json!(false),
        "a_verify_otp_email" => {
            operation["requestBody"]["content"]["application/json"]["schema"] =
                reference("VerifyOtpEmailRequest");
        }
        "b_verify_email" | "b_verify_otp_email" => {
            let max_len = if operation_id == "b_verify_email" {
                CONTACT_CODE_MAX_LEN
            } else {
                OTP_CODE_MAX_LEN
            };
            operation["requestBody"]["content"]["application/json"]["schema"] =
                verification_code(max_len);
        }
        _ => {}
    }
    if matches!(path, "/healthz" | "/readyz" | "/metrics" | "/openapi.json") {
        operation["security"] = json!([]);
    }
    let links = links(&operation_id);
    if !links.is_empty() {
        let status = if operation_id == "create_user" {
            "201"
        } else {
            "200"
        };
        operation["responses"][status]["links"] = Value::Object(links);
    }
}

/// Links from a call's answer to the calls on what it made or touched (OpenAPI 3 `links`;
/// schemathesis's stateful phase follows them). Parameter names are plain (`userId`), which
/// every target has as a path parameter.
fn links(operation_id: &str) -> Map<String, Value> {
    let link = |target: &str, parameters: Value| {
        (
            target.to_owned(),
            json!({"operationId": target, "parameters": parameters}),
        )
    };
    let user = |expr: &str| json!({"userId": expr});
    let b_user = |expr: &str| json!({"id": expr});
    match operation_id {
        "create_user" => {
            let id = "$response.body#/id";
            [
                link("get_user", user(id)),
                link("delete_user", user(id)),
                link("a_set_email", user(id)),
                link("a_resend_email", user(id)),
                link("a_add_otp_email", user(id)),
                link("b_set_email", b_user(id)),
                link("b_resend_email", b_user(id)),
                link("b_add_otp_email", b_user(id)),
            ]
            .into_iter()
            .collect()
        }
        "a_add_otp_email" | "b_add_otp_email" => {
            let from = if operation_id == "a_add_otp_email" {
                "$request.path.userId"
            } else {
                "$request.path.id"
            };
            let otp = "$response.body#/otpEmailId";
            [
                link(
                    "a_verify_otp_email",
                    json!({"userId": from, "otpEmailId": otp}),
                ),
                link(
                    "a_resend_otp_email",
                    json!({"userId": from, "otpEmailId": otp}),
                ),
                link(
                    "a_remove_otp_email",
                    json!({"userId": from, "otpEmailId": otp}),
                ),
                link("b_verify_otp_email", json!({"id": from, "otpEmailId": otp})),
                link("b_resend_otp_email", json!({"id": from, "otpEmailId": otp})),
                link("b_remove_otp_email", json!({"id": from, "otpEmailId": otp})),
                link("get_user", json!({"userId": from})),
            ]
            .into_iter()
            .collect()
        }
        "a_set_email" | "b_set_email" => {
            let from = if operation_id == "a_set_email" {
                "$request.path.userId"
            } else {
                "$request.path.id"
            };
            [
                link("a_verify_email", json!({"userId": from})),
                link("b_verify_email", json!({"id": from})),
                link("get_user", json!({"userId": from})),
            ]
            .into_iter()
            .collect()
        }
        _ => Map::new(),
    }
}
