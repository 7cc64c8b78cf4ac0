//! The Vault (or OpenBao) that holds every credential.

use std::time::Duration;

use serde::Deserialize;

/// The `[vault]` section. The token comes from `VAULT_TOKEN`, never from a file in git.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Vault's address, e.g. `http://127.0.0.1:8200`.
    pub addr: String,
    /// How long one Vault request may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The KV v2 mount credentials are written to.
    pub kv_mount: String,
    /// The Transit mount holding each tenant's encryption key.
    pub transit_mount: String,
    /// The KV path every credential lives under (`<kv_mount>/data/<path_prefix>/…`).
    pub path_prefix: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: "http://127.0.0.1:8200".to_owned(),
            timeout: Duration::from_secs(5),
            kv_mount: "secret".to_owned(),
            transit_mount: "transit".to_owned(),
            path_prefix: "agentauth".to_owned(),
        }
    }
}

/// A client of the configured Vault.
pub struct Vault {
    http: reqwest::Client,
    health_url: String,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").finish_non_exhaustive()
    }
}

impl Vault {
    /// A client for `config`; connects on first use, so the service can start before Vault.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| anyhow::anyhow!("cannot create the HTTP client: {e}"))?;
        Ok(Self {
            http,
            health_url: format!("{}/v1/sys/health", config.addr.trim_end_matches('/')),
        })
    }
}

impl agentauth_grpc::Readiness for Vault {
    /// Ready when Vault answers and is initialised and unsealed; a standby node counts, since it
    /// forwards requests to the active one. (Read from `sys/health`'s status codes, which Vault
    /// and OpenBao share, rather than its body, whose fields differ between them.)
    async fn check(&self) -> Result<(), String> {
        let response = self
            .http
            .get(&self.health_url)
            .send()
            .await
            .map_err(|e| format!("vault unreachable: {e}"))?;
        match response.status().as_u16() {
            200 | 429 | 473 => Ok(()),
            501 => Err("vault is not initialised".to_owned()),
            503 => Err("vault is sealed".to_owned()),
            other => Err(format!("vault health answered HTTP {other}")),
        }
    }
}
