//! Caller authentication and authorisation.
//!
//! A caller sends `authorization: Bearer <api key>`. The service keeps only the key's SHA-256
//! (API keys are long random strings, so a fast hash is the right one) and finds the caller by
//! it. Two layers decide what the caller may do: [`crate::authorize`] admits the RPC (by the
//! caller's roles and RPCs, default deny) before any handler runs and attaches the [`Caller`];
//! handlers then check what the request touches with [`Caller::check_tenant`],
//! [`Caller::check_connection`] and [`Caller::check_tool`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::{Code, Request, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::policy::{Policy, grants};

/// The `ErrorInfo.domain` of every agentauth error.
pub const ERROR_DOMAIN: &str = "agentauth";

/// One caller as configured: who it is, its key's hash, and what it may touch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerConfig {
    /// The caller's name, as it appears in logs and audit rows.
    pub name: String,
    /// Hex SHA-256 of the caller's API key (`agentauth keys generate` makes a pair).
    pub key_sha256: KeyHash,
    /// Hex SHA-256 of the key this caller used before `key_sha256`, admitted as well while the
    /// caller moves to the new key (the overlap window of a key rotation); remove it once the
    /// caller presents only the new key.
    #[serde(default)]
    pub previous_key_sha256: Option<KeyHash>,
    /// Tenants this caller may act for; `"*"` means any.
    pub tenants: Vec<String>,
    /// Connections this caller may use; `"*"` means any.
    #[serde(default = "any")]
    pub connections: Vec<String>,
    /// Tools this caller may execute; `"*"` means any.
    #[serde(default = "any")]
    pub tools: Vec<String>,
    /// The service's roles this caller holds; each expands to a set of RPCs.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Single RPCs granted besides the roles, by method name (`DisconnectAccount`).
    #[serde(default)]
    pub rpcs: Vec<String>,
}

fn any() -> Vec<String> {
    vec!["*".to_owned()]
}

/// A SHA-256 digest written as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    /// The hash of `key`.
    pub fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }
}

impl TryFrom<String> for KeyHash {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| {
            "key_sha256 must be 64 hex digits (the SHA-256 of the API key)".to_owned()
        })?;
        Ok(Self(bytes))
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({self})")
    }
}

/// An API key this service presents to another one. Never printed.
#[derive(Clone)]
pub struct ApiKey(Arc<str>);

impl ApiKey {
    /// Wraps a key read from a file or the environment (surrounding whitespace is dropped).
    pub fn new(key: &str) -> Self {
        Self(Arc::from(key.trim()))
    }

    /// Reads a key from a file; an empty file is an error, not an empty key.
    pub fn read_file(path: &std::path::Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        if text.trim().is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the file is empty",
            ));
        }
        Ok(Self::new(&text))
    }

    /// A fresh random key: 32 bytes from the operating system's generator, as hex, prefixed.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).unwrap_or_else(|error| {
            panic!("the operating system's random generator failed: {error}")
        });
        Self(Arc::from(format!("aak_{}", hex::encode(bytes))))
    }

    /// The key itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The hash to put in the receiving service's `callers` configuration.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.0)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

/// What a caller may touch: everything, or the names listed.
#[derive(Debug, Clone)]
enum Scope {
    Any,
    Only(HashSet<String>),
}

impl Scope {
    fn new(names: &[String]) -> Self {
        if names.iter().any(|n| n == "*") {
            Self::Any
        } else {
            Self::Only(names.iter().cloned().collect())
        }
    }

    fn allows(&self, name: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Only(names) => names.contains(name),
        }
    }
}

/// An authenticated caller, attached to each request it is admitted for.
#[derive(Debug)]
pub struct Caller {
    name: String,
    tenants: Scope,
    connections: Scope,
    tools: Scope,
    /// The method paths it may call.
    rpcs: BTreeSet<String>,
}

impl Caller {
    /// The authenticated caller of `request`.
    ///
    /// An error here means the request did not pass the authorization layer: a bug, reported
    /// as INTERNAL rather than letting the request through.
    pub fn of<T>(request: &Request<T>) -> Result<&Self, Status> {
        request
            .extensions()
            .get::<Arc<Self>>()
            .map(AsRef::as_ref)
            .ok_or_else(|| Status::internal("request reached a handler without authentication"))
    }

    /// The authenticated caller of `request`, to keep beyond the request (a stream's).
    pub fn shared<T>(request: &Request<T>) -> Result<Arc<Self>, Status> {
        request
            .extensions()
            .get::<Arc<Self>>()
            .cloned()
            .ok_or_else(|| Status::internal("request reached a handler without authentication"))
    }

