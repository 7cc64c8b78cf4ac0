//! Credentials in Vault: encrypted with Transit under a per-tenant key, then written to KV v2.
//!
//! - One KV path per (tenant, connection, identifier):
//!   `<path_prefix>/<sha256(tenant)>/<sha256(connection NUL identifier)>`. Every segment a
//!   caller influences is hashed, so no tenant or identifier can reach another path.
//! - The KV entry holds only `{"ciphertext": "vault:v1:…"}`: a KV read alone yields ciphertext.
//! - Every write is check-and-set against the version the writer read; a stale writer gets
//!   [`Error::Conflict`] and never overwrites a newer credential.
//! - Each tenant has its own Transit key ([`tenant_key_name`]), created on first use with
//!   `deletion_allowed`, so deleting it crypto-shreds every copy of the tenant's ciphertext. The
//!   name hashes the path prefix too, so deployments (or tests) sharing a Vault under different
//!   prefixes never share a key.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vaultrs::api::kv2::requests::{ReadSecretRequest, SetSecretRequestOptions};
use vaultrs::api::kv2::responses::ReadSecretResponse;
use vaultrs::api::transit::requests::UpdateKeyConfigurationRequest;
use vaultrs::api::transit::responses::ReadKeyData;
use vaultrs::client::VaultClient;
use vaultrs::error::ClientError;

use crate::Error;
use crate::vault::{Config, Session};

/// A token. Its `Debug` prints `[redacted]`; only [`Token::expose`] gives the text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The token itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The secret blob of one account, as encrypted into Vault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    pub access_token: Token,
    #[serde(default)]
    pub refresh_token: Option<Token>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// Which account a secret belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Location<'a> {
    pub tenant: &'a str,
    pub connection: &'a str,
    pub identifier: &'a str,
}

/// What the KV entry holds.
#[derive(Serialize, Deserialize)]
struct Entry {
    ciphertext: String,
}

/// Vault's KV v2 and Transit, as token-vault uses them.
pub struct Secrets {
    session: Arc<Session>,
    kv_mount: String,
    transit_mount: String,
    path_prefix: String,
    /// Tenant keys known to exist with `deletion_allowed` set.
    keys: Mutex<HashSet<String>>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("kv_mount", &self.kv_mount)
            .field("transit_mount", &self.transit_mount)
            .field("path_prefix", &self.path_prefix)
            .finish_non_exhaustive()
    }
}

/// The Transit key of `tenant` under `path_prefix`:
/// `agentauth-tenant-<sha256(path_prefix NUL tenant) hex[..32]>`.
pub fn tenant_key_name(path_prefix: &str, tenant: &str) -> String {
    format!(
        "agentauth-tenant-{}",
        &sha256_hex(&[path_prefix.trim_matches('/'), tenant])[..32]
    )
}

fn sha256_hex(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update([0u8]);
        }
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

pub(crate) fn plain_segments(text: &str, allow_slash: bool) -> bool {
    !text.is_empty()
        && (allow_slash || !text.contains('/'))
        && text.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        })
}

impl Secrets {
    /// A client for `config` acting with the static `token`; connects on first use.
    pub fn new(config: &Config, token: &str) -> Result<Self, String> {
        Self::with_session(config, Session::new(config, token)?)
    }

    /// A client for `config` acting with whatever token `session` holds at each request.
    pub fn with_session(config: &Config, session: Arc<Session>) -> Result<Self, String> {
        if !plain_segments(&config.kv_mount, false) || !plain_segments(&config.transit_mount, false)
        {
            return Err("vault.kv_mount and vault.transit_mount must be plain mount names".into());
        }
        let path_prefix = config.path_prefix.trim_matches('/');
        if !plain_segments(path_prefix, true) {
            return Err(
                "vault.path_prefix must be `/`-separated segments of a-z, A-Z, 0-9, `-`, `_`, `.`"
                    .into(),
            );
        }
        Ok(Self {
            session,
            kv_mount: config.kv_mount.clone(),
            transit_mount: config.transit_mount.clone(),
            path_prefix: path_prefix.to_owned(),
            keys: Mutex::new(HashSet::new()),
        })
    }

