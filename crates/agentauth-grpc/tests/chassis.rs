//! The chassis, served in-process with a real listener: authentication, tenant binding,
//! health and readiness, reflection, graceful drain and trace propagation.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use agentauth_grpc::server::Api;
use agentauth_grpc::{ApiKey, Caller, CallerConfig, Policy, Readiness, Role, Server, ServerConfig};
use agentauth_proto::audit::v1 as pb;
use agentauth_proto::audit::v1::audit_log_client::AuditLogClient;
use agentauth_proto::audit::v1::audit_log_server::{AuditLog, AuditLogServer, SERVICE_NAME};
use agentauth_testkit::{assert_eventually, health_status};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::trace::InMemorySpanExporter;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::codegen::BoxStream;
use tonic::{Code, Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_types::StatusExt;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

/// The probe's RPCs: `reader` may call only `Query`.
const POLICY: Policy = Policy {
    service: SERVICE_NAME,
    rpcs: &["Append", "Query", "Export", "VerifyChain", "PurgeBefore"],
    roles: &[Role {
        name: "reader",
        purpose: "the test's caller",
        rpcs: &["Query"],
    }],
};

/// A stand-in AuditLog whose `Query` checks the tenant, optionally waits, and records the
/// trace id it ran under.
#[derive(Clone, Default)]
struct Probe {
    delay: Duration,
    arrived: Arc<tokio::sync::Notify>,
    trace_ids: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl AuditLog for Probe {
    async fn query(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::QueryResponse>, Status> {
        let tenant = request.get_ref().filter.clone().unwrap_or_default().tenant;
        Caller::of(&request)?.check_tenant(&tenant)?;
        let trace_id = tracing::Span::current()
            .context()
            .span()
            .span_context()
            .trace_id();
        self.trace_ids
            .lock()
            .expect("lock")
            .push(trace_id.to_string());
        self.arrived.notify_one();
        tokio::time::sleep(self.delay).await;
        Ok(Response::new(pb::QueryResponse::default()))
    }

    async fn append(
        &self,
        _: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        Err(Status::unimplemented("probe"))
    }

    type ExportStream = BoxStream<pb::ExportResponse>;

    async fn export(
        &self,
        _: Request<pb::ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        Err(Status::unimplemented("probe"))
    }

    async fn verify_chain(
        &self,
        _: Request<pb::VerifyChainRequest>,
    ) -> Result<Response<pb::VerifyChainResponse>, Status> {
        Err(Status::unimplemented("probe"))
    }

    async fn purge_before(
        &self,
        _: Request<pb::PurgeBeforeRequest>,
    ) -> Result<Response<pb::PurgeBeforeResponse>, Status> {
        Err(Status::unimplemented("probe"))
    }
}

#[derive(Clone)]
struct Switch(Arc<AtomicBool>);

impl Readiness for Switch {
    async fn check(&self) -> Result<(), String> {
        if self.0.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("switched off".to_owned())
        }
    }
}

struct Running {
    address: SocketAddr,
    shutdown: CancellationToken,
    served: JoinHandle<Result<(), agentauth_grpc::server::Error>>,
    acme_key: ApiKey,
}

impl Running {
    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn client(
        &self,
        key: Option<&ApiKey>,
    ) -> AuditLogClient<agentauth_grpc::client::AuthenticatedChannel> {
        AuditLogClient::new(agentauth_grpc::client::channel(&self.url(), key).expect("channel"))
    }
}

async fn serve(probe: Probe, ready: Switch) -> Running {
    let acme_key = ApiKey::generate();
    serve_keys(probe, ready, acme_key, None).await
}

/// Serves `probe` to the caller `acme-agent` holding `acme_key` and, while its key is being
/// rotated, `previous` too.
async fn serve_keys(
    probe: Probe,
    ready: Switch,
    acme_key: ApiKey,
    previous: Option<&ApiKey>,
) -> Running {
    tracing_installed();
    let config = ServerConfig {
        readiness_interval: Duration::from_millis(20),
        shutdown_grace: Duration::from_secs(5),
        callers: vec![CallerConfig {
            name: "acme-agent".into(),
            key_sha256: acme_key.hash(),
            previous_key_sha256: previous.map(ApiKey::hash),
            tenants: vec!["acme".into()],
            connections: vec!["*".into()],
            tools: vec!["*".into()],
            roles: vec!["reader".into()],
            rpcs: Vec::new(),
        }],
        ..ServerConfig::default()
    };
    let server = Server::new("probe", config, &[&POLICY]).expect("valid config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let api = Api {
        routes: tonic::service::Routes::new(AuditLogServer::new(probe)),
        descriptors: agentauth_proto::FILE_DESCRIPTOR_SET,
    };
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(server.serve(listener, api, ready, shutdown.clone()));
    Running {
        address,
        shutdown,
        served,
        acme_key,
    }
}

fn query(tenant: &str) -> pb::QueryRequest {
    pb::QueryRequest {
        filter: Some(pb::EventFilter {
            tenant: tenant.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn on() -> Switch {
    Switch(Arc::new(AtomicBool::new(true)))
}

/// One global subscriber for this test binary, exporting spans to memory.
fn tracing_installed() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        agentauth_telemetry::tracer_provider("chassis-test", None::<InMemorySpanExporter>);
        let subscriber = tracing_subscriber::registry()
            .with(agentauth_telemetry::otel_layer(&provider, "chassis-test"));
        tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
        // Keep the provider alive for the whole test binary.
        std::mem::forget(provider);
        exporter
    })
}

#[tokio::test]
async fn rpc_requires_a_known_key_and_health_does_not() {
    let running = serve(Probe::default(), on()).await;
    agentauth_testkit::wait_serving(running.address, "", Duration::from_secs(5))
        .await
        .expect("serving");
    assert_eq!(
        health_status(running.address, SERVICE_NAME)
            .await
            .expect("health"),
        ServingStatus::Serving
    );

    let missing = running
        .client(None)
        .query(query("acme"))
        .await
        .expect_err("no key");
    assert_eq!(missing.code(), Code::Unauthenticated);
    let wrong = running
        .client(Some(&ApiKey::generate()))
        .query(query("acme"))
        .await
        .expect_err("wrong key");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    running
        .client(Some(&running.acme_key))
        .query(query("acme"))
        .await
        .expect("authorised call passes");
}

/// A caller's key rotated with an overlap window: while the configuration names the old key as
/// `previous_key_sha256` both keys are admitted as the same caller; once the entry is removed
/// (and the service restarted, as configuration is read at start) the old key is refused.
#[tokio::test]
async fn a_rotated_callers_old_key_works_during_the_overlap_and_is_refused_after() {
    let (old, new) = (ApiKey::generate(), ApiKey::generate());
    let overlap = serve_keys(Probe::default(), on(), new.clone(), Some(&old)).await;
    for key in [&old, &new] {
        overlap
            .client(Some(key))
            .query(query("acme"))
            .await
            .expect("both keys are admitted during the overlap");
        let other_tenant = overlap
            .client(Some(key))
            .query(query("globex"))
            .await
            .expect_err("either key is the same caller, bound to acme");
        assert_eq!(other_tenant.code(), Code::PermissionDenied);
    }
    overlap.shutdown.cancel();
    overlap.served.await.expect("joined").expect("served");

    let after = serve_keys(Probe::default(), on(), new.clone(), None).await;
    after
        .client(Some(&new))
        .query(query("acme"))
        .await
        .expect("the new key");
    let refused = after
        .client(Some(&old))
        .query(query("acme"))
        .await
        .expect_err("the old key, once removed");
    assert_eq!(refused.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn an_rpc_outside_the_callers_roles_is_refused_before_its_handler() {
    let running = serve(Probe::default(), on()).await;
    let status = running
        .client(Some(&running.acme_key))
        .append(pb::AppendRequest::default())
        .await
        .expect_err("the caller's role has only Query");
    assert_eq!(status.code(), Code::PermissionDenied);
    let info = status.get_details_error_info().expect("ErrorInfo detail");
    assert_eq!(info.reason, "RPC_NOT_ALLOWED");
    assert_eq!(
        info.metadata.get("rpc").map(String::as_str),
        Some("agentauth.audit.v1.AuditLog/Append")
    );
    let unknown = running
        .client(None)
        .append(pb::AppendRequest::default())
        .await
        .expect_err("no key");
    assert_eq!(
        unknown.code(),
        Code::Unauthenticated,
        "authentication comes before the RPC check"
    );
}

#[tokio::test]
async fn a_policy_that_does_not_match_the_contract_is_refused_at_start() {
    const SHORT: Policy = Policy {
        service: SERVICE_NAME,
        rpcs: &["Query"],
        roles: &[],
    };
    let key = ApiKey::generate();
    let config = ServerConfig {
        callers: vec![CallerConfig {
            name: "x".into(),
            key_sha256: key.hash(),
            tenants: vec!["*".into()],
            connections: vec!["*".into()],
            tools: vec!["*".into()],
            roles: Vec::new(),
            rpcs: vec!["Query".into()],
            previous_key_sha256: None,
        }],
        ..ServerConfig::default()
    };
    let server = Server::new("probe", config, &[&SHORT]).expect("the callers are valid");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api = Api {
        routes: tonic::service::Routes::new(AuditLogServer::new(Probe::default())),
        descriptors: agentauth_proto::FILE_DESCRIPTOR_SET,
    };
    let error = server
        .serve(listener, api, on(), CancellationToken::new())
        .await
        .expect_err("Append, Export, VerifyChain and PurgeBefore are missing");
    assert!(error.to_string().contains("the contract has"), "{error}");
}

#[tokio::test]
async fn caller_bound_to_one_tenant_is_refused_another() {
    let running = serve(Probe::default(), on()).await;
    let status = running
        .client(Some(&running.acme_key))
        .query(query("globex"))
        .await
        .expect_err("other tenant");
    assert_eq!(status.code(), Code::PermissionDenied);
    let info = status.get_details_error_info().expect("ErrorInfo detail");
    assert_eq!(info.reason, "CALLER_NOT_ALLOWED");
    assert_eq!(
        info.metadata.get("tenant").map(String::as_str),
        Some("globex")
    );
}

#[tokio::test]
async fn reflection_lists_the_api_without_a_key() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let running = serve(Probe::default(), on()).await;
    let channel = tonic::transport::Endpoint::from_shared(running.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection answers without a key")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("stream")
        .expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&SERVICE_NAME.to_owned()), "{names:?}");
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
}

#[tokio::test]
async fn health_follows_readiness_with_damping() {
    let switch = Switch(Arc::new(AtomicBool::new(false)));
    let running = serve(Probe::default(), switch.clone()).await;
    // Not ready yet: the listener answers, but reports NOT_SERVING.
    assert_eventually!(
        Duration::from_secs(5),
        async { health_status(running.address, "").await.ok() == Some(ServingStatus::NotServing) },
        "health answers NOT_SERVING before the dependency is ready"
    );
    assert_eq!(
        health_status(running.address, agentauth_grpc::server::LIVENESS)
            .await
            .expect("liveness"),
        ServingStatus::Serving,
        "liveness never depends on a dependency"
    );
    switch.0.store(true, Ordering::SeqCst);
    agentauth_testkit::wait_serving(running.address, "", Duration::from_secs(5))
        .await
        .expect("serving once ready");
    switch.0.store(false, Ordering::SeqCst);
    assert_eventually!(
        Duration::from_secs(5),
        async {
            health_status(running.address, SERVICE_NAME).await.ok()
                == Some(ServingStatus::NotServing)
        },
        "a dependency that stays down takes the service out of rotation"
    );
}

#[tokio::test]
async fn shutdown_drains_in_flight_calls_then_stops() {
    let probe = Probe {
        delay: Duration::from_millis(400),
        ..Probe::default()
    };
    let arrived = probe.arrived.clone();
    let running = serve(probe, on()).await;
    let mut client = running.client(Some(&running.acme_key));
    let in_flight = tokio::spawn(async move { client.query(query("acme")).await });
    arrived.notified().await;
    running.shutdown.cancel();
    in_flight
        .await
        .expect("task")
        .expect("the in-flight call completes during the drain");
    tokio::time::timeout(Duration::from_secs(5), running.served)
        .await
        .expect("serve returns after the drain")
        .expect("task")
        .expect("clean stop");
    assert!(
        tokio::net::TcpStream::connect(running.address)
            .await
            .is_err(),
        "the listener is closed after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_crosses_the_grpc_hop() {
    let exporter = tracing_installed();
    let probe = Probe::default();
    let seen = probe.trace_ids.clone();
    let running = serve(probe, on()).await;
    let caller_span = tracing::info_span!("caller-operation");
    let trace_id = caller_span.context().span().span_context().trace_id();
    let mut client = running.client(Some(&running.acme_key));
    // `instrument` enters the span only while the client future is polled, so the server's
    // tasks never run inside it: the trace id can only reach them through the metadata.
    client
        .query(query("acme"))
        .instrument(caller_span)
        .await
        .expect("call");
    assert_eq!(
        seen.lock().expect("lock").as_slice(),
        [trace_id.to_string()]
    );
    let server_span = exporter
        .get_finished_spans()
        .expect("spans")
        .into_iter()
        .find(|s| s.name.contains("Query") && s.span_context.trace_id() == trace_id)
        .expect("the server span was exported under the caller's trace id");
    assert_ne!(
        server_span.span_context.span_id(),
        opentelemetry::trace::SpanId::INVALID
    );
}
