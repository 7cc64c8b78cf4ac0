//! Online rotation of a tenant's Transit key (`RotateTenantKey`), while every call keeps
//! working:
//!
//! 1. The key is rotated: a new version, which every encryption uses from then on; older
//!    versions still decrypt.
//! 2. Every ciphertext of the tenant is re-wrapped under the new version with Transit's
//!    `rewrap`, so no plaintext leaves Vault: the credential of each of its accounts and each
//!    webhook secret (written back with check-and-set on the KV version read; a version a
//!    refresh wrote meanwhile is read and, unless already under the new key version, re-wrapped
//!    in turn), and the PKCE verifier of each pending consent (a conditional update). They are
//!    found in the database, never by listing Vault.
//! 3. A writer that encrypted under the old version just before step 1 may store its
//!    ciphertext after step 2 looked at its path. Such a write lands, or fails, within two Vault
//!    request timeouts of the rotation (its encryption and its write), so once that much time
//!    has passed a second pass re-wraps whatever it stored.
//! 4. The key's `min_decryption_version` is raised to the new version: from then on only the
//!    new version decrypts, and nothing stored needs an older one.

use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::Error;
use crate::records::{Account, State, Store};
use crate::secrets::{Location, Rewrap, Rewrapped, Secrets};

/// How many secrets are re-wrapped at once.
const CONCURRENCY: usize = 8;

/// What a rotation did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rotated {
    /// The key's version now, the only one that decrypts.
    pub key_version: u64,
    /// Account credentials re-wrapped.
    pub credentials: u64,
    /// Webhook secrets re-wrapped.
    pub webhook_secrets: u64,
    /// Pending consents' PKCE verifiers re-wrapped.
    pub consents: u64,
}

/// Rotates tenants' keys.
#[derive(Debug)]
pub struct Rotation<'a> {
    pub secrets: &'a Secrets,
    pub records: &'a Store,
    /// How long after the rotation a writer that encrypted just before it may still store
    /// its ciphertext: twice the Vault request timeout.
    pub settle: Duration,
}

impl Rotation<'_> {
    /// Rotates `tenant`'s key and re-wraps everything stored under it; `None` when the tenant
    /// has no key (nothing was ever stored for it).
    pub async fn rotate(&self, tenant: &str) -> Result<Option<Rotated>, Error> {
        let Some(target) = self.secrets.rotate_key(tenant).await? else {
            return Ok(None);
        };
        let settled = Instant::now() + self.settle;
        info!(key_version = target, "tenant key rotated; re-wrapping");
        let mut rotated = Rotated {
            key_version: target,
            ..Rotated::default()
        };
        self.pass(tenant, target, &mut rotated).await?;
        tokio::time::sleep_until(settled).await;
        self.pass(tenant, target, &mut rotated).await?;
        self.secrets
            .raise_min_decryption_version(tenant, target)
            .await?;
        Ok(Some(rotated))
    }

    /// Re-wraps everything of `tenant` not yet under key version `target`, adding to `counts`.
    async fn pass(&self, tenant: &str, target: u64, counts: &mut Rotated) -> Result<(), Error> {
        let accounts = self.records.tenant_accounts(tenant).await?;
        let mut running = FuturesUnordered::new();
        for account in &accounts {
            if account.state == State::Revoked {
                continue;
            }
            if running.len() == CONCURRENCY
                && let Some(done) = running.next().await
            {
                counts.credentials += done?;
            }
            running.push(self.rewrap_account(account, target));
        }
        while let Some(done) = running.next().await {
            counts.credentials += done?;
        }

        for subscription_id in self.records.webhook_secrets(tenant).await? {
            if let Rewrap::Rewrapped { .. } = self
                .secrets
                .rewrap_webhook_secret(tenant, &subscription_id, target)
                .await?
            {
                counts.webhook_secrets += 1;
            }
        }

        for (state_sha256, ciphertext) in self.records.pending_consents(tenant).await? {
            if let Rewrapped::Into(rewrapped) =
                self.secrets.rewrap(tenant, &ciphertext, target).await?
                && self
                    .records
                    .rewrap_consent(&state_sha256, &ciphertext, &rewrapped)
                    .await?
            {
                counts.consents += 1;
            }
        }
        Ok(())
    }

    /// Re-wraps `account`'s credential; 1 when it did, else 0.
    async fn rewrap_account(&self, account: &Account, target: u64) -> Result<u64, Error> {
        let at = Location {
            tenant: &account.tenant,
            connection: &account.connection_name,
            identifier: &account.identifier,
        };
        match self
            .secrets
            .rewrap_credential(at, target)
            .await
            .inspect_err(|error| warn!(account = %account.account_id, %error, "re-wrapping a credential failed"))?
        {
            Rewrap::Rewrapped { version } => {
                self.records.rewrapped(&account.account_id, version).await?;
                Ok(1)
            }
            Rewrap::Current | Rewrap::Missing => Ok(0),
        }
    }
}
