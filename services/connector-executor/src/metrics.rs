//! connector-executor's OpenTelemetry metrics, exported over OTLP when the standard `OTEL_*`
//! variables ask for it (agentauth-telemetry); docs/operations.md reads its service-level
//! objectives from them.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter};

use agentauth_proto::executor::v1::Route;

use crate::Error;
use crate::trail::Trail;

/// Upper bounds of the latency histograms' buckets, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The instruments.
#[derive(Debug)]
pub(crate) struct Metrics {
    calls: Counter<u64>,
    added_latency: Histogram<f64>,
}

/// What a call was: a tool call or a proxied request, over REST or MCP.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallKind {
    pub kind: &'static str,
    pub route: Route,
}

impl Metrics {
    pub(crate) fn new(meter: &Meter) -> Self {
        Self {
            calls: meter
                .u64_counter("agentauth.executor.calls")
                .with_description(
                    "Tool calls and proxied requests, by kind, route and outcome (ok, \
                     asana_error, or the error reason)",
                )
                .build(),
            added_latency: meter
                .f64_histogram("agentauth.executor.added_latency")
                .with_unit("s")
                .with_description(
                    "A call's time in agentauth: its whole time less the time it waited for \
                     Asana (requests out, rate slots)",
                )
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
        }
    }

    /// One call of `what` that took `total` and ended as `result` (`Ok(is_error)` when Asana
    /// answered).
    pub(crate) fn call(
        &self,
        what: CallKind,
        result: Result<bool, &Error>,
        total: Duration,
        trail: &Trail,
    ) {
        let outcome = match result {
            Ok(false) => "ok".to_owned(),
            Ok(true) => "asana_error".to_owned(),
            Err(error) => error.reason(),
        };
        let kind = [
            KeyValue::new("kind", what.kind),
            KeyValue::new(
                "route",
                match what.route {
                    Route::Mcp => "mcp",
                    _ => "rest",
                },
            ),
        ];
        self.added_latency.record(
            total.saturating_sub(trail.waited_for_asana).as_secs_f64(),
            &kind,
        );
        let [kind, route] = kind;
        self.calls
            .add(1, &[kind, route, KeyValue::new("outcome", outcome)]);
    }
}
