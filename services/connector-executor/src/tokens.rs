//! Access tokens from token-vault, cached per account until they come within the margin of
//! their expiry, with at most one fetch in flight per account, and dropped as soon as
//! token-vault reports the account changed.
//!
//! - The cache is keyed by (tenant, connection, identifier), so nothing crosses tenants, and
//!   holds only what token-vault handed out: an account gets an entry once a fetch succeeded,
//!   never for a request that was refused or failed.
//! - It is bounded: at most `max_entries` accounts and `max_bytes` of tokens and keys; past
//!   either, the entries unused longest go first. An entry unused for `idle` is dropped.
//! - A token Asana rejects is reported to token-vault (`ReportRejectedToken`), which refreshes
//!   it or says the account needs a new consent; a report about a version older than the
//!   cached one is answered from the cache, so a burst of 401s on one stale token costs one
//!   refresh.
//! - Revocation: [`follow`] reads token-vault's `WatchAccountChanges` and drops the entry of
//!   every account that was disconnected, needs a new consent or got a credential newer than
//!   the cached one (every entry of a deleted tenant; everything on a reset). While that stream is down, an entry
//!   older than `ttl_without_changes` is fetched again instead of used, so a revocation takes
//!   effect within that bound even then.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use agentauth_grpc::client::AuthenticatedChannel;
use agentauth_proto::vault::v1 as pb;
use agentauth_proto::vault::v1::token_vault_client::TokenVaultClient;
use asana_client::Token;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// The account a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct AccountKey {
    pub tenant: String,
    pub connection: String,
    pub identifier: String,
}

impl AccountKey {
    fn bytes(&self) -> usize {
        self.tenant.len() + self.connection.len() + self.identifier.len()
    }
}

/// A token and what the audit trail needs to know about it.
#[derive(Debug)]
pub(crate) struct AccessToken {
    pub token: Token,
    pub version: u64,
    pub account_id: String,
    pub asana_user_gid: String,
    expires_at: Option<SystemTime>,
}

impl AccessToken {
    fn valid_for(&self, margin: Duration) -> bool {
        self.expires_at.is_none_or(|at| {
            at.duration_since(SystemTime::now())
                .is_ok_and(|left| left > margin)
        })
    }

    fn bytes(&self) -> usize {
        self.token.expose().len() + self.account_id.len() + self.asana_user_gid.len()
    }
}

/// `[token_cache]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// The most accounts whose token is kept.
    pub max_entries: usize,
    /// The most bytes of tokens and account keys kept.
    pub max_bytes: usize,
    /// A token unused this long is dropped.
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
    /// While token-vault's stream of account changes is down, a token fetched longer ago than
    /// this is fetched again rather than used: the bound on how late a revocation takes effect.
    #[serde(with = "humantime_serde")]
    pub ttl_without_changes: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_bytes: 16 * 1024 * 1024,
            idle: Duration::from_secs(15 * 60),
            ttl_without_changes: Duration::from_secs(30),
        }
    }
}

#[derive(Debug)]
struct Entry {
    token: Arc<AccessToken>,
    fetched_at: Instant,
    used_at: Instant,
    bytes: usize,
}

#[derive(Debug, Default)]
struct Cache {
    entries: HashMap<AccountKey, Entry>,
    bytes: usize,
}

impl Cache {
    fn remove(&mut self, key: &AccountKey) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.bytes -= entry.bytes;
        Some(entry)
    }

    fn retain(&mut self, mut keep: impl FnMut(&AccountKey, &Entry) -> bool) -> Vec<String> {
        let mut dropped = Vec::new();
        let mut bytes = 0;
        self.entries.retain(|key, entry| {
            let kept = keep(key, entry);
            if kept {
                bytes += entry.bytes;
            } else {
                dropped.push(entry.token.account_id.clone());
            }
            kept
        });
        self.bytes = bytes;
        dropped
    }
}

