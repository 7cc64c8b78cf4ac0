//! The authorization matrix: every RPC of the four services, called by {no key, an unknown
//! key, a caller granted every RPC of the service but this one, a caller granted only this one
//! for another tenant, a caller granted only this one}, against the real binaries wired as in
//! production. Each cell's status code is asserted; an RPC of the contracts without a row
//! fails the test, so a new RPC cannot ship without its place in the authorization layer.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use agentauth_grpc::ApiKey;
use agentauth_proto::audit::v1 as audit;
use agentauth_proto::executor::v1 as executor;
use agentauth_proto::vault::v1 as vault;
use agentauth_proto::watcher::v1 as watcher;
use agentauth_testkit::connections::OAuthApp;
use agentauth_testkit::process::ServiceProcess;
use agentauth_testkit::{free_port, health_status, openbao, wait_serving};
use prost::Message;
use tonic::Code;
use tonic_health::ServingStatus;

const TENANT: &str = "acme";
const OTHER_TENANT: &str = "globex";

/// How a request is built for the caller named by the argument (audit-log's `Append` must
/// name its caller as the actor).
type Build = fn(&str) -> Box<dyn Erased>;

/// One row: an RPC, its request, what the right caller gets, whether it names a tenant.
struct Row {
    service: &'static str,
    rpc: &'static str,
    request: Build,
    streaming: bool,
    /// The code of the caller granted exactly this RPC for tenant `acme`.
    right: Code,
    /// Whether the request names a tenant (so a caller of another tenant is refused).
    tenant_scoped: bool,
}

/// A request message of any type, encodable by the generic client below.
trait Erased: Send + 'static {
    fn encode(&self) -> Vec<u8>;
}

impl<M: Message + Send + 'static> Erased for M {
    fn encode(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}

fn boxed<M: Message + Send + 'static>(message: M) -> Box<dyn Erased> {
    Box::new(message)
}

const VAULT: &str = "agentauth.vault.v1.TokenVault";
const EXECUTOR: &str = "agentauth.executor.v1.ConnectorExecutor";
const AUDIT: &str = "agentauth.audit.v1.AuditLog";
const WATCHER: &str = "agentauth.watcher.v1.SchemaWatcher";