    /// The client acting with the session's current token; UNAVAILABLE while it has none.
    fn client(&self) -> Result<Arc<VaultClient>, Error> {
        self.session.client()
    }

    fn key_name(&self, tenant: &str) -> String {
        tenant_key_name(&self.path_prefix, tenant)
    }

    fn tenant_dir(&self, tenant: &str) -> String {
        format!("{}/{}", self.path_prefix, sha256_hex(&[tenant]))
    }

    /// The KV path (under the mount) of one account's secret.
    pub fn path(&self, at: Location<'_>) -> String {
        format!(
            "{}/{}",
            self.tenant_dir(at.tenant),
            sha256_hex(&[at.connection, at.identifier])
        )
    }

    /// The KV path of an event subscription's webhook secret. Its hash starts with an empty
    /// part, which no account's path has (connection names are never empty), so it can reach
    /// no credential; it sits beside them, so deleting the tenant shreds it too.
    fn webhook_path(&self, tenant: &str, subscription_id: &str) -> String {
        format!(
            "{}/{}",
            self.tenant_dir(tenant),
            sha256_hex(&["", "webhook", subscription_id])
        )
    }

    /// Encrypts a webhook's `X-Hook-Secret` under `tenant`'s key and keeps it for
    /// `subscription_id`, replacing an earlier one.
    pub async fn write_webhook_secret(
        &self,
        tenant: &str,
        subscription_id: &str,
        secret: &Token,
    ) -> Result<(), Error> {
        let ciphertext = self.encrypt(tenant, secret.expose().as_bytes()).await?;
        vaultrs::kv2::set(
            &*self.client()?,
            &self.kv_mount,
            &self.webhook_path(tenant, subscription_id),
            &Entry { ciphertext },
        )
        .await
        .map_err(vault_error)?;
        Ok(())
    }

    /// The webhook secret of `subscription_id`; `None` when none is kept.
    pub async fn read_webhook_secret(
        &self,
        tenant: &str,
        subscription_id: &str,
    ) -> Result<Option<Token>, Error> {
        let path = self.webhook_path(tenant, subscription_id);
        let Some((ciphertext, _)) = self.read_entry(&path).await? else {
            return Ok(None);
        };
        let plaintext = self.decrypt(tenant, &ciphertext).await?;
        String::from_utf8(plaintext)
            .map(|text| Some(Token::new(text)))
            .map_err(|_| Error::Internal("a stored webhook secret does not decode".into()))
    }

    /// Destroys every version of `subscription_id`'s webhook secret.
    pub async fn destroy_webhook_secret(
        &self,
        tenant: &str,
        subscription_id: &str,
    ) -> Result<(), Error> {
        self.destroy_path(&self.webhook_path(tenant, subscription_id))
            .await
    }

    /// The KV mount secrets are written to.
    pub fn kv_mount(&self) -> &str {
        &self.kv_mount
    }

    /// The current version of the secret at `at`; `None` when there is none.
    pub async fn current_version(&self, at: Location<'_>) -> Result<Option<u64>, Error> {
        match vaultrs::kv2::read_metadata(&*self.client()?, &self.kv_mount, &self.path(at)).await {
            Ok(metadata) => Ok(Some(metadata.current_version)),
            Err(ClientError::APIError { code: 404, .. }) => Ok(None),
            Err(error) => Err(vault_error(error)),
        }
    }

    /// Encrypts `secret` and writes it at `at` if the current version is still `expected`
    /// (`None`: no secret yet). Returns the new version.
    pub async fn write(
        &self,
        at: Location<'_>,
        secret: &Secret,
        expected: Option<u64>,
    ) -> Result<u64, Error> {
        let plaintext = serde_json::to_vec(secret)
            .map_err(|e| Error::Internal(format!("cannot encode a secret: {e}")))?;
        let ciphertext = self.encrypt(at.tenant, &plaintext).await?;
        self.write_entry(&self.path(at), ciphertext, expected.unwrap_or(0))
            .await
    }