/// The token cache in front of token-vault.
#[derive(Debug)]
pub(crate) struct Tokens {
    client: TokenVaultClient<AuthenticatedChannel>,
    margin: Duration,
    config: CacheConfig,
    cache: Mutex<Cache>,
    /// One lock per account with a fetch in flight; removed when the fetch ends.
    fetching: Mutex<HashMap<AccountKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Counts invalidations, so a fetch that raced one does not cache what it got.
    invalidations: AtomicU64,
    /// Whether token-vault's change stream is followed right now.
    following: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Tokens {
    pub(crate) fn new(
        client: TokenVaultClient<AuthenticatedChannel>,
        margin: Duration,
        config: CacheConfig,
    ) -> Self {
        Self {
            client,
            margin,
            config,
            cache: Mutex::default(),
            fetching: Mutex::default(),
            invalidations: AtomicU64::new(0),
            following: AtomicBool::new(false),
        }
    }

    /// The cached token of `key` if it may still be used.
    fn cached(&self, key: &AccountKey, newer_than: Option<u64>) -> Option<Arc<AccessToken>> {
        let following = self.following.load(Ordering::Acquire);
        let mut cache = lock(&self.cache);
        let entry = cache.entries.get_mut(key)?;
        let fresh = following || entry.fetched_at.elapsed() < self.config.ttl_without_changes;
        let usable = match newer_than {
            Some(version) => entry.token.version > version,
            None => entry.token.valid_for(self.margin),
        };
        if !(fresh && usable) {
            return None;
        }
        entry.used_at = Instant::now();
        Some(entry.token.clone())
    }

    /// A token valid for at least the margin.
    pub(crate) async fn get(&self, key: &AccountKey) -> Result<Arc<AccessToken>, Error> {
        if let Some(token) = self.cached(key, None) {
            return Ok(token);
        }
        self.fetch(key, None, |mut client| async move {
            let request = pb::GetAccessTokenRequest {
                tenant: key.tenant.clone(),
                connection_name: key.connection.clone(),
                identifier: key.identifier.clone(),
                min_valid_for: prost_types::Duration::try_from(self.margin * 2).ok(),
            };
            client
                .get_access_token(request)
                .await
                .map(|r| AccessToken::from(r.into_inner()))
        })
        .await
    }

    /// Asana answered 401 to `rejected`: a token to retry with, from a newer version.
    pub(crate) async fn rejected(
        &self,
        key: &AccountKey,
        rejected: &AccessToken,
        asana_request_id: Option<&str>,
    ) -> Result<Arc<AccessToken>, Error> {
        let version = rejected.version;
        self.fetch(key, Some(version), |mut client| async move {
            let request = pb::ReportRejectedTokenRequest {
                tenant: key.tenant.clone(),
                connection_name: key.connection.clone(),
                identifier: key.identifier.clone(),
                credential_version: version,
                asana_request_id: asana_request_id.unwrap_or_default().to_owned(),
            };
            client
                .report_rejected_token(request)
                .await
                .map(|r| AccessToken::from(r.into_inner()))
        })
        .await
    }

    /// Asks token-vault with `ask`, one request per account at a time: a caller that waited
    /// for another's request first takes what it cached. The answer is cached unless the
    /// account was invalidated meanwhile (then it is asked again, once); a refusal forgets
    /// the account.
    async fn fetch<F, Fut>(
        &self,
        key: &AccountKey,
        newer_than: Option<u64>,
        ask: F,
    ) -> Result<Arc<AccessToken>, Error>
    where
        F: Fn(TokenVaultClient<AuthenticatedChannel>) -> Fut,
        Fut: Future<Output = Result<AccessToken, tonic::Status>>,
    {
        let gate = lock(&self.fetching).entry(key.clone()).or_default().clone();
        let result = async {
            let _turn = gate.lock().await;
            if let Some(token) = self.cached(key, newer_than) {
                return Ok(token);
            }
            let mut attempts = 0;
            loop {
                attempts += 1;
                let seen = self.invalidations.load(Ordering::Acquire);
                let token = match ask(self.client.clone()).await {
                    Ok(token) => Arc::new(token),
                    Err(status) => {
                        lock(&self.cache).remove(key);
                        return Err(Error::from_token_vault(status));
                    }
                };
                if self.invalidations.load(Ordering::Acquire) != seen && attempts < 2 {
                    continue;
                }
                self.store(key, token.clone());
                return Ok(token);
            }
        }
        .await;
        let mut fetching = lock(&self.fetching);
        if fetching.get(key).is_some_and(|g| Arc::ptr_eq(g, &gate)) && Arc::strong_count(&gate) == 2
        {
            fetching.remove(key);
        }
        result
    }

    /// Caches `token` for `key`, dropping idle entries, then the least recently used ones
    /// while the cache is over its bounds.
    fn store(&self, key: &AccountKey, token: Arc<AccessToken>) {
        let bytes = key.bytes() + token.bytes();
        let now = Instant::now();
        let mut cache = lock(&self.cache);
        cache.remove(key);
        let idle = self.config.idle;
        cache.retain(|_, entry| now.duration_since(entry.used_at) < idle);
        while !cache.entries.is_empty()
            && (cache.entries.len() >= self.config.max_entries
                || cache.bytes + bytes > self.config.max_bytes)
        {
            let Some(oldest) = cache
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.used_at)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            cache.remove(&oldest);
        }
        if bytes > self.config.max_bytes || self.config.max_entries == 0 {
            return;
        }
        cache.bytes += bytes;
        cache.entries.insert(
            key.clone(),
            Entry {
                token,
                fetched_at: now,
                used_at: now,
                bytes,
            },
        );
    }

