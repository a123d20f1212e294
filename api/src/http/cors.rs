//! CORS (SPEC 4) for the JSON API and gRPC-Web alike, so a browser app on another origin can
//! call either. `CORS_ALLOWED_ORIGINS` is `*` (the default) or a comma list of origins;
//! credentials are never allowed (tokens travel in `Authorization`, not in cookies).
//!
//! tower-http's `CorsLayer` writes the headers. Around it, [`middleware`] decides which
//! requests it sees: a preflight (OPTIONS with `Origin` and `Access-Control-Request-Method`)
//! from an allowed origin is answered here, 204, before the token check; an origin not in
//! the list gets no CORS header at all (its preflight a bare 204, as ZITADEL's answers);
//! a request without `Origin` is not a CORS request and passes untouched.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use common::config::ConfigError;
use tower::{Layer, ServiceExt};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The variable (and, as `--cors-allowed-origins`, the flag of `api serve`).
pub const VARIABLE: &str = "CORS_ALLOWED_ORIGINS";

/// What a browser may send: the gRPC-Web client's headers (SPEC 4), the JSON API's
/// (`x-request-id`, the W3C trace context), and gRPC's compression headers.
const ALLOWED_HEADERS: [&str; 11] = [
    "authorization",
    "content-type",
    "accept",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "grpc-encoding",
    "grpc-accept-encoding",
    "x-request-id",
    "traceparent",
    "tracestate",
];

/// What a browser app may read of an answer: the gRPC status (in the headers of a
/// trailers-only gRPC-Web answer), the request id, and the wait of a 429.
const EXPOSED_HEADERS: [&str; 5] = [
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "x-request-id",
    "retry-after",
];

/// The methods of the JSON API; gRPC-Web uses POST.
const ALLOWED_METHODS: [Method; 4] = [Method::GET, Method::POST, Method::PUT, Method::DELETE];

/// How long a browser may cache a preflight answer (browsers cap it lower).
const MAX_AGE: Duration = Duration::from_secs(3600);

/// The CORS policy of the API port.
#[derive(Clone, Debug)]
pub struct Cors {
    /// `None` for `*`; else the allowed origins, serialized as browsers send `Origin`.
    origins: Option<Arc<[HeaderValue]>>,
    layer: CorsLayer,
}

impl Cors {
    /// Parses `CORS_ALLOWED_ORIGINS`: `*`, or a comma list of `scheme://host[:port]` origins
    /// (a trailing `/` is tolerated; a default port is dropped and the host lower-cased, as
    /// a browser writes `Origin`).
    pub fn from_setting(raw: &str) -> Result<Cors, ConfigError> {
        let error = |message: String| ConfigError::new(VARIABLE, message);
        let entries: Vec<&str> = raw
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        if entries.is_empty() {
            return Err(error(
                "is empty: give `*` or a comma list of origins such as https://app.example".into(),
            ));
        }
        let origins = if entries == ["*"] {
            None
        } else {
            let mut origins = Vec::with_capacity(entries.len());
            for entry in entries {
                let origin = parse_origin(entry).map_err(|m| error(format!("{entry:?} {m}")))?;
                if !origins.contains(&origin) {
                    origins.push(origin);
                }
            }
            Some(Arc::<[HeaderValue]>::from(origins))
        };
        let allow_origin = match &origins {
            None => AllowOrigin::any(),
            Some(list) => AllowOrigin::list(list.iter().cloned()),
        };
        let layer = CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods(ALLOWED_METHODS)
            .allow_headers(ALLOWED_HEADERS.map(HeaderName::from_static))
            .expose_headers(EXPOSED_HEADERS.map(HeaderName::from_static))
            .allow_credentials(false)
            .max_age(MAX_AGE);
        Ok(Cors { origins, layer })
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        self.origins
            .as_ref()
            .is_none_or(|list| list.iter().any(|o| o == origin))
    }
}

/// `scheme://host[:port]` as a browser's `Origin` header spells it.
fn parse_origin(entry: &str) -> Result<HeaderValue, &'static str> {
    const SHAPE: &str = "is not an origin: expected `*` alone or scheme://host[:port], \
                         e.g. https://app.example";
    if entry.contains('*') {
        return Err("has a wildcard: only `*` alone (any origin) is supported");
    }
    let url = url::Url::parse(entry).map_err(|_| SHAPE)?;
    let bare = url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none();
    if !bare || !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(SHAPE);
    }
    HeaderValue::from_str(&url.origin().ascii_serialization()).map_err(|_| SHAPE)
}

/// The CORS middleware of the whole API port (see the module's documentation).
pub async fn middleware(State(cors): State<Cors>, request: Request, next: Next) -> Response {
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        let mut response = next.run(request).await;
        vary_on_origin(&cors, &mut response);
        return response;
    };
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if !cors.allows(origin) {
        let mut response = if preflight {
            no_content()
        } else {
            next.run(request).await
        };
        vary_on_origin(&cors, &mut response);
        return response;
    }
    if request.method() == Method::OPTIONS && !preflight {
        // tower-http would answer any OPTIONS as a preflight; this one is a plain request.
        let mut response = next.run(request).await;
        vary_on_origin(&cors, &mut response);
        return response;
    }
    let mut response = match cors.layer.layer(next).oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if preflight {
        *response.status_mut() = StatusCode::NO_CONTENT;
    }
    response
}

fn no_content() -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// With a list of origins an answer depends on `Origin`: caches must know it.
fn vary_on_origin(cors: &Cors, response: &mut Response) {
    if cors.origins.is_some() {
        response
            .headers_mut()
            .append(header::VARY, HeaderValue::from_static("origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins(raw: &str) -> Result<Option<Vec<String>>, String> {
        Cors::from_setting(raw)
            .map(|c| {
                c.origins
                    .map(|l| l.iter().map(|o| o.to_str().unwrap().to_owned()).collect())
            })
            .map_err(|e| e.to_string())
    }

    #[test]
    fn any_origin_or_a_list_as_browsers_write_them() {
        assert_eq!(origins("*"), Ok(None));
        assert_eq!(origins(" * "), Ok(None));
        assert_eq!(
            origins("https://App.Example, http://localhost:3000/,https://a.example:443"),
            Ok(Some(vec![
                "https://app.example".into(),
                "http://localhost:3000".into(),
                "https://a.example".into(),
            ]))
        );
    }

    #[test]
    fn anything_else_names_the_variable() {
        for bad in [
            "",
            " , ",
            "app.example",
            "https://app.example/path",
            "https://*.example",
            "*,https://app.example",
            "https://user@app.example",
            "https://app.example?x=1",
            "ftp://app.example",
            "null",
        ] {
            let e = origins(bad).expect_err(bad);
            assert!(
                e.starts_with("configuration error: CORS_ALLOWED_ORIGINS: "),
                "{bad:?}: {e}"
            );
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }
}