    /// The configured name of the caller.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this caller may act for `tenant`.
    pub fn check_tenant(&self, tenant: &str) -> Result<(), Denied> {
        self.check(&self.tenants, "tenant", tenant)
    }

    /// Whether this caller may use `connection`.
    pub fn check_connection(&self, connection: &str) -> Result<(), Denied> {
        self.check(&self.connections, "connection", connection)
    }

    /// Whether this caller may execute `tool`.
    pub fn check_tool(&self, tool: &str) -> Result<(), Denied> {
        self.check(&self.tools, "tool", tool)
    }

    /// Whether this caller's tool list names `tool` itself; `"*"` does not count. For what a
    /// caller must be granted explicitly (a proxy path that matches no known operation).
    pub fn check_tool_named(&self, tool: &str) -> Result<(), Denied> {
        let named = match &self.tools {
            Scope::Any => false,
            Scope::Only(names) => names.contains(tool),
        };
        if named {
            Ok(())
        } else {
            Err(Denied {
                caller: self.name.clone(),
                kind: "tool",
                name: tool.to_owned(),
            })
        }
    }

    /// Whether this caller may call the RPC at `path` (`/package.Service/Method`).
    pub fn may_call(&self, path: &str) -> bool {
        self.rpcs.contains(path)
    }

    fn check(&self, scope: &Scope, kind: &'static str, name: &str) -> Result<(), Denied> {
        if scope.allows(name) {
            Ok(())
        } else {
            Err(Denied {
                caller: self.name.clone(),
                kind,
                name: name.to_owned(),
            })
        }
    }
}

/// A caller asked for a tenant, connection or tool it is not bound to.
#[derive(Debug, Clone, thiserror::Error)]
#[error("caller `{caller}` is not allowed to use {kind} `{name}`")]
pub struct Denied {
    caller: String,
    kind: &'static str,
    name: String,
}

impl Denied {
    /// `caller` may not use the `kind` (e.g. `virtual server`) named `name`.
    pub fn new(caller: &str, kind: &'static str, name: &str) -> Self {
        Self {
            caller: caller.to_owned(),
            kind,
            name: name.to_owned(),
        }
    }
}

impl From<Denied> for Status {
    fn from(denied: Denied) -> Self {
        let metadata = HashMap::from([
            ("caller".to_owned(), denied.caller.clone()),
            (denied.kind.to_owned(), denied.name.clone()),
        ]);
        Status::with_error_details(
            Code::PermissionDenied,
            denied.to_string(),
            ErrorDetails::with_error_info("CALLER_NOT_ALLOWED", ERROR_DOMAIN, metadata),
        )
    }
}

/// The callers a service accepts, by key hash.
#[derive(Debug, Clone, Default)]
pub struct Callers {
    by_hash: Arc<HashMap<KeyHash, Arc<Caller>>>,
    configs: Arc<[CallerConfig]>,
    /// The `previous_key_sha256` of each caller that has one, and whether a request presented
    /// it since this process started (said once in the log, so operators see when the old key
    /// is still in use).
    previous: Arc<HashMap<KeyHash, std::sync::atomic::AtomicBool>>,
}

/// What one caller may do, as `--print-access` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Access {
    pub name: String,
    pub tenants: Vec<String>,
    pub connections: Vec<String>,
    pub tools: Vec<String>,
    /// Method paths, sorted.
    pub rpcs: Vec<String>,
}

impl Callers {
    /// Builds the registry for the services of `policies`; two callers with one key, one name
    /// twice, a caller that may call nothing, or a role or RPC the services do not have is a
    /// config error.
    pub fn new(configs: &[CallerConfig], policies: &[&Policy]) -> Result<Self, String> {
        let mut by_hash = HashMap::new();
        let mut names = HashSet::new();
        for config in configs {
            if config.name.trim().is_empty() {
                return Err("callers: a caller has an empty name".to_owned());
            }
            if !names.insert(config.name.as_str()) {
                return Err(format!("callers: `{}` is configured twice", config.name));
            }
            if config.tenants.is_empty() {
                return Err(format!(
                    "callers: `{}` has no tenants (name them, or [\"*\"] for any)",
                    config.name
                ));
            }
            let rpcs = grants(policies, &config.roles, &config.rpcs)
                .map_err(|e| format!("callers: `{}`: {e}", config.name))?;
            if rpcs.is_empty() {
                let roles: Vec<&str> = policies
                    .iter()
                    .flat_map(|p| p.roles.iter().map(|r| r.name))
                    .collect();
                return Err(format!(
                    "callers: `{}` has no roles or rpcs, so it could call nothing (roles here: {})",
                    config.name,
                    roles.join(", ")
                ));
            }
            let caller = Arc::new(Caller {
                name: config.name.clone(),
                tenants: Scope::new(&config.tenants),
                connections: Scope::new(&config.connections),
                tools: Scope::new(&config.tools),
                rpcs,
            });
            if config.previous_key_sha256 == Some(config.key_sha256) {
                return Err(format!(
                    "callers: `{}` has previous_key_sha256 equal to key_sha256 (after a rotation it names the old key)",
                    config.name
                ));
            }
            for hash in std::iter::once(config.key_sha256).chain(config.previous_key_sha256) {
                if by_hash.insert(hash, caller.clone()).is_some() {
                    return Err(format!(
                        "callers: `{}` shares a key with another caller",
                        config.name
                    ));
                }
            }
        }
        let previous = configs
            .iter()
            .filter_map(|c| c.previous_key_sha256)
            .map(|hash| (hash, std::sync::atomic::AtomicBool::new(false)))
            .collect();
        Ok(Self {
            by_hash: Arc::new(by_hash),
            configs: configs.into(),
            previous: Arc::new(previous),
        })
    }

