//! The Vault (or OpenBao) that holds every credential, and token-vault's login to it.
//!
//! token-vault acts with one Vault token at a time, held by a [`Session`]:
//!
//! - `method = "token"`: the token in `VAULT_TOKEN` (one machine: `make run` hands over the dev
//!   server's root token). Looked up at start; renewed before it expires when it is renewable
//!   (a dev root token never expires and is not renewable).
//! - `method = "kubernetes"`: logs in with the pod's service-account token
//!   (`POST auth/<mount>/login {role, jwt}`), renews the Vault token at two thirds of its lease,
//!   and logs in again, reading the token file anew, once the token can no longer be renewed
//!   (its max TTL is near, or Vault refuses it).
//!
//! While the session holds no valid token every Vault request is refused at once
//! (UNAVAILABLE) and readiness reports it. Neither token, nor the service-account token, is
//! ever logged: they live in [`Token`]s, whose `Debug` is redacted.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use crate::Error;
use crate::secrets::Token;

/// The `[vault]` section. A static token comes from `VAULT_TOKEN`, never from a file in git.
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
    /// How token-vault obtains its Vault token (`[vault.auth]`).
    pub auth: Auth,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: "http://127.0.0.1:8200".to_owned(),
            timeout: Duration::from_secs(5),
            kv_mount: "secret".to_owned(),
            transit_mount: "transit".to_owned(),
            path_prefix: "agentauth".to_owned(),
            auth: Auth::Token,
        }
    }
}

/// `[vault.auth]`: how token-vault obtains its Vault token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// The token in the `VAULT_TOKEN` environment variable, renewed while it is renewable.
    #[default]
    Token,
    /// Vault's Kubernetes auth method: log in as `role` at `auth/<mount>` with the pod's
    /// service-account token, read from `jwt_file` at every login.
    Kubernetes {
        /// The Vault role bound to token-vault's ServiceAccount.
        role: String,
        /// Where the auth method is mounted (`kubernetes` unless the setup chose another path).
        #[serde(default = "default_mount")]
        mount: String,
        /// The projected service-account token the kubelet keeps fresh.
        #[serde(default = "default_jwt_file")]
        jwt_file: PathBuf,
    },
}

fn default_mount() -> String {
    "kubernetes".to_owned()
}

fn default_jwt_file() -> PathBuf {
    PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token")
}

/// A client of the configured Vault's health endpoint.
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

/// The shortest wait before another attempt after a failed login, renewal or lookup.
const RETRY_MIN: Duration = Duration::from_secs(1);
/// The longest such wait.
const RETRY_MAX: Duration = Duration::from_secs(10);
/// How often a token that never expires is looked up, so a revoked one is noticed.
const NON_EXPIRING_CHECK: Duration = Duration::from_secs(60);

/// The Vault token token-vault acts with, kept valid in the background by [`Session::maintain`].
pub struct Session {
    addr: String,
    timeout: Duration,
    auth: Auth,
    /// `method = "token"`: the token from the environment.
    static_token: Option<Token>,
    held: RwLock<Option<Held>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// A token and what is known of its lease.
#[derive(Clone)]
struct Held {
    client: Arc<VaultClient>,
    lease: Lease,
}

#[derive(Debug, Clone, Copy)]
enum Lease {
    /// Not looked up yet (a static token at start): used as valid until the lookup says more.
    Unknown,
    /// Never expires (a root token).
    Forever,
    /// Expires at `expires_at`; granted `granted` at `at`, renewable or not; `capped` when the
    /// last renewal granted less than the token's full TTL, so its max TTL is near.
    Until {
        at: Instant,
        granted: Duration,
        expires_at: Instant,
        renewable: bool,
        full_ttl: Duration,
        capped: bool,
    },
}

impl Lease {
    fn valid(&self, now: Instant) -> bool {
        match self {
            Self::Unknown | Self::Forever => true,
            Self::Until { expires_at, .. } => now < *expires_at,
        }
    }
}

impl Session {
    /// A session for `config`; with `method = "token"` it holds `static_token` (when not empty)
    /// at once. Nothing is sent to Vault until [`Session::maintain`] runs or a request is made.
    pub fn new(config: &Config, static_token: &str) -> Result<Arc<Self>, String> {
        if let Auth::Kubernetes {
            role,
            mount,
            jwt_file,
        } = &config.auth
        {
            if role.trim().is_empty() {
                return Err("vault.auth.role is required with method = \"kubernetes\"".into());
            }
            if !crate::secrets::plain_segments(mount.trim_matches('/'), true) {
                return Err("vault.auth.mount must be a plain path such as `kubernetes`".into());
            }
            if jwt_file.as_os_str().is_empty() {
                return Err("vault.auth.jwt_file must name the service-account token file".into());
            }
        }
        if matches!(config.auth, Auth::Kubernetes { .. }) && !static_token.trim().is_empty() {
            info!("VAULT_TOKEN is set but not used: token-vault logs in with Kubernetes auth");
        }
        let static_token = match (&config.auth, static_token.trim()) {
            (Auth::Token, "") | (Auth::Kubernetes { .. }, _) => None,
            (Auth::Token, token) => Some(Token::new(token)),
        };
        let session = Self {
            addr: config.addr.clone(),
            timeout: config.timeout,
            auth: config.auth.clone(),
            static_token,
            held: RwLock::new(None),
        };
        if let Some(token) = &session.static_token {
            let client = session.client_with(token)?;
            session.set(Some(Held {
                client,
                lease: Lease::Unknown,
            }));
        }
        Ok(Arc::new(session))
    }

