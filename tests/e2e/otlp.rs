//! OpenTelemetry export over OTLP, switched on by the standard variables only.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentauth_grpc::ApiKey;
use agentauth_testkit::process::ServiceProcess;
use agentauth_testkit::wait_serving;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tonic::{Request, Response, Status};

/// A collector that keeps (service.name, span name) of every span it receives, and
/// (service.name, metric name, data points) of every metric.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<(String, String)>>>);

#[derive(Clone, Default)]
struct MetricsCollector(Arc<Mutex<Vec<(String, String, usize)>>>);

/// The `service.name` of a resource.
fn service_name(resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
    resource
        .iter()
        .flat_map(|r| &r.attributes)
        .find(|a| a.key == "service.name")
        .and_then(|a| a.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            other => format!("{other:?}"),
        })
        .unwrap_or_default()
}

#[tonic::async_trait]
impl MetricsService for MetricsCollector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        use opentelemetry_proto::tonic::metrics::v1::metric::Data;
        let mut seen = self.0.lock().expect("lock");
        for resource_metrics in request.into_inner().resource_metrics {
            let service = service_name(resource_metrics.resource.as_ref());
            for scope in resource_metrics.scope_metrics {
                for metric in scope.metrics {
                    let points = match &metric.data {
                        Some(Data::Histogram(h)) => {
                            h.data_points.iter().map(|p| p.count as usize).sum()
                        }
                        Some(Data::Sum(s)) => s.data_points.len(),
                        _ => 0,
                    };
                    seen.push((service.clone(), metric.name, points));
                }
            }
        }
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut seen = self.0.lock().expect("lock");
        for resource_spans in request.into_inner().resource_spans {
            let service = service_name(resource_spans.resource.as_ref());
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    seen.push((service.clone(), span.name));
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test]
async fn spans_and_metrics_reach_the_collector_named_by_otel_variables() {
    use agentauth_audit::{Event, Outcome, action};
    use agentauth_proto::audit::v1 as pb;

    let collector = Collector::default();
    let metrics = MetricsCollector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .add_service(MetricsServiceServer::new(metrics.clone()))
            .serve_with_incoming(tokio_stream_wrapper(listener)),
    );
    let key = ApiKey::generate();
    let process = ServiceProcess::start(
        "audit-log",
        &super::binaries::config("audit-log", &key),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ],
    )
    .expect("start");
    wait_serving(process.address(), "", Duration::from_secs(30))
        .await
        .expect("serving");
    let events = (0..3)
        .map(|_| {
            pb::Event::from(Event::new(
                "acme",
                "test",
                action::TOOL_EXECUTED,
                Outcome::Success,
            ))
        })
        .collect();
    pb::audit_log_client::AuditLogClient::new(
        agentauth_grpc::client::channel(&process.url(), Some(&key)).expect("channel"),
    )
    .append(pb::AppendRequest { events })
    .await
    .expect("append");
    let status = process
        .terminate(Duration::from_secs(10))
        .await
        .expect("stops");
    assert!(status.success());
    // Spans and metrics are flushed on the way out, so they are there once the process has
    // exited.
    let seen = collector.0.lock().expect("lock").clone();
    assert!(
        seen.iter().any(|(service, name)| service == "audit-log"
            && name.contains("grpc.health.v1.Health/Check")),
        "{seen:?}"
    );
    let seen = metrics.0.lock().expect("lock").clone();
    assert!(
        seen.iter()
            .any(|(service, name, points)| service == "audit-log"
                && name == "agentauth.audit.append_lag"
                && *points == 3),
        "the lag of the three appended events: {seen:?}"
    );
}

fn tokio_stream_wrapper(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener)
}

/// A process that exports nothing still continues the caller's trace, and the audit event a
/// request causes records that trace: compliance can follow an event to the request's spans.
#[tokio::test]
async fn an_audit_event_records_the_trace_of_the_request_that_caused_it() {
    audit_events_record_the_callers_trace(&[]).await;
}

/// Logs quieter than the request spans leave tracing as it is.
#[tokio::test]
async fn the_trace_is_recorded_whatever_rust_log_says() {
    audit_events_record_the_callers_trace(&[("RUST_LOG", "warn")]).await;
}

async fn audit_events_record_the_callers_trace(env: &[(&str, &str)]) {
    use agentauth_proto::audit::v1::audit_log_client::AuditLogClient;
    use agentauth_proto::audit::v1::{EventFilter, PurgeBeforeRequest, QueryRequest};

    let key = ApiKey::generate();
    let process = ServiceProcess::start(
        "audit-log",
        &super::binaries::config("audit-log", &key),
        env,
    )
    .expect("start");
    wait_serving(process.address(), "", Duration::from_secs(30))
        .await
        .expect("serving");
    let mut client = AuditLogClient::new(
        agentauth_grpc::client::channel(&process.url(), Some(&key)).expect("channel"),
    );
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut purge = Request::new(PurgeBeforeRequest {
        tenant: "acme".into(),
        before: Some(prost_types::Timestamp {
            seconds: 1,
            nanos: 0,
        }),
    });
    purge.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .expect("header"),
    );
    client.purge_before(purge).await.expect("purge");
    client
        .purge_before(PurgeBeforeRequest {
            tenant: "acme".into(),
            before: Some(prost_types::Timestamp {
                seconds: 2,
                nanos: 0,
            }),
        })
        .await
        .expect("purge without a trace header");

    let events = client
        .query(QueryRequest {
            filter: Some(EventFilter {
                tenant: "acme".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("query")
        .into_inner()
        .events;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].trace_id, trace_id);
    let second = &events[1].trace_id;
    assert!(
        second.len() == 32 && second != trace_id,
        "a request without a trace header starts its own trace: {second:?}"
    );
}