    /// The caller whose key `authorization` (the header's value) carries, or UNAUTHENTICATED.
    /// The caller configured as `name`, if there is one.
    pub fn named(&self, name: &str) -> Option<Arc<Caller>> {
        self.by_hash.values().find(|c| c.name() == name).cloned()
    }

    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Arc<Caller>, Status> {
        let header = authorization.ok_or_else(|| {
            unauthenticated("missing API key: send `authorization: Bearer <key>`")
        })?;
        let key = std::str::from_utf8(header)
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                unauthenticated("malformed authorization header: expected `Bearer <key>`")
            })?;
        let hash = KeyHash::of(key.trim());
        let caller = self
            .by_hash
            .get(&hash)
            .cloned()
            .ok_or_else(|| unauthenticated("unknown API key"))?;
        if let Some(seen) = self.previous.get(&hash)
            && !seen.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::info!(
                caller = caller.name(),
                "a caller presented its previous API key (previous_key_sha256), admitted until that entry is removed"
            );
        }
        Ok(caller)
    }

    /// Every caller and what it may do, in configuration order.
    pub fn access(&self) -> Vec<Access> {
        self.configs
            .iter()
            .filter_map(|config| {
                let caller = self.by_hash.get(&config.key_sha256)?;
                Some(Access {
                    name: caller.name.clone(),
                    tenants: config.tenants.clone(),
                    connections: config.connections.clone(),
                    tools: config.tools.clone(),
                    rpcs: caller.rpcs.iter().cloned().collect(),
                })
            })
            .collect()
    }
}