    /// Drops what `change` makes stale; the account ids whose entries were dropped.
    fn apply(&self, change: &pb::AccountChange) -> Vec<String> {
        self.invalidations.fetch_add(1, Ordering::AcqRel);
        let mut cache = lock(&self.cache);
        if change.kind() == pb::AccountChangeKind::TenantDeleted {
            return cache.retain(|key, _| key.tenant != change.tenant);
        }
        let key = AccountKey {
            tenant: change.tenant.clone(),
            connection: change.connection_name.clone(),
            identifier: change.identifier.clone(),
        };
        // A new credential the cache already holds (fetched before its report arrived) is
        // current: dropping it would only close the MCP session it just opened.
        let current = change.kind() == pb::AccountChangeKind::CredentialReplaced
            && cache
                .entries
                .get(&key)
                .is_some_and(|entry| entry.token.version >= change.credential_version);
        if current {
            return Vec::new();
        }
        cache
            .remove(&key)
            .map(|entry| vec![entry.token.account_id.clone()])
            .unwrap_or_default()
    }

    /// Drops everything; the account ids that were cached.
    fn clear(&self) -> Vec<String> {
        self.invalidations.fetch_add(1, Ordering::AcqRel);
        lock(&self.cache).retain(|_, _| false)
    }

    /// How many accounts and bytes the cache holds.
    #[cfg(test)]
    fn size(&self) -> (usize, usize) {
        let cache = lock(&self.cache);
        (cache.entries.len(), cache.bytes)
    }
}