    /// Stores `secret` at `at` in place of whatever version is current (a new consent or
    /// token replaces the credential); returns the new version. A write that raced another
    /// (a refresh, a key rotation's re-wrap) is tried again on the version now current.
    pub async fn replace(&self, at: Location<'_>, secret: &Secret) -> Result<u64, Error> {
        const ATTEMPTS: usize = 5;
        let mut attempt = 1;
        loop {
            let current = self.current_version(at).await?;
            match self.write(at, secret, current).await {
                Err(Error::Conflict { .. }) if attempt < ATTEMPTS => attempt += 1,
                written => return written,
            }
        }
    }

    /// Writes `ciphertext` at `path` if its current version is still `cas` (0: none yet);
    /// returns the new version, or [`Error::Conflict`].
    async fn write_entry(&self, path: &str, ciphertext: String, cas: u64) -> Result<u64, Error> {
        let written = vaultrs::kv2::set_with_options(
            &*self.client()?,
            &self.kv_mount,
            path,
            &Entry { ciphertext },
            SetSecretRequestOptions {
                cas: u32::try_from(cas)
                    .map_err(|_| Error::Internal("credential version out of range".into()))?,
            },
        )
        .await;
        match written {
            Ok(metadata) => Ok(metadata.version),
            Err(ClientError::APIError { code: 400, errors })
                if errors.iter().any(|e| e.contains("check-and-set")) =>
            {
                Err(Error::Conflict { expected: cas })
            }
            Err(error) => Err(vault_error(error)),
        }
    }

    /// The secret at `at` and its version: a KV read, then a Transit decrypt.
    pub async fn read(&self, at: Location<'_>) -> Result<Option<(Secret, u64)>, Error> {
        let Some((ciphertext, version)) = self.read_entry(&self.path(at)).await? else {
            return Ok(None);
        };
        let plaintext = self.decrypt(at.tenant, &ciphertext).await?;
        let secret = serde_json::from_slice(&plaintext)
            .map_err(|_| Error::Internal("a stored secret does not decode".into()))?;
        Ok(Some((secret, version)))
    }

    /// The ciphertext stored at `path` and its KV version, as stored (nothing is decrypted).
    async fn read_entry(&self, path: &str) -> Result<Option<(String, u64)>, Error> {
        let request = ReadSecretRequest::builder()
            .mount(self.kv_mount.as_str())
            .path(path)
            .build()
            .map_err(|e| Error::Internal(format!("vault request: {e}")))?;
        let response: ReadSecretResponse =
            match vaultrs::api::exec_with_result(&*self.client()?, request).await {
                Ok(response) => response,
                Err(ClientError::APIError { code: 404, .. }) => return Ok(None),
                Err(error) => return Err(vault_error(error)),
            };
        let entry: Entry = serde_json::from_value(response.data)
            .map_err(|_| Error::Internal("a stored secret is malformed".into()))?;
        Ok(Some((entry.ciphertext, response.metadata.version)))
    }

    /// Rotates `tenant`'s key: a new key version, which every encryption uses from now on,
    /// while older versions still decrypt. Returns the new version, or `None` when the tenant
    /// has no key (nothing was ever stored for it).
    pub async fn rotate_key(&self, tenant: &str) -> Result<Option<u64>, Error> {
        if self.key_versions(tenant).await?.is_none() {
            return Ok(None);
        }
        vaultrs::transit::key::rotate(
            &*self.client()?,
            &self.transit_mount,
            &self.key_name(tenant),
        )
        .await
        .map_err(vault_error)?;
        match self.key_versions(tenant).await? {
            Some((latest, _)) => Ok(Some(latest)),
            None => Err(Error::Internal(
                "the tenant key vanished while it was rotated".into(),
            )),
        }
    }