    /// The client acting with the current token, or UNAVAILABLE while there is no valid one.
    pub fn client(&self) -> Result<Arc<VaultClient>, Error> {
        let held = self
            .held
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match held.as_ref() {
            Some(held) if held.lease.valid(Instant::now()) => Ok(held.client.clone()),
            _ => Err(Error::Unavailable {
                dependency: "vault",
                reason: "token-vault holds no valid Vault token".to_owned(),
            }),
        }
    }

    /// Readiness: whether a valid token is held.
    pub fn check(&self) -> Result<(), String> {
        self.client().map(drop).map_err(|_| match self.auth {
            Auth::Token if self.static_token.is_none() => {
                "no Vault token: set VAULT_TOKEN, or configure [vault.auth]".to_owned()
            }
            _ => "token-vault holds no valid Vault token".to_owned(),
        })
    }

    fn set(&self, held: Option<Held>) {
        *self
            .held
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = held;
    }

    fn current(&self) -> Option<Held> {
        self.held
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn client_with(&self, token: &Token) -> Result<Arc<VaultClient>, String> {
        let settings = VaultClientSettingsBuilder::default()
            .address(&self.addr)
            .token(token.expose())
            .timeout(Some(self.timeout))
            .build()
            .map_err(|e| format!("vault client settings: {e}"))?;
        VaultClient::new(settings)
            .map(Arc::new)
            .map_err(|e| format!("vault client: {e}"))
    }

    /// Keeps a valid token until `shutdown`: logs in, renews, logs in again.
    pub async fn maintain(self: Arc<Self>, shutdown: CancellationToken) {
        let mut retry = RETRY_MIN;
        loop {
            let wait = match self.step().await {
                Ok(wait) => {
                    retry = RETRY_MIN;
                    wait
                }
                Err(()) => {
                    let wait = retry;
                    retry = (retry * 2).min(RETRY_MAX);
                    wait
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One round: whatever the token needs now. `Ok(wait)` until the next round; `Err` to try
    /// again after a back-off (the failure is logged here).
    async fn step(&self) -> Result<Duration, ()> {
        let now = Instant::now();
        let Some(held) = self.current() else {
            return self.log_in().await;
        };
        match held.lease {
            // A token that never expires is looked up again now and then (`next_round`), so a
            // revoked one is noticed.
            Lease::Unknown | Lease::Forever => self.look_up(&held).await,
            Lease::Until { expires_at, .. } if now >= expires_at => {
                warn!("the vault token expired");
                self.set(None);
                self.log_in().await
            }
            Lease::Until {
                at,
                granted,
                renewable,
                capped,
                expires_at,
                ..
            } => {
                let due = at + granted * 2 / 3;
                if now < due {
                    return Ok(due - now);
                }
                match (&self.auth, renewable && !capped) {
                    (_, true) => self.renew(&held).await,
                    (Auth::Kubernetes { .. }, false) => {
                        // The token cannot be extended: a new login before it expires. Until
                        // that succeeds the current token stays in use.
                        self.log_in().await
                    }
                    (Auth::Token, false) => Ok(expires_at - now),
                }
            }
        }
    }

    /// Logs in with the service-account token (`method = "kubernetes"`); a static token that
    /// was lost cannot be had again, so its absence is only reported.
    async fn log_in(&self) -> Result<Duration, ()> {
        let Auth::Kubernetes {
            role,
            mount,
            jwt_file,
        } = &self.auth
        else {
            return match &self.static_token {
                // A refused static token: looked up again in case Vault accepts it once more.
                Some(token) => {
                    let client = self.client_with(token).map_err(|error| {
                        warn!(%error, "cannot build the vault client");
                    })?;
                    self.look_up(&Held {
                        client,
                        lease: Lease::Unknown,
                    })
                    .await
                }
                None => Ok(NON_EXPIRING_CHECK),
            };
        };
        let jwt = match tokio::fs::read_to_string(jwt_file).await {
            Ok(text) if !text.trim().is_empty() => Token::new(text.trim()),
            Ok(_) => {
                warn!(file = %jwt_file.display(), "the service-account token file is empty");
                return Err(());
            }
            Err(error) => {
                warn!(file = %jwt_file.display(), %error, "cannot read the service-account token file");
                return Err(());
            }
        };
        let anonymous = self
            .client_with(&Token::new(""))
            .map_err(|error| warn!(%error, "cannot build the vault client"))?;
        let started = Instant::now();
        let mount = mount.trim_matches('/');
        match vaultrs::auth::kubernetes::login(anonymous.as_ref(), mount, role, jwt.expose()).await
        {
            Ok(auth) => {
                let token = Token::new(auth.client_token);
                let client = self
                    .client_with(&token)
                    .map_err(|error| warn!(%error, "cannot build the vault client"))?;
                let granted = Duration::from_secs(auth.lease_duration);
                let lease = if auth.lease_duration == 0 {
                    Lease::Forever
                } else {
                    Lease::Until {
                        at: started,
                        granted,
                        expires_at: started + granted,
                        renewable: auth.renewable,
                        full_ttl: granted,
                        capped: false,
                    }
                };
                info!(
                    method = "kubernetes",
                    mount,
                    role = role.as_str(),
                    ttl_secs = auth.lease_duration,
                    renewable = auth.renewable,
                    "logged in to vault"
                );
                self.set(Some(Held { client, lease }));
                Ok(next_round(&lease, started))
            }
            Err(error) => {
                warn!(
                    mount,
                    role = role.as_str(),
                    error = %describe(&error),
                    "vault login failed"
                );
                Err(())
            }
        }
    }

    /// Learns the lease of `held`'s token (`auth/token/lookup-self`).
    async fn look_up(&self, held: &Held) -> Result<Duration, ()> {
        let started = Instant::now();
        match vaultrs::token::lookup_self(held.client.as_ref()).await {
            Ok(found) => {
                let renewable = found.renewable.unwrap_or(false);
                let lease = if found.ttl == 0 {
                    Lease::Forever
                } else {
                    let granted = Duration::from_secs(found.ttl);
                    let full_ttl = Duration::from_secs(found.creation_ttl.max(found.ttl));
                    Lease::Until {
                        at: started,
                        granted,
                        expires_at: started + granted,
                        renewable,
                        full_ttl,
                        capped: false,
                    }
                };
                if matches!(held.lease, Lease::Unknown) {
                    info!(
                        method = "token",
                        ttl_secs = found.ttl,
                        renewable,
                        "using the vault token from the environment"
                    );
                }
                self.set(Some(Held {
                    client: held.client.clone(),
                    lease,
                }));
                Ok(next_round(&lease, started))
            }
            Err(error) => self.failed(held, "looking up the vault token", &error),
        }
    }

    /// Renews `held`'s token (`auth/token/renew-self`) by its full TTL, as far as its max TTL
    /// allows.
    async fn renew(&self, held: &Held) -> Result<Duration, ()> {
        let Lease::Until {
            full_ttl,
            expires_at: previous_expiry,
            ..
        } = held.lease
        else {
            return Ok(NON_EXPIRING_CHECK);
        };
        let started = Instant::now();
        match vaultrs::token::renew_self(held.client.as_ref(), None).await {
            Ok(auth) => {
                // Vault counts in whole seconds: a renewal near the max TTL may report less
                // than is left, never more.
                let expires_at =
                    (started + Duration::from_secs(auth.lease_duration)).max(previous_expiry);
                let granted = expires_at - started;
                let capped = granted < full_ttl;
                let lease = Lease::Until {
                    at: started,
                    granted,
                    expires_at,
                    renewable: auth.renewable,
                    full_ttl,
                    capped,
                };
                info!(
                    ttl_secs = auth.lease_duration,
                    max_ttl_near = capped,
                    "vault token renewed"
                );
                self.set(Some(Held {
                    client: held.client.clone(),
                    lease,
                }));
                Ok(next_round(&lease, started))
            }
            Err(error) => self.failed(held, "renewing the vault token", &error),
        }
    }

    /// A lookup or renewal failed: a token Vault refuses is dropped (and, with Kubernetes auth,
    /// replaced by a new login right away); otherwise it stays in use until it expires.
    fn failed(&self, held: &Held, what: &'static str, error: &ClientError) -> Result<Duration, ()> {
        let refused = matches!(
            error,
            ClientError::APIError {
                code: 400 | 401 | 403,
                ..
            }
        );
        warn!(error = %describe(error), refused, "{what} failed");
        if refused {
            self.set(None);
            if matches!(self.auth, Auth::Kubernetes { .. }) {
                return Ok(Duration::ZERO);
            }
        } else if !held.lease.valid(Instant::now()) {
            self.set(None);
        }
        Err(())
    }
}

/// When the next round is due after `lease` was granted at `at`.
fn next_round(lease: &Lease, at: Instant) -> Duration {
    match lease {
        Lease::Unknown => Duration::ZERO,
        Lease::Forever => NON_EXPIRING_CHECK,
        Lease::Until { granted, .. } => (at + *granted * 2 / 3).saturating_duration_since(at),
    }
}

/// Vault's answer without anything of the request (a login's request carries the JWT).
fn describe(error: &ClientError) -> String {
    match error {
        ClientError::APIError { code, errors } => format!("HTTP {code}: {}", errors.join("; ")),
        ClientError::RestClientError { .. } => "vault unreachable".to_owned(),
        _ => "unexpected answer from vault".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_is_the_static_token_unless_kubernetes_is_configured() {
        assert_eq!(
            crate::parse_config("").expect("empty").vault.auth,
            Auth::Token
        );
        let kubernetes =
            crate::parse_config("[vault.auth]\nmethod = \"kubernetes\"\nrole = \"r\"\n")
                .expect("kubernetes")
                .vault
                .auth;
        assert_eq!(
            kubernetes,
            Auth::Kubernetes {
                role: "r".into(),
                mount: "kubernetes".into(),
                jwt_file: "/var/run/secrets/kubernetes.io/serviceaccount/token".into(),
            }
        );
        let typo = crate::parse_config(
            "[vault.auth]\nmethod = \"kubernetes\"\nrole = \"r\"\njwt = \"x\"\n",
        )
        .expect_err("unknown field");
        assert!(typo.contains("jwt"), "{typo}");
        let unknown = crate::parse_config("[vault.auth]\nmethod = \"approle\"\n")
            .expect_err("unknown method");
        assert!(unknown.contains("approle"), "{unknown}");
        let missing =
            crate::parse_config("[vault.auth]\nmethod = \"kubernetes\"\n").expect_err("no role");
        assert!(missing.contains("role"), "{missing}");
    }

    #[test]
    fn a_session_without_a_token_is_not_ready_and_refuses_requests() {
        let config = Config::default();
        let session = Session::new(&config, "  ").expect("session");
        assert!(
            session
                .check()
                .expect_err("no token")
                .contains("VAULT_TOKEN")
        );
        assert!(matches!(
            session.client(),
            Err(Error::Unavailable {
                dependency: "vault",
                ..
            })
        ));
        let held = Session::new(&config, "a-token").expect("session");
        assert!(
            held.check().is_ok(),
            "a static token is used until looked up"
        );
        let blank_role = Config {
            auth: Auth::Kubernetes {
                role: " ".into(),
                mount: default_mount(),
                jwt_file: default_jwt_file(),
            },
            ..Config::default()
        };
        assert!(Session::new(&blank_role, "").is_err());
    }

    #[test]
    fn renewal_is_due_at_two_thirds_of_the_lease() {
        let at = Instant::now();
        let lease = Lease::Until {
            at,
            granted: Duration::from_secs(3),
            expires_at: at + Duration::from_secs(3),
            renewable: true,
            full_ttl: Duration::from_secs(3),
            capped: false,
        };
        assert_eq!(next_round(&lease, at), Duration::from_secs(2));
        assert!(lease.valid(at + Duration::from_millis(2999)));
        assert!(!lease.valid(at + Duration::from_secs(3)));
    }
}
