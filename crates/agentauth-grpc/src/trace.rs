//! W3C trace context in gRPC metadata (HTTP/2 headers), in both directions.

use opentelemetry::global;
use opentelemetry::propagation::{Extractor, Injector};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The server span of one inbound request, continuing the caller's trace when it sent one.
pub(crate) fn server_span(request: &http::Request<()>) -> Span {
    let path = request.uri().path();
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = %path,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
    );
    let parent =
        global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(request.headers())));
    // A request without usable trace headers simply starts a new trace.
    let _ = span.set_parent(parent);
    span
}

/// The id of the trace the current span belongs to, as 32 lowercase hex digits, or `None`
/// outside any span (e.g. a background task that no request started).
pub fn current_trace_id() -> Option<String> {
    use opentelemetry::trace::{TraceContextExt as _, TraceId};
    let context = Span::current().context();
    let trace_id = context.span().span_context().trace_id();
    (trace_id != TraceId::INVALID).then(|| trace_id.to_string())
}

/// Writes the current span's context into outbound request headers.
pub(crate) fn inject_current(headers: &mut http::HeaderMap) {
    let context = Span::current().context();
    global::get_text_map_propagator(|p| p.inject_context(&context, &mut HeaderInjector(headers)));
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
