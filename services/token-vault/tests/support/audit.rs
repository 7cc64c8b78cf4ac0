//! An in-process audit-log for token-vault's tests: token-vault appends as `token-vault`, the
//! test reads what was recorded as an operator.

use std::io::Write;
use std::time::Duration;

use agentauth_grpc::client::channel;
use agentauth_grpc::{ApiKey, CallerConfig, ServerConfig};
use agentauth_launch::Service as _;
use agentauth_proto::audit::v1 as audit_pb;
use agentauth_proto::audit::v1::audit_log_client::AuditLogClient;
use agentauth_testkit::database::SqliteDatabase;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// audit-log on SQLite, serving until the shutdown it was started with.
pub struct AuditLog {
    pub url: String,
    operator: ApiKey,
    /// token-vault's key, in the file its `[audit] api_key_file` names.
    pub key_file: tempfile::NamedTempFile,
    pub spool: tempfile::TempDir,
    _db: SqliteDatabase,
}

impl AuditLog {
    pub async fn start(shutdown: &CancellationToken) -> Self {
        let db = SqliteDatabase::create().expect("sqlite file");
        let (token_vault, operator) = (ApiKey::generate(), ApiKey::generate());
        let caller = |name: &str, key: &ApiKey, role: &str| CallerConfig {
            name: name.into(),
            key_sha256: key.hash(),
            previous_key_sha256: None,
            tenants: vec!["*".into()],
            connections: vec!["*".into()],
            tools: vec!["*".into()],
            roles: vec![role.into()],
            rpcs: Vec::new(),
        };
        let config = audit_log::Config {
            server: ServerConfig {
                callers: vec![
                    caller("token-vault", &token_vault, "writer"),
                    caller("operator", &operator, "operator"),
                ],
                ..ServerConfig::default()
            },
            database: audit_log::DatabaseConfig::new(db.url()),
            ..Default::default()
        };
        let service = audit_log::AuditLogService::new(config).expect("audit-log config");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(service.run(listener, shutdown.clone()));
        agentauth_testkit::wait_serving(address, "", Duration::from_secs(20))
            .await
            .expect("audit-log serving");
        let mut key_file = tempfile::NamedTempFile::new().expect("key file");
        key_file
            .write_all(token_vault.expose().as_bytes())
            .expect("write key");
        Self {
            url: format!("http://{address}"),
            operator,
            key_file,
            spool: tempfile::tempdir().expect("spool dir"),
            _db: db,
        }
    }

    /// The `[audit]` section of token-vault replica `replica` for this audit-log (each replica
    /// spools to a folder of its own).
    pub fn section(&self, replica: usize) -> String {
        format!(
            "\n[audit]\nurl = \"{}\"\napi_key_file = \"{}\"\nspool_dir = \"{}\"\nflush_interval = \"20ms\"\n",
            self.url,
            self.key_file.path().display(),
            self.spool
                .path()
                .join(format!("replica-{replica}"))
                .display(),
        )
    }

    /// Every event of `tenant` with `action`.
    pub async fn events(&self, tenant: &str, action: &str) -> Vec<audit_pb::Event> {
        AuditLogClient::new(channel(&self.url, Some(&self.operator)).expect("channel"))
            .query(audit_pb::QueryRequest {
                filter: Some(audit_pb::EventFilter {
                    tenant: tenant.into(),
                    action: Some(action.into()),
                    ..audit_pb::EventFilter::default()
                }),
                page_size: 1000,
                page_token: String::new(),
            })
            .await
            .expect("query")
            .into_inner()
            .events
    }
}