    /// `tenant`'s key's `(latest version, min_decryption_version)`; `None` without a key.
    pub async fn key_versions(&self, tenant: &str) -> Result<Option<(u64, u64)>, Error> {
        let read = match vaultrs::transit::key::read(
            &*self.client()?,
            &self.transit_mount,
            &self.key_name(tenant),
        )
        .await
        {
            Ok(read) => read,
            Err(ClientError::APIError { code: 404, .. }) => return Ok(None),
            Err(error) => return Err(vault_error(error)),
        };
        let latest = match &read.keys {
            ReadKeyData::Symmetric(versions) => {
                versions.keys().filter_map(|v| v.parse().ok()).max()
            }
            ReadKeyData::Asymmetric(_) => None,
        };
        Ok(latest.map(|latest| (latest, read.min_decryption_version)))
    }

    /// Lets only `version` and newer of `tenant`'s key decrypt: ciphertext under older
    /// versions becomes unreadable. Never lowers it (a concurrent rotation may have raised it
    /// further).
    pub async fn raise_min_decryption_version(
        &self,
        tenant: &str,
        version: u64,
    ) -> Result<(), Error> {
        if self
            .key_versions(tenant)
            .await?
            .is_some_and(|(_, min)| min >= version)
        {
            return Ok(());
        }
        vaultrs::transit::key::update(
            &*self.client()?,
            &self.transit_mount,
            &self.key_name(tenant),
            Some(UpdateKeyConfigurationRequest::builder().min_decryption_version(version)),
        )
        .await
        .map_err(vault_error)
    }

    /// Re-wraps `ciphertext` of `tenant` under its key's latest version, inside Vault (Transit
    /// `rewrap`: the plaintext never leaves it). Already at `target` or newer: returned as is.
    pub async fn rewrap(
        &self,
        tenant: &str,
        ciphertext: &str,
        target: u64,
    ) -> Result<Rewrapped, Error> {
        if key_version(ciphertext).is_some_and(|v| v >= target) {
            return Ok(Rewrapped::Current);
        }
        let rewrapped = vaultrs::transit::data::rewrap(
            &*self.client()?,
            &self.transit_mount,
            &self.key_name(tenant),
            ciphertext,
            None,
        )
        .await
        .map_err(vault_error)?;
        Ok(Rewrapped::Into(rewrapped.ciphertext))
    }

    /// Re-wraps the credential at `at` under version `target` (or newer) of its tenant's key,
    /// written back with check-and-set on the version read: when another writer (a refresh, a
    /// new consent) got there first, its version is read and, unless already under the new key
    /// version, re-wrapped in turn.
    pub async fn rewrap_credential(&self, at: Location<'_>, target: u64) -> Result<Rewrap, Error> {
        self.rewrap_entry(at.tenant, &self.path(at), target).await
    }

    /// Like [`Secrets::rewrap_credential`], for a webhook secret.
    pub async fn rewrap_webhook_secret(
        &self,
        tenant: &str,
        subscription_id: &str,
        target: u64,
    ) -> Result<Rewrap, Error> {
        self.rewrap_entry(tenant, &self.webhook_path(tenant, subscription_id), target)
            .await
    }

