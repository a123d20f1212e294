//! W3C trace context (`traceparent`) carried from the API request that enqueued a mail, on
//! the job row and in the AMQP headers, to the worker's delivery span, so the logs (and
//! traces, when exported) of one request and its mail join up.
//!
//! The api's request middleware makes each request's [`TraceContext`] and hands it, as a
//! value, to the call that may enqueue a mail; the call passes its `traceparent` to the
//! domain command (`commands::UserRef::trace`), which stores it with the job it enqueues. No
//! ambient (task- or thread-local) state is involved.

use std::collections::HashMap;

use opentelemetry_sdk::propagation::TraceContextPropagator;

use rand::Rng;

/// A parsed `traceparent`: version 00, 16-byte trace id, 8-byte parent span id, flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: String,
    pub span_id: String,
    pub sampled: bool,
}

impl TraceParent {
    /// Parses `00-<32 hex>-<16 hex>-<2 hex>`; ids of all zeros are invalid.
    pub fn parse(raw: &str) -> Option<Self> {
        let mut parts = raw.trim().split('-');
        let (version, trace_id, span_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        };
        if version != "00" || !hex(trace_id, 32) || !hex(span_id, 16) || !hex(flags, 2) {
            return None;
        }
        if trace_id.bytes().all(|b| b == b'0') || span_id.bytes().all(|b| b == b'0') {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(TraceParent {
            trace_id: trace_id.to_owned(),
            span_id: span_id.to_owned(),
            sampled: flags & 1 == 1,
        })
    }

    /// A new span in the trace `trace_id` (a random trace when `None` or invalid).
    pub fn child_of(trace_id: Option<&str>) -> Self {
        let mut rng = rand::rng();
        let trace_id = trace_id
            .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_ascii_lowercase)
            .filter(|t| !t.bytes().all(|b| b == b'0'))
            .unwrap_or_else(|| format!("{:032x}", rng.random::<u128>() | 1));
        TraceParent {
            trace_id,
            span_id: format!("{:016x}", rng.random::<u64>() | 1),
            sampled: true,
        }
    }

    pub fn header(&self) -> String {
        format!(
            "00-{}-{}-{}",
            self.trace_id,
            self.span_id,
            if self.sampled { "01" } else { "00" }
        )
    }
}

/// The trace context a request hands on to the mail it enqueues: a `traceparent` value,
/// stored on the job and sent in the AMQP headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext(String);

impl TraceContext {
    /// Wraps a `traceparent` value (checked by whoever made it).
    pub fn new(traceparent: String) -> Self {
        TraceContext(traceparent)
    }

    pub fn traceparent(&self) -> &str {
        &self.0
    }

    pub fn into_traceparent(self) -> String {
        self.0
    }
}

/// Makes `span` a child of `traceparent` for OpenTelemetry export (no-op when not
/// exporting). Call it before the span is first entered.
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    use opentelemetry::propagation::TextMapPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let Some(tp) = traceparent.filter(|_| crate::telemetry::exporting()) else {
        return;
    };
    let carrier = HashMap::from([("traceparent".to_owned(), tp.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(parent);
}

/// The `traceparent` of `span` in OpenTelemetry, to hand on to the worker; `None` when not
/// exporting.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if !crate::telemetry::exporting() {
        return None;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_traceparents_only() {
        let tp =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(tp.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(tp.sampled);
        assert_eq!(
            tp.header(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert!(
            TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none()
        );
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_none()
        );
        assert!(TraceParent::parse("garbage").is_none());
    }

    #[test]
    fn children_keep_the_trace_and_get_a_new_span() {
        let child = TraceParent::child_of(Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(child.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(child.span_id.len(), 16);
        assert!(TraceParent::parse(&child.header()).is_some());
        let fresh = TraceParent::child_of(Some("not-a-trace-id"));
        assert_eq!(fresh.trace_id.len(), 32);
    }
}
