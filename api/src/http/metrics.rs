//! The api's HTTP metrics: requests by route template, method and status, and their latency.
//! They join the shared registry of `common::metrics` (see [`HttpMetrics::register`]); labels
//! hold route templates, never ids.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: String,
}

/// The counters the request middleware feeds; clones share them.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: Family<HttpLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 14))
            }),
        }
    }
}

impl HttpMetrics {
    /// Adds these metrics to `registry` (the process's `/metrics`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            self.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route and method",
            self.duration.clone(),
        );
    }

    /// Counts one served request.
    pub fn observe(&self, route: String, method: String, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&HttpLabels {
                route: route.clone(),
                method: method.clone(),
                status,
            })
            .inc();
        self.duration
            .get_or_create(&RouteLabels { route, method })
            .observe(seconds);
    }
}