fn rows() -> Vec<Row> {
    let row = |service, rpc, request: Build, right, tenant_scoped| Row {
        service,
        rpc,
        request,
        streaming: false,
        right,
        tenant_scoped,
    };
    let stream = |service, rpc, request: Build, right, tenant_scoped| Row {
        streaming: true,
        ..row(service, rpc, request, right, tenant_scoped)
    };
    vec![
        // token-vault: nobody has connected (a token reader is told AUTH_REQUIRED with what to
        // do), and the PAT connection's Asana is unreachable.
        row(
            VAULT,
            "CreateAuthorizationLink",
            |_| {
                boxed(vault::CreateAuthorizationLinkRequest {
                    tenant: TENANT.into(),
                    connection_name: "asana".into(),
                    identifier: "user_1".into(),
                    ..Default::default()
                })
            },
            Code::Ok,
            true,
        ),
        row(
            VAULT,
            "PutCredential",
            |_| {
                boxed(vault::PutCredentialRequest {
                    tenant: TENANT.into(),
                    connection_name: "asana-pat".into(),
                    identifier: "user_1".into(),
                    token: "a-personal-access-token".into(),
                    replace_user: false,
                })
            },
            Code::Unavailable,
            true,
        ),
        row(
            VAULT,
            "GetAccessToken",
            |_| {
                boxed(vault::GetAccessTokenRequest {
                    tenant: TENANT.into(),
                    connection_name: "asana-pat".into(),
                    identifier: "user_1".into(),
                    min_valid_for: None,
                })
            },
            Code::FailedPrecondition,
            true,
        ),
        row(
            VAULT,
            "ReportRejectedToken",
            |_| {
                boxed(vault::ReportRejectedTokenRequest {
                    tenant: TENANT.into(),
                    connection_name: "asana-pat".into(),
                    identifier: "user_1".into(),
                    credential_version: 1,
                    asana_request_id: String::new(),
                })
            },
            Code::FailedPrecondition,
            true,
        ),
        row(
            VAULT,
            "GetAccount",
            |_| {
                boxed(vault::GetAccountRequest {
                    tenant: TENANT.into(),
                    connection_name: "asana-pat".into(),
                    identifier: "user_1".into(),
                })
            },
            Code::NotFound,
            true,
        ),
        row(
            VAULT,
            "ListAccounts",
            |_| {
                boxed(vault::ListAccountsRequest {
                    tenant: TENANT.into(),
                    ..Default::default()
                })
            },
            Code::Ok,
            true,
        ),
        row(
            VAULT,
            "GetIdentityStatus",
            |_| {
                boxed(vault::GetIdentityStatusRequest {
                    tenant: TENANT.into(),
                    identifier: "user_1".into(),
                })
            },
            Code::Ok,
            true,
        ),
        row(
            VAULT,
            "DisconnectAccount",
            |_| {
                boxed(vault::DisconnectAccountRequest {
                    tenant: TENANT.into(),
                    connection_name: "asana-pat".into(),
                    identifier: "user_1".into(),
                    reason: String::new(),
                })
            },
            Code::NotFound,
            true,
        ),
        row(
            VAULT,
            "RotateTenantKey",
            |_| {
                boxed(vault::RotateTenantKeyRequest {
                    tenant: TENANT.into(),
                })
            },
            // acme's key exists since CreateAuthorizationLink's row stored a consent under it.
            Code::Ok,
            true,
        ),
        row(
            VAULT,
            "DeleteTenant",
            |_| {
                boxed(vault::DeleteTenantRequest {
                    tenant: TENANT.into(),
                    confirm_tenant: TENANT.into(),
                })
            },
            Code::Ok,
            true,
        ),
        row(
            VAULT,
            "GetConnection",
            |_| {
                boxed(vault::GetConnectionRequest {
                    name: "asana".into(),
                })
            },
            Code::Ok,
            false,
        ),
        row(
            VAULT,
            "ListConnections",
            |_| boxed(vault::ListConnectionsRequest::default()),
            Code::Ok,
            false,
        ),
        stream(
            VAULT,
            "WatchAccountChanges",
            |_| boxed(vault::WatchAccountChangesRequest::default()),
            Code::Ok,
            false,
        ),
        row(
            VAULT,
            "PutWebhookSecret",
            |_| {
                boxed(vault::PutWebhookSecretRequest {
                    tenant: TENANT.into(),
                    subscription_id: "0190a000-0000-7000-8000-0000000000a1".into(),
                    secret: "matrix-secret".into(),
                })
            },
            Code::Ok,
            true,
        ),
        row(
            VAULT,
            "GetWebhookSecret",
            |_| {
                boxed(vault::GetWebhookSecretRequest {
                    tenant: TENANT.into(),
                    subscription_id: "0190a000-0000-7000-8000-0000000000a2".into(),
                })
            },
            // Admitted: nothing is kept for this subscription.
            Code::NotFound,
            true,
        ),
        row(
            VAULT,
            "DeleteWebhookSecret",
            |_| {
                boxed(vault::DeleteWebhookSecretRequest {
                    tenant: TENANT.into(),
                    subscription_id: "0190a000-0000-7000-8000-0000000000a3".into(),
                })
            },
            Code::Ok,
            true,
        ),
        // connector-executor, in front of the real token-vault: nobody has connected.
        row(
            EXECUTOR,
            "ExecuteTool",
            |_| {
                boxed(executor::ExecuteToolRequest {
                    tenant: TENANT.into(),
                    connection_name: "asana-pat".into(),
                    identifier: "user_1".into(),
                    tool_name: "asana_task_get".into(),
                    input_json: r#"{"task_gid": "1"}"#.into(),
                    options: None,
                })
            },
            Code::FailedPrecondition,
            true,
        ),
        row(
            EXECUTOR,
            "ExecuteBatch",
            |_| {
                boxed(executor::ExecuteBatchRequest {
                    tenant: TENANT.into(),
                    connection_name: "asana-pat".into(),
                    identifier: "user_1".into(),
                    items: vec![executor::BatchItem {
                        tool_name: "asana_task_get".into(),
                        input_json: r#"{"task_gid": "1"}"#.into(),
                        options: None,
                    }],
                })
            },
            Code::Ok,
            true,
        ),
        row(
            EXECUTOR,
            "ListTools",
            |_| {
                boxed(executor::ListToolsRequest {
                    connection_name: Some("asana-pat".into()),
                    ..Default::default()
                })
            },
            Code::Ok,
            false,
        ),
        row(
            EXECUTOR,
            "ProxyRequest",
            |_| {
                boxed(executor::ProxyRequestRequest {
                    tenant: TENANT.into(),
                    connection_name: "asana-pat".into(),
                    identifier: "user_1".into(),
                    method: "GET".into(),
                    path: "/users/me".into(),
                    ..Default::default()
                })
            },
            Code::FailedPrecondition,
            true,
        ),
        row(
            EXECUTOR,
            "MintMcpSession",
            |_| {
                boxed(executor::MintMcpSessionRequest {
                    tenant: TENANT.into(),
                    ..Default::default()
                })
            },
            // Admitted, then refused: the matrix's executor declares no virtual MCP.
            Code::FailedPrecondition,
            true,
        ),
        row(
            EXECUTOR,
            "ListMcpSessions",
            |_| {
                boxed(executor::ListMcpSessionsRequest {
                    tenant: TENANT.into(),
                    ..Default::default()
                })
            },
            Code::FailedPrecondition,
            true,
        ),
        row(
            EXECUTOR,
            "RevokeMcpSession",
            |_| {
                boxed(executor::RevokeMcpSessionRequest {
                    tenant: TENANT.into(),
                    session_id: "0190a000-0000-7000-8000-000000000001".into(),
                })
            },
            Code::FailedPrecondition,
            true,
        ),
        stream(
            EXECUTOR,
            "SubscribeEvents",
            |_| {
                boxed(executor::SubscribeEventsRequest {
                    tenant: TENANT.into(),
                    ..Default::default()
                })
            },
            // Admitted, then refused: the matrix's executor declares no [webhooks].
            Code::FailedPrecondition,
            true,
        ),
        row(
            EXECUTOR,
            "CreateEventSubscription",
            |_| {
                boxed(executor::CreateEventSubscriptionRequest {
                    tenant: TENANT.into(),
                    connection_name: "asana-pat".into(),
                    identifier: "user_1".into(),
                    resource_gid: "1".into(),
                    filters_json: String::new(),
                })
            },
            Code::FailedPrecondition,
            true,
        ),
        row(
            EXECUTOR,
            "ListEventSubscriptions",
            |_| {
                boxed(executor::ListEventSubscriptionsRequest {
                    tenant: TENANT.into(),
                    ..Default::default()
                })
            },
            Code::FailedPrecondition,
            true,
        ),
        row(
            EXECUTOR,
            "PauseEventSubscription",
            |_| {
                boxed(executor::PauseEventSubscriptionRequest {
                    tenant: TENANT.into(),
                    subscription_id: "0190a000-0000-7000-8000-000000000001".into(),
                })
            },
            Code::FailedPrecondition,
            true,
        ),
        row(
            EXECUTOR,
            "ResumeEventSubscription",
            |_| {
                boxed(executor::ResumeEventSubscriptionRequest {
                    tenant: TENANT.into(),
                    subscription_id: "0190a000-0000-7000-8000-000000000001".into(),
                })
            },
            Code::FailedPrecondition,
            true,
        ),
        row(
            EXECUTOR,
            "DeleteEventSubscription",
            |_| {
                boxed(executor::DeleteEventSubscriptionRequest {
                    tenant: TENANT.into(),
                    subscription_id: "0190a000-0000-7000-8000-000000000001".into(),
                })
            },
            Code::FailedPrecondition,
            true,
        ),
        row(
            EXECUTOR,
            "ListUpstreamTools",
            |_| {
                boxed(executor::ListUpstreamToolsRequest {
                    tenant: TENANT.into(),
                    connection_name: "asana-pat".into(),
                    identifier: "user_1".into(),
                })
            },
            Code::FailedPrecondition,
            true,
        ),
        stream(
            EXECUTOR,
            "WatchUpstreamChanges",
            |_| {
                boxed(executor::WatchUpstreamChangesRequest {
                    connection_name: Some(String::new()),
                })
            },
            Code::InvalidArgument,
            false,
        ),
        // audit-log.
        row(
            AUDIT,
            "Append",
            |caller| {
                let event = agentauth_audit::Event::new(
                    TENANT,
                    caller,
                    agentauth_audit::action::TOOL_EXECUTED,
                    agentauth_audit::Outcome::Success,
                );
                boxed(audit::AppendRequest {
                    events: vec![audit::Event::from(event)],
                })
            },
            Code::Ok,
            true,
        ),
        row(
            AUDIT,
            "Query",
            |_| {
                boxed(audit::QueryRequest {
                    filter: Some(audit::EventFilter {
                        tenant: TENANT.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            },
            Code::Ok,
            true,
        ),
        stream(
            AUDIT,
            "Export",
            |_| {
                boxed(audit::ExportRequest {
                    filter: Some(audit::EventFilter {
                        tenant: TENANT.into(),
                        ..Default::default()
                    }),
                    format: audit::ExportFormat::Ndjson.into(),
                })
            },
            Code::Ok,
            true,
        ),
        row(
            AUDIT,
            "VerifyChain",
            |_| {
                boxed(audit::VerifyChainRequest {
                    tenant: TENANT.into(),
                    ..Default::default()
                })
            },
            Code::Ok,
            true,
        ),
        row(
            AUDIT,
            "PurgeBefore",
            |_| {
                boxed(audit::PurgeBeforeRequest {
                    tenant: TENANT.into(),
                    before: Some(prost_types::Timestamp {
                        seconds: 1_000_000_000,
                        nanos: 0,
                    }),
                })
            },
            Code::Ok,
            true,
        ),
        // schema-watcher, watching nothing: its RPCs name connections only.
        row(
            WATCHER,
            "GetSnapshot",
            |_| {
                boxed(watcher::GetSnapshotRequest {
                    connection_name: "asana-mcp".into(),
                    selector: Some(watcher::get_snapshot_request::Selector::Alias(
                        watcher::SnapshotAlias::Latest.into(),
                    )),
                })
            },
            Code::NotFound,
            false,
        ),
        row(
            WATCHER,
            "ListDrift",
            |_| boxed(watcher::ListDriftRequest::default()),
            Code::Ok,
            false,
        ),
        row(
            WATCHER,
            "ApproveBaseline",
            |_| {
                boxed(watcher::ApproveBaselineRequest {
                    connection_name: "asana-mcp".into(),
                    snapshot_id: "no-such-snapshot".into(),
                    tool_names: Vec::new(),
                })
            },
            Code::NotFound,
            false,
        ),
        stream(
            WATCHER,
            "WatchDrift",
            |_| {
                boxed(watcher::WatchDriftRequest {
                    cursor: "not-a-cursor".into(),
                    ..Default::default()
                })
            },
            Code::InvalidArgument,
            false,
        ),
        row(
            WATCHER,
            "CheckTools",
            |_| {
                boxed(watcher::CheckToolsRequest {
                    connection_name: "asana-mcp".into(),
                    ..Default::default()
                })
            },
            Code::Ok,
            false,
        ),
    ]
}

/// Every RPC of the four services' contracts, as `package.Service/Method`.
fn contract_rpcs() -> BTreeSet<String> {
    let set = prost_types::FileDescriptorSet::decode(agentauth_proto::FILE_DESCRIPTOR_SET)
        .expect("descriptor set");
    let mut rpcs = BTreeSet::new();
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                rpcs.insert(format!(
                    "{}.{}/{}",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    rpcs
}

/// The cells' callers of one service.
#[derive(Default)]
struct Keys {
    /// Per RPC: (granted only it, granted all but it, granted only it for another tenant).
    per_rpc: Vec<(&'static str, ApiKey, ApiKey, ApiKey)>,
}

impl Keys {
    fn new(rows: &[Row], service: &str) -> Self {
        let per_rpc = rows
            .iter()
            .filter(|r| r.service == service)
            .map(|r| {
                (
                    r.rpc,
                    ApiKey::generate(),
                    ApiKey::generate(),
                    ApiKey::generate(),
                )
            })
            .collect();
        Self { per_rpc }
    }

    /// `[[server.callers]]` entries for every cell.
    fn callers(&self) -> String {
        let all: Vec<&str> = self.per_rpc.iter().map(|(rpc, ..)| *rpc).collect();
        let list = |names: &[&str]| {
            names
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = String::new();
        for (rpc, only, all_but, other_tenant) in &self.per_rpc {
            let others: Vec<&str> = all.iter().copied().filter(|r| r != rpc).collect();
            for (name, key, tenant, rpcs) in [
                (format!("only-{rpc}"), only, TENANT, list(&[rpc])),
                (format!("all-but-{rpc}"), all_but, TENANT, list(&others)),
                (
                    format!("other-{rpc}"),
                    other_tenant,
                    OTHER_TENANT,
                    list(&[rpc]),
                ),
            ] {
                let _ = write!(
                    out,
                    "\n[[server.callers]]\nname = \"{name}\"\nkey_sha256 = \"{}\"\ntenants = [\"{tenant}\"]\nrpcs = [{rpcs}]\n",
                    key.hash()
                );
            }
        }
        out
    }

    fn of(&self, rpc: &str) -> (&ApiKey, &ApiKey, &ApiKey) {
        let (_, only, all_but, other) = self
            .per_rpc
            .iter()
            .find(|(r, ..)| *r == rpc)
            .expect("a key for every row");
        (only, all_but, other)
    }
}

/// Calls `path` on `url` with `key` and the encoded `request`: the status code, and for a
/// stream the code of its first message (or of its end).
async fn call(
    url: &str,
    key: Option<&ApiKey>,
    path: &str,
    request: &[u8],
    streaming: bool,
) -> Code {
    let channel = agentauth_grpc::client::channel(url, key).expect("channel");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path: http::uri::PathAndQuery = path.parse().expect("path");
    let codec = RawCodec;
    let request = tonic::Request::new(request.to_vec());
    if streaming {
        match grpc.server_streaming(request, path, codec).await {
            Err(status) => status.code(),
            Ok(response) => {
                let mut stream = response.into_inner();
                match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
                    Ok(Ok(_)) => Code::Ok,
                    Ok(Err(status)) => status.code(),
                    Err(_) => Code::DeadlineExceeded,
                }
            }
        }
    } else {
        match grpc.unary(request, path, codec).await {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        }
    }
}

/// Sends already encoded messages and keeps answers as bytes: the matrix needs no types.
#[derive(Debug, Clone, Copy)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut as _;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf as _;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

fn key_file(dir: &std::path::Path, name: &str, key: &ApiKey) -> String {
    let path = dir.join(format!("{name}.key"));
    std::fs::write(&path, key.expose()).expect("key file");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_admits_exactly_the_callers_granted_it() {
    let rows = rows();
    let listed: BTreeSet<String> = rows
        .iter()
        .map(|r| format!("{}/{}", r.service, r.rpc))
        .collect();
    let contract = contract_rpcs();
    assert_eq!(
        listed,
        contract,
        "every RPC of the contracts has exactly one row (missing: {:?}; unknown: {:?})",
        contract.difference(&listed).collect::<Vec<_>>(),
        listed.difference(&contract).collect::<Vec<_>>()
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let (executor_to_vault, executor_to_audit, vault_to_audit) =
        (ApiKey::generate(), ApiKey::generate(), ApiKey::generate());
    let keys = |service| Keys::new(&rows, service);
    let (vault_keys, executor_keys, audit_keys, watcher_keys) =
        (keys(VAULT), keys(EXECUTOR), keys(AUDIT), keys(WATCHER));
    let (vault_at, executor_at, audit_at, watcher_at) =
        (free_port(), free_port(), free_port(), free_port());
    let dead_asana = format!("http://{}/api/1.0", free_port());

    let audit_log = ServiceProcess::start_on(
        "audit-log",
        &format!(
            "[server]\nreadiness_interval = \"100ms\"\n\n[[server.callers]]\nname = \"token-vault\"\nkey_sha256 = \"{}\"\ntenants = [\"*\"]\nroles = [\"writer\"]\n\n[[server.callers]]\nname = \"connector-executor\"\nkey_sha256 = \"{}\"\ntenants = [\"*\"]\nroles = [\"writer\"]\n{}",
            vault_to_audit.hash(),
            executor_to_audit.hash(),
            audit_keys.callers()
        ),
        &[],
        audit_at,
    )
    .expect("audit-log");
    let prefix = openbao::fresh_prefix();
    let app = OAuthApp {
        asana: "http://127.0.0.1:1",
        client_id: "matrix-app",
        client_secret: &format!("vault:secret/data/{prefix}/app#client_secret"),
        redirect_url: "http://127.0.0.1:1/oauth/callback",
        revocable: false,
    };
    let connections = app.rest("asana", &dead_asana)
        + &agentauth_testkit::connections::pat("asana-pat", &dead_asana);
    let token_vault = ServiceProcess::start_on(
        "token-vault",
        &format!(
            r#"[server]
readiness_interval = "100ms"

[[server.callers]]
name = "connector-executor"
key_sha256 = "{executor_hash}"
tenants = ["*"]
roles = ["executor"]
{callers}
[vault]
addr = "{vault}"
path_prefix = "{prefix}"
# RotateTenantKey waits two timeouts for writers that encrypted just before it.
timeout = "2s"

[oauth]
http_listen = "{callback}"

[audit]
url = "http://{audit_at}"
api_key_file = "{audit_key}"
spool_dir = "{spool}"

{connections}"#,
            executor_hash = executor_to_vault.hash(),
            callers = vault_keys.callers(),
            vault = openbao::shared().addr(),
            callback = free_port(),
            audit_key = key_file(dir.path(), "vault-to-audit", &vault_to_audit),
            spool = dir.path().join("vault-spool").display(),
        ),
        &[("VAULT_TOKEN", openbao::shared().token())],
        vault_at,
    )
    .expect("token-vault");
    let connector_executor = ServiceProcess::start_on(
        "connector-executor",
        &format!(
            "[server]\nreadiness_interval = \"100ms\"\n{}\n[token_vault]\nurl = \"http://{vault_at}\"\napi_key_file = \"{}\"\n\n[audit]\nurl = \"http://{audit_at}\"\napi_key_file = \"{}\"\nspool_dir = \"{}\"\n",
            executor_keys.callers(),
            key_file(dir.path(), "executor-to-vault", &executor_to_vault),
            key_file(dir.path(), "executor-to-audit", &executor_to_audit),
            dir.path().join("executor-spool").display(),
        ),
        &[],
        executor_at,
    )
    .expect("connector-executor");
    let schema_watcher = ServiceProcess::start_on(
        "schema-watcher",
        &format!(
            "[server]\nreadiness_interval = \"100ms\"\n{}\n[database]\nurl = \"sqlite://{}?mode=rwc\"\n",
            watcher_keys.callers(),
            dir.path().join("watcher.db").display(),
        ),
        &[],
        watcher_at,
    )
    .expect("schema-watcher");
    let processes = [
        &audit_log,
        &token_vault,
        &connector_executor,
        &schema_watcher,
    ];
    for process in processes {
        wait_serving(process.address(), "", Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", process.log()));
        assert_eq!(
            health_status(process.address(), "")
                .await
                .expect("health answers without a key"),
            ServingStatus::Serving
        );
    }

    let mut failures = Vec::new();
    for row in &rows {
        let (url, keys) = match row.service {
            VAULT => (token_vault.url(), &vault_keys),
            EXECUTOR => (connector_executor.url(), &executor_keys),
            AUDIT => (audit_log.url(), &audit_keys),
            _ => (schema_watcher.url(), &watcher_keys),
        };
        let path = format!("/{}/{}", row.service, row.rpc);
        let (only, all_but, other_tenant) = keys.of(row.rpc);
        let unknown = ApiKey::generate();
        let other_expected = if row.tenant_scoped {
            Code::PermissionDenied
        } else {
            row.right
        };
        let cells = [
            ("no key", None, "", Code::Unauthenticated),
            ("unknown key", Some(&unknown), "", Code::Unauthenticated),
            (
                "caller without the RPC",
                Some(all_but),
                "all-but",
                Code::PermissionDenied,
            ),
            (
                "caller of another tenant",
                Some(other_tenant),
                "other",
                other_expected,
            ),
            ("right caller", Some(only), "only", row.right),
        ];
        for (cell, key, prefix, expected) in cells {
            let caller = format!("{prefix}-{}", row.rpc);
            let request = (row.request)(&caller).encode();
            let got = call(&url, key, &path, &request, row.streaming).await;
            if got != expected {
                failures.push(format!(
                    "{path} × {cell}: expected {expected:?}, got {got:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} cell(s) wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
