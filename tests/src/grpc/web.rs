//! gRPC-Web by hand, as a browser's generated client sends it: a POST whose body is one
//! length-prefixed message frame (base64 text for `application/grpc-web-text`), answered with
//! message frames and a trailer frame holding the status, or with the status in the headers
//! (a trailers-only answer). Made by hand so the tests see exactly what goes over the wire.

use std::io::{Read, Write};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use reqwest::ClientBuilder;
use reqwest::header::HeaderMap;

/// An HTTP/1.1 client, as browsers speak gRPC-Web.
pub fn http1() -> reqwest::Client {
    client(reqwest::ClientBuilder::http1_only)
}

/// HTTP/2 without TLS from the first byte, as the API port speaks it.
pub fn http2() -> reqwest::Client {
    client(reqwest::ClientBuilder::http2_prior_knowledge)
}

/// A client for the test's own port (no proxy from the environment), speaking `version`.
fn client(version: fn(ClientBuilder) -> ClientBuilder) -> reqwest::Client {
    version(reqwest::Client::builder().no_proxy())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build the HTTP client")
}

/// `bytes` gzip-compressed, for a compressed message frame.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

/// A gzip-compressed message, decompressed; panics if it is not gzip.
pub fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("a gzip message");
    out
}

/// One length-prefixed message: flag (1 = compressed), 4-byte big-endian length, payload.
pub fn frame(compressed: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::from(compressed)];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A gRPC-Web answer taken apart.
#[derive(Debug)]
pub struct WebAnswer {
    pub version: reqwest::Version,
    pub http_status: u16,
    pub headers: HeaderMap,
    /// The message frames: (flag, payload).
    pub messages: Vec<(u8, Vec<u8>)>,
    /// The trailer frame's lines, names lower-cased.
    pub trailers: Vec<(String, String)>,
}

impl WebAnswer {
    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .map_or("", |v| v.to_str().unwrap())
    }

    /// A status field (`grpc-status`, `grpc-message`, ...), from the trailer frame or
    /// (trailers-only answer) the headers.
    pub fn status_field(&self, name: &str) -> Option<String> {
        self.trailers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| {
                self.headers
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
            })
    }

    /// `grpc-status`; panics if the answer has none.
    pub fn grpc_status(&self) -> String {
        self.status_field("grpc-status")
            .unwrap_or_else(|| panic!("no grpc-status in {self:?}"))
    }

    /// `grpc-message`, percent-decoded; empty when there is none.
    pub fn grpc_message(&self) -> String {
        let raw = self.status_field("grpc-message").unwrap_or_default();
        percent_encoding::percent_decode_str(&raw)
            .decode_utf8()
            .expect("grpc-message is UTF-8")
            .into_owned()
    }

    /// `grpc-status-details-bin`, base64-decoded (padded or not); panics if there is none.
    pub fn status_details(&self) -> Vec<u8> {
        let encoded = self
            .status_field("grpc-status-details-bin")
            .expect("grpc-status-details-bin");
        STANDARD_NO_PAD
            .decode(encoded.trim_end_matches('='))
            .expect("grpc-status-details-bin is base64")
    }

    /// The one message of a successful unary answer, decompressed if it was compressed.
    pub fn message(&self) -> Vec<u8> {
        assert_eq!(self.grpc_status(), "0", "{self:?}");
        assert_eq!(self.messages.len(), 1, "one message: {self:?}");
        let (flag, payload) = &self.messages[0];
        if *flag == 1 {
            gunzip(payload)
        } else {
            payload.clone()
        }
    }
}

/// Message frames (flag, payload) and trailer lines (name, value).
type Frames = (Vec<(u8, Vec<u8>)>, Vec<(String, String)>);

/// Splits a binary gRPC-Web body into message frames and the trailer frame (flag 0x80).
fn parse_frames(mut rest: &[u8]) -> Frames {
    let mut messages = Vec::new();
    let mut trailers = Vec::new();
    while !rest.is_empty() {
        assert!(rest.len() >= 5, "truncated gRPC-Web frame");
        let flag = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let payload = &rest[5..5 + len];
        rest = &rest[5 + len..];
        if flag & 0x80 != 0 {
            let text = std::str::from_utf8(payload).unwrap();
            for line in text.split("\r\n").filter(|l| !l.is_empty()) {
                let (k, v) = line.split_once(':').unwrap();
                trailers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        } else {
            messages.push((flag, payload.to_vec()));
        }
    }
    (messages, trailers)
}

/// A `grpc-web-text` body: base64 chunks one after the other, each padded on its own.
fn decode_text(body: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(body).expect("a grpc-web-text answer is text");
    assert!(
        text.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)),
        "not base64: {text:?}"
    );
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let end = match rest.find('=') {
            Some(i) => i + rest[i..].bytes().take_while(|&b| b == b'=').count(),
            None => rest.len(),
        };
        out.extend(STANDARD.decode(&rest[..end]).expect("base64 chunk"));
        rest = &rest[end..];
    }
    out
}

/// POSTs one gRPC-Web call: `framed` is the framed message (base64-encoded here for a
/// `grpc-web-text` content type); `headers` are added as given.
pub async fn web_call(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    framed: Vec<u8>,
) -> WebAnswer {
    let body = if content_type.starts_with("application/grpc-web-text") {
        STANDARD.encode(&framed).into_bytes()
    } else {
        framed
    };
    let mut request = client
        .post(url)
        .header("content-type", content_type)
        .header("x-grpc-web", "1")
        .body(body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("a gRPC-Web answer");
    let version = response.version();
    let http_status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let text = headers
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("application/grpc-web-text"));
    let raw = if text {
        decode_text(&bytes)
    } else {
        bytes.to_vec()
    };
    let (messages, trailers) = parse_frames(&raw);
    WebAnswer {
        version,
        http_status,
        headers,
        messages,
        trailers,
    }
}