/// Follows token-vault's `WatchAccountChanges` until `shutdown`, dropping stale tokens (and,
/// through `dropped`, the MCP sessions they opened); reconnects with its cursor after a
/// failure or after `silence` without a message.
pub(crate) async fn follow(
    tokens: Arc<Tokens>,
    dropped: impl Fn(&[String]) + Send,
    silence: Duration,
    shutdown: CancellationToken,
) {
    let mut cursor = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let request = pb::WatchAccountChangesRequest {
            after_sequence: cursor,
        };
        let mut client = tokens.client.clone();
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            answer = client.watch_account_changes(request) => answer,
        };
        match stream {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                loop {
                    let next = tokio::select! {
                        () = shutdown.cancelled() => return,
                        next = tokio::time::timeout(silence, stream.message()) => next,
                    };
                    let message = match next {
                        Ok(Ok(Some(message))) => message,
                        Ok(Ok(None)) => break,
                        Ok(Err(status)) => {
                            tracing::warn!(code = ?status.code(), message = status.message(), "the account change stream failed");
                            break;
                        }
                        Err(_) => {
                            tracing::warn!(?silence, "the account change stream went silent");
                            break;
                        }
                    };
                    let stale = if message.reset {
                        tokens.clear()
                    } else {
                        message
                            .changes
                            .iter()
                            .flat_map(|c| tokens.apply(c))
                            .collect()
                    };
                    if !stale.is_empty() {
                        dropped(&stale);
                    }
                    if cursor.is_none() || message.reset {
                        tracing::info!(
                            cursor = message.cursor,
                            "following token-vault's account changes"
                        );
                    }
                    cursor = Some(message.cursor);
                    tokens.following.store(true, Ordering::Release);
                    backoff = Duration::from_millis(100);
                }
            }
            Err(status) => tracing::warn!(
                code = ?status.code(),
                message = status.message(),
                "cannot follow token-vault's account changes"
            ),
        }
        tokens.following.store(false, Ordering::Release);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// `GetAccessTokenResponse` and `ReportRejectedTokenResponse` carry the same fields.
macro_rules! access_token_from {
    ($response:ty) => {
        impl From<$response> for AccessToken {
            fn from(r: $response) -> Self {
                Self {
                    token: Token::new(r.access_token),
                    version: r.credential_version,
                    account_id: r.account_id,
                    asana_user_gid: r.asana_user_gid,
                    expires_at: r.expires_at.and_then(|t| SystemTime::try_from(t).ok()),
                }
            }
        }
    };
}

