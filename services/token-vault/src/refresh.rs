//! Access tokens for connector-executor: the stored token, refreshed first when it expires
//! within the refresh margin or was rejected by Asana.
//!
//! - At most one upstream refresh per account at a time across every replica: the refresher
//!   holds a lease in the database (`refresh_leases`: an owner and an expiry, taken by one
//!   atomic insert-or-take-over-if-expired, released only by its owner).
//! - The holder re-reads the secret first: when another replica already stored a newer
//!   version, nothing is sent upstream.
//! - The new credential is written with Vault check-and-set against the version read, so a
//!   stale writer never overwrites a newer credential.
//! - Waiters poll the lease (with a deadline) and, once it is free, read the newer version.
//! - `invalid_grant` is checked against the store (another replica may have rotated the
//!   refresh token) before the account becomes NEEDS_REAUTH.

use std::sync::Arc;
use std::time::Duration;

use agentauth_audit::{Outcome, action};
use chrono::{DateTime, TimeDelta, Utc};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::Error;
use crate::api::account_event;
use crate::audit::Audit;
use crate::connections::{Auth, Connection};
use crate::error::Fix;
use crate::oauth::{Flow, RefreshFailure};
use crate::records::{Account, State, Store};
use crate::secrets::{Location, Secret, Secrets};

/// How long a refresh lease lasts when its holder never releases it (it crashed).
const LEASE_TTL: Duration = Duration::from_secs(30);
/// How long a caller waits for another refresh of the same account before giving up.
const WAIT: Duration = Duration::from_secs(40);
/// How often a waiter looks at the lease.
const POLL: Duration = Duration::from_millis(25);
/// What a caller is told to wait before retrying after a transient refresh failure.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// A usable credential of an account.
#[derive(Debug)]
pub struct Current {
    pub secret: Secret,
    pub version: u64,
    pub account: Account,
}

/// Hands out access tokens, refreshing them when needed.
#[derive(Debug)]
pub struct Refresher {
    pub secrets: Arc<Secrets>,
    pub records: Store,
    pub audit: Arc<Audit>,
    pub oauth: Arc<Flow>,
    /// Refresh grants sent to Asana, by how they ended (see [`refreshes_counter`]).
    pub refreshes: opentelemetry::metrics::Counter<u64>,
}

/// `agentauth.vault.refreshes{result}`: refresh grants sent to Asana, by how Asana answered —
/// `success`, `invalid_grant` (the user must consent again), `transient` (retried), `error`.
/// The refresh-success objective of docs/operations.md reads it.
pub fn refreshes_counter(
    meter: &opentelemetry::metrics::Meter,
) -> opentelemetry::metrics::Counter<u64> {
    meter
        .u64_counter("agentauth.vault.refreshes")
        .with_description(
            "Refresh grants sent to Asana, by result: success, invalid_grant, transient, error",
        )
        .build()
}

fn location(account: &Account) -> Location<'_> {
    Location {
        tenant: &account.tenant,
        connection: &account.connection_name,
        identifier: &account.identifier,
    }
}

/// Whether `expires_at` falls within `need` from now.
fn expiring(expires_at: Option<DateTime<Utc>>, need: Duration) -> bool {
    let need = TimeDelta::from_std(need).unwrap_or(TimeDelta::MAX);
    expires_at.is_some_and(|at| at - Utc::now() < need)
}

impl Refresher {
    /// A token of `account` (on `connection`) valid for at least `need`, or, when `rejected`
    /// names a version, one newer than it.
    pub async fn access(
        &self,
        connection: &Connection,
        account: Account,
        need: Duration,
        rejected: Option<u64>,
    ) -> Result<Current, Error> {
        if matches!(account.state, State::NeedsReauth | State::Revoked) {
            return Err(self
                .auth_required(connection, &account.tenant, &account.identifier)
                .await);
        }
        let (secret, version) = self.read(&account).await?;
        let stale = match rejected {
            Some(rejected) => version <= rejected,
            None => expiring(secret.expires_at, need),
        };
        if !stale {
            return Ok(Current {
                secret,
                version,
                account,
            });
        }
        if account.auth_method != Auth::Oauth {
            // A rejected PAT or service-account token cannot be renewed here.
            return Err(self
                .needs_reauth(connection, &account, version, "Asana rejected the token")
                .await);
        }
        self.refresh_after(connection, &account, version).await
    }

    async fn read(&self, account: &Account) -> Result<(Secret, u64), Error> {
        self.secrets
            .read(location(account))
            .await?
            .ok_or_else(|| Error::AccountNotFound {
                connection: account.connection_name.clone(),
                identifier: account.identifier.clone(),
            })
    }

