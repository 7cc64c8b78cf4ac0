//! Tracing for every agentauth binary: structured logs on stderr, W3C trace context, and
//! OpenTelemetry export over OTLP when the standard `OTEL_*` variables ask for it.
//!
//! Spans always carry OpenTelemetry ids, exported or not, so a trace id that arrives on a
//! request is passed on to the next hop even when this process exports nothing.

use std::io::IsTerminal;

use opentelemetry::global;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown log format `{other}` (expected `text` or `json`)"
            )),
        }
    }
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot build the OTLP span exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("invalid RUST_LOG filter: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Keeps the tracer provider alive; [`Telemetry::shutdown`] flushes pending spans.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Flushes and stops span export. Call once, last, on the way out.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "telemetry shutdown failed");
        }
    }
}

/// Whether the standard OpenTelemetry variables ask for OTLP span export.
///
/// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off; otherwise an OTLP
/// endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) or
/// `OTEL_TRACES_EXPORTER=otlp` turns it on.
pub fn otlp_requested(var: impl Fn(&str) -> Option<String>) -> bool {
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return false;
    }
    match var("OTEL_TRACES_EXPORTER").as_deref() {
        Some("none") => false,
        Some("otlp") => true,
        _ => {
            var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
                || var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        }
    }
}

/// Installs the global subscriber and propagator for the binary `service`.
///
/// Log levels come from `RUST_LOG` when set, otherwise `info` plus the service's
/// `default_directives` (e.g. `vaultrs=off` where a library logs errors the service handles).
/// Must be called from within a Tokio runtime (the OTLP gRPC exporter needs one).
pub fn init(
    service: &'static str,
    format: LogFormat,
    default_directives: &str,
) -> Result<Telemetry, Error> {
    let exporter = if otlp_requested(|name| std::env::var(name).ok()) {
        Some(
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()?,
        )
    } else {
        None
    };
    let provider = tracer_provider(service, exporter);
    let filter = EnvFilter::try_from_default_env().or_else(|_| {
        EnvFilter::try_new(
            std::iter::once("info")
                .chain(default_directives.split(',').filter(|d| !d.is_empty()))
                .collect::<Vec<_>>()
                .join(","),
        )
    })?;
    let fmt = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    Registry::default()
        .with(filter)
        .with(fmt)
        .with(otel_layer(&provider, service))
        .try_init()
        .map_err(|_| Error::AlreadyInstalled)?;
    Ok(Telemetry { provider })
}

/// A tracer provider for `service` exporting to `exporter` (batched), or to nothing. Also
/// installs the W3C trace-context propagator used on every gRPC and HTTP hop.
pub fn tracer_provider(
    service: &'static str,
    exporter: Option<impl SpanExporter + 'static>,
) -> SdkTracerProvider {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let builder = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(service).build());
    match exporter {
        Some(exporter) => builder.with_batch_exporter(exporter).build(),
        None => builder.build(),
    }
}

/// The `tracing` layer that gives every span an OpenTelemetry context from `provider`.
pub fn otel_layer<S>(provider: &SdkTracerProvider, service: &'static str) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer(service))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn export_follows_the_standard_variables() {
        assert!(!otlp_requested(vars(&[])));
        assert!(otlp_requested(vars(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://collector:4317"
        )])));
        assert!(otlp_requested(vars(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://collector:4317"
        )])));
        assert!(otlp_requested(vars(&[("OTEL_TRACES_EXPORTER", "otlp")])));
        assert!(!otlp_requested(vars(&[
            ("OTEL_TRACES_EXPORTER", "none"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
        ])));
        assert!(!otlp_requested(vars(&[
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "otlp"),
        ])));
    }

    #[test]
    fn log_format_parses_known_names_only() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