access_token_from!(pb::GetAccessTokenResponse);
access_token_from!(pb::ReportRejectedTokenResponse);

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(config: CacheConfig) -> Tokens {
        let channel =
            agentauth_grpc::client::channel("http://127.0.0.1:9", None).expect("lazy channel");
        Tokens::new(
            TokenVaultClient::new(channel),
            Duration::from_secs(60),
            config,
        )
    }

    fn key(tenant: &str, identifier: &str) -> AccountKey {
        AccountKey {
            tenant: tenant.into(),
            connection: "asana".into(),
            identifier: identifier.into(),
        }
    }

    fn token(account_id: &str, version: u64) -> Arc<AccessToken> {
        Arc::new(AccessToken {
            token: Token::new("t".repeat(100)),
            version,
            account_id: account_id.into(),
            asana_user_gid: "1".into(),
            expires_at: None,
        })
    }

    fn following(tokens: &Tokens) {
        tokens.following.store(true, Ordering::Release);
    }

    #[tokio::test]
    async fn the_cache_is_bounded_by_entries_and_bytes_least_recently_used_first() {
        let tokens = tokens(CacheConfig {
            max_entries: 3,
            ..CacheConfig::default()
        });
        following(&tokens);
        for n in 0..3 {
            tokens.store(&key("acme", &format!("u{n}")), token(&format!("a{n}"), 1));
        }
        assert!(
            tokens.cached(&key("acme", "u0"), None).is_some(),
            "u0 used last"
        );
        tokens.store(&key("acme", "u3"), token("a3", 1));
        assert_eq!(tokens.size().0, 3);
        assert!(
            tokens.cached(&key("acme", "u1"), None).is_none(),
            "u1 was unused longest"
        );
        assert!(tokens.cached(&key("acme", "u0"), None).is_some());

        let small = self::tokens(CacheConfig {
            max_bytes: 300,
            ..CacheConfig::default()
        });
        for n in 0..10 {
            small.store(&key("acme", &format!("u{n}")), token("a", 1));
        }
        let (entries, bytes) = small.size();
        assert!(bytes <= 300, "{bytes} bytes held");
        assert_eq!(entries, 2, "two entries of about 110 bytes fit in 300");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_entries_are_dropped() {
        let tokens = tokens(CacheConfig {
            idle: Duration::from_millis(20),
            ..CacheConfig::default()
        });
        following(&tokens);
        tokens.store(&key("acme", "idle"), token("a", 1));
        tokio::time::advance(Duration::from_millis(40)).await;
        tokens.store(&key("acme", "new"), token("b", 1));
        assert_eq!(
            tokens.size().0,
            1,
            "the idle entry went when another was stored"
        );
        assert!(tokens.cached(&key("acme", "idle"), None).is_none());
    }

    #[tokio::test]
    async fn changes_drop_stale_accounts_and_a_deleted_tenant_drops_all_of_its() {
        let tokens = tokens(CacheConfig::default());
        following(&tokens);
        tokens.store(&key("acme", "alice"), token("acme-alice", 1));
        tokens.store(&key("acme", "bob"), token("acme-bob", 1));
        tokens.store(&key("globex", "alice"), token("globex-alice", 1));
        let revoked = pb::AccountChange {
            tenant: "acme".into(),
            connection_name: "asana".into(),
            identifier: "alice".into(),
            kind: pb::AccountChangeKind::Revoked.into(),
            ..Default::default()
        };
        assert_eq!(tokens.apply(&revoked), ["acme-alice"]);
        let replaced = |version| pb::AccountChange {
            tenant: "acme".into(),
            connection_name: "asana".into(),
            identifier: "bob".into(),
            kind: pb::AccountChangeKind::CredentialReplaced.into(),
            credential_version: version,
            ..Default::default()
        };
        assert!(
            tokens.apply(&replaced(1)).is_empty(),
            "the credential the report names is the one cached"
        );
        assert!(tokens.cached(&key("acme", "bob"), None).is_some());
        assert_eq!(tokens.apply(&replaced(2)), ["acme-bob"], "a newer one");
        tokens.store(&key("acme", "bob"), token("acme-bob", 2));
        assert!(tokens.cached(&key("acme", "alice"), None).is_none());
        assert!(tokens.cached(&key("acme", "bob"), None).is_some());
        let deleted = pb::AccountChange {
            tenant: "acme".into(),
            kind: pb::AccountChangeKind::TenantDeleted.into(),
            ..Default::default()
        };
        assert_eq!(tokens.apply(&deleted), ["acme-bob"]);
        assert!(
            tokens.cached(&key("globex", "alice"), None).is_some(),
            "another tenant's account is untouched"
        );
        assert_eq!(tokens.clear(), ["globex-alice"]);
        assert_eq!(tokens.size(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn without_the_change_stream_old_entries_are_not_used() {
        let tokens = tokens(CacheConfig {
            ttl_without_changes: Duration::from_millis(20),
            ..CacheConfig::default()
        });
        tokens.store(&key("acme", "alice"), token("a", 1));
        assert!(
            tokens.cached(&key("acme", "alice"), None).is_some(),
            "young"
        );
        tokio::time::advance(Duration::from_millis(40)).await;
        assert!(
            tokens.cached(&key("acme", "alice"), None).is_none(),
            "too old to trust while no change can reach this cache"
        );
        following(&tokens);
        assert!(
            tokens.cached(&key("acme", "alice"), None).is_some(),
            "while the stream is followed, changes drop entries instead"
        );
    }

    #[tokio::test]
    async fn a_failed_fetch_leaves_no_entry_behind() {
        let tokens = tokens(CacheConfig::default());
        for n in 0..50 {
            let key = key("acme", &format!("nobody-{n}"));
            let failed = tokens
                .fetch(&key, None, |_| async {
                    Err(tonic::Status::not_found("no account"))
                })
                .await;
            assert!(failed.is_err());
        }
        assert_eq!(tokens.size(), (0, 0));
        assert!(lock(&tokens.fetching).is_empty(), "no fetch lock is left");
    }
}