    /// The stored credential when its version is no longer `seen`.
    async fn changed(&self, account: &Account, seen: u64) -> Result<Option<Current>, Error> {
        let (secret, version) = self.read(account).await?;
        if version == seen {
            return Ok(None);
        }
        self.current(account, secret, version).await.map(Some)
    }

    /// `secret` (version `version`) with the account's record as it now is.
    async fn current(
        &self,
        account: &Account,
        secret: Secret,
        version: u64,
    ) -> Result<Current, Error> {
        let account = self
            .records
            .get(
                &account.tenant,
                &account.connection_name,
                &account.identifier,
            )
            .await?
            .unwrap_or_else(|| account.clone());
        Ok(Current {
            secret,
            version,
            account,
        })
    }

    /// Replaces version `seen` of the credential: under the lease, or by waiting for whoever
    /// holds it.
    async fn refresh_after(
        &self,
        connection: &Connection,
        account: &Account,
        seen: u64,
    ) -> Result<Current, Error> {
        let started = Utc::now();
        let deadline = Instant::now() + WAIT;
        loop {
            let owner = uuid::Uuid::new_v4().to_string();
            let expires_at = Utc::now() + TimeDelta::from_std(LEASE_TTL).unwrap_or_default();
            if self
                .records
                .acquire_lease(&account.account_id, &owner, expires_at)
                .await?
            {
                let result = self.refresh_holding(connection, account, seen).await;
                if let Err(error) = self
                    .records
                    .release_lease(&account.account_id, &owner)
                    .await
                {
                    warn!(
                        account = %account.account_id,
                        %error,
                        "releasing a refresh lease failed; it expires by itself"
                    );
                }
                return result;
            }
            // Another caller (here or on another replica) is refreshing: wait for it.
            loop {
                if Instant::now() >= deadline {
                    return Err(Error::RetryLater {
                        dependency: "asana",
                        reason: "another refresh of this account is still running".to_owned(),
                        retry_after: RETRY_AFTER,
                    });
                }
                tokio::time::sleep(POLL).await;
                if !self.records.lease_held(&account.account_id).await? {
                    break;
                }
            }
            if let Some(current) = self.changed(account, seen).await? {
                return Ok(current);
            }
            // The holder stored nothing new: say why rather than try again at once.
            let record = self
                .records
                .get(
                    &account.tenant,
                    &account.connection_name,
                    &account.identifier,
                )
                .await?;
            match record {
                Some(record) if matches!(record.state, State::NeedsReauth | State::Revoked) => {
                    return Err(self
                        .auth_required(connection, &record.tenant, &record.identifier)
                        .await);
                }
                Some(record) if record.state == State::Expired && record.updated_at >= started => {
                    return Err(Error::RetryLater {
                        dependency: "asana",
                        reason: "refreshing the credential failed just now".to_owned(),
                        retry_after: RETRY_AFTER,
                    });
                }
                _ => {}
            }
        }
    }

    /// The refresh itself, while holding the account's lease.
    async fn refresh_holding(
        &self,
        connection: &Connection,
        account: &Account,
        seen: u64,
    ) -> Result<Current, Error> {
        // Another replica may have refreshed between our read and the lease.
        let (secret, version) = self.read(account).await?;
        if version != seen {
            return self.current(account, secret, version).await;
        }
        let record = self
            .records
            .get(
                &account.tenant,
                &account.connection_name,
                &account.identifier,
            )
            .await?
            .unwrap_or_else(|| account.clone());
        if matches!(record.state, State::NeedsReauth | State::Revoked) {
            return Err(self
                .auth_required(connection, &record.tenant, &record.identifier)
                .await);
        }
        let Some(refresh_token) = secret.refresh_token.clone() else {
            return Err(self
                .needs_reauth(connection, &record, version, "no refresh token is stored")
                .await);
        };
        crate::audit::ready(&self.audit)?;
        let granted = self.oauth.refresh_grant(connection, &refresh_token).await;
        let result = match &granted {
            Ok(_) => "success",
            Err(RefreshFailure::InvalidGrant) => "invalid_grant",
            Err(RefreshFailure::Transient(_)) => "transient",
            Err(RefreshFailure::Other(_)) => "error",
        };
        self.refreshes
            .add(1, &[opentelemetry::KeyValue::new("result", result)]);
        match granted {
            Ok(refreshed) => {
                let renewed = Secret {
                    access_token: refreshed.access_token,
                    refresh_token: refreshed.refresh_token.or(Some(refresh_token)),
                    expires_at: refreshed.expires_at,
                    scopes: secret.scopes.clone(),
                };
                let written = match self
                    .store_refreshed(account, &secret, &renewed, version)
                    .await?
                {
                    Ok(written) => written,
                    // A newer credential (a new consent) was stored meanwhile: it wins.
                    Err(newer) => return Ok(newer),
                };
                let updated = self
                    .records
                    .refreshed(&account.account_id, written, renewed.expires_at)
                    .await?;
                let mut event = account_event(&updated, action::CREDENTIAL_REFRESHED);
                event
                    .details
                    .insert("previous_version".into(), version.into());
                self.audit.record(event).await;
                info!(
                    account = %account.account_id,
                    credential_version = written,
                    previous_version = version,
                    "credential refreshed"
                );
                Ok(Current {
                    secret: renewed,
                    version: written,
                    account: updated,
                })
            }
            Err(RefreshFailure::InvalidGrant) => {
                // Another replica may have rotated the refresh token and stored the result.
                if let Some(current) = self.changed(account, version).await? {
                    return Ok(current);
                }
                Err(self
                    .needs_reauth(
                        connection,
                        &record,
                        version,
                        "Asana refused the refresh token (invalid_grant)",
                    )
                    .await)
            }
            Err(RefreshFailure::Transient(reason)) => {
                let updated = self
                    .records
                    .refresh_failed(
                        &account.account_id,
                        version,
                        "refreshing failed transiently; retried with backoff",
                    )
                    .await?;
                self.failed(&updated, &reason).await;
                Err(Error::RetryLater {
                    dependency: "asana",
                    reason,
                    retry_after: RETRY_AFTER,
                })
            }
            Err(RefreshFailure::Other(error)) => {
                self.failed(&record, &error.to_string()).await;
                Err(error)
            }
        }
    }