fn unauthenticated(message: &str) -> Status {
    Status::with_error_details(
        Code::Unauthenticated,
        message,
        ErrorDetails::with_error_info("API_KEY_INVALID", ERROR_DOMAIN, HashMap::new()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Role;

    const POLICY: Policy = Policy {
        service: "agentauth.test.v1.Probe",
        rpcs: &["Read", "Write"],
        roles: &[Role {
            name: "reader",
            purpose: "reads",
            rpcs: &["Read"],
        }],
    };

    fn config(name: &str, key: &ApiKey, tenants: &[&str]) -> CallerConfig {
        CallerConfig {
            name: name.to_owned(),
            key_sha256: key.hash(),
            tenants: tenants.iter().map(|t| t.to_string()).collect(),
            connections: vec!["asana".to_owned()],
            tools: any(),
            roles: vec!["reader".to_owned()],
            rpcs: Vec::new(),
            previous_key_sha256: None,
        }
    }

    fn header(key: &ApiKey) -> Vec<u8> {
        format!("Bearer {}", key.expose()).into_bytes()
    }

    #[test]
    fn known_key_finds_its_caller_and_scopes_apply() {
        let key = ApiKey::generate();
        let callers = Callers::new(&[config("svc", &key, &["acme"])], &[&POLICY]).expect("valid");
        let caller = callers
            .authenticate(Some(&header(&key)))
            .expect("authenticated");
        assert_eq!(caller.name(), "svc");
        assert!(caller.may_call("/agentauth.test.v1.Probe/Read"));
        assert!(!caller.may_call("/agentauth.test.v1.Probe/Write"));
        assert!(caller.check_tenant("acme").is_ok());
        assert!(caller.check_connection("asana").is_ok());
        assert!(caller.check_tool("anything").is_ok());
        assert!(
            caller.check_tool_named("anything").is_err(),
            "`*` names no tool explicitly"
        );
        let denied = caller.check_tenant("globex").expect_err("other tenant");
        assert_eq!(Status::from(denied).code(), Code::PermissionDenied);
        assert!(caller.check_connection("asana-mcp").is_err());
    }

    #[test]
    fn missing_malformed_and_unknown_keys_are_unauthenticated() {
        let key = ApiKey::generate();
        let callers = Callers::new(&[config("svc", &key, &["*"])], &[&POLICY]).expect("valid");
        for header in [None, Some("Basic abc"), Some("Bearer not-a-key")] {
            let status = callers
                .authenticate(header.map(str::as_bytes))
                .expect_err("refused");
            assert_eq!(status.code(), Code::Unauthenticated, "{header:?}");
            assert!(!status.message().contains("not-a-key"), "key echoed back");
        }
    }

    #[test]
    fn bad_caller_configurations_are_errors() {
        let key = ApiKey::generate();
        let other = ApiKey::generate();
        let new = |configs: &[CallerConfig]| Callers::new(configs, &[&POLICY]);
        assert!(new(&[config("a", &key, &["*"]), config("a", &other, &["*"])]).is_err());
        assert!(new(&[config("a", &key, &["*"]), config("b", &key, &["*"])]).is_err());
        assert!(new(&[config("a", &key, &[])]).is_err());
        let nothing = CallerConfig {
            roles: Vec::new(),
            ..config("a", &key, &["*"])
        };
        let error = new(&[nothing]).expect_err("a caller that may call nothing");
        assert!(error.contains("roles here: reader"), "{error}");
        let typo = CallerConfig {
            roles: vec!["raeder".to_owned()],
            ..config("a", &key, &["*"])
        };
        assert!(
            new(&[typo])
                .expect_err("unknown role")
                .contains("did you mean `reader`")
        );
    }

    #[test]
    fn access_lists_each_callers_rpcs() {
        let key = ApiKey::generate();
        let granted = CallerConfig {
            rpcs: vec!["Write".to_owned()],
            ..config("svc", &key, &["acme"])
        };
        let callers = Callers::new(&[granted], &[&POLICY]).expect("valid");
        let access = callers.access();
        assert_eq!(access.len(), 1);
        assert_eq!(
            access[0].rpcs,
            [
                "/agentauth.test.v1.Probe/Read",
                "/agentauth.test.v1.Probe/Write"
            ]
        );
    }

    #[test]
    fn during_a_key_rotation_both_keys_are_admitted_and_afterwards_only_the_new_one() {
        let (old, new) = (ApiKey::generate(), ApiKey::generate());
        let overlap = CallerConfig {
            previous_key_sha256: Some(old.hash()),
            ..config("svc", &new, &["acme"])
        };
        let callers = Callers::new(&[overlap], &[&POLICY]).expect("valid");
        for key in [&old, &new] {
            let caller = callers.authenticate(Some(&header(key))).expect("admitted");
            assert_eq!(caller.name(), "svc");
            assert!(caller.may_call("/agentauth.test.v1.Probe/Read"));
        }
        assert_eq!(callers.access().len(), 1, "one caller, two keys");

        let after = Callers::new(&[config("svc", &new, &["acme"])], &[&POLICY]).expect("valid");
        assert!(after.authenticate(Some(&header(&new))).is_ok());
        let refused = after
            .authenticate(Some(&header(&old)))
            .expect_err("the removed key");
        assert_eq!(refused.code(), Code::Unauthenticated);
    }

    #[test]
    fn a_previous_key_may_not_be_the_current_one_or_another_callers() {
        let (key, other) = (ApiKey::generate(), ApiKey::generate());
        let same = CallerConfig {
            previous_key_sha256: Some(key.hash()),
            ..config("a", &key, &["*"])
        };
        let error = Callers::new(&[same], &[&POLICY]).expect_err("previous = current");
        assert!(error.contains("previous_key_sha256"), "{error}");
        let shared = CallerConfig {
            previous_key_sha256: Some(other.hash()),
            ..config("a", &key, &["*"])
        };
        let error = Callers::new(&[shared, config("b", &other, &["*"])], &[&POLICY])
            .expect_err("another caller's key");
        assert!(error.contains("shares a key"), "{error}");
    }

    #[test]
    fn key_hash_parses_only_64_hex_digits() {
        let key = ApiKey::generate();
        assert_eq!(KeyHash::try_from(key.hash().to_string()), Ok(key.hash()));
        assert!(KeyHash::try_from("abc".to_owned()).is_err());
        assert!(KeyHash::try_from("zz".repeat(32)).is_err());
    }

    #[test]
    fn api_key_debug_is_redacted() {
        let key = ApiKey::generate();
        assert!(!format!("{key:?}").contains(key.expose()));
    }
}
