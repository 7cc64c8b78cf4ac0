//! The connection registry, read from token-vault (`ListConnections`) and reused for a while:
//! connections are operator configuration and change only when token-vault restarts.
//!
//! An unknown name first re-reads the list (at most once per second), so a connection added
//! since the last read is found; then it fails with the closest names.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agentauth_grpc::client::AuthenticatedChannel;
use agentauth_proto::vault::v1 as pb;
use agentauth_proto::vault::v1::token_vault_client::TokenVaultClient;
use tokio::time::Instant;

use crate::Error;

/// The least time between two reads forced by unknown names.
const MIN_REREAD: Duration = Duration::from_secs(1);

/// Which Asana surface a connection reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// The REST API under this base URL.
    Rest { api_base_url: String },
    /// The MCP server at this URL.
    Mcp { url: String },
}

/// One connection, as the executor needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Connection {
    pub name: String,
    pub target: Target,
    /// How a user (re)connects: an OAuth link, or a token stored with PutCredential.
    pub auth: Auth,
}

/// How a connection's credentials are obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    Oauth,
    Pat,
    ServiceAccount,
}

#[derive(Debug, Default)]
struct Snapshot {
    by_name: BTreeMap<String, Arc<Connection>>,
    read_at: Option<Instant>,
}

/// The registry cache.
#[derive(Debug)]
pub(crate) struct Connections {
    client: TokenVaultClient<AuthenticatedChannel>,
    ttl: Duration,
    snapshot: Mutex<Arc<Snapshot>>,
    reading: tokio::sync::Mutex<()>,
}

impl Connections {
    pub(crate) fn new(client: TokenVaultClient<AuthenticatedChannel>, ttl: Duration) -> Self {
        Self {
            client,
            ttl,
            snapshot: Mutex::new(Arc::default()),
            reading: tokio::sync::Mutex::new(()),
        }
    }

    fn current(&self) -> Arc<Snapshot> {
        self.snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every connection, sorted by name.
    pub(crate) async fn all(&self) -> Result<Vec<Arc<Connection>>, Error> {
        let snapshot = self.fresh(self.ttl).await?;
        Ok(snapshot.by_name.values().cloned().collect())
    }

    /// The connection `name`, for a call whose caller was checked elsewhere (a virtual MCP
    /// session's server names its connections).
    pub(crate) async fn named(&self, name: &str) -> Result<Arc<Connection>, Error> {
        let snapshot = self.fresh(self.ttl).await?;
        snapshot
            .by_name
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownConnection {
                name: name.to_owned(),
                suggestions: Vec::new(),
            })
    }

    /// The connection named exactly `name`; when there is none, the error suggests only close
    /// names that `caller` may use.
    pub(crate) async fn get(
        &self,
        caller: &agentauth_grpc::Caller,
        name: &str,
    ) -> Result<Arc<Connection>, Error> {
        let snapshot = self.fresh(self.ttl).await?;
        if let Some(connection) = snapshot.by_name.get(name) {
            return Ok(connection.clone());
        }
        let snapshot = self.fresh(MIN_REREAD).await?;
        snapshot.by_name.get(name).cloned().ok_or_else(|| {
            let names = snapshot
                .by_name
                .keys()
                .map(String::as_str)
                .filter(|n| caller.check_connection(n).is_ok());
            Error::UnknownConnection {
                name: name.to_owned(),
                suggestions: asana_tools::close_matches(name, names)
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            }
        })
    }

    /// The snapshot, read again when it is older than `max_age`.
    async fn fresh(&self, max_age: Duration) -> Result<Arc<Snapshot>, Error> {
        let is_fresh = |s: &Snapshot| s.read_at.is_some_and(|at| at.elapsed() < max_age);
        let snapshot = self.current();
        if is_fresh(&snapshot) {
            return Ok(snapshot);
        }
        let _reading = self.reading.lock().await;
        let snapshot = self.current();
        if is_fresh(&snapshot) {
            return Ok(snapshot);
        }
        let by_name = self.read().await?;
        let snapshot = Arc::new(Snapshot {
            by_name,
            read_at: Some(Instant::now()),
        });
        *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = snapshot.clone();
        Ok(snapshot)
    }

    async fn read(&self) -> Result<BTreeMap<String, Arc<Connection>>, Error> {
        let mut by_name = BTreeMap::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .client
                .clone()
                .list_connections(pb::ListConnectionsRequest {
                    kind: None,
                    page_size: 0,
                    page_token,
                })
                .await
                .map_err(Error::from_token_vault)?
                .into_inner();
            for wire in page.connections {
                if let Some(connection) = Connection::from_wire(wire) {
                    by_name.insert(connection.name.clone(), Arc::new(connection));
                }
            }
            if page.next_page_token.is_empty() {
                return Ok(by_name);
            }
            page_token = page.next_page_token;
        }
    }
}

impl Connection {
    fn from_wire(wire: pb::Connection) -> Option<Self> {
        let auth = match wire.auth_method() {
            pb::AuthMethod::Oauth => Auth::Oauth,
            pb::AuthMethod::Pat => Auth::Pat,
            pb::AuthMethod::ServiceAccount => Auth::ServiceAccount,
            pb::AuthMethod::Unspecified => return None,
        };
        let target = match wire.kind() {
            pb::ConnectionKind::Rest => Target::Rest {
                api_base_url: wire.api_base_url,
            },
            pb::ConnectionKind::Mcp => Target::Mcp { url: wire.mcp_url },
            pb::ConnectionKind::Unspecified => return None,
        };
        Some(Self {
            auth,
            name: wire.name,
            target,
        })
    }
}