    /// Writes `renewed`, refreshed from `refreshed_from` (version `version`), with
    /// check-and-set. When another writer got there first: a key rotation's re-wrap stores the
    /// same credential anew, which `renewed` then replaces; anything else is a newer credential,
    /// returned as `Err` (it wins).
    async fn store_refreshed(
        &self,
        account: &Account,
        refreshed_from: &Secret,
        renewed: &Secret,
        version: u64,
    ) -> Result<Result<u64, Current>, Error> {
        const ATTEMPTS: usize = 5;
        let mut expected = version;
        for _ in 0..ATTEMPTS {
            match self
                .secrets
                .write(location(account), renewed, Some(expected))
                .await
            {
                Ok(written) => return Ok(Ok(written)),
                Err(Error::Conflict { .. }) => {
                    let (stored, now) = self.read(account).await?;
                    if stored != *refreshed_from {
                        return Ok(Err(self.current(account, stored, now).await?));
                    }
                    expected = now;
                }
                Err(error) => {
                    warn!(account = %account.account_id, %error, "storing a refreshed credential failed");
                    return Err(error);
                }
            }
        }
        Err(Error::Conflict { expected })
    }

    /// Records a failed refresh.
    async fn failed(&self, account: &Account, reason: &str) {
        warn!(account = %account.account_id, reason, "refreshing a credential failed");
        let mut event = account_event(account, action::CREDENTIAL_REFRESH_FAILED);
        event.outcome = Outcome::Failure;
        event.details.insert("reason".into(), reason.into());
        self.audit.record(event).await;
    }

    /// Marks version `version` of `account` NEEDS_REAUTH and returns the AUTH_REQUIRED error.
    async fn needs_reauth(
        &self,
        connection: &Connection,
        account: &Account,
        version: u64,
        reason: &str,
    ) -> Error {
        let updated = match self
            .records
            .set_state_at(&account.account_id, version, State::NeedsReauth, reason)
            .await
        {
            Ok(updated) => updated,
            Err(error) => return error.into(),
        };
        if updated.state == State::NeedsReauth && account.state != State::NeedsReauth {
            let mut event = account_event(&updated, action::CREDENTIAL_NEEDS_REAUTH);
            event.details.insert("reason".into(), reason.into());
            self.audit.record(event).await;
            info!(account = %account.account_id, reason, "account needs a new consent");
        }
        self.auth_required(connection, &updated.tenant, &updated.identifier)
            .await
    }

    /// FAILED_PRECONDITION AUTH_REQUIRED for the account of `identifier` in `tenant` on
    /// `connection` (connected or not), with a fresh authorization link for OAuth and what to
    /// do for a token.
    pub async fn auth_required(
        &self,
        connection: &Connection,
        tenant: &str,
        identifier: &str,
    ) -> Error {
        let fix = if connection.auth == Auth::Oauth {
            match self
                .oauth
                .create_link(connection, tenant, identifier, None, false)
                .await
            {
                Ok(link) => Fix::Consent(link.url),
                Err(error) => {
                    warn!(%error, "creating a reauthorization link failed");
                    return error;
                }
            }
        } else {
            Fix::NewToken(connection.auth)
        };
        Error::AuthRequired {
            connection: connection.name.clone(),
            identifier: identifier.to_owned(),
            fix,
        }
    }
}
