//! Extractors shared by every route: the bearer token (checked first, by the [`require_token`]
//! middleware: SPEC 2 puts 401 before any body validation; gRPC uses the same check,
//! [`authenticate`]), the JSON body (64 KiB,
//! JSON content type, errors naming the field), and the `instance` / `organization` query
//! parameters.

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use common::auth::{self, Principal};
use common::db;
use common::error::{Error, Rejection, ids};
use common::tenancy::{InstanceRef, OrgRef, Scope};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::state::AppState;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The caller, as [`require_token`] established it.
pub struct Authenticated(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Authenticated)
            .ok_or_else(|| Rejection::unauthenticated("Token is invalid").into())
    }
}

/// Middleware of every authenticated JSON route: checks the bearer token before anything
/// else (SPEC 2) and hands the principal to the handler. A refused request's body is read
/// and dropped first, so the connection stays usable and the 401 is not lost to a reset.
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match authenticate(&state, request.headers().get(header::AUTHORIZATION)).await {
        Ok(principal) => {
            let mut request = request;
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(e) => {
            let drained = tokio::time::timeout(
                DRAIN_TIMEOUT,
                axum::body::to_bytes(request.into_body(), BODY_LIMIT),
            )
            .await;
            let mut response = ApiError::Domain(e).into_response();
            if !matches!(drained, Ok(Ok(_))) {
                close_connection(&mut response);
            }
            response
        }
    }
}

/// How long a refused request's body may take to arrive before the connection is closed.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Asks HTTP/1.1 clients to open a new connection for their next request (the body of this
/// one was not read to its end). Ignored by the HTTP/2 server.
pub fn close_connection(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

/// The caller of a request whose `Authorization` header (gRPC: `authorization` metadata) is
/// `authorization`: the one token check of HTTP and gRPC alike (SPEC 2, 401 / code 16).
pub async fn authenticate(
    state: &AppState,
    authorization: Option<&HeaderValue>,
) -> Result<Principal, Error> {
    let token = authorization
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .ok_or_else(|| {
            Rejection::unauthenticated("Authorization header with a Bearer token is missing")
        })?
        .to_owned();
    if let Some(principal) = state.tokens.get(&token) {
        return Ok(principal);
    }
    let lookup = token.clone();
    let found = db::run(&state.pool, move |conn| {
        auth::authenticate_until(conn, &lookup)
    })
    .await?;
    let (principal, expires_at) =
        found.ok_or_else(|| Rejection::unauthenticated("Token is invalid"))?;
    state.tokens.put(&token, principal.clone(), expires_at);
    Ok(principal)
}

/// The token of an `Authorization` header value (`Bearer` is case-insensitive).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A JSON body parsed into `T`. An empty body reads as `{}`.
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("").to_owned());
        let bytes = axum::body::to_bytes(req.into_body(), BODY_LIMIT)
            .await
            .map_err(|_| {
                ApiError::Http(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Rejection::invalid(
                        ids::REQUEST_TOO_LARGE,
                        "Request body is larger than 64 KiB",
                    ),
                )
            })?;
        if bytes.is_empty() {
            return parse(b"{}").map(JsonBody);
        }
        if !content_type.as_deref().is_some_and(is_json) {
            return Err(ApiError::Http(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Rejection::invalid(
                    ids::REQUEST_CONTENT_TYPE,
                    "Content-Type must be application/json",
                ),
            ));
        }
        parse(&bytes).map(JsonBody)
    }
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses a JSON request body into `T`: errors name the field, trailing data is refused.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = if path.is_empty() || path == "." {
            format!("Request body is not valid JSON: {inner}")
        } else {
            format!("Invalid field {path}: {inner}")
        };
        Rejection::invalid(ids::REQUEST_MALFORMED, message)
    })?;
    // Anything but white space after the JSON value makes the body malformed.
    de.end().map_err(|e| {
        Rejection::invalid(
            ids::REQUEST_MALFORMED,
            format!("Request body is not valid JSON: {e}"),
        )
    })?;
    Ok(value)
}

/// `instance` of a request body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct InstanceDto {
    pub id: Option<String>,
    pub domain: Option<String>,
}

impl InstanceDto {
    pub fn into_ref(self) -> Option<InstanceRef> {
        match (self.id, self.domain) {
            (Some(id), _) if !id.is_empty() => Some(InstanceRef::Id(id)),
            (_, Some(d)) if !d.is_empty() => Some(InstanceRef::Domain(d)),
            _ => None,
        }
    }
}

/// `organization` of a request body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct OrgDto {
    #[serde(rename = "orgId", alias = "org_id")]
    pub org_id: Option<String>,
    #[serde(rename = "orgDomain", alias = "org_domain")]
    pub org_domain: Option<String>,
}

impl OrgDto {
    pub fn into_ref(self) -> Option<OrgRef> {
        match (self.org_id, self.org_domain) {
            (Some(id), _) if !id.is_empty() => Some(OrgRef::Id(id)),
            (_, Some(d)) if !d.is_empty() => Some(OrgRef::Domain(d)),
            _ => None,
        }
    }
}

/// `instance.id`, `instance.domain`, `organization.orgId`, `organization.orgDomain` as query
/// parameters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ScopeQuery {
    #[serde(rename = "instance.id")]
    instance_id: Option<String>,
    #[serde(rename = "instance.domain")]
    instance_domain: Option<String>,
    #[serde(rename = "organization.orgId", alias = "organization.org_id")]
    org_id: Option<String>,
    #[serde(rename = "organization.orgDomain", alias = "organization.org_domain")]
    org_domain: Option<String>,
}

impl ScopeQuery {
    /// The scope of a request: fields of the body win over query parameters.
    pub fn merge(self, instance: Option<InstanceDto>, organization: Option<OrgDto>) -> Scope {
        let from_query_instance = InstanceDto {
            id: self.instance_id,
            domain: self.instance_domain,
        };
        let from_query_org = OrgDto {
            org_id: self.org_id,
            org_domain: self.org_domain,
        };
        Scope {
            instance: instance
                .and_then(InstanceDto::into_ref)
                .or_else(|| from_query_instance.into_ref()),
            organization: organization
                .and_then(OrgDto::into_ref)
                .or_else(|| from_query_org.into_ref()),
        }
    }
}

/// Query parameters of a request, never failing: unknown or malformed ones are ignored.
pub struct ScopeParams(pub ScopeQuery);

impl<S: Send + Sync> FromRequestParts<S> for ScopeParams {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        Ok(ScopeParams(
            serde_urlencoded_lenient(query).unwrap_or_default(),
        ))
    }
}

fn serde_urlencoded_lenient(query: &str) -> Option<ScopeQuery> {
    axum::extract::Query::<ScopeQuery>::try_from_uri(&format!("/?{query}").parse().ok()?)
        .ok()
        .map(|q| q.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_needs_a_token() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("Application/JSON"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
    }

    #[test]
    fn query_scope_is_read_and_the_body_wins() {
        let q = serde_urlencoded_lenient("instance.domain=a.b&organization.orgId=7").unwrap();
        let scope = q.merge(None, None);
        assert_eq!(scope.instance, Some(InstanceRef::Domain("a.b".into())));
        assert_eq!(scope.organization, Some(OrgRef::Id("7".into())));
        let q = serde_urlencoded_lenient("organization.orgId=7").unwrap();
        let body_org = OrgDto {
            org_id: Some("9".into()),
            org_domain: None,
        };
        assert_eq!(
            q.merge(None, Some(body_org)).organization,
            Some(OrgRef::Id("9".into()))
        );
    }
}