    async fn rewrap_entry(&self, tenant: &str, path: &str, target: u64) -> Result<Rewrap, Error> {
        const ATTEMPTS: usize = 10;
        for _ in 0..ATTEMPTS {
            let Some((ciphertext, version)) = self.read_entry(path).await? else {
                return Ok(Rewrap::Missing);
            };
            let Rewrapped::Into(rewrapped) = self.rewrap(tenant, &ciphertext, target).await? else {
                return Ok(Rewrap::Current);
            };
            match self.write_entry(path, rewrapped, version).await {
                Ok(written) => return Ok(Rewrap::Rewrapped { version: written }),
                // Written meanwhile: read the newer version and look again.
                Err(Error::Conflict { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Err(Error::RetryLater {
            dependency: "vault",
            reason: "a stored secret kept changing while it was re-wrapped".to_owned(),
            retry_after: std::time::Duration::from_secs(1),
        })
    }

    /// Encrypts `plaintext` with Transit under `tenant`'s key (created on first use); returns
    /// the `vault:v1:…` ciphertext.
    pub async fn encrypt(&self, tenant: &str, plaintext: &[u8]) -> Result<String, Error> {
        let key = self.ensure_key(tenant).await?;
        let encrypted = vaultrs::transit::data::encrypt(
            &*self.client()?,
            &self.transit_mount,
            &key,
            &BASE64.encode(plaintext),
            None,
        )
        .await
        .map_err(vault_error)?;
        Ok(encrypted.ciphertext)
    }

    /// Decrypts what [`Secrets::encrypt`] made for `tenant`.
    pub async fn decrypt(&self, tenant: &str, ciphertext: &str) -> Result<Vec<u8>, Error> {
        let decrypted = vaultrs::transit::data::decrypt(
            &*self.client()?,
            &self.transit_mount,
            &self.key_name(tenant),
            ciphertext,
            None,
        )
        .await
        .map_err(vault_error)?;
        BASE64
            .decode(decrypted.plaintext)
            .map_err(|_| Error::Internal("Transit answered with malformed plaintext".into()))
    }

    /// One field of a KV v2 secret that an operator put in Vault (an OAuth app's client
    /// secret), named by its API path `<mount>/data/<path>` and field.
    pub async fn read_field(&self, path: &str, field: &str) -> Result<Token, Error> {
        let (mount, rest) = path.trim_matches('/').split_once("/data/").ok_or_else(|| {
            Error::Internal(format!(
                "the Vault reference `{path}` is not a KV v2 path `<mount>/data/<path>`"
            ))
        })?;
        let data: std::collections::HashMap<String, serde_json::Value> =
            match vaultrs::kv2::read(&*self.client()?, mount, rest).await {
                Ok(data) => data,
                Err(ClientError::APIError { code: 404, .. }) => {
                    return Err(Error::Internal(format!(
                        "nothing is stored in Vault at `{path}`"
                    )));
                }
                Err(error) => return Err(vault_error(error)),
            };
        match data.get(field) {
            Some(serde_json::Value::String(value)) if !value.is_empty() => {
                Ok(Token::new(value.clone()))
            }
            _ => Err(Error::Internal(format!(
                "the Vault secret at `{path}` has no text field `{field}`"
            ))),
        }
    }

    /// Destroys every version of the secret at `at`, and its metadata.
    pub async fn destroy(&self, at: Location<'_>) -> Result<(), Error> {
        self.destroy_path(&self.path(at)).await
    }

    async fn destroy_path(&self, path: &str) -> Result<(), Error> {
        match vaultrs::kv2::delete_metadata(&*self.client()?, &self.kv_mount, path).await {
            Ok(()) | Err(ClientError::APIError { code: 404, .. }) => Ok(()),
            Err(error) => Err(vault_error(error)),
        }
    }

    /// Crypto-shreds `tenant`: deletes its Transit key (so every copy of its ciphertext is
    /// unreadable), then the KV entries of `accounts` and `webhook_secrets` (subscription ids)
    /// of the tenant, as the database knows them (Vault is never listed). Returns once the key
    /// no longer exists.
    pub async fn delete_tenant(
        &self,
        tenant: &str,
        accounts: &[Location<'_>],
        webhook_secrets: &[String],
    ) -> Result<(), Error> {
        let key = self.key_name(tenant);
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&key);
        match vaultrs::transit::key::read(&*self.client()?, &self.transit_mount, &key).await {
            Ok(_) => {
                vaultrs::transit::key::update(
                    &*self.client()?,
                    &self.transit_mount,
                    &key,
                    Some(UpdateKeyConfigurationRequest::builder().deletion_allowed(true)),
                )
                .await
                .map_err(vault_error)?;
                match vaultrs::transit::key::delete(&*self.client()?, &self.transit_mount, &key)
                    .await
                {
                    Ok(()) | Err(ClientError::APIError { code: 404, .. }) => {}
                    Err(error) => return Err(vault_error(error)),
                }
            }
            Err(ClientError::APIError { code: 404, .. }) => {}
            Err(error) => return Err(vault_error(error)),
        }
        for at in accounts {
            self.destroy(*at).await?;
        }
        for subscription_id in webhook_secrets {
            self.destroy_webhook_secret(tenant, subscription_id).await?;
        }
        Ok(())
    }

    /// The tenant's key name, after making sure the key exists and may be deleted later.
    async fn ensure_key(&self, tenant: &str) -> Result<String, Error> {
        let key = self.key_name(tenant);
        let known = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&key);
        if !known {
            // Creating an existing key changes nothing, so concurrent first uses are harmless.
            vaultrs::transit::key::create(&*self.client()?, &self.transit_mount, &key, None)
                .await
                .map_err(vault_error)?;
            vaultrs::transit::key::update(
                &*self.client()?,
                &self.transit_mount,
                &key,
                Some(UpdateKeyConfigurationRequest::builder().deletion_allowed(true)),
            )
            .await
            .map_err(vault_error)?;
            self.keys
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(key.clone());
        }
        Ok(key)
    }
}

/// The result of re-wrapping one ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrapped {
    /// Already under the target key version or newer.
    Current,
    /// The same plaintext under the key's latest version.
    Into(String),
}

/// The result of re-wrapping one stored secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrap {
    /// Re-wrapped, stored as KV version `version`.
    Rewrapped { version: u64 },
    /// Its current KV version was already under the target key version.
    Current,
    /// Nothing is stored there (disconnected, or never connected).
    Missing,
}

/// The key version a Transit ciphertext (`vault:v<N>:…`) was made with.
pub fn key_version(ciphertext: &str) -> Option<u64> {
    ciphertext
        .strip_prefix("vault:v")?
        .split_once(':')?
        .0
        .parse()
        .ok()
}

/// Vault down, sealed or overloaded is UNAVAILABLE; any other refusal is a fault of this
/// service's setup (a missing mount, a token without the policy), INTERNAL.
fn vault_error(error: ClientError) -> Error {
    match error {
        ClientError::APIError { code, errors } if matches!(code, 429 | 500 | 502 | 503 | 504) => {
            Error::Unavailable {
                dependency: "vault",
                reason: format!("HTTP {code}: {}", errors.join("; ")),
            }
        }
        ClientError::APIError { code, errors } => Error::Internal(format!(
            "vault refused a request: HTTP {code}: {}",
            errors.join("; ")
        )),
        ClientError::RestClientError { source } => Error::Unavailable {
            dependency: "vault",
            reason: source.to_string(),
        },
        other => Error::Internal(format!("vault: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentauth_testkit::openbao;

    fn secrets() -> Secrets {
        let server = openbao::shared();
        let config = Config {
            addr: server.addr().to_owned(),
            path_prefix: openbao::fresh_prefix(),
            ..Config::default()
        };
        Secrets::new(&config, server.token()).expect("secrets")
    }

    fn secret(token: &str) -> Secret {
        Secret {
            access_token: Token::new(token),
            refresh_token: Some(Token::new("refresh-me")),
            expires_at: None,
            scopes: vec!["default".into()],
        }
    }

    #[test]
    fn the_key_version_is_read_from_a_ciphertext() {
        assert_eq!(key_version("vault:v1:abc"), Some(1));
        assert_eq!(key_version("vault:v12:abc:def"), Some(12));
        assert_eq!(key_version("vault:vx:abc"), None);
        assert_eq!(key_version("plain"), None);
    }

    #[tokio::test]
    async fn a_rewrap_moves_a_secret_to_the_new_key_version_and_keeps_it_readable() {
        let secrets = secrets();
        let at = Location {
            tenant: "rewrap-tenant",
            connection: "asana",
            identifier: "user_1",
        };
        let written = secrets
            .write(at, &secret("one"), None)
            .await
            .expect("written");
        assert_eq!(
            secrets.key_versions("no-such-tenant").await.expect("read"),
            None
        );
        assert_eq!(
            secrets.rotate_key("no-such-tenant").await.expect("read"),
            None
        );
        assert_eq!(
            secrets.rotate_key(at.tenant).await.expect("rotated"),
            Some(2)
        );

        let rewrapped = secrets.rewrap_credential(at, 2).await.expect("rewrapped");
        assert_eq!(
            rewrapped,
            Rewrap::Rewrapped {
                version: written + 1
            }
        );
        let (ciphertext, version) = secrets
            .read_entry(&secrets.path(at))
            .await
            .expect("read")
            .expect("stored");
        assert_eq!((key_version(&ciphertext), version), (Some(2), written + 1));
        assert_eq!(
            secrets.rewrap_credential(at, 2).await.expect("again"),
            Rewrap::Current,
            "already under version 2: nothing is written"
        );
        let elsewhere = Location {
            identifier: "nobody",
            ..at
        };
        assert_eq!(
            secrets
                .rewrap_credential(elsewhere, 2)
                .await
                .expect("nothing"),
            Rewrap::Missing
        );

        secrets
            .raise_min_decryption_version(at.tenant, 2)
            .await
            .expect("raised");
        assert_eq!(
            secrets.key_versions(at.tenant).await.expect("read"),
            Some((2, 2))
        );
        let (stored, _) = secrets.read(at).await.expect("read").expect("present");
        assert_eq!(stored.access_token.expose(), "one");
    }

    #[test]
    fn debug_never_prints_tokens() {
        let text = format!("{:?}", secret("access-me"));
        assert!(
            !text.contains("access-me") && !text.contains("refresh-me"),
            "{text}"
        );
        assert!(text.contains("[redacted]"), "{text}");
    }

    #[test]
    fn paths_hash_every_segment_a_caller_controls() {
        let secrets = secrets();
        let path = secrets.path(Location {
            tenant: "../../sys",
            connection: "asana",
            identifier: "../other/../x",
        });
        assert!(!path.contains(".."), "{path}");
        assert_eq!(
            path.split('/').count(),
            secrets.path_prefix.split('/').count() + 2
        );
        let bad = Config {
            path_prefix: "a/../b".into(),
            ..Config::default()
        };
        assert!(Secrets::new(&bad, "t").is_err());
    }

    #[tokio::test]
    async fn a_stale_writer_is_refused_and_the_newer_secret_survives() {
        let secrets = secrets();
        let at = Location {
            tenant: "cas-tenant",
            connection: "asana-pat",
            identifier: "user_1",
        };
        assert_eq!(secrets.current_version(at).await.expect("read"), None);
        let first = secrets
            .write(at, &secret("one"), None)
            .await
            .expect("first");
        let second = secrets
            .write(at, &secret("two"), Some(first))
            .await
            .expect("second");
        assert_eq!(second, first + 1);

        let stale = secrets.write(at, &secret("stale"), Some(first)).await;
        assert!(matches!(stale, Err(Error::Conflict { .. })), "{stale:?}");
        let create_again = secrets.write(at, &secret("stale"), None).await;
        assert!(
            matches!(create_again, Err(Error::Conflict { .. })),
            "{create_again:?}"
        );

        let (stored, version) = secrets.read(at).await.expect("read").expect("present");
        assert_eq!(version, second);
        assert_eq!(stored.access_token.expose(), "two");

        secrets.destroy(at).await.expect("destroy");
        assert_eq!(secrets.current_version(at).await.expect("read"), None);
        assert!(secrets.read(at).await.expect("read").is_none());
    }
}
