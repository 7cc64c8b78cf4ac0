//! The metrics the service-level objectives of docs/operations.md read, from real calls:
//! connector-executor's calls by outcome and the latency it adds, audit-log's append lag.

use std::time::{Duration, Instant};

use asana_sandbox::seed::ALICE_PAT;
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::data::{
    AggregatedMetrics, HistogramDataPoint, MetricData, SumDataPoint,
};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use serde_json::json;

use crate::system::{Options, System};

/// The data points `exporter` holds of the metric `name`, as `pick` reads them.
fn points<T>(
    exporter: &InMemoryMetricExporter,
    name: &str,
    pick: impl Fn(&AggregatedMetrics) -> Vec<T>,
) -> Vec<T> {
    let mut points = Vec::new();
    for resource in exporter.get_finished_metrics().expect("metrics") {
        for scope in resource.scope_metrics() {
            for metric in scope.metrics().filter(|m| m.name() == name) {
                points.extend(pick(metric.data()));
            }
        }
    }
    points
}

fn histogram(exporter: &InMemoryMetricExporter, name: &str) -> Vec<HistogramDataPoint<f64>> {
    points(exporter, name, |data| match data {
        AggregatedMetrics::F64(MetricData::Histogram(h)) => h.data_points().cloned().collect(),
        _ => Vec::new(),
    })
}

fn sums(exporter: &InMemoryMetricExporter, name: &str) -> Vec<SumDataPoint<u64>> {
    points(exporter, name, |data| match data {
        AggregatedMetrics::U64(MetricData::Sum(s)) => s.data_points().cloned().collect(),
        _ => Vec::new(),
    })
}

fn has<'a>(mut attributes: impl Iterator<Item = &'a KeyValue>, key: &str, value: &str) -> bool {
    attributes.any(|kv| kv.key.as_str() == key && kv.value.as_str() == value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_counted_by_outcome_and_the_added_latency_leaves_out_asanas_time() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    // This test's process has no other meter provider (each test runs in its own process).
    opentelemetry::global::set_meter_provider(provider.clone());
    let system = System::start(Options::default()).await;
    system.connect_pat("alice", ALICE_PAT).await;
    system.slow_down("/api/1.0/users", 400);

    let started = Instant::now();
    let answered = system
        .execute(
            "asana-pat",
            "alice",
            "asana_api_get_user",
            json!({"user_gid": "me"}),
        )
        .await
        .expect("answered");
    assert!(!answered.is_error, "{}", answered.output_json);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "Asana took 400 ms: {took:?}"
    );
    let refused = system
        .execute("asana-pat", "alice", "asana_no_such_tool", json!({}))
        .await
        .expect_err("an unknown tool");
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    // audit-log runs in this process too: what it holds now was appended, and measured.
    let audited = system.audit_events(crate::system::TENANT).await.len() as u64;
    assert!(audited > 0);
    provider.force_flush().expect("flush");

    let calls = sums(&exporter, "agentauth.executor.calls");
    let ok = calls
        .iter()
        .find(|p| has(p.attributes(), "outcome", "ok"))
        .unwrap_or_else(|| panic!("an ok call: {calls:?}"));
    assert_eq!(ok.value(), 1);
    assert!(
        has(ok.attributes(), "kind", "tool") && has(ok.attributes(), "route", "rest"),
        "{:?}",
        ok.attributes().collect::<Vec<_>>()
    );
    assert!(
        calls
            .iter()
            .any(|p| has(p.attributes(), "outcome", "TOOL_NOT_FOUND") && p.value() == 1),
        "{calls:?}"
    );

    let added = histogram(&exporter, "agentauth.executor.added_latency");
    let count: u64 = added.iter().map(HistogramDataPoint::count).sum();
    assert_eq!(count, 2, "{added:?}");
    let max = added
        .iter()
        .filter_map(HistogramDataPoint::max)
        .fold(0.0, f64::max);
    assert!(
        max < 0.4,
        "the 400 ms Asana took are not agentauth's: at most {max} s added to a {took:?} call"
    );

    let lag = histogram(&exporter, "agentauth.audit.append_lag");
    let appended: u64 = lag.iter().map(HistogramDataPoint::count).sum();
    assert!(
        appended >= audited,
        "every appended event measured: {lag:?}"
    );
    let slowest = lag
        .iter()
        .filter_map(HistogramDataPoint::max)
        .fold(0.0, f64::max);
    assert!(
        slowest < 5.0,
        "appended within the emitter's flush, not minutes: {slowest} s"
    );
}
