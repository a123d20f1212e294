//! The HTTP/JSON surface: routes, extractors, error rendering, and the middleware that gives
//! every request an id (`x-request-id`, tower-http's request-id layers) and a span.

pub mod cors;
pub mod dto;
pub mod error;
pub mod extract;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod routes;

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use common::error::{Code, Rejection};
use common::trace::{TraceContext, TraceParent};
use rand::Rng;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tracing::Instrument;

use crate::state::AppState;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static TRACEPARENT_HEADER: HeaderName = HeaderName::from_static("traceparent");

/// The whole application on the API port: the JSON routes, the `grpc` routes (SPEC 4: one
/// port), the 404 fallback, CORS (before any token check), and around all of them the
/// request id (a sane `x-request-id` is kept, otherwise one is made; every response carries
/// it) and the request's span, log line, metrics and trace context.
pub fn app(state: AppState, grpc: Router, cors: cors::Cors) -> Router {
    Router::new()
        .merge(
            routes::router().route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                extract::require_token,
            )),
        )
        .merge(health::router())
        .with_state(state.clone())
        .merge(grpc)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(cors, cors::middleware))
        .layer(axum::middleware::from_fn_with_state(state, request_context))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), RandomRequestId))
        .layer(axum::middleware::map_request(drop_unusable_request_id))
}

/// Removes an incoming `x-request-id` that is empty, longer than 128 bytes or not visible
/// ASCII, so [`SetRequestIdLayer`] makes one instead: the id goes into every log line.
async fn drop_unusable_request_id(mut request: Request) -> Request {
    let usable = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()));
    if !usable {
        request.headers_mut().remove(&REQUEST_ID);
    }
    request
}

/// Request ids made here: 32 random hex digits, the shape of a trace id, so a request without
/// `traceparent` can use its id as its trace id.
#[derive(Debug, Clone, Copy)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        let id = format!("{:032x}", rand::rng().random::<u128>());
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

/// A known path with a method it does not serve: 405 with the error body every answer has
/// (code 12, UNIMPLEMENTED, as ZITADEL's gateway answers).
async fn method_not_allowed() -> Response {
    error::ApiError::Http(
        StatusCode::METHOD_NOT_ALLOWED,
        Rejection::new(
            Code::Unimplemented,
            "API-M405x",
            "Method not allowed on this route",
        ),
    )
    .into_response()
}

async fn not_found() -> Response {
    error::ApiError::from(Rejection::new(Code::NotFound, "API-R0uT3", "No such route"))
        .into_response()
}

/// Runs the request in a span that carries its id and its [`TraceContext`] (an extension the
/// calls that enqueue mail read), logs the outcome and counts it in the HTTP metrics.
async fn request_context(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().clone();
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        trace_id = tracing::field::Empty,
        method = %method,
        route = %route
    );
    let traceparent = request_trace(&span, &request, &request_id);
    if let Some(tp) = TraceParent::parse(&traceparent) {
        span.record("trace_id", tp.trace_id.as_str());
    }
    request
        .extensions_mut()
        .insert(TraceContext::new(traceparent));
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    if status == 413 {
        // The rest of the body was not read: the connection cannot carry another request.
        extract::close_connection(&mut response);
    }
    let elapsed = started.elapsed();
    span.in_scope(|| {
        tracing::info!(
            status,
            elapsed_ms = elapsed.as_millis() as u64,
            "request served"
        );
    });
    state
        .http_metrics
        .observe(route, method.to_string(), status, elapsed.as_secs_f64());
    response
}

/// The trace context of a request: the caller's `traceparent` is joined; without one, the
/// OpenTelemetry trace when exporting, else the request id (32 hex digits) as the trace id,
/// so request logs, delivery logs and traces share one key.
fn request_trace(span: &tracing::Span, request: &Request, request_id: &str) -> String {
    let incoming = request
        .headers()
        .get(&TRACEPARENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| TraceParent::parse(v).is_some());
    common::trace::set_parent(span, incoming);
    common::trace::traceparent_of(span).unwrap_or_else(|| {
        let trace_id = incoming
            .and_then(TraceParent::parse)
            .map_or_else(|| request_id.to_owned(), |t| t.trace_id);
        TraceParent::child_of(Some(&trace_id)).header()
    })
}
