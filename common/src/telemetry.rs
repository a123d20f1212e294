//! One place sets up `tracing`: JSON lines or pretty output on stderr, filtered by
//! `RUST_LOG`, and — when `OTEL_EXPORTER_OTLP_ENDPOINT` is set — OpenTelemetry export of the
//! spans over OTLP/gRPC (the standard `OTEL_*` variables configure the exporter).
//!
//! Call [`init`] inside the tokio runtime (the OTLP client needs it) and keep the returned
//! [`Telemetry`] until the process ends: dropping it flushes the spans not yet exported.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported to OpenTelemetry (and so carry OpenTelemetry contexts).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Keeps the exporter alive; flushes it on drop.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: flushing OpenTelemetry spans failed: {e}");
        }
    }
}

/// Sets up logging (and tracing export) for the process `service` (`api`, `worker`).
pub fn init(format: LogFormat, service: &'static str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,lapin=warn,amq_protocol=warn,h2=warn,tower=warn"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Pretty => fmt.boxed(),
    };
    let (provider, otel_error) = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.trim().is_empty() => match exporter(service) {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(e)),
        },
        _ => (None, None),
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .is_ok();
    if let Some(e) = otel_error {
        tracing::warn!(error = %e, "OpenTelemetry export is off: the exporter could not be built");
    }
    if installed && provider.is_some() {
        EXPORTING.store(true, Ordering::Relaxed);
        tracing::info!("exporting traces to OTEL_EXPORTER_OTLP_ENDPOINT");
    }
    Telemetry { provider }
}

fn exporter(service: &'static str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| e.to_string())?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(format!("contact-email-{service}"))
                .build(),
        )
        .build())
}
