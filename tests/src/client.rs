//! A small HTTP client for the API under test: a base URL and a bearer token, JSON in, and a
//! [`Resp`] out that keeps everything a test may assert on (status, headers, body as JSON and
//! as text). Transport failures panic: a test cannot continue without an answer; use
//! [`Api::try_send`] to assert that a request fails.

use std::fmt;
use std::time::Duration;

pub use reqwest::Method;
use reqwest::header::HeaderMap;
use serde::Serialize;
use serde_json::Value;

/// Client for one API base URL, optionally with a bearer token. Cheap to clone.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
    headers: Vec<(String, String)>,
}

/// A request body: bytes plus the content type to announce (none: no `Content-Type` header).
#[derive(Debug, Clone, Default)]
pub struct Body {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
}

impl Api {
    /// A client for `base_url` (such as `http://127.0.0.1:PORT`), sending `token` if given.
    pub fn new(base_url: impl Into<String>, token: Option<String>) -> Api {
        let client = reqwest::Client::builder()
            // Tests talk to 127.0.0.1 only; a proxy from the environment must not interfere.
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("build the HTTP client");
        Api {
            client,
            base: base_url.into().trim_end_matches('/').to_string(),
            token,
            headers: Vec::new(),
        }
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The token sent as `Authorization: Bearer ...`, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The same client without an `Authorization` header.
    pub fn without_token(&self) -> Api {
        Api {
            token: None,
            ..self.clone()
        }
    }

    /// The same client with another bearer token.
    pub fn with_token(&self, token: impl Into<String>) -> Api {
        Api {
            token: Some(token.into()),
            ..self.clone()
        }
    }

    /// The same client, sending one more header with every request (for example a raw
    /// `Authorization` value to test malformed ones; it replaces the bearer token's header).
    pub fn with_header(&self, name: impl Into<String>, value: impl Into<String>) -> Api {
        let mut api = self.clone();
        api.headers.push((name.into(), value.into()));
        api
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None).await
    }

    /// `DELETE path` without a body.
    pub async fn delete(&self, path: &str) -> Resp {
        self.send(Method::DELETE, path, None).await
    }

    /// `PUT path` with `body` as JSON.
    pub async fn put(&self, path: &str, body: impl Serialize) -> Resp {
        self.send(Method::PUT, path, Some(json_body(&body))).await
    }

    /// `POST path` with `body` as JSON.
    pub async fn post(&self, path: &str, body: impl Serialize) -> Resp {
        self.send(Method::POST, path, Some(json_body(&body))).await
    }

    /// `POST path` with raw bytes and the given content type (for 413/415/malformed JSON).
    pub async fn post_raw(&self, path: &str, body: impl Into<Vec<u8>>, content_type: &str) -> Resp {
        let body = Body {
            bytes: body.into(),
            content_type: Some(content_type.to_string()),
        };
        self.send(Method::POST, path, Some(body)).await
    }

    /// Any method, any body. `path` is appended to the base URL unless it is a full URL.
    /// Panics if no HTTP answer arrives.
    pub async fn send(&self, method: Method, path: &str, body: Option<Body>) -> Resp {
        let url = self.url(path);
        match self.try_send(method.clone(), path, body).await {
            Ok(resp) => resp,
            Err(e) => panic!("{method} {url}: no HTTP answer: {e}"),
        }
    }

    /// Like [`Api::send`], but a transport failure (connection refused, timeout) is returned.
    pub async fn try_send(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
    ) -> Result<Resp, reqwest::Error> {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        if let Some(body) = body {
            if let Some(content_type) = body.content_type {
                request = request.header(reqwest::header::CONTENT_TYPE, content_type);
            }
            request = request.body(body.bytes);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Resp {
            status,
            headers,
            json,
            text,
        })
    }

    /// The full URL for `path`.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else if path.starts_with('/') {
            format!("{}{path}", self.base)
        } else {
            format!("{}/{path}", self.base)
        }
    }
}

fn json_body(body: &impl Serialize) -> Body {
    Body {
        bytes: serde_json::to_vec(body).expect("serialize the request body as JSON"),
        content_type: Some("application/json".to_string()),
    }
}

/// An HTTP answer.
#[derive(Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    /// The body parsed as JSON, or `Null` when it is not JSON.
    pub json: Value,
    /// The body as (lossy) UTF-8 text.
    pub text: String,
}

impl Resp {
    /// A header's value, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `x-request-id` header.
    pub fn request_id(&self) -> Option<&str> {
        self.header("x-request-id")
    }

    /// `details[0].id` of a SPEC 3.6 error body, such as `COMMAND-nJ0TQFuRmP`.
    pub fn error_id(&self) -> Option<&str> {
        self.json.pointer("/details/0/id").and_then(Value::as_str)
    }

    /// The gRPC status `code` of an error body.
    pub fn code(&self) -> Option<i64> {
        self.json.get("code").and_then(Value::as_i64)
    }

    /// A string field by JSON pointer (such as `/details/sequence`); panics if absent or not
    /// a string.
    pub fn str_at(&self, pointer: &str) -> &str {
        self.json
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no string at {pointer} in {self:?}"))
    }

    /// Panics (showing the whole answer) unless the status is `expected`.
    #[track_caller]
    pub fn expect_status(self, expected: u16) -> Resp {
        assert_eq!(self.status, expected, "unexpected HTTP status: {self:?}");
        self
    }

    /// Panics unless the status is 2xx.
    #[track_caller]
    pub fn expect_success(self) -> Resp {
        assert!(
            (200..300).contains(&self.status),
            "expected a 2xx answer: {self:?}"
        );
        self
    }

    /// Panics unless this is an error answer with this HTTP status, gRPC code and error id.
    #[track_caller]
    pub fn expect_error(self, status: u16, code: i64, id: &str) -> Resp {
        assert_eq!(self.status, status, "unexpected HTTP status: {self:?}");
        assert_eq!(self.code(), Some(code), "unexpected error code: {self:?}");
        assert_eq!(self.error_id(), Some(id), "unexpected error id: {self:?}");
        self
    }
}

impl std::ops::Index<&str> for Resp {
    type Output = Value;

    /// `resp["details"]`: a top-level field of the JSON body (`Null` if absent).
    fn index(&self, key: &str) -> &Value {
        &self.json[key]
    }
}

impl fmt::Debug for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if let Some(id) = self.request_id() {
            write!(f, " (x-request-id {id})")?;
        }
        write!(f, ": {}", self.text)
    }
}
