//! Tracing for every agentauth binary: structured logs on stderr, W3C trace context, and
//! OpenTelemetry export over OTLP (spans, and the services' metrics through the global meter
//! provider) when the standard `OTEL_*` variables ask for it.
//!
//! Spans always carry OpenTelemetry ids, exported or not, so a trace id that arrives on a
//! request is passed on to the next hop even when this process exports nothing.

use std::fmt;
use std::io::IsTerminal;

use opentelemetry::global;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter};
use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultFields, DefaultVisitor, Writer};
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
    #[error("cannot build an OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("invalid RUST_LOG filter: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Keeps the tracer and meter providers alive; [`Telemetry::shutdown`] flushes pending spans
/// and metrics.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    meters: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// Flushes and stops span and metric export. Call once, last, on the way out.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "telemetry shutdown failed");
        }
        if let Some(meters) = self.meters
            && let Err(error) = meters.shutdown()
        {
            tracing::warn!(%error, "metrics shutdown failed");
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

/// Whether the standard OpenTelemetry variables ask for OTLP metric export: as for spans, with
/// `OTEL_METRICS_EXPORTER` and `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`. The interval is
/// `OTEL_METRIC_EXPORT_INTERVAL` (milliseconds; 60 s by default).
pub fn otlp_metrics_requested(var: impl Fn(&str) -> Option<String>) -> bool {
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return false;
    }
    match var("OTEL_METRICS_EXPORTER").as_deref() {
        Some("none") => false,
        Some("otlp") => true,
        _ => {
            var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
                || var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").is_some()
        }
    }
}

/// Installs the global subscriber and propagator for the binary `service`.
///
/// Log levels come from `RUST_LOG` when set, otherwise `info` plus the service's
/// `default_directives` (e.g. `vaultrs=off` where a library logs errors the service handles);
/// spans are traced at those defaults whatever `RUST_LOG` says.
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
    let meters = if otlp_metrics_requested(|name| std::env::var(name).ok()) {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .build()?;
        let meters = SdkMeterProvider::builder()
            .with_resource(Resource::builder().with_service_name(service).build())
            .with_reader(PeriodicReader::builder(exporter).build())
            .build();
        global::set_meter_provider(meters.clone());
        Some(meters)
    } else {
        None
    };
    let defaults = || {
        EnvFilter::try_new(
            std::iter::once("info")
                .chain(default_directives.split(',').filter(|d| !d.is_empty()))
                .collect::<Vec<_>>()
                .join(","),
        )
    };
    // RUST_LOG chooses what is logged, not what is traced: the request spans (info) stay, so a
    // caller's trace is continued and audit events name it however quiet the logs are.
    let filter = EnvFilter::try_from_default_env().or_else(|_| defaults())?;
    let traced = defaults()?;
    let fmt = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .fmt_fields(TextFields::default())
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    Registry::default()
        .with(fmt.with_filter(filter))
        .with(otel_layer(&provider, service).with_filter(traced))
        .try_init()
        .map_err(|_| Error::AlreadyInstalled)?;
    Ok(Telemetry { provider, meters })
}

/// The text format's fields, without the `otel.*` ones: those tell the OpenTelemetry layer a
/// span's name and kind, repeat what the span's other fields say, and would be formatted for
/// every span of every request.
#[derive(Debug, Default)]
struct TextFields(DefaultFields);

impl<'a> MakeVisitor<Writer<'a>> for TextFields {
    type Visitor = WithoutOtel<DefaultVisitor<'a>>;

    fn make_visitor(&self, target: Writer<'a>) -> Self::Visitor {
        WithoutOtel(self.0.make_visitor(target))
    }
}

/// Passes every field but the `otel.*` ones on to the visitor it wraps.
struct WithoutOtel<V>(V);

fn kept(field: &Field) -> bool {
    !field.name().starts_with("otel.")
}

impl<V: Visit> Visit for WithoutOtel<V> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if kept(field) {
            self.0.record_f64(field, value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if kept(field) {
            self.0.record_i64(field, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if kept(field) {
            self.0.record_u64(field, value);
        }
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        if kept(field) {
            self.0.record_i128(field, value);
        }
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        if kept(field) {
            self.0.record_u128(field, value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if kept(field) {
            self.0.record_bool(field, value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if kept(field) {
            self.0.record_str(field, value);
        }
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        if kept(field) {
            self.0.record_bytes(field, value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if kept(field) {
            self.0.record_error(field, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if kept(field) {
            self.0.record_debug(field, value);
        }
    }
}

impl<V: VisitOutput<fmt::Result>> VisitOutput<fmt::Result> for WithoutOtel<V> {
    fn finish(self) -> fmt::Result {
        self.0.finish()
    }
}

impl<V: VisitFmt> VisitFmt for WithoutOtel<V> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        self.0.writer()
    }
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
///
/// A span's parent is the enclosing `tracing` span (or the remote context set on it), so the
/// layer does not also activate an OpenTelemetry context on every poll: nothing in agentauth
/// reads `opentelemetry::Context::current()`. Source locations, thread names and busy/idle
/// timings are left out; each costs work on every span of every request and says nothing an
/// operator reads from a request's trace.
pub fn otel_layer<S>(provider: &SdkTracerProvider, service: &'static str) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_context_activation(false)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_tracer(provider.tracer(service))
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
    fn metric_export_follows_the_standard_variables() {
        assert!(!otlp_metrics_requested(vars(&[])));
        assert!(otlp_metrics_requested(vars(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://collector:4317"
        )])));
        assert!(otlp_metrics_requested(vars(&[(
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "http://collector:4317"
        )])));
        assert!(!otlp_metrics_requested(vars(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://collector:4317"
        )])));
        assert!(!otlp_metrics_requested(vars(&[
            ("OTEL_METRICS_EXPORTER", "none"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
        ])));
        assert!(!otlp_metrics_requested(vars(&[
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_METRICS_EXPORTER", "otlp"),
        ])));
    }

    #[test]
    fn text_lines_keep_span_fields_but_not_the_otel_ones() {
        #[derive(Clone, Default)]
        struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("buffer").extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = Registry::default().with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(TextFields::default())
                .with_ansi(false)
                .with_writer(move || writer.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "grpc.server",
                otel.name = "/a.B/C",
                otel.kind = "server",
                rpc.method = "C"
            );
            let _entered = span.enter();
            tracing::info!(tenant = "acme", "refused \x1b[31m");
        });
        let line = String::from_utf8(buffer.0.lock().expect("buffer").clone()).expect("utf-8");
        assert!(line.contains(r#"grpc.server{rpc.method="C"}"#), "{line}");
        assert!(line.contains(r#"refused \x1b[31m tenant="acme""#), "{line}");
        assert!(!line.contains("otel."), "{line}");
    }

    #[test]
    fn log_format_parses_known_names_only() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
