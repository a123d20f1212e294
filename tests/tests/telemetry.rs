//! OpenTelemetry export: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, both processes export their
//! spans over OTLP/gRPC, and the worker's delivery span joins the trace of the request that
//! enqueued the mail (the trace context travels in the AMQP headers). A stand-in collector
//! served by the test receives the spans.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use serde_json::json;
use tests::{TestEnv, eventually};

#[derive(Debug, Clone)]
struct ReceivedSpan {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
}

#[derive(Default, Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().expect("collector lock");
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(ReceivedSpan {
                        service: service.clone(),
                        name: span.name,
                        trace_id: span.trace_id,
                        span_id: span.span_id,
                        parent_span_id: span.parent_span_id,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test]
async fn the_delivery_span_joins_the_trace_of_the_request() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the collector");
    let port = listener.local_addr().expect("collector address").port();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(collector.clone()))
        .serve_with_incoming(tokio_stream_from(listener));
    let server = tokio::spawn(server);

    let env = TestEnv::builder()
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        )
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .start()
        .await;
    let api = env.api();
    let user = api
        .post("/v3alpha/users", json!({}))
        .await
        .expect_status(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    api.put(
        &format!("/v3alpha/users/{user}/email"),
        json!({"email": {"address": "traced@example.com"}}),
    )
    .await
    .expect_status(200);
    env.sink
        .wait_for(1, std::time::Duration::from_secs(20))
        .await;

    let spans = collector.spans.clone();
    let (request, delivery) = eventually(
        "the request span and the delivery span at the collector",
        Duration::from_secs(20),
        || {
            let spans = spans.clone();
            async move {
                let spans = spans.lock().expect("collector lock").clone();
                let delivery = spans
                    .iter()
                    .find(|s| s.name == "deliver" && s.service.contains("contact-email-worker"))?
                    .clone();
                let request = spans
                    .iter()
                    .find(|s| {
                        s.name == "request"
                            && s.service.contains("contact-email-api")
                            && s.span_id == delivery.parent_span_id
                    })?
                    .clone();
                Some((request, delivery))
            }
        },
    )
    .await;
    assert_eq!(request.trace_id, delivery.trace_id);
    assert_eq!(delivery.parent_span_id, request.span_id);
    assert_eq!(request.trace_id.len(), 16);
    server.abort();
}

/// The listener as the stream of connections tonic's server takes.
fn tokio_stream_from(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    })
}
